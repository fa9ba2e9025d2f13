"""A count-based character n-gram model (interpolated Kneser-Ney): the trivial reference that
says what "learned something" means. `python -m inn_jax.ngram --config ...`

    python -m inn_jax.ngram --config configs/study.py --orders 1-6 --out workdirs/ngram

Model (Chen & Goodman's interpolated Kneser-Ney, one discount per level). For a context c of
k - 1 symbols and the next symbol w,

    P_k(w | c) = max(n_k(c w) - D_k, 0) / n_k(c .) + D_k * N1+(c .) / n_k(c .) * P_{k-1}(w | c')

where c' drops c's oldest symbol, n_k(c .) = sum_w n_k(c w) and N1+(c .) counts the w with
n_k(c w) > 0. At the top level n_k are the training counts of the k-grams; below it, the
continuation counts (the number of distinct symbols seen before c w). A context never seen at
its level passes the level below through (P_k = P_{k-1}); P_0 is uniform over the vocabulary,
so every symbol has probability > 0. D_k = n1 / (n1 + 2 n2) from the level's counts of counts
(Ney's estimate). An order-K model scores a symbol with K - 1 symbols of context, fewer where
fewer precede it: such a position is scored by the order (its context + 1) model, top level raw.

Scoring uses the trainer's evaluation windows (inn_jax.data.eval_batches: every target token of a
split exactly once, nats summed in float64): "reset", a fresh context per window, as the neural
models' headline numbers; "carried", the context carried from the row's window before.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np

from inn_jax import data

MAX_ORDER = 8  # 27 ** 8 < 2 ** 63: n-grams encode as int64 ids; larger vocabularies fewer.


class _Level:
  """One level's table: contexts (int64 ids, sorted), counts (contexts, V), discount."""

  def __init__(self, ctx_ids, w_ids, counts, vocab_size: int):
    self.ctx, inv = np.unique(ctx_ids, return_inverse=True)
    self.counts = np.zeros((len(self.ctx), vocab_size), np.float64)
    np.add.at(self.counts, (inv, w_ids), counts)
    self.total = self.counts.sum(1)
    self.types = (self.counts > 0).sum(1)
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    self.discount = n1 / (n1 + 2 * n2) if n1 else 0.5

  def apply(self, ctx_ids, lower_PV):
    """P at this level for each context id (rows of lower_PV: the level below's P)."""
    row = np.minimum(np.searchsorted(self.ctx, ctx_ids), len(self.ctx) - 1)
    seen = self.ctx[row] == ctx_ids
    c_PV, total_P = self.counts[row], self.total[row]
    safe_P = np.where(seen, total_P, 1.0)
    d = self.discount
    p_PV = (np.maximum(c_PV - d, 0.0) / safe_P[:, None]
            + (d * self.types[row] / safe_P)[:, None] * lower_PV)
    return np.where(seen[:, None], p_PV, lower_PV)


class KneserNey:
  """An interpolated Kneser-Ney model of `order` fitted to the 1-D ids `train`."""

  def __init__(self, train, vocab_size: int, order: int):
    train = np.asarray(train, np.int64)
    if train.ndim != 1 or len(train) < order:
      raise ValueError(f"KneserNey: train must be 1-D with at least order={order} ids.")
    if not 1 <= order or vocab_size ** order >= 2 ** 62:
      raise ValueError(f"KneserNey: order={order} must be >= 1 and vocab_size ** order < 2 ** 62 "
                       f"(vocab_size={vocab_size}).")
    if train.min() < 0 or train.max() >= vocab_size:
      raise ValueError(f"KneserNey: ids must be in [0, {vocab_size}).")
    self.vocab_size, self.order = int(vocab_size), int(order)
    v = self.vocab_size
    grams = {}  # k -> (unique k-gram ids, their counts)
    for k in range(1, order + 1):
      ids = np.zeros(len(train) - k + 1, np.int64)
      for j in range(k):
        ids = ids * v + train[j:len(train) - k + 1 + j]
      grams[k] = np.unique(ids, return_counts=True)
    self.raw, self.cont = {}, {}
    for k in range(1, order + 1):
      ids, counts = grams[k]
      self.raw[k] = _Level(ids // v, ids % v, counts, v)
      if k < order:  # Continuation counts: distinct left extensions of each k-gram.
        suffix = grams[k + 1][0] % (v ** k)
        ids_k, n_left = np.unique(suffix, return_counts=True)
        self.cont[k] = _Level(ids_k // v, ids_k % v, n_left, v)

  def probs(self, context_PC) -> np.ndarray:
    """P(w | context) for each row of context_PC (P, order - 1) int ids, -1 where no symbol
    precedes (padding on the left only): (P, V), rows summing to 1."""
    context_PC = np.asarray(context_PC, np.int64).reshape(len(context_PC), self.order - 1)
    v = self.vocab_size
    have_P = (context_PC >= 0).sum(1)  # Symbols of context each position has.
    out_PV = np.empty((len(context_PC), v), np.float64)
    for top in range(1, self.order + 1):  # Positions scored by the order-`top` model.
      at = np.flatnonzero(np.minimum(have_P, self.order - 1) + 1 == top)
      if not len(at):
        continue
      ctx = context_PC[at]
      p_PV = np.full((len(at), v), 1.0 / v)
      for k in range(1, top + 1):
        ids = np.zeros(len(at), np.int64)
        for j in range(self.order - k, self.order - 1):  # The last k - 1 symbols.
          ids = ids * v + ctx[:, j]
        p_PV = (self.raw[k] if k == top else self.cont[k]).apply(ids, p_PV)
      out_PV[at] = p_PV
    return out_PV

  def score(self, tokens, batch_size: int, seq_len: int, *, carry: bool = False):
    """(total nats, targets) over `tokens` in the trainer's evaluation windows."""
    h = self.order - 1
    nats, count, hist_BH = 0.0, 0, None
    for x_BL, y_BL, mask_BL in data.eval_batches(tokens, batch_size, seq_len, carry_state=carry):
      b, length = x_BL.shape
      x_BL = np.where(mask_BL, x_BL, -1).astype(np.int64)
      if hist_BH is None or not carry:
        hist_BH = np.full((b, h), -1, np.int64)
      ext_BX = np.concatenate([hist_BH, x_BL], 1)
      ctx_BLC = np.stack([ext_BX[:, l + 1:l + 1 + h] for l in range(length)], 1)
      ctx_PC = ctx_BLC.reshape(b * length, h)
      # A padded left edge only: keep the context's contiguous tail of real symbols.
      real_PC = ctx_PC >= 0
      tail_PC = np.flip(np.cumprod(np.flip(real_PC, 1), 1), 1).astype(bool)
      p_PV = self.probs(np.where(tail_PC, ctx_PC, -1))
      y_P, m_P = y_BL.reshape(-1), mask_BL.reshape(-1)
      p_P = p_PV[np.arange(len(y_P)), y_P]
      nats += float(-np.log(p_P[m_P]).sum(dtype=np.float64))
      count += int(m_P.sum())
      if h:
        hist_BH = ext_BX[:, -h:]
    return nats, count


def parse_orders(text: str) -> list[int]:
  """"1-6" or "1,3,5" -> sorted orders."""
  out = set()
  for part in str(text).split(","):
    lo, _, hi = part.strip().partition("-")
    try:
      out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
      raise ValueError(f"--orders {text!r}: give orders like 1-6 or 1,3,5.") from None
  if not out or min(out) < 1 or max(out) > MAX_ORDER:
    raise ValueError(f"--orders {text!r}: orders must be in 1..{MAX_ORDER}.")
  return sorted(out)


def evaluate(corpus, orders, batch_size: int, seq_len: int, splits=("valid", "test")) -> dict:
  """Every order fitted on corpus.train and scored on `splits` both ways, as results.json has
  them: {"orders": {k: {"scores": {split: {"reset"|"carried": {"bpc", "nats", "tokens"}}},
  "valid_bpc", "test_bpc", "discounts", "entries"}}}."""
  out = {}
  for k in orders:
    model = KneserNey(corpus.train, corpus.vocab.size, k)
    scores = {}
    for split in splits:
      scores[split] = {}
      for mode, carry in (("reset", False), ("carried", True)):
        nats, n = model.score(getattr(corpus, split), batch_size, seq_len, carry=carry)
        scores[split][mode] = {"bpc": nats / n / math.log(2), "nats": nats, "tokens": n}
    entries = sum(int((lvl.counts > 0).sum()) for lvl in [*model.raw.values(),
                                                          *model.cont.values()])
    out[str(k)] = {"order": k, "scores": scores,
                   **{f"{s}_bpc": scores[s]["reset"]["bpc"] for s in splits},
                   "discounts": {"raw": [model.raw[j].discount for j in sorted(model.raw)],
                                 "continuation": [model.cont[j].discount
                                                  for j in sorted(model.cont)]},
                   "entries": entries}
  return {"kind": "ngram", "model": "interpolated Kneser-Ney", "orders": out,
          "batch_size": batch_size, "seq_len": seq_len}


def _main(argv):
  from inn_jax.train import config as config_lib
  p = argparse.ArgumentParser(prog="python -m inn_jax.ngram", description=__doc__.split("\n")[0])
  p.add_argument("--orders", default="1-6", help="orders to fit, e.g. 1-6 or 1,3,5")
  p.add_argument("--out", required=True, help="folder for ngram.json")
  args, rest = p.parse_known_args(argv)
  orders = parse_orders(args.orders)
  config = config_lib.from_argv(rest)  # --config path.py[:variant] [--config.a.b=v ...]
  if config.data.level not in (None, "char", "byte"):
    raise ValueError(f"data.level={config.data.level!r}: the n-gram reference is for character "
                     "or byte data.")
  corpus = data.load_corpus(config.data)
  if corpus.vocab.size ** max(orders) >= 2 ** 62:
    raise ValueError(f"--orders {args.orders}: a vocabulary of {corpus.vocab.size} allows orders "
                     f"up to {int(62 * math.log(2) / math.log(corpus.vocab.size))}.")
  result = evaluate(corpus, orders, config.data.eval_batch_size, config.data.seq_len)
  from inn_jax.train import workdir as workdir_lib
  result.update(config=config.name, data={k: config.data[k] for k in ("name", "normalize")},
                corpus_tokens={s: int(len(getattr(corpus, s))) for s in ("train", "valid", "test")},
                corpus=workdir_lib.corpus_record(corpus))
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "ngram.json").write_text(json.dumps(result, indent=1) + "\n")
  for k, r in result["orders"].items():
    print(f"order {k}: valid BPC {r['valid_bpc']:.4f}, test BPC {r['test_bpc']:.4f}")
  return result


def main(argv=None):
  """The command line; bad input is one line on stderr and exit status 2."""
  try:
    return _main(sys.argv[1:] if argv is None else argv)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
