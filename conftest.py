"""Test configuration: strict numerics, as equinox does."""

import os

# torch's spinning OpenMP threads slow down the JAX calls that follow them.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The tests' arrays are small, so compiling dominates their time: XLA's
# backend optimisations off (they change compile time, not results; the docs
# pages run so too). Benchmarks never import this file.
_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}"

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_collection_modifyitems(items):
    """The long tests first (stable otherwise), so that the workers of
    ``pytest -n 2`` finish together rather than one running a long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
