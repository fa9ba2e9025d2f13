"""Pure array functions, no parameters."""

from inn_jax.ops.scan import METHODS, ScanMethod, selective_scan, targets_cpu

__all__ = ["METHODS", "ScanMethod", "selective_scan", "targets_cpu"]
