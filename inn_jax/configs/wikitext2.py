"""WikiText-2, character level (Table 4): INN, LSTM and Transformer; reports perplexity per
character (results.json "ppl", as the paper's Table 4) beside BPC.

    python train.py --config configs/wikitext2.py[:variant]

Paper text: the character-level INN of text8 (N=32, 6 layers, d_model 256), AdamW lr 4e-4,
OneCycleLR, clipping 1.0; LSTM 5.1M and Transformer 4.5M parameters. We use text8's model sizes.
The raw WikiText-2 files are used as they are (no lower-casing); the vocabulary is every
character of the training split, with an unknown symbol for the rest. Text vs code: as text8.py
(`_paper` variants follow the paper's code). Batch 32 x 256 for 5,000 steps (about 7 epochs of
the 10.9M training characters): not stated by the paper.
"""

from inn_jax.train.config import PAPER_SIZES, table_config


def get_config(variant=None):
  c = table_config("wikitext2", variant, PAPER_SIZES, "wikitext2_char", batch_size=32,
                   seq_len=256, eval_batch_size=64)
  c.train.update(steps=5_000, log_every=50, eval_every=500, save_every=500)
  c.model.dtype = "bfloat16"
  return c
