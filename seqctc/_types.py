"""Type aliases and numeric constants shared by the seqctc modules."""

import jax

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# A finite stand-in for log(0) inside the recursions. Gradients of
# ``logaddexp(-inf, -inf)`` and of an all ``-inf`` ``logsumexp`` are NaN, so the
# scans never carry ``-inf``; ``NEG_INF + NEG_INF`` is still finite in float32.
NEG_INF = -1e30
