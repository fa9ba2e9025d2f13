"""Pure array functions, no parameters."""

from inn_jax.ops.scan import METHODS, selective_scan

__all__ = ["METHODS", "selective_scan"]
