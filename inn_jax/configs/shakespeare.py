"""Shakespeare's plays in text8 form (27 symbols), from a local file, for quick comparisons of
the Table 2 rows at about 0.5M parameters each and an equal token budget.

    python train.py --config configs/shakespeare.py:inn \\
        --config.data.path=../shared/corpora/shakespeare.text8

The path is given on the command line (data.name "text_file", split 90/5/5 contiguously as
text8). Variants as text8.py (`_paper` = the paper's code form, see there); model sizes are
scaled down to about 0.5M parameters: INN 8 neurons x 3 layers x d_model 128, Mamba stack
4 x 128, LSTM 2 x 176, Transformer 3 x 128 (d_ff 384). The ablation rows keep the INN's sizes
and so have fewer parameters. Budget: 3,000 steps of 32 x 128 = 12.3M
characters (about 3 epochs).
"""

from inn_jax.train.config import table_config


def get_config(variant=None):
  sizes = {"inn": dict(d_model=128, n_layers=3, n_neurons=8),
           "mamba": dict(d_model=128, n_layers=4),
           "lstm": dict(hidden=176, n_layers=2),
           "transformer": dict(d_model=128, n_layers=3, n_heads=4, d_ff=384)}
  c = table_config("shakespeare", variant, sizes, "text_file", batch_size=32, seq_len=128,
                   eval_batch_size=128)
  c.train.update(steps=3_000, log_every=50, eval_every=500, save_every=500, eval_windows=20)
  return c
