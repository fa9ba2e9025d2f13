"""Penn Treebank, word level (Table 5; Table 6's best setting): perplexity on 10k words.

    python train.py --config configs/ptb.py[:variant]       # inn (default), lstm, transformer

Paper text: INN 5.5M, LSTM 3.6M, Transformer 5.7M parameters; dropout 0.3 and weight decay 0.1
(Table 6's best); AdamW lr 4e-4 with OneCycleLR and clipping 1.0. The paper gives no PTB model
sizes; these reproduce its parameter counts: INN 4 layers (5.4M), LSTM 2 x 256 (3.6M),
Transformer 4 layers (5.7M), every head tied to the embedding (with 10k words the embedding is
most of the budget, as the paper notes). Dropout 0.3 is the INN's attention dropout and the
baselines' dropout. Text vs code: as text8.py. Batch 32 x 70 words for 6,000 steps (about 15
epochs of 929k training words): not stated by the paper.
"""

from inn_jax.train.config import table_config


def get_config(variant=None):
  sizes = {"inn": dict(n_layers=4, tie_embeddings=True, attn_dropout=0.3),
           "mamba": dict(n_layers=4, tie_embeddings=True),
           "lstm": dict(hidden=256, n_layers=2, dropout=0.3, tie_embeddings=True),
           "transformer": dict(d_model=256, n_layers=4, n_heads=4, d_ff=1024, dropout=0.3,
                               tie_embeddings=True)}
  c = table_config("ptb", variant, sizes, "ptb_word", batch_size=32, seq_len=70,
                   eval_batch_size=64)
  c.optim.weight_decay = 0.1
  c.train.update(steps=6_000, log_every=50, eval_every=500, save_every=500)
  return c
