"""matplotlib for the reports' and analyses' PNGs: an optional dependency (inn_jax[train])."""

from __future__ import annotations


def pyplot():
  """matplotlib.pyplot on the Agg backend; a missing matplotlib is one line naming the fix."""
  try:
    import matplotlib
  except ImportError:
    raise ImportError('the plots need matplotlib: pip install "inn_jax[train]" (or pip install '
                      "matplotlib).") from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt
