"""Decoding speed: recurrent sampling (inn_jax.sample) against a full forward re-run per token.

  python benchmarks/decode_speed.py                        # the paper's INN, batch 1, CPU or GPU
  python benchmarks/decode_speed.py --kinds inn mamba lstm transformer --new 200 --prompt 100

Recurrent: the Sampler, greedy, compiled whole: the prompt in one pass, then one cached step per
token in a `lax.scan`. "decode" excludes the prompt pass: (T(new) - T(1)) / (new - 1).
Re-run: generating token t costs one full forward over the t tokens so far, so new tokens after a
prompt of P cost sum_{L=P}^{P+new-1} forward(L). forward(L) is timed (compiled, one call) at
--points lengths spread over that range and the sum is interpolated linearly between them
(forward time is close to linear in L); compiling all `new` lengths would take far longer than
running them. Times are medians of --repeats runs after a warm-up (compile) run.
Random weights: speed does not depend on them. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from inn_jax.models import build_model, count_params, model_config  # noqa: E402
from inn_jax.sample import Sampler  # noqa: E402

VOCAB = 27  # text8.


def median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # Compile and warm up.
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def measure(kind: str, prompt_len: int, new: int, repeats: int, points: int,
            scan_method: str) -> dict:
  cfg = model_config(kind)  # Defaults = the paper's configurations (INN: D 256, 6 x 32 neurons).
  if "scan_method" in cfg:
    cfg.scan_method = scan_method
  if kind == "transformer":
    cfg.max_len = max(cfg.max_len, prompt_len + new)
  model = build_model(cfg, VOCAB, nnx.Rngs(0))
  model.eval()
  prompt_BL = np.asarray(jax.random.randint(jax.random.key(1), (1, prompt_len), 0, VOCAB))
  sampler = Sampler(model)
  row = {"kind": kind, "params": count_params(model), "model": cfg.to_dict(),
         "batch": 1, "prompt": prompt_len, "new_tokens": new}
  t_new = median_time(lambda: sampler(prompt_BL, new, temperature=0.0).tokens_BL, repeats)
  t_one = median_time(lambda: sampler(prompt_BL, 1, temperature=0.0).tokens_BL, repeats)
  row["recurrent"] = {"seconds": t_new, "tokens_per_s": new / t_new,
                      "prompt_pass_s": t_one, "decode_tokens_per_s": (new - 1) / (t_new - t_one)}
  if points:
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    lengths = np.unique(np.linspace(prompt_len, prompt_len + new - 1, points).round().astype(int))
    seconds = [median_time(lambda: forward(state, jnp.zeros((1, int(n)), jnp.int32)), repeats)
               for n in lengths]
    total = float(np.interp(np.arange(prompt_len, prompt_len + new), lengths, seconds).sum())
    row["rerun"] = {"forward_lengths": lengths.tolist(), "forward_s": seconds,
                    "seconds_estimated": total, "tokens_per_s": new / total}
    row["speedup"] = total / t_new
  print(json.dumps({k: v for k, v in row.items() if k != "model"}), flush=True)
  return row


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--kinds", nargs="+", default=["inn"],
                 choices=["inn", "mamba", "lstm", "transformer"])
  p.add_argument("--prompt", type=int, default=100, help="prompt tokens")
  p.add_argument("--new", type=int, default=200, help="tokens to generate (>= 2)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--points", type=int, default=5,
                 help="lengths at which the full forward is timed; 0 = no re-run timing")
  p.add_argument("--scan_method", default="auto", help="the Mamba scan (INN, mamba)")
  p.add_argument("--out", default="benchmarks/results/decode_speed.json")
  args = p.parse_args(argv)
  if args.new < 2 or args.prompt < 1 or args.repeats < 1 or args.points == 1 or args.points < 0:
    p.error("--new must be >= 2, --prompt and --repeats >= 1, --points 0 or >= 2.")
  result = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "runs": [measure(k, args.prompt, args.new, args.repeats, args.points,
                             args.scan_method)
                     for k in args.kinds]}
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(f"wrote {out}")
  return result


if __name__ == "__main__":
  main()
