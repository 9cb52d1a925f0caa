"""Viterbi alignment: the most likely path consistent with a label sequence."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax

from seqctc._graph import label_graph
from seqctc._inputs import masked_log_softmax, prepare_frames
from seqctc._types import NEG_INF, Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim, check_sequence_args

# Emissions are floored here, far above ``NEG_INF``: a path through a log(0)
# emission (a ``-inf`` logit) then still beats every structurally unreachable
# state (which sits near ``NEG_INF``), so backtracking always follows a valid path.
_EMIT_FLOOR = -1e20
# Back-pointer tables (one int8 per frame and state) above this many bytes give
# way to checkpoints: delta kept every ~sqrt(T) frames, each chunk's pointers
# recomputed while backtracking (two forward passes, O(sqrt(T) B S) memory).
_FULL_TABLE_BYTES = 256 * 2**20


def _chunk_frames(num_frames: int, width: int) -> int | None:
    """Frames per checkpointed chunk, or None to keep every back-pointer."""
    if num_frames * width <= _FULL_TABLE_BYTES:
        return None
    return max(1, math.isqrt(num_frames - 1) + 1)


class Alignment(NamedTuple):
    """The Viterbi path of each sequence.

    Attributes:
        frame_labels: ``[B, T]`` int32 class emitted at each frame on the path,
            ``-1`` on padded frames and on infeasible rows.
        states: ``[B, T]`` int32 state occupied at each frame: the blank-extended
            state index ``0 … 2N_b`` for the CTC graph, the label position
            ``0 … N_b − 1`` for the blank-free graph; ``-1`` on padded frames and
            on infeasible rows.
        log_prob: ``[B]`` log probability of the path, ``-inf`` when no path
            exists.
    """

    frame_labels: Array
    states: Array
    log_prob: Array


class TokenSpans(NamedTuple):
    """The frames each label token occupies on an alignment.

    Attributes:
        tokens: ``[B, M]`` int32 class of each token, ``-1`` for unused slots.
        starts: ``[B, M]`` int32 first frame of each token, ``-1`` for unused slots.
        ends: ``[B, M]`` int32 one past the last frame of each token (exclusive,
            so ``ends - starts`` is the token's duration), ``-1`` for unused slots.
        scores: ``[B, M]`` mean log probability of the token over its frames,
            ``-inf`` for unused slots.
    """

    tokens: Array
    starts: Array
    ends: Array
    scores: Array


def viterbi_align(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int | None = 0,
) -> Alignment:
    r"""Finds the most likely path through the labels' segmentation graph.

    This is the lecture's maximum-likelihood segmentation: among all paths
    :math:`\pi` through the graph that spell the labels, the one maximising
    :math:`\prod_t y_{\pi_t}[t]`, found by the Viterbi algorithm (a max-product
    ``lax.scan`` over the frames, in log space, with back-pointers, then a
    backtracking scan). Two graphs are available:

    * ``blank_id`` an int: the CTC graph over the blank-extended labels
      :math:`\epsilon, l_1, \epsilon, \dots, l_N, \epsilon` (see
      :func:`seqctc.extend_with_blanks`). A path starts in state 0 or 1, ends in
      state :math:`S_b - 1` or :math:`S_b - 2`, and steps to the same state, the
      next one, or skips a blank between two different labels.
    * ``blank_id=None``: the lecture's blank-free segmentation graph. Each label
      occupies at least one consecutive frame, in order; a path starts at label
      0, ends at label :math:`N_b - 1`, and steps to the same or the next label.
      Repeated adjacent labels are separate segments.

    With :math:`\delta_t(s)` the best log probability of a path prefix that is in
    state :math:`s` at frame :math:`t` and :math:`P(s)` the allowed predecessors,

    .. math::

        \delta_t(s) = \log y_{c(s)}[t] + \max_{s' \in P(s)} \delta_{t-1}(s'),
        \qquad \psi_t(s) = \operatorname*{argmax}_{s' \in P(s)} \delta_{t-1}(s').

    Ties are broken deterministically towards the larger state index, both in
    :math:`\psi` and in the choice of the final state (the trailing blank wins a
    tie against the last label). Among equally likely paths this returns the one
    that advances earliest: with uniform logits on the blank-free graph every
    label gets one frame and the last label gets the rest.

    ``log_prob`` is the sum of the path's per-frame log probabilities, so its
    gradient is the framewise cross-entropy gradient on the aligned labels (the
    path itself is piecewise constant in the logits).

    Args:
        logits: ``[B, T, K]`` unnormalised logits (``log_softmax`` is applied),
            any float dtype; half precision is computed in float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class (a static Python int) for the CTC graph, or
            ``None`` for the blank-free segmentation graph.

    Returns:
        An :class:`Alignment` with ``frame_labels`` ``[B, T]``, ``states``
        ``[B, T]`` and ``log_prob`` ``[B]``. A row is infeasible when the graph
        has no path: :math:`T_b < N_b + R_b` for the CTC graph (:math:`R_b`
        adjacent repeats), :math:`T_b < N_b` or :math:`N_b = 0 < T_b` for the
        blank-free one; it gets ``log_prob = -inf`` and ``-1`` everywhere. A row
        with a label outside :math:`[0, K)` (or equal to the blank) or NaN logits
        in a valid frame gets ``log_prob = NaN``.

    Raises:
        ValueError: if a rank or shape is wrong, ``labels`` is not integer, or
            ``blank_id`` is not ``None`` nor in ``[0, K)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.log(jnp.array([[[0.6, 0.3, 0.1], [0.7, 0.2, 0.1],
        ...                              [0.2, 0.2, 0.6]]]))
        >>> al = seqctc.viterbi_align(logits, jnp.zeros((1, 3)), jnp.array([[1, 2]]),
        ...                           jnp.zeros((1, 2)))
        >>> al.frame_labels, al.states
        (Array([[1, 0, 2]], dtype=int32), Array([[1, 2, 3]], dtype=int32))
        >>> round(float(jnp.exp(al.log_prob[0])), 3)  # 0.3 * 0.7 * 0.6
        0.126
        >>> seqctc.viterbi_align(logits, jnp.zeros((1, 3)), jnp.array([[1, 2]]),
        ...                      jnp.zeros((1, 2)), blank_id=None).frame_labels
        Array([[1, 1, 2]], dtype=int32)

    References:
        Viterbi, `Error bounds for convolutional codes and an asymptotically
        optimum decoding algorithm
        <https://doi.org/10.1109/TIT.1967.1054010>`_, IEEE Trans. Inf. Theory 1967.

        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`token_spans`, :func:`seqctc.viterbi_loss`, :func:`seqctc.ctc_loss`.
    """
    logits, logit_paddings, labels, label_paddings = check_sequence_args(
        logits, logit_paddings, labels, label_paddings, blank_id
    )
    batch, num_frames, num_classes = logits.shape
    frames = prepare_frames(logits, logit_paddings)
    graph = label_graph(labels, label_paddings, num_classes, blank_id)
    frame_valid, log_probs = frames.valid, frames.log_probs  # [B, T], [B, T, K]
    num_labels, num_states = graph.num_labels, graph.num_states
    feasible = frames.lengths >= graph.min_frames(blank_id is not None)
    if blank_id is None:
        # The blank-free graph needs a frame per label, and an empty label
        # sequence only fits an empty row.
        feasible = feasible & ((num_labels > 0) | (frames.lengths == 0))
    # Rows whose log probability is NaN: bad labels, or NaN (or +inf) logits in
    # a counted frame (which make the whole frame NaN).
    nan_frames = frame_valid & jnp.isnan(log_probs[:, :, 0])  # [B, T]
    bad_rows = graph.bad_labels | jnp.any(nan_frames, axis=1)
    classes, skip = graph.states, graph.skip  # [B, S]
    num_all_states = classes.shape[1]
    if num_frames == 0 or num_all_states == 0 or batch == 0:
        # Static edge cases: no frames, or no labels on the blank-free graph.
        # Only rows without frames and without labels are feasible (log 1).
        none = jnp.full((batch, num_frames), -1, jnp.int32)
        log_prob = jnp.where(feasible, jnp.zeros((batch,), log_probs.dtype), -jnp.inf)
        return Alignment(none, none, jnp.where(bad_rows, jnp.nan, log_prob))
    positions = jnp.arange(num_all_states, dtype=jnp.int32)
    state_valid = positions[None, :] < num_states[:, None]  # [B, S]
    first_states = 1 if blank_id is None else 2
    initial = state_valid & (positions < first_states)[None, :]  # [B, S]
    # The first counted frame of each row enters the initial states; the
    # following counted frames run the recursion, skipped frames keep delta.
    steps = jnp.arange(num_frames, dtype=jnp.int32)
    first = jnp.min(jnp.where(frame_valid, steps, num_frames), axis=1)  # [B]

    # Flat indices into a frame's [B, K] log probabilities and a [B, S] back-pointer
    # row: a 1-D in-bounds gather is several times faster on CPU than
    # take_along_axis inside the scan. ``classes`` is clipped to [0, K).
    rows = jnp.arange(batch, dtype=jnp.int32)[:, None]  # [B, 1]
    emit_index = rows * num_classes + classes  # [B, S]
    dtype = log_probs.dtype

    def emissions(log_probs_t):  # [B, K] -> [B, S]
        emit = log_probs_t.reshape(-1).at[emit_index].get(mode="promise_in_bounds")
        return jnp.where(state_valid, jnp.maximum(emit, _EMIT_FLOOR), NEG_INF)

    def forward(delta, inputs):
        # delta: [B, S] best log probability of a prefix ending in each state.
        t, log_probs_t, valid_t = inputs  # [], [B, K], [B]
        emit = emissions(log_probs_t)
        fill = jnp.full((batch, 2), NEG_INF, dtype)
        from_prev = jnp.concatenate([fill[:, :1], delta], axis=1)[:, :-1]
        # Strict comparisons: on a tie the larger predecessor (stay, then the
        # previous state) is kept.
        best = jnp.maximum(delta, from_prev)
        back = jnp.where(from_prev > delta, 1, 0)  # [B, S]
        if blank_id is not None:  # static: the blank-free graph has no skips
            from_skip = jnp.concatenate([fill, delta], axis=1)[:, :-2]
            from_skip = jnp.where(skip, from_skip, NEG_INF)
            back = jnp.where(from_skip > best, 2, back)
            best = jnp.maximum(best, from_skip)
        back = back.astype(jnp.int8)
        new = jnp.where(
            (t == first)[:, None], jnp.where(initial, emit, NEG_INF), emit + best
        )
        # Skipped frames keep delta; their back-pointers are ignored when
        # backtracking (masking them here costs more than the whole recursion).
        return jnp.where(valid_t[:, None], new, delta), back

    log_probs_tm = jnp.swapaxes(lax.stop_gradient(log_probs), 0, 1)  # [T, B, K]
    valid_tm = jnp.swapaxes(frame_valid, 0, 1)  # [T, B]
    delta0 = jnp.full((batch, num_all_states), NEG_INF, dtype)
    inputs = (steps, log_probs_tm, valid_tm)
    chunk = _chunk_frames(num_frames, batch * num_all_states)
    if chunk is None:
        delta, backs = lax.scan(forward, delta0, inputs)
        # delta: [B, S]; backs: [T, B, S], offsets from frame t to frame t - 1.
    else:
        # Bounded memory: keep delta at the start of each chunk of frames,
        # recompute a chunk's back-pointers when backtracking through it.
        num_chunks = -(-num_frames // chunk)
        pad = num_chunks * chunk - num_frames

        def chunked(a):  # [T, ...] -> [C#, C, ...]; padded frames are skipped
            widths = [(0, pad)] + [(0, 0)] * (a.ndim - 1)
            fill = num_frames if a is steps else 0
            a = jnp.pad(a, widths, constant_values=fill)
            return a.reshape((num_chunks, chunk) + a.shape[1:])

        inputs = tuple(chunked(a) for a in inputs)

        def forward_chunk(delta, inputs_c):
            end, _ = lax.scan(lambda d, x: (forward(d, x)[0], None), delta, inputs_c)
            return end, delta

        delta, checkpoints = lax.scan(forward_chunk, delta0, inputs)

    last = jnp.maximum(num_states - 1, 0)  # [B]
    if blank_id is None:
        end = last
    else:
        end_blank = jnp.take_along_axis(delta, last[:, None], axis=1)[:, 0]
        end_label = jnp.take_along_axis(
            delta, jnp.maximum(last - 1, 0)[:, None], axis=1
        )[:, 0]
        end_label = jnp.where(num_labels > 0, end_label, NEG_INF)
        end = jnp.where(end_blank >= end_label, last, last - 1)

    def backward(state, inputs):
        # state: [B] state at frame t; back_t: [B, S] offsets to frame t - 1.
        t, back_t, valid_t = inputs  # [], [B, S], [B]
        flat = rows[:, 0] * num_all_states + state  # [B], state in [0, S)
        step = back_t.reshape(-1).at[flat].get(mode="promise_in_bounds")
        step = jnp.where(valid_t & (t > first), step.astype(jnp.int32), 0)
        return jnp.maximum(state - step, 0), state

    if chunk is None:
        _, path = lax.scan(backward, end, (steps, backs, valid_tm), reverse=True)
    else:

        def backward_chunk(state, xs):
            checkpoint, (steps_c, log_probs_c, valid_c) = xs
            _, backs_c = lax.scan(forward, checkpoint, (steps_c, log_probs_c, valid_c))
            return lax.scan(backward, state, (steps_c, backs_c, valid_c), reverse=True)

        _, path = lax.scan(backward_chunk, end, (checkpoints, inputs), reverse=True)
        path = path.reshape(-1, batch)[:num_frames]  # [T, B]
    path = jnp.swapaxes(path, 0, 1)  # [B, T]
    on_path = frame_valid & feasible[:, None]  # [B, T]
    states = jnp.where(on_path, path, -1)
    frame_labels = jnp.where(
        on_path, jnp.take_along_axis(classes, jnp.maximum(path, 0), axis=1), -1
    )
    path_log_probs = jnp.take_along_axis(
        log_probs, jnp.maximum(frame_labels, 0)[:, :, None], axis=2
    )[:, :, 0]  # [B, T]
    log_prob = jnp.sum(jnp.where(on_path, path_log_probs, 0), axis=1)
    log_prob = jnp.where(feasible, log_prob, -jnp.inf)
    log_prob = jnp.where(bad_rows, jnp.nan, log_prob)
    return Alignment(
        frame_labels=frame_labels.astype(jnp.int32),
        states=states.astype(jnp.int32),
        log_prob=log_prob,
    )


def token_spans(
    alignment: Alignment,
    logits: ArrayLike,
    *,
    max_tokens: int | None = None,
    blank_id: int | None = 0,
) -> TokenSpans:
    r"""Reads off the frames each label token occupies on an alignment.

    Token :math:`n` of a row is the label state visited on the path: state
    :math:`2n + 1` of the CTC graph (blanks belong to no token), or label
    position :math:`n` of the blank-free graph. Each token occupies one
    contiguous run of frames ``starts[b, n] ≤ t < ends[b, n]`` (end exclusive, as
    in torchaudio's ``TokenSpan``), and its score is the mean per-frame log
    probability of its class over that run:

    .. math::

        \mathrm{score}_n = \frac{1}{e_n - s_n} \sum_{t = s_n}^{e_n - 1}
            \log y_{l_n}[t].

    Args:
        alignment: an :class:`Alignment` from :func:`viterbi_align` (its
            ``states`` and ``frame_labels``, ``[B, T]``, ``-1`` on padded frames).
        logits: ``[B, T, K]`` the unnormalised logits the alignment was made
            from (``log_softmax`` is applied); frames where the alignment is
            ``-1`` are never read.
        max_tokens: the number of token slots ``M`` (a static Python int);
            ``None`` means ``T``, enough for any alignment. Pass the label width
            ``N`` to get ``[B, N]`` outputs; tokens beyond ``M`` are dropped.
        blank_id: the graph the alignment was made on: an int for the CTC graph,
            ``None`` for the blank-free one (only its being ``None`` matters).

    Returns:
        A :class:`TokenSpans` with ``tokens``, ``starts``, ``ends`` and ``scores``
        of shape ``[B, M]``, padded with ``-1`` (``-inf`` for ``scores``).
        Infeasible rows have no tokens.

    Raises:
        ValueError: if a rank or shape is wrong or ``max_tokens`` is not a
            positive int.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.log(jnp.array([[[0.1, 0.8, 0.1], [0.2, 0.7, 0.1],
        ...                              [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]]))
        >>> al = seqctc.viterbi_align(logits, jnp.zeros((1, 4)), jnp.array([[1, 2]]),
        ...                           jnp.zeros((1, 2)))
        >>> al.frame_labels
        Array([[1, 1, 0, 2]], dtype=int32)
        >>> spans = seqctc.token_spans(al, logits, max_tokens=2)
        >>> spans.tokens
        Array([[1, 2]], dtype=int32)
        >>> spans.starts, spans.ends
        (Array([[0, 3]], dtype=int32), Array([[2, 4]], dtype=int32))

    See also:
        :func:`viterbi_align`.
    """
    states = jnp.asarray(alignment.states)
    frame_labels = jnp.asarray(alignment.frame_labels)
    logits = jnp.asarray(logits)
    check_rank(states, 2, "alignment.states")
    check_rank(frame_labels, 2, "alignment.frame_labels")
    check_rank(logits, 3, "logits")
    check_same_dim(states, 0, "alignment.states", logits, 0, "logits")
    check_same_dim(states, 1, "alignment.states", logits, 1, "logits")
    check_same_dim(
        states, 1, "alignment.states", frame_labels, 1, "alignment.frame_labels"
    )
    batch, num_frames, _ = logits.shape
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or max_tokens < 1
    ):
        raise ValueError(f"`max_tokens` must be a positive int, got {max_tokens!r}.")
    if max_tokens is None:
        max_tokens = num_frames  # 0 slots when there are no frames

    on_path = states >= 0  # [B, T]
    if blank_id is None:
        in_token = on_path
        token = states
    else:
        in_token = on_path & (states % 2 == 1)
        token = (states - 1) // 2
    # Frames outside any token scatter to slot M, which is dropped.
    token = jnp.where(in_token & (token < max_tokens), token, max_tokens)  # [B, T]

    log_probs = masked_log_softmax(logits, on_path)  # [B, T, K]
    dtype = log_probs.dtype
    frame_scores = jnp.take_along_axis(
        log_probs, jnp.maximum(frame_labels, 0)[:, :, None], axis=2
    )[:, :, 0]  # [B, T]

    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, num_frames))
    frames = jnp.broadcast_to(
        jnp.arange(num_frames, dtype=jnp.int32)[None, :], (batch, num_frames)
    )
    big = jnp.int32(num_frames + 1)
    starts = jnp.full((batch, max_tokens), big).at[rows, token].min(frames, mode="drop")
    ends = (
        jnp.full((batch, max_tokens), -1, jnp.int32)
        .at[rows, token]
        .max(frames + 1, mode="drop")
    )
    tokens = (
        jnp.full((batch, max_tokens), -1, jnp.int32)
        .at[rows, token]
        .max(frame_labels.astype(jnp.int32), mode="drop")
    )
    totals = (
        jnp.zeros((batch, max_tokens), dtype)
        .at[rows, token]
        .add(jnp.where(in_token, frame_scores, 0), mode="drop")
    )
    used = ends >= 0
    durations = jnp.maximum(ends - starts, 1).astype(dtype)
    return TokenSpans(
        tokens=tokens,
        starts=jnp.where(used, starts, -1),
        ends=jnp.where(used, ends, -1),
        scores=jnp.where(used, totals / durations, -jnp.inf),
    )
