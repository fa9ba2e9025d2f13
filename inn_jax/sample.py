"""Sampling from any model of inn_jax.models, with recurrent state (or a KV cache).

    sampler = Sampler(model)
    out = sampler(prompt_BL, length=200, temperature=0.8, top_k=None, top_p=0.95, stop=None,
                  key=jax.random.key(0))           # or seed=0
    out.tokens_BL                        # the new tokens; out.logits_BLV with return_logits=True
    out.lengths_B                        # new tokens up to and including the stop token

    python -m inn_jax.sample --workdir W --prompt "to be or not" --length 500 --temperature 0.8

The prompt runs through the model in one parallel pass that returns the cache (INN and Mamba
stack: conv window and SSM state per neuron per layer; LSTM: (h, c); Transformer: keys and values);
then one `lax.scan`, compiled once for the whole loop, feeds each sampled token back with the
cache. A recurrent model does the same work for every new token, whatever the length so far.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx



class SamplerOutput(NamedTuple):
  tokens_BL: jax.Array  # The `length` new tokens; after a row's stop token, the stop token.
  logits_BLV: jax.Array | None  # Logits each token was drawn from (return_logits=True).
  lengths_B: jax.Array | None = None  # New tokens a row generated, its stop token included.


def sample_logits(logits_BV, key, temperature: float, top_k: int | None,
                  top_p: float | None = None):
  """One token per row: argmax when temperature == 0, else softmax(logits / temperature)
  restricted to the top_k largest logits (all when top_k is None), then to the nucleus: the
  fewest most likely tokens whose probabilities sum to at least top_p (all when None)."""
  if temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV.astype(jnp.float32) / temperature
  if top_k is not None:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if top_p is not None:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV  # Mass of the likelier tokens.
    kept_B = jnp.sum(before_BV < top_p, axis=-1)          # At least one: before[0] = 0.
    cut_B1 = jnp.take_along_axis(sorted_BV, kept_B[:, None] - 1, axis=-1)
    logits_BV = jnp.where(logits_BV < cut_B1, -jnp.inf, logits_BV)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def init_cache(model, batch: int, max_len: int):
  """An empty cache for `batch` rows (a Transformer's holds `max_len` positions)."""
  return model.init_cache(batch, max_len)


@functools.partial(jax.jit, static_argnames=("graphdef", "length", "temperature", "top_k",
                                             "top_p", "stop", "return_logits"))
def _generate(graphdef, state, prompt_BL, key, *, length, temperature, top_k, top_p, stop,
              return_logits):
  model = nnx.merge(graphdef, state)
  batch, prompt_len = prompt_BL.shape
  cache = init_cache(model, batch, prompt_len + length)
  logits_BLV, cache = model(prompt_BL, cache=cache, return_cache=True)
  keys = jax.random.split(key, length)
  first_BV = logits_BLV[:, -1]
  first_B = sample_logits(first_BV, keys[0], temperature, top_k, top_p)

  def step(carry, key):
    token_B, cache = carry
    logits_B1V, cache = nnx.merge(graphdef, state)(token_B[:, None], cache=cache,
                                                    return_cache=True)
    logits_BV = logits_B1V[:, 0]
    token_B = sample_logits(logits_BV, key, temperature, top_k, top_p)
    return (token_B, cache), (token_B, logits_BV if return_logits else None)

  _, (rest_LB, rest_LBV) = jax.lax.scan(step, (first_B, cache), keys[1:])
  tokens_BL = jnp.concatenate([first_B[:, None], rest_LB.T], axis=1)
  lengths_B = jnp.full(tokens_BL.shape[:1], length, jnp.int32)
  if stop is not None:  # Up to and including the first stop token; the stop token after it.
    stopped_BL = jnp.cumsum(tokens_BL == stop, axis=1) > 0
    after_BL = jnp.concatenate([jnp.zeros_like(stopped_BL[:, :1]), stopped_BL[:, :-1]], axis=1)
    tokens_BL = jnp.where(after_BL, stop, tokens_BL)
    lengths_B = length - jnp.sum(after_BL, axis=1, dtype=jnp.int32)
  if not return_logits:
    return tokens_BL, None, lengths_B
  logits_BLV = jnp.concatenate([first_BV[:, None], jnp.swapaxes(rest_LBV, 0, 1)], axis=1)
  return tokens_BL, logits_BLV, lengths_B


class Sampler:
  """Draws continuations of prompts from `model` (a copy of it, in eval mode)."""

  def __init__(self, model: nnx.Module):
    model = nnx.clone(model)
    model.eval()  # No dropout while sampling.
    if hasattr(model, "capture"):
      model.capture(False)
    self.vocab_size = model.embed.table_VD.shape[0]
    self.graphdef, self.state = nnx.split(model)

  def __call__(self, prompt_BL, length: int, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, stop: int | None = None,
               key: jax.Array | None = None, seed: int | None = None,
               return_logits: bool = False) -> SamplerOutput:
    """`length` new tokens after each row of prompt_BL (batch, >= 1 integer ids).

    temperature (0: greedy), top_k and top_p (the nucleus) shape each draw (sample_logits);
    stop: a token id after which a row's tokens are that id, lengths_B counting up to it;
    key: a jax.random key, or seed: an int for jax.random.key(seed) (neither: key(0)); the same
    key gives the same tokens. Every argument is checked before any compile.
    """
    prompt_BL = np.asarray(prompt_BL)
    if prompt_BL.ndim != 2 or prompt_BL.shape[1] < 1 or not np.issubdtype(prompt_BL.dtype,
                                                                           np.integer):
      raise ValueError(f"prompt must be integer ids of shape (batch, >= 1), got "
                       f"{prompt_BL.shape} of {prompt_BL.dtype}; a model needs one token to "
                       "start from.")
    if prompt_BL.min() < 0 or prompt_BL.max() >= self.vocab_size:
      raise ValueError(f"prompt ids must lie in 0..{self.vocab_size - 1} (the vocabulary).")
    if not (isinstance(length, int) and length >= 1):
      raise ValueError(f"length must be a positive int, got {length!r}.")
    if not temperature >= 0:
      raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= self.vocab_size):
      raise ValueError(f"top_k must be None or an int in 1..{self.vocab_size}, got {top_k!r}.")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
      raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}.")
    if stop is not None and not (isinstance(stop, (int, np.integer)) and
                                 0 <= stop < self.vocab_size):
      raise ValueError(f"stop must be None or a token id in 0..{self.vocab_size - 1}, got "
                       f"{stop!r}.")
    if key is not None and seed is not None:
      raise ValueError("give key (a jax.random key) or seed (an int), not both.")
    if key is None:
      if not isinstance(seed or 0, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}; or pass key=jax.random.key(...).")
      key = jax.random.key(seed or 0)
    elif not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                               or key.shape == (2,) and key.dtype == jnp.uint32)):
      raise ValueError(f"key must be a jax.random key (jax.random.key(n)), got {key!r}.")
    tokens_BL, logits_BLV, lengths_B = _generate(
        self.graphdef, self.state, jnp.asarray(prompt_BL, jnp.int32), key,
        length=length, temperature=float(temperature), top_k=top_k,
        top_p=None if top_p is None else float(top_p), stop=None if stop is None else int(stop),
        return_logits=return_logits)
    return SamplerOutput(tokens_BL, logits_BLV, lengths_B)


def main(argv=None) -> str:
  """The CLI: prints the prompt and its continuation; returns the generated text."""
  p = argparse.ArgumentParser(prog="python -m inn_jax.sample", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a training workdir (config.json, checkpoints)")
  p.add_argument("--prompt", required=True, help="text to continue (at least one symbol)")
  p.add_argument("--length", type=int, default=500, help="new tokens to generate")
  p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
  p.add_argument("--top_k", type=int, default=None)
  p.add_argument("--top_p", type=float, default=None, help="nucleus sampling, in (0, 1]")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                 help="the best by validation (default) or the newest checkpoint")
  args = p.parse_args(argv)
  if not args.prompt or args.length < 1 or args.temperature < 0 or (args.top_k or 1) < 1:
    p.error("--prompt must be non-empty, --length >= 1, --temperature >= 0, --top_k >= 1.")
  from inn_jax.analyze import encode_prompt, load_for_analysis  # The CLI alone needs the trainer.
  # The run's vocabulary (vocab.json): no corpus needed.
  loaded = load_for_analysis(args.workdir, best=args.checkpoint == "best", corpus=False)
  prompt_L = encode_prompt(loaded, args.prompt)
  out = Sampler(loaded.model)(prompt_L[None], args.length, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, seed=args.seed)
  text = loaded.vocab.decode(np.asarray(out.tokens_BL[0]))
  shown = loaded.vocab.decode(prompt_L)  # As the model read it (normalised).
  print(f"{shown}{text}" if loaded.vocab.level != "word" else f"{shown} {text}")
  return text


if __name__ == "__main__":
  try:
    main(sys.argv[1:])
  except (FileNotFoundError, ValueError) as e:  # Bad input: the message says the fix.
    sys.exit(f"error: {e}")
