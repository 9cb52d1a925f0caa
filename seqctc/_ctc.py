"""Connectionist temporal classification: blank-extended labels, α, β, γ, loss."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim


class ExtendedLabels(NamedTuple):
    """Labels interleaved with blanks: the states of the CTC graph.

    Attributes:
        states: ``[B, S]`` int32 class of each state, ``S = 2N + 1``; even states
            are blanks, state ``2n + 1`` is label ``n``. Padded states hold the
            blank.
        skip: ``[B, S]`` bool, ``True`` where state ``s`` may be entered from
            ``s - 2`` (a label state whose label differs from the previous one).
        paddings: ``[B, S]`` float, 1.0 for states ``s >= 2 N_b + 1``.
    """

    states: Array
    skip: Array
    paddings: Array


def extend_with_blanks(
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> ExtendedLabels:
    r"""Interleaves labels with blanks, as the CTC graph needs.

    A label sequence :math:`l_1 \dots l_N` becomes the state sequence
    :math:`\epsilon, l_1, \epsilon, l_2, \dots, l_N, \epsilon` of length
    :math:`S = 2N + 1`. A path may stay in a state, move to the next one, or skip
    a blank between two different labels:

    .. math::

        \mathrm{skip}[s] = (s \text{ odd}) \wedge (s \ge 3)
            \wedge (\mathrm{states}[s] \ne \mathrm{states}[s - 2]).

    Args:
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded.
        blank_id: the blank class (a Python int, static).

    Returns:
        An :class:`ExtendedLabels` with ``states``, ``skip`` and ``paddings`` of
        shape ``[B, 2N + 1]``.

    Raises:
        ValueError: if ``labels`` or ``label_paddings`` is not rank 2 or their
            shapes differ.

    Examples:
        >>> import seqctc
        >>> ext = seqctc.extend_with_blanks([[1, 1, 2]], [[0., 0., 0.]])
        >>> ext.states
        Array([[0, 1, 0, 1, 0, 2, 0]], dtype=int32)
        >>> ext.skip
        Array([[False, False, False, False, False,  True, False]], dtype=bool)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.
    """
    labels = jnp.asarray(labels)
    label_paddings = jnp.asarray(label_paddings)
    check_rank(labels, 2, "labels")
    check_rank(label_paddings, 2, "label_paddings")
    check_same_dim(labels, 0, "labels", label_paddings, 0, "label_paddings")
    check_same_dim(labels, 1, "labels", label_paddings, 1, "label_paddings")
    batch, max_labels = labels.shape
    valid = label_paddings == 0  # [B, N]
    labels = jnp.where(valid, labels, blank_id).astype(jnp.int32)
    blanks = jnp.full((batch, max_labels + 1), blank_id, jnp.int32)
    # Interleave: [blank, l1, blank, l2, ..., lN, blank]  # [B, 2N+1]
    states = jnp.zeros((batch, 2 * max_labels + 1), jnp.int32)
    states = states.at[:, 0::2].set(blanks).at[:, 1::2].set(labels)
    previous = jnp.concatenate(
        [jnp.full((batch, 1), -1, jnp.int32), labels[:, :-1]], axis=1
    )  # [B, N]
    label_skip = valid & (labels != previous) & (jnp.arange(max_labels) > 0)[None, :]
    skip = jnp.zeros((batch, 2 * max_labels + 1), bool).at[:, 1::2].set(label_skip)
    num_labels = jnp.sum(valid, axis=1, dtype=jnp.int32)  # [B]
    num_states = 2 * num_labels + 1
    positions = jnp.arange(2 * max_labels + 1, dtype=jnp.int32)
    paddings = (positions[None, :] >= num_states[:, None]).astype(jnp.float32)
    return ExtendedLabels(states=states, skip=skip, paddings=paddings)
