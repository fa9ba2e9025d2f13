"""Flax NNX building blocks shared by the models."""

from inn_jax.nn.communication import COMMUNICATIONS, Communication
from inn_jax.nn.embed import EMBED_INITS, Embedder
from inn_jax.nn.mamba import NEURON_PARAMS, MambaBlock, MambaCache
from inn_jax.nn.norm import LayerNorm

__all__ = ["COMMUNICATIONS", "Communication", "EMBED_INITS", "Embedder", "LayerNorm",
           "MambaBlock", "MambaCache", "NEURON_PARAMS"]
