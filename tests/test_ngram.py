"""inn_jax.ngram: interpolated Kneser-Ney against a plain-Python reference written from the
formula, distributions that sum to 1, scoring in the evaluator's windows, the command line."""

import collections
import json
import math

import numpy as np
import pytest

from inn_jax import data, ngram


def reference_kn(train, vocab_size, order):
  """P(w | context) by dictionaries and loops, straight from the formula in inn_jax/ngram.py."""
  train = list(train)
  raw = {k: collections.Counter(tuple(train[i:i + k]) for i in range(len(train) - k + 1))
         for k in range(1, order + 1)}
  cont = {}
  for k in range(1, order):
    cont[k] = collections.Counter(g[1:] for g in raw[k + 1])  # Distinct left extensions.

  def discount(counter):
    n1 = sum(1 for c in counter.values() if c == 1)
    n2 = sum(1 for c in counter.values() if c == 2)
    return n1 / (n1 + 2 * n2) if n1 else 0.5

  disc = {("raw", k): discount(raw[k]) for k in raw}
  disc.update({("cont", k): discount(cont[k]) for k in cont})

  def p(w, context, top):
    prob = 1.0 / vocab_size
    for k in range(1, top + 1):
      table, name = (raw[k], "raw") if k == top else (cont[k], "cont")
      ctx = tuple(context[len(context) - (k - 1):]) if k > 1 else ()
      row = {g[-1]: c for g, c in table.items() if g[:-1] == ctx}
      total = sum(row.values())
      if total == 0:
        continue
      d = disc[(name, k)]
      prob = max(row.get(w, 0) - d, 0) / total + d * len(row) / total * prob
    return prob

  def probs(context):
    top = min(len(context), order - 1) + 1
    return [p(w, context, top) for w in range(vocab_size)]

  return probs


@pytest.fixture(scope="module")
def text():
  rng = np.random.default_rng(0)
  # A little structure (a Markov chain) so that every level has repeated and single counts.
  trans = rng.dirichlet(np.full(5, 0.3), size=5)
  ids = [0]
  for _ in range(600):
    ids.append(int(rng.choice(5, p=trans[ids[-1]])))
  return np.asarray(ids, np.int32)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_equal_the_reference(text, order):
  vocab = 6  # Symbol 5 never occurs: the uniform floor still gives it mass.
  model = ngram.KneserNey(text[:400], vocab, order)
  ref = reference_kn(text[:400], vocab, order)
  held = text[400:]
  contexts = [list(held[max(0, i - (order - 1)):i]) for i in range(0, 80)]
  padded = np.asarray([[-1] * (order - 1 - len(c)) + c for c in contexts], np.int64)
  got = model.probs(padded.reshape(len(contexts), order - 1))
  want = np.asarray([ref(c) for c in contexts])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-12)
  assert (got > 0).all()


def test_unseen_contexts_and_symbols_fall_back_to_lower_orders():
  train = np.asarray([0, 1, 0, 1, 0, 1, 2], np.int32)
  model = ngram.KneserNey(train, 4, 3)
  # Context (3, 3) is unseen at levels 3 and 2, so the continuation unigram scores: the distinct
  # bigrams (0 1), (1 0), (1 2) give 0, 1 and 2 one left neighbour each, so n1 = 3, n2 = 0,
  # D = 1 and P_1(w) = max(1 - 1, 0) / 3 + 1 * 3 / 3 * 1/4 = 1/4 for every w.
  p_unseen = model.probs(np.asarray([[3, 3]]))
  np.testing.assert_allclose(p_unseen[0], [0.25] * 4, rtol=1e-12)
  np.testing.assert_allclose(p_unseen[0], reference_kn(train, 4, 3)([3, 3]), rtol=1e-12)
  # With no context at all, the order-1 model (raw unigram counts 3, 3, 1) scores instead:
  # n1 = 1, n2 = 0, D = 1: P(w) = max(c - 1, 0) / 7 + 1 * 3 / 7 * 1/4.
  want = [(max(c - 1, 0) + 0.75) / 7 for c in (3, 3, 1, 0)]
  np.testing.assert_allclose(model.probs(np.asarray([[-1, -1]]))[0], want, rtol=1e-12)
  assert p_unseen[0, 3] > 0


def _scored(model, tokens, batch, seq_len, carry):
  """Plain loop: each target with the context the windows give it."""
  h = model.order - 1
  nats, n = 0.0, 0
  batches = list(data.eval_batches(tokens, batch, seq_len, carry_state=carry))
  hist = [[] for _ in range(batch)]
  for x_BL, y_BL, m_BL in batches:
    for b in range(batch):
      seen = list(hist[b]) if carry else []
      for l in range(seq_len):
        if not m_BL[b, l]:
          continue
        seen.append(int(x_BL[b, l]))
        ctx = seen[-h:] if h else []
        p = model.probs(np.asarray([[-1] * (h - len(ctx)) + ctx], np.int64).reshape(1, h))
        nats -= math.log(p[0, y_BL[b, l]])
        n += 1
      hist[b] = seen
  return nats, n


@pytest.mark.parametrize("carry", [False, True])
def test_scores_every_target_once_with_the_windows_context(text, carry):
  model = ngram.KneserNey(text[:400], 5, 3)
  tokens = text[400:]
  nats, n = model.score(tokens, 3, 7, carry=carry)
  want_nats, want_n = _scored(model, tokens, 3, 7, carry)
  assert n == want_n == len(tokens) - 1
  assert nats == pytest.approx(want_nats, rel=1e-12)


def test_higher_orders_fit_a_markov_text_better(text):
  bpc = {k: ngram.KneserNey(text[:500], 5, k).score(text[500:], 2, 16)[0] for k in (1, 2)}
  assert bpc[2] < bpc[1]


def test_orders_parse_and_bad_input():
  assert ngram.parse_orders("1-3,5") == [1, 2, 3, 5]
  for bad in ("0-2", "x", "9"):
    with pytest.raises(ValueError, match="--orders"):
      ngram.parse_orders(bad)
  with pytest.raises(ValueError, match="order"):
    ngram.KneserNey(np.zeros(10, np.int32), 300, 8)


def test_command_line_writes_every_order(tmp_path, capsys):
  corpus_file = tmp_path / "corpus.txt"
  rng = np.random.default_rng(1)
  corpus_file.write_text(" ".join("".join(rng.choice(list("abcde"), 4)) for _ in range(3000)))
  out = ngram.main(["--orders", "1-3", "--out", str(tmp_path / "ng"), "--config",
                    "configs/quickstart.py", "--config.data.name=text_file",
                    f"--config.data.path={corpus_file}", "--config.data.seq_len=32"])
  saved = json.loads((tmp_path / "ng" / "ngram.json").read_text())
  assert sorted(saved["orders"]) == ["1", "2", "3"] == sorted(out["orders"])
  for k, r in saved["orders"].items():
    assert r["scores"]["valid"]["reset"]["tokens"] == saved["corpus_tokens"]["valid"] - 1
    assert r["valid_bpc"] == r["scores"]["valid"]["reset"]["bpc"]
  assert saved["orders"]["3"]["test_bpc"] < saved["orders"]["1"]["test_bpc"]
  assert "order 3: valid BPC" in capsys.readouterr().out
  with pytest.raises(SystemExit) as e:
    ngram.main(["--orders", "0", "--out", str(tmp_path), "--config", "configs/quickstart.py"])
  assert e.value.code == 2
  assert capsys.readouterr().err.startswith("error: --orders '0'")
