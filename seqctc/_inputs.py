"""The front-end every public function shares: frames of logits and their paddings.

A position (frame or label slot) is *valid* exactly when its padding is 0; any
other value (1.0, but also 0.5 or NaN) marks it padded, and padded positions are
skipped wherever they are, as if they were removed from the sequence.
``check_inputs`` rejects paddings outside {0, 1}.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqctc._types import Array, ArrayLike
from seqctc._utils import check_blank_id, check_rank, check_same_dim, compute_dtype


class Frames(NamedTuple):
    """Frame log-probabilities in the compute dtype, and which frames count.

    Attributes:
        log_probs: ``[B, T, K]`` ``log_softmax`` of the logits in the compute
            dtype (float32 for half inputs); padded frames hold the uniform
            distribution (their logits are replaced by 0 before any op, so NaN
            or garbage there is never read).
        valid: ``[B, T]`` bool, ``True`` on frames whose padding is 0.
        lengths: ``[B]`` int32 number of valid frames ``T_b``.
    """

    log_probs: Array
    valid: Array
    lengths: Array


def positions_valid(paddings: Array) -> Array:
    """``[B, L]`` bool: the positions whose padding is exactly 0."""
    return jnp.asarray(paddings) == 0


def check_frame_args(
    logits: ArrayLike, logit_paddings: ArrayLike, *, blank_id: int | None = None
) -> tuple[Array, Array]:
    """Static checks of ``(logits [B, T, K], logit_paddings [B, T])``.

    Returns both as jax arrays. Raises ``ValueError`` naming the argument on a
    wrong rank, mismatched ``B`` or ``T``, a non-float ``logits`` dtype, or a
    ``blank_id`` outside ``[0, K)`` (``None`` skips that check).
    """
    logits = jnp.asarray(logits)
    logit_paddings = jnp.asarray(logit_paddings)
    check_rank(logits, 3, "logits")
    check_rank(logit_paddings, 2, "logit_paddings")
    check_same_dim(logits, 0, "logits", logit_paddings, 0, "logit_paddings")
    check_same_dim(logits, 1, "logits", logit_paddings, 1, "logit_paddings")
    if logits.shape[2] == 0:
        raise ValueError(
            f"`logits` must have at least one class, got shape {logits.shape}."
        )
    if blank_id is not None:
        check_blank_id(blank_id, logits.shape[2])
    return logits, logit_paddings


def masked_logits(logits: Array, valid: Array) -> Array:
    """``[B, T, K]`` logits in the compute dtype, 0 on invalid frames (never read)."""
    dtype = compute_dtype(logits)
    return jnp.where(valid[:, :, None], logits.astype(dtype), jnp.zeros((), dtype))


def masked_log_softmax(logits: Array, valid: Array) -> Array:
    """``[B, T, K]`` log_softmax in the compute dtype; 0 logits on invalid frames."""
    return jax.nn.log_softmax(masked_logits(logits, valid), axis=-1)


def prepare_frames(logits: Array, logit_paddings: Array) -> Frames:
    """The :class:`Frames` of already checked ``logits`` and ``logit_paddings``."""
    valid = positions_valid(logit_paddings)  # [B, T]
    lengths = jnp.sum(valid, axis=1, dtype=jnp.int32)  # [B]
    return Frames(masked_log_softmax(logits, valid), valid, lengths)
