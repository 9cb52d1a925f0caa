"""The label graph: labels turned into the states a path may visit, built once.

Every function of ``(logits, labels)`` pairs (the CTC loss and its tables,
Viterbi alignment, the maximum-likelihood loss, :func:`seqctc.check_inputs`)
reads the same :class:`LabelGraph`: the labels compacted to the front of each
row (a label whose padding is not 0 is skipped wherever it is), checked once,
clipped into range, and laid out as the states of the CTC graph (labels
interleaved with blanks) or of the lecture's blank-free segmentation graph.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from seqctc._inputs import positions_valid
from seqctc._types import Array


class LabelGraph(NamedTuple):
    """The states of a batch of label sequences, and what is wrong with them.

    Attributes:
        labels: ``[B, N]`` int32 labels compacted to the front of each row and
            clipped into ``[0, K)``; ``blank_id`` (0 on the blank-free graph)
            after the ``N_b`` valid ones.
        num_labels: ``[B]`` int32 ``N_b``.
        states: ``[B, S]`` int32 class of each state (``S = 2N + 1`` with a
            blank, ``S = N`` without); padded states hold the blank (or 0).
        skip: ``[B, S]`` bool, ``True`` where state ``s`` may be entered from
            ``s - 2`` (a label different from the previous one; never on the
            blank-free graph).
        num_states: ``[B]`` int32 ``S_b`` (``2 N_b + 1``, or ``N_b``).
        repeats: ``[B]`` int32 number of adjacent repeated labels.
        bad_labels: ``[B]`` bool, a valid label is outside ``[0, K)`` or equals
            the blank.
    """

    labels: Array
    num_labels: Array
    states: Array
    skip: Array
    num_states: Array
    repeats: Array
    bad_labels: Array

    def min_frames(self, blank: bool = True) -> Array:
        """``[B]`` the fewest frames a path needs: ``N_b`` + repeats with a blank."""
        return self.num_labels + self.repeats if blank else self.num_labels


def compact_valid(values: Array, valid: Array, fill) -> tuple[Array, Array]:
    """Moves each row's valid entries of ``[B, L]`` to the front, in order.

    Returns the compacted ``[B, L]`` values (``fill`` after the valid ones) and
    the ``[B]`` int32 count of valid entries.
    """
    batch, length = values.shape
    count = jnp.sum(valid, axis=1, dtype=jnp.int32)
    if length == 0:
        return values, count
    target = jnp.where(valid, jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, length)
    rows = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.int32)[:, None], values.shape)
    out = jnp.full(values.shape, fill, values.dtype)
    return out.at[rows, target].set(values, mode="drop"), count


def _interleave(even: Array, odd: Array, last) -> Array:
    """``[B, 2N + 1]``: even[:, 0], odd[:, 0], ..., odd[:, N - 1], then ``last``."""
    batch, length = odd.shape
    pairs = jnp.stack([even, odd], axis=2).reshape(batch, 2 * length)
    return jnp.concatenate([pairs, jnp.full((batch, 1), last, odd.dtype)], axis=1)


def label_graph(
    labels: Array, label_paddings: Array, num_classes: int, blank_id: int | None
) -> LabelGraph:
    """The :class:`LabelGraph` of checked ``labels`` and ``label_paddings``.

    ``blank_id=None`` builds the blank-free graph (one state per label).
    """
    batch, max_labels = labels.shape
    fill = 0 if blank_id is None else blank_id
    labels, num_labels = compact_valid(
        labels.astype(jnp.int32), positions_valid(label_paddings), fill
    )
    position = jnp.arange(max_labels, dtype=jnp.int32)[None, :]
    valid = position < num_labels[:, None]  # [B, N]
    bad = (labels < 0) | (labels >= num_classes)
    if blank_id is not None:
        bad = bad | (labels == blank_id)
    bad_labels = jnp.any(valid & bad, axis=1)
    labels = jnp.where(valid, jnp.clip(labels, 0, num_classes - 1), fill)
    same = valid[:, 1:] & (labels[:, 1:] == labels[:, :-1])  # [B, N - 1]
    repeats = jnp.sum(same, axis=1, dtype=jnp.int32)
    if blank_id is None:
        skip = jnp.zeros((batch, max_labels), bool)
        return LabelGraph(
            labels, num_labels, labels, skip, num_labels, repeats, bad_labels
        )
    # Interleave: [blank, l1, blank, l2, ..., lN, blank]  # [B, 2N + 1]
    states = _interleave(jnp.full_like(labels, blank_id), labels, blank_id)
    different = jnp.concatenate([jnp.zeros((batch, 1), bool), ~same], axis=1)
    label_skip = valid & different  # [B, N]
    skip = _interleave(jnp.zeros_like(label_skip), label_skip, False)
    return LabelGraph(
        labels, num_labels, states, skip, 2 * num_labels + 1, repeats, bad_labels
    )
