"""Flax NNX building blocks shared by the models: each block's typed config beside it."""

from inn_jax.nn.communication import COMMUNICATIONS, Communication, CommunicationConfig
from inn_jax.nn.embed import EMBED_INITS, Embedder
from inn_jax.nn.mamba import NEURON_PARAMS, MambaBlock, MambaCache, MambaConfig
from inn_jax.nn.norm import LayerNorm

__all__ = ["COMMUNICATIONS", "Communication", "CommunicationConfig", "EMBED_INITS", "Embedder",
           "LayerNorm", "MambaBlock", "MambaCache", "MambaConfig", "NEURON_PARAMS"]
