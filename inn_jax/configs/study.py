"""The CPU studies' protocol: the paper's rows at about 100k parameters on the offline pydoc
corpus in text8 form, every model treated alike. benchmarks/study.py runs a study's plan
(benchmarks/studies/<name>/plan.py), which sets each run's sizes, rate, steps and seeds on
these variants; by hand:

    python train.py --config configs/study.py:inn
    python train.py --config configs/study.py:lstm --config.optim.lr=0.01 --config.seed=1 \\
        --config.data.seed=1

Variants: inn, no_comm, static_comm, mamba, lstm, transformer (our forms) and inn_paper,
no_comm_paper, static_comm_paper, mamba_paper (the paper code's: a head tied to an N(0, 1)
embedding, identical neurons, weight decay on every parameter).

Equal treatment: dropout 0 for every model (the INN's attention dropout included); untied
heads and the scaled embedding for every model of our form; AdamW with OneCycleLR (PyTorch's
defaults), clipping 1.0, weight decay 0.01; batch 16 x 128; float32. Sizes (about 100k):
INN 4 neurons x 2 layers x width 64, d_state 8 (96,539); Mamba stack 3 x 64, d_state 8
(92,699); LSTM 2 x 76 (97,763); Transformer 2 layers, width 64, 4 heads, d_ff 256 (103,579).
`seed` sets the parameters and `data.seed` the order of the training text (a study sets both).
"""

from inn_jax.train.config import table_config, variants

SIZES = {"inn": dict(d_model=64, n_layers=2, n_neurons=4, n_heads=4, d_state=8),
         "mamba": dict(d_model=64, n_layers=3, d_state=8),
         "lstm": dict(hidden=76, n_layers=2),
         "transformer": dict(d_model=64, n_layers=2, n_heads=4, d_ff=256)}
LR = 1e-2
BATCH, SEQ = 16, 128
VARIANTS = variants()


def get_config(variant=None):
  if variant not in (None, *VARIANTS):
    raise ValueError(f"configs/study.py: unknown variant {variant!r}; choose one of {VARIANTS}.")
  variant = variant or "inn"
  c = table_config("study", variant, SIZES, "pydoc", normalize="text8", batch_size=BATCH,
                   seq_len=SEQ, eval_batch_size=64)
  for key in ("dropout", "attn_dropout"):  # Dropout 0 for every model.
    if key in c.model:
      c.model[key] = 0.0
  if not variant.endswith("_paper") and "tie_embeddings" in c.model:
    c.model.tie_embeddings = False  # One head policy: untied for every model of our form.
  c.model.dtype = "float32"
  c.optim.lr = LR
  c.train.update(steps=1000, log_every=10, eval_every=125, save_every=250, eval_windows=4,
                 microbatches=1)
  c.workdir = f"workdirs/study-{variant}"
  return c
