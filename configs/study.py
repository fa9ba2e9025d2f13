"""The small-scale study of the paper's claims (benchmarks/study.py runs it; RESULTS.md reports
it): the Table 2 / Table 3 rows at about 100k parameters each on the offline pydoc corpus in
text8 form, the paper's protocol otherwise.

    python train.py --config configs/study.py:inn               # one row by hand
    python benchmarks/study.py                                   # the whole study (~2 h, 2 CPUs)

Variants (all about 93k-102k parameters; the ablations keep the INN's sizes and so have fewer):
  inn, inn_paper                 the INN as configs/quickstart.py (4 neurons, 2 layers, width
                                 64, d_state 8: 96,539) and the paper's code form of it (94,811)
  no_comm, static_comm           Table 3's ablations of `inn` (63,003 / 79,899); `_paper` forms
  mamba, mamba_paper             a stack of 3 Mamba blocks of width 64, d_state 8 (92,699)
  lstm                           2 x 76 (95,711)
  transformer                    2 layers, width 64, 4 heads, d_ff 256 (101,851)
  inn_ssm, inn_shared            `inn` with neuron_params "ssm" (own A, D, dt bias; expand
                                 1.75: 95,867) or "shared" (one memory; expand 2: 96,539)
`_paper` forms are the paper code's (configs/text8.py explains them). The C5 row is
`inn_paper --config.model.n_neurons=1`, as it is at the paper's scale.

Protocol: AdamW, OneCycleLR (PyTorch's defaults), clipping 1.0, weight decay 0.01; peak rate
2e-3 (one of the C1 sweep's rates: the paper's 4e-4 is for 20,000-step runs, these are ~1,000
steps). Batch 16 x 128; train.steps is set per run by the study (equal tokens or equal FLOPs).
"""

from inn_jax.train.config import table_config, variants

SIZES = {"inn": dict(d_model=64, n_layers=2, n_neurons=4, n_heads=4, d_state=8),
         "mamba": dict(d_model=64, n_layers=3, d_state=8),
         "lstm": dict(hidden=76, n_layers=2),
         "transformer": dict(d_model=64, n_layers=2, n_heads=4, d_ff=256)}
# Per-neuron memory forms of `inn` near its parameter count (expand x d_model must be a whole
# width, also at the tiny sizes tests use: 1.75 rather than neuron_forms.sh's 1.765625).
FORMS = {"inn_ssm": dict(neuron_params="ssm", expand=1.75),
         "inn_shared": dict(neuron_params="shared", expand=2.0)}
LR = 2e-3
BATCH, SEQ = 16, 128


VARIANTS = variants() + list(FORMS)


def get_config(variant=None):
  if variant not in (None, *VARIANTS):
    raise ValueError(f"configs/study.py: unknown variant {variant!r}; choose one of {VARIANTS}.")
  form = FORMS.get(variant)
  c = table_config("study", "inn" if form else variant, SIZES, "pydoc", normalize="text8",
                   batch_size=BATCH, seq_len=SEQ, eval_batch_size=64)
  if form:
    c.name = f"study:{variant}"
    c.model.update(form)
  c.model.dtype = "float32"
  c.optim.lr = LR
  c.train.update(steps=1000, log_every=10, eval_every=125, save_every=250, eval_windows=4,
                 microbatches=1)
  c.workdir = f"workdirs/study-{variant or 'inn'}"
  return c
