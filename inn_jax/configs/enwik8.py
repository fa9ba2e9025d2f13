"""enwik8 (bytes, 256 symbols): the text8 models on Hutter's raw Wikipedia dump.

    python train.py --config configs/enwik8.py[:variant]

The paper reports no enwik8 result; this config runs its Table 2 rows on the other standard
character benchmark. Variants, model sizes, text-vs-code choices and the protocol are text8.py's;
90/5/5 contiguous split of the 100M bytes, as is standard.
"""

from inn_jax.train.config import PAPER_SIZES, table_config


def get_config(variant=None):
  c = table_config("enwik8", variant, PAPER_SIZES, "enwik8", batch_size=32, seq_len=256,
                   eval_batch_size=128)
  c.train.update(steps=20_000, log_every=100, eval_every=2000, save_every=2000, eval_windows=40)
  c.model.dtype = "bfloat16"
  return c
