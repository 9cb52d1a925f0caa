"""Test configuration: strict numerics, as equinox does."""

import os

# torch's spinning OpenMP threads slow down the JAX calls that follow them.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
