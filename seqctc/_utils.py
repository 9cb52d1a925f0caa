"""Padding conversions and static argument checks."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import Array, ArrayLike


def lengths_to_paddings(lengths: ArrayLike, max_len: int) -> Array:
    r"""Converts per-row lengths to right paddings (1.0 = padded).

    Args:
        lengths: ``[B]`` integer lengths, each in ``[0, max_len]``.
        max_len: the padded length ``T`` (a Python int, static).

    Returns:
        ``[B, T]`` float32 paddings, ``paddings[b, t] = 1.0`` iff ``t >= lengths[b]``.

    Examples:
        >>> import seqctc
        >>> seqctc.lengths_to_paddings([1, 3], 3)
        Array([[0., 1., 1.],
               [0., 0., 0.]], dtype=float32)
    """
    lengths = jnp.asarray(lengths)
    check_rank(lengths, 1, "lengths")
    positions = jnp.arange(max_len, dtype=lengths.dtype)
    return (positions[None, :] >= lengths[:, None]).astype(jnp.float32)


def paddings_to_lengths(paddings: ArrayLike) -> Array:
    r"""Converts right paddings (1.0 = padded) to per-row lengths.

    Args:
        paddings: ``[B, T]`` paddings in ``{0, 1}``, right padded.

    Returns:
        ``[B]`` int32 lengths: the number of unpadded positions in each row.

    Examples:
        >>> import seqctc
        >>> seqctc.paddings_to_lengths([[0., 1., 1.], [0., 0., 0.]])
        Array([1, 3], dtype=int32)
    """
    paddings = jnp.asarray(paddings)
    check_rank(paddings, 2, "paddings")
    return jnp.sum(paddings == 0, axis=-1, dtype=jnp.int32)


def check_rank(x: ArrayLike, rank: int | Sequence[int], name: str) -> None:
    """Raises ``ValueError`` naming ``name`` unless ``x`` has one of ``rank``."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    ndim = np.ndim(x)
    if ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"`{name}` must have rank {expected}, got shape {np.shape(x)}."
        )


def check_same_dim(
    a: ArrayLike,
    a_axis: int,
    a_name: str,
    b: ArrayLike,
    b_axis: int,
    b_name: str,
) -> None:
    """Raises ``ValueError`` unless ``a.shape[a_axis] == b.shape[b_axis]``."""
    da, db = np.shape(a)[a_axis], np.shape(b)[b_axis]
    if da != db:
        raise ValueError(
            f"`{a_name}` and `{b_name}` disagree: `{a_name}` has shape "
            f"{np.shape(a)} and `{b_name}` has shape {np.shape(b)} "
            f"(axis {a_axis} vs axis {b_axis})."
        )


def check_blank_id(blank_id: int, num_classes: int) -> None:
    """Raises ``ValueError`` unless ``0 <= blank_id < num_classes``."""
    if isinstance(blank_id, bool) or not isinstance(blank_id, (int, np.integer)):
        raise ValueError(f"`blank_id` must be a Python int, got {blank_id!r}.")
    if not 0 <= blank_id < num_classes:
        raise ValueError(
            f"`blank_id` must lie in [0, {num_classes}) for logits with "
            f"{num_classes} classes, got {blank_id}."
        )


def compute_dtype(x: Array) -> jnp.dtype:
    """The dtype to accumulate in: float32 for half inputs, else ``x``'s float."""
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.dtype
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def check_sequence_args(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    blank_id: int | None,
    *,
    xp=jnp,
) -> tuple:
    """Static checks shared by every function of (logits, labels) pairs.

    Returns the four arguments as ``xp`` arrays (``jax.numpy`` by default,
    ``numpy`` for host-side checks). Raises ``ValueError`` naming the argument
    on a wrong rank, mismatched batch or length dimensions, non-integer labels,
    or a ``blank_id`` outside ``[0, K)`` (``None`` is accepted where a graph
    has no blank).
    """
    logits = xp.asarray(logits)
    logit_paddings = xp.asarray(logit_paddings)
    labels = xp.asarray(labels)
    label_paddings = xp.asarray(label_paddings)
    check_rank(logits, 3, "logits")
    check_rank(logit_paddings, 2, "logit_paddings")
    check_rank(labels, 2, "labels")
    check_rank(label_paddings, 2, "label_paddings")
    check_same_dim(logits, 0, "logits", logit_paddings, 0, "logit_paddings")
    check_same_dim(logits, 1, "logits", logit_paddings, 1, "logit_paddings")
    check_same_dim(logits, 0, "logits", labels, 0, "labels")
    check_same_dim(labels, 0, "labels", label_paddings, 0, "label_paddings")
    check_same_dim(labels, 1, "labels", label_paddings, 1, "label_paddings")
    if blank_id is not None:
        check_blank_id(blank_id, np.shape(logits)[2])
    labels_dtype = jnp.result_type(labels)
    if not jnp.issubdtype(labels_dtype, jnp.integer):
        raise ValueError(f"`labels` must be integers, got dtype {labels_dtype}.")
    return logits, logit_paddings, labels, label_paddings
