"""inn_jax: Intelligent Neural Networks in JAX / Flax NNX.

Shape notation, used in names throughout (``x_BxLxD`` style, written compactly as ``x_BLD``):

  B  batch            L  sequence length     N  neurons
  D  model width      E  inner width (expand * D)
  S  SSM state size   R  dt rank             K  conv kernel width (d_conv)
  V  vocabulary       H  attention heads     F  feed-forward width

The neuron axis is folded into the batch for the memory (``h_(BN)LD``) and unfolded for the
communication (``h_(BL)ND``); both reshapes live in ``inn_jax.models.inn``.
"""

__version__ = "0.1.0"
