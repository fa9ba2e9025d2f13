"""Test-wide set-up: four fake CPU devices so that sharding tests can build a 2 x 2 mesh, and
XLA's CPU code generated without LLVM's optimisations (--xla_backend_optimization_level=0).

The tests' models are tiny: compiling dominates their time, and level 0 compiles about 1.6x
faster (tests/test_workspace.py: 114 s -> 71 s on the 2-core machine) while every HLO pass runs
as in training (layouts, fusion, buffer assignment, collectives: what the tests inspect). The
trainer's own tiny configs set the same option (tests/tiny.py). Set the flag to another level in
XLA_FLAGS to run the suite on optimised code."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
