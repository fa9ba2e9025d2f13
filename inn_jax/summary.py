"""`python -m inn_jax.summary`: a config's model summary without training.

    python -m inn_jax.summary --config configs/text8.py:inn_paper
    python -m inn_jax.summary --config configs/quickstart.py --config.model.n_layers=4 --out DIR

The config is read as train.py reads it (--config path.py[:variant], --config.a.b=value,
--workdir). Prints the parameters per module and the matmul FLOPs per token
(inn_jax.train.model_summary), and with --out DIR writes summary.json and summary.md there
(refused where DIR holds a run of another model; a run writes them into its workdir at its
start). The vocabulary size is --vocab_size, else the workdir's vocab.json, else the one the
corpus fixes (text8, enwik8, text8-normalised text: no data read), else the corpus's own (read
from data.path or, for pydoc, from CPython; never downloaded here).
Errors of the user's making print one line and exit 2.
"""

from __future__ import annotations

import pathlib
import sys

import jax

from inn_jax import data
from inn_jax.train import config as config_lib
from inn_jax.train import model_summary, validate
from inn_jax.train import workdir as workdir_lib

USAGE = ("usage: python -m inn_jax.summary --config configs/x.py[:variant] [--workdir DIR] "
         "[--config.a.b=value ...] [--vocab_size N] [--out DIR]")


def _own_flags(argv) -> tuple[dict, list[str]]:
  """{--vocab_size, --out} and the rest of argv (train.py's flags)."""
  own, rest, args = {}, [], list(argv)
  while args:
    arg = args.pop(0)
    name, eq, value = arg.partition("=")
    if name in ("--vocab_size", "--out"):
      if not eq:
        if not args:
          raise ValueError(f"{name}: missing value; {USAGE}.")
        value = args.pop(0)
      own[name[2:]] = value
    else:
      rest.append(arg)
  return own, rest


def known_vocab_size(cfg) -> int | None:
  """The vocabulary size of config.data without reading any data, where the corpus fixes it
  (text8, enwik8, anything normalised to text8's 27 symbols); None where the data decides."""
  if cfg.normalize == "text8":
    return len(data.TEXT8_ALPHABET)
  spec = data.CORPORA.get(cfg.name)
  return spec.fixed_vocab().size if spec is not None and spec.fixed_vocab else None


def vocab_size(config, given: str | None) -> int:
  if given is not None:
    try:
      n = int(given)
    except ValueError:
      n = 0
    if n <= 0:
      raise ValueError(f"--vocab_size {given}: must be a positive integer (e.g. 27 for text8).")
    return n
  saved = pathlib.Path(config.workdir) / workdir_lib.VOCAB_FILE
  if saved.is_file():
    return data.vocab_from_json(saved.read_text()).size
  known = known_vocab_size(config.data)
  if known is not None:
    return known
  spec = data.CORPORA[config.data.name]
  if spec.resources and config.data.path is None:
    raise ValueError(f"the vocabulary of {config.data.name} depends on its files, which the "
                     "summary does not download: give --vocab_size N, or data.path to the file.")
  return data.load_corpus(config.data).vocab.size


def main(argv=None) -> dict:
  own, rest = _own_flags(sys.argv[1:] if argv is None else argv)
  config = config_lib.from_argv(rest)
  validate.check_config(config, jax.device_count())
  out = pathlib.Path(own["out"]) if "out" in own else None
  if out is not None:
    saved = workdir_lib.Workdir(out).saved()
    changed = saved and workdir_lib.changes(saved[0], config, model_only=True)
    if changed:  # Not over a run's own summary.
      raise ValueError(f"{out} holds a run of another model ({workdir_lib.describe(changed)}); "
                       "write this summary elsewhere with --out DIR.")
  summary = model_summary.summarize(config, vocab_size(config, own.get("vocab_size")))
  print(model_summary.markdown(summary))
  if out is not None:
    model_summary.write(out, summary)
    print(f"wrote {out / model_summary.JSON_FILE} and {out / model_summary.MD_FILE}")
  return summary


def cli(argv=None):
  try:
    main(argv)
  except (ValueError, OSError) as e:  # Config, flag and data errors: one line, exit 2.
    text = " ".join(str(e).split())
    print(f"error: {text}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  cli()
