"""Pure array functions, no parameters."""

from inn_jax.ops.scan import METHODS, ScanMethod, selective_scan

__all__ = ["METHODS", "ScanMethod", "selective_scan"]
