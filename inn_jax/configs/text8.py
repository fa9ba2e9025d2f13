"""Text8 (Table 2; Table 3 with --config.data.max_chars=20000000): the paper's INN and baselines.

    python train.py --config configs/text8.py               # INN, our default form
    python train.py --config configs/text8.py:inn_paper     # INN as the paper's code builds it

Variants: inn, no_comm, static_comm, mamba, lstm, transformer, and <row>_paper for the INN rows
and the Mamba stack.

Paper text: N=32 neurons, 6 layers, d_model 256, d_state 16; AdamW lr 4e-4, OneCycleLR, gradient
clipping 1.0 (all followed). Baselines: LSTM 3 x 512, Transformer 6 layers / 4 heads / sinusoidal
positions (d_model 256, d_ff 1024: 4.7M parameters as Table 2), Mamba stack 6 x d_model 256
(2.6M as Table 2). Our LSTM has 6.3M parameters (the paper says 5.1M or 4.2M, which no 3 x 512
LSTM has).

Text vs code. The model follows the paper's code (pre-norm; Algorithm 1's post-norm is
model.norm="algorithm1"). `_paper` variants are the code's form: identical neurons, a head tied to
an N(0, 1) embedding, weight decay on every parameter (PyTorch's AdamW default 0.01).
Our default form gives each neuron its own memory (neuron_params="full", each 2 x d_model / N
wide: the shared Mamba's parameters; no identity vector), scales the embedding, unties the head
and does not decay norms, biases or embeddings. OneCycleLR uses PyTorch's defaults, beta1 cycling
included.

Not stated by the paper: batch size, sequence length and training length. We use 32 x 256
(8,192 characters a step) for 20,000 steps (164M characters, about 1.8 epochs of text8's 90M
training characters); the paper's reference benchmark times 8 x 256 steps.
"""

from inn_jax.train.config import PAPER_SIZES, table_config


def get_config(variant=None):
  c = table_config("text8", variant, PAPER_SIZES, "text8", batch_size=32, seq_len=256,
                   eval_batch_size=128)
  c.train.update(steps=20_000, log_every=100, eval_every=2000, save_every=2000, eval_windows=40)
  c.model.dtype = "bfloat16"  # Compute dtype; parameters and the scan state stay float32.
  return c
