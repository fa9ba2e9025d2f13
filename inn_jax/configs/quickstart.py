"""Quick start: a small INN on the offline "pydoc" corpus (CPython's own documentation, lower-cased
to text8's 27 symbols), a visible result in about 5 minutes on 2 CPU cores.

    python train.py --config configs/quickstart.py

Model: our default INN form (each neuron its own memory, scaled embedding, untied head; pre-norm
as the paper's code), 4 neurons, 2 layers, width 64. Optimiser: the paper's protocol (AdamW,
OneCycleLR, clipping 1.0) with a peak rate of 3e-3 instead of the paper's 4e-4, as the run is short.
"""

from inn_jax.train import base_config, paper_model


def get_config(variant=None):
  if variant:
    raise ValueError(f"configs/quickstart.py has no variants (got {variant!r}).")
  c = base_config("quickstart", paper_model("inn", paper=False, d_model=64, n_layers=2,
                                            n_neurons=4, n_heads=4, d_state=8),
                  dataset="pydoc", normalize="text8", batch_size=16, seq_len=128,
                  eval_batch_size=64)
  c.optim.lr = 3e-3
  c.train.update(steps=800, log_every=10, eval_every=200, save_every=200, eval_windows=4)
  return c
