"""Flax NNX building blocks shared by the models."""

from inn_jax.nn.communication import COMMUNICATIONS, Communication
from inn_jax.nn.embed import EMBED_INITS, Embedder
from inn_jax.nn.mamba import MambaBlock, MambaCache

__all__ = ["COMMUNICATIONS", "Communication", "EMBED_INITS", "Embedder", "MambaBlock",
           "MambaCache"]
