"""Test configuration: strict numerics, as equinox does."""

import os
import subprocess
import sys

# torch's spinning OpenMP threads slow down the JAX calls that follow them.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The tests' arrays are small, so compiling dominates their time: XLA's
# backend optimisations off (they change compile time, not results). The
# variable reaches the workers of ``pytest -n`` and the docs pages' child
# process. Benchmarks never import this file.
_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)


def _with_fast_compile() -> str:
    return f"{os.environ.get('XLA_FLAGS', '')} {_FAST_COMPILE}".strip()


def _fast_compile_known() -> bool:
    """Whether this XLA knows the flags (it aborts on unknown ones)."""
    code = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    probe = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, XLA_FLAGS=_with_fast_compile()),
        capture_output=True,
        timeout=300,
    )
    return probe.returncode == 0


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    if _fast_compile_known():
        os.environ["XLA_FLAGS"] = _with_fast_compile()

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_collection_modifyitems(items):
    """The long tests first (stable otherwise), so that the workers of
    ``pytest -n 2`` finish together rather than one running a long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
