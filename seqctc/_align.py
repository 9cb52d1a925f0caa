"""Viterbi alignment: the most likely path consistent with a label sequence."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seqctc._graph import compact_valid, label_graph
from seqctc._inputs import masked_log_softmax, positions_valid, prepare_frames
from seqctc._types import NEG_INF, Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim, check_sequence_args

# Emissions are floored here, far above ``NEG_INF``: a path through a log(0)
# emission (a ``-inf`` logit) then still beats every structurally unreachable
# state (which sits near ``NEG_INF``), so backtracking always follows a valid path.
_EMIT_FLOOR = -1e20
# Best scores below this are unreachable states: a real path scores at least
# ``_EMIT_FLOOR`` per frame, an unreachable state at most ``NEG_INF``.
_UNREACHABLE = NEG_INF / 2
# Back-pointer tables (one int8 per frame and state) above this many bytes give
# way to checkpoints (docs/concepts/alignment.md, "Long recordings"): delta kept
# every ~sqrt(T) frames, each chunk's pointers recomputed on a window of states
# around the path while backtracking.
_FULL_TABLE_BYTES = 256 * 2**20


def _chunk_frames(num_frames: int, width: int) -> int | None:
    """Frames per checkpointed chunk, or None to keep every back-pointer.

    ``width`` is the number of back-pointers per frame (``B * S``).
    """
    if num_frames * width <= _FULL_TABLE_BYTES:
        return None
    return max(1, math.isqrt(num_frames - 1) + 1)


def _shift(x: Array, k: int) -> Array:
    """``x`` moved ``k`` states right along its last axis, ``NEG_INF`` shifted in.

    One ``pad`` with a negative high edge: XLA fuses it into the step (a
    ``concatenate`` becomes a kernel of its own, a second thread synchronisation
    per frame on CPU).
    """
    widths = [(0, 0, 0)] * (x.ndim - 1) + [(k, -k, 0)]
    return lax.pad(x, jnp.array(NEG_INF, x.dtype), widths)


def _check_star(star_id, star_penalty, num_classes: int) -> float:
    """Raises ``ValueError`` on a bad ``star_id`` / ``star_penalty``; the penalty."""
    if star_id is not None:
        if isinstance(star_id, bool) or not isinstance(star_id, (int, np.integer)):
            raise ValueError(
                f"`star_id` must be a Python int or None, got {star_id!r}."
            )
        if 0 <= star_id < num_classes:
            raise ValueError(
                f"`star_id` must not be a class (it matches every class): it "
                f"must lie outside [0, {num_classes}), e.g. {num_classes} or -2, "
                f"got {star_id}."
            )
        if not -(2**31) <= star_id < 2**31:
            raise ValueError(f"`star_id` must fit in int32, got {star_id}.")
    try:
        penalty = float(star_penalty)
    except (TypeError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            f"`star_penalty` must be a Python float, got {star_penalty!r}."
        ) from None
    if not (math.isfinite(penalty) and penalty >= 0):
        raise ValueError(
            f"`star_penalty` must be finite and >= 0, got {star_penalty!r}."
        )
    return penalty


class Alignment(NamedTuple):
    """The Viterbi path of each sequence.

    Attributes:
        frame_labels: ``[B, T]`` int32 class emitted at each frame on the path
            (``star_id`` on frames a wildcard covers), ``-1`` on padded frames
            and on infeasible rows.
        states: ``[B, T]`` int32 state occupied at each frame: the blank-extended
            state index ``0 … 2N_b`` for the CTC graph, the label position
            ``0 … N_b − 1`` for the blank-free graph; ``-1`` on padded frames and
            on infeasible rows.
        log_prob: ``[B]`` log probability of the path (less the star penalties),
            ``-inf`` when no path exists.
    """

    frame_labels: Array
    states: Array
    log_prob: Array


class TokenSpans(NamedTuple):
    """The frames each label token occupies on an alignment.

    Slot ``n`` holds label ``n`` of the row (a wildcard left empty keeps its
    slot unused).

    Attributes:
        tokens: ``[B, M]`` int32 class of each token (``star_id`` for a
            wildcard), ``-1`` for unused slots.
        starts: ``[B, M]`` int32 first frame of each token, ``-1`` for unused slots.
        ends: ``[B, M]`` int32 one past the last frame of each token (exclusive,
            so ``ends - starts`` is the token's duration), ``-1`` for unused slots.
        scores: ``[B, M]`` mean log probability of the token over its frames,
            ``-inf`` for unused slots.
        confidence: ``[B, M]`` mean frame posterior of the token over its frames
            (torchaudio's ``TokenSpan.score`` on probabilities), in ``[0, 1]``;
            ``0`` for unused slots.
        min_confidence: ``[B, M]`` the smallest frame posterior of the token
            over its frames; ``0`` for unused slots.
    """

    tokens: Array
    starts: Array
    ends: Array
    scores: Array
    confidence: Array
    min_confidence: Array


class _Graph(NamedTuple):
    """What the recursion reads about each row's states (all ``[B, S]``)."""

    classes: Array  # int32 class of each state, clipped into [0, K)
    enabled: Array  # bool, a state the path may visit
    initial: Array  # bool, may hold the first counted frame
    final: Array  # bool, may hold the last counted frame
    skip: Array  # bool, may be entered from s - 2
    skip4: Array | None  # bool, may be entered from s - 4 (only with stars)
    star: Array | None  # bool, a wildcard state (only with stars)


def _after_count(values: Array) -> Array:
    """``[B, N]`` how many of ``values`` (``[B, N]`` bool) lie after each position."""
    values = values.astype(jnp.int32)
    total = jnp.sum(values, axis=1, keepdims=True, dtype=jnp.int32)
    return total - jnp.cumsum(values, axis=1, dtype=jnp.int32)


def _states_graph(labels, label_paddings, num_classes, blank_id, star_id):
    """The :class:`_Graph`, ``[B]`` number of states, labels and bad-label flags.

    Without ``star_id`` this is :func:`seqctc._graph.label_graph` read as
    masks. With it, the wildcard positions are found on the compacted labels
    and the graph is rewired around them (see :func:`viterbi_align`).
    """
    valid_in = positions_valid(label_paddings)
    if star_id is None:
        graph = label_graph(labels, label_paddings, num_classes, blank_id)
        is_star = jnp.zeros(graph.labels.shape, bool)
        bad_labels = graph.bad_labels
    else:
        # Stars become a harmless class for label_graph; their flags and the
        # bad-label check are taken on the compacted labels here.
        stand_in = 0 if blank_id is None else (blank_id + 1) % num_classes
        labels = labels.astype(jnp.int32)
        graph = label_graph(
            jnp.where(labels == star_id, stand_in, labels),
            label_paddings,
            num_classes,
            blank_id,
        )
        raw, _ = compact_valid(labels, valid_in, 0)
        is_star, _ = compact_valid(labels == star_id, valid_in, False)
        bad = (raw < 0) | (raw >= num_classes)
        if blank_id is not None:
            bad = bad | (raw == blank_id)
        max_labels = labels.shape[1]
        position = jnp.arange(max_labels, dtype=jnp.int32)[None, :]
        valid = position < graph.num_labels[:, None]
        bad_labels = jnp.any(valid & ~is_star & bad, axis=1)
    num_labels, num_states = graph.num_labels, graph.num_states
    batch, max_labels = graph.labels.shape
    position = jnp.arange(max_labels, dtype=jnp.int32)[None, :]
    valid = position < num_labels[:, None]  # [B, N]
    real = valid & ~is_star  # [B, N]
    # A label may start (end) the path when only stars come before (after) it.
    before = jnp.cumsum(real, axis=1, dtype=jnp.int32) - real.astype(jnp.int32)
    starts_path = valid & (before == 0)  # [B, N]
    ends_path = valid & (_after_count(real) == 0)  # [B, N]
    no_star = jnp.zeros((batch, 1), bool)
    if blank_id is None:
        skip = graph.skip
        skip4 = None
        if star_id is not None:
            # Enter n from n - 2 over an empty star at n - 1.
            prev_star = jnp.concatenate([no_star, is_star], axis=1)[:, :max_labels]
            skip = valid & (position > 1) & prev_star
        enabled = position < num_states[:, None]
        initial, final = starts_path, ends_path
        star = is_star if star_id is not None else None
        return (
            _Graph(graph.states, enabled, initial, final, skip, skip4, star),
            num_states,
            graph,
            bad_labels,
            real,
        )
    states_pos = jnp.arange(2 * max_labels + 1, dtype=jnp.int32)[None, :]
    in_graph = states_pos < num_states[:, None]  # [B, S]
    # Blank 2n lies between labels n - 1 and n; a star replaces the blanks on
    # both of its sides (it emits blank itself).
    star_before = jnp.concatenate([no_star, is_star], axis=1)  # [B, N + 1]
    star_after = jnp.concatenate([is_star, no_star], axis=1)  # [B, N + 1]
    blank_on = ~(star_before | star_after)  # [B, N + 1]
    label_on = jnp.ones((batch, max_labels), bool)

    def interleave(blank_part, label_part):  # [B, N + 1], [B, N] -> [B, 2N + 1]
        pairs = jnp.stack([blank_part[:, :-1], label_part], axis=2)
        pairs = pairs.reshape(batch, 2 * max_labels)
        return jnp.concatenate([pairs, blank_part[:, -1:]], axis=1)

    enabled = in_graph & interleave(blank_on, label_on)
    last_blank = states_pos == 2 * num_labels[:, None]  # [B, S]
    first_blank = states_pos == 0
    initial = interleave(jnp.zeros((batch, max_labels + 1), bool), starts_path)
    initial = enabled & (initial | first_blank)
    final = interleave(jnp.zeros((batch, max_labels + 1), bool), ends_path)
    final = enabled & (final | last_blank)
    star = skip4 = None
    skip = graph.skip
    if star_id is not None:
        # Into a star, out of a star, or between two stars: always a skip
        # (the graph's rule forbids it only between equal labels).
        prev_star = jnp.concatenate([no_star, is_star], axis=1)[:, :max_labels]
        label_skip = valid & (position > 0) & (prev_star | is_star)
        skip = graph.skip | interleave(
            jnp.zeros((batch, max_labels + 1), bool), label_skip
        )
        # Over an empty star at n - 1, from label n - 2 to label n (unless
        # two equal labels would touch).
        prev2_star = jnp.concatenate([no_star, no_star, is_star], axis=1)
        prev2_star = prev2_star[:, :max_labels]
        prev2 = jnp.concatenate(
            [jnp.full((batch, 2), -1, jnp.int32), graph.labels], axis=1
        )[:, :max_labels]
        label_skip4 = (
            valid
            & (position > 1)
            & prev_star
            & ((graph.labels != prev2) | is_star | prev2_star)
        )
        skip4 = interleave(jnp.zeros((batch, max_labels + 1), bool), label_skip4)
        star = interleave(jnp.zeros((batch, max_labels + 1), bool), is_star)
    graph_out = _Graph(graph.states, enabled, initial, final, skip, skip4, star)
    return graph_out, num_states, graph, bad_labels, real


def viterbi_align(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int | None = 0,
    star_id: int | None = None,
    star_penalty: float = 1.0,
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

    **Wildcards (partial transcripts).** With ``star_id`` set, a label equal
    to ``star_id`` is a wildcard :math:`\star` that may cover any stretch of
    frames at its place in the transcript (untranscribed speech, a skipped
    passage, noise), or none. Its per-frame emission matches every class, less
    a penalty :math:`\lambda` = ``star_penalty`` per frame for anything but
    silence:

    .. math::

        \log y_\star[t] = \max\bigl(\log y_\epsilon[t],\;
            \max_k \log y_k[t] - \lambda\bigr)
        \quad\text{(CTC graph)}, \qquad
        \log y_\star[t] = \max_k \log y_k[t] - \lambda \quad\text{(blank-free)}.

    So a frame goes to the wildcard rather than to the transcript when its best
    class beats what the transcript allows there by more than :math:`\lambda`
    nats. On the CTC graph a star takes the place of the blanks on both of its
    sides (it covers the whole gap between its neighbours, silence included),
    and the path may skip it: it then goes straight from the label before to
    the one after (unless they are equal, which need a frame between them, as
    without a star), and a star at either end may be empty. On the blank-free
    graph the path may likewise step over a star. Several stars in a row act
    as one, except that between two labels they cover at least one frame.
    With a large :math:`\lambda` a star on the CTC graph is just the blank it
    replaced. ``log_prob`` is then the score maximised: the path's log
    probability (each wildcard frame counting :math:`\log y_\star[t]`) less
    :math:`\lambda` per penalised frame; its gradient is still the framewise
    cross-entropy on the classes the path emits.

    **Memory.** Backtracking needs one int8 back-pointer per frame and state.
    Above 256 MiB of them (long recordings) the function switches by itself to
    checkpoints: :math:`\delta` kept every :math:`C \approx \sqrt{T}` frames,
    and while backtracking the pointers of several chunks recomputed at once
    from their checkpoints (at most 256 MiB of them). Same path and score,
    :math:`O(\sqrt{T}\, B S)` memory, one more forward pass, batched.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (``log_softmax`` is applied),
            any float dtype; half precision is computed in float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded; ``star_id`` marks a
            wildcard.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class (a static Python int) for the CTC graph, or
            ``None`` for the blank-free segmentation graph.
        star_id: the label value that marks a wildcard (a static Python int
            outside ``[0, K)``, e.g. ``K``), or ``None`` for no wildcards.
        star_penalty: :math:`\lambda \ge 0`, the log-probability price of each
            frame a wildcard covers with a non-blank class (a static Python
            float; only read with ``star_id``).

    Returns:
        An :class:`Alignment` with ``frame_labels`` ``[B, T]``, ``states``
        ``[B, T]`` and ``log_prob`` ``[B]``. A row is infeasible when the graph
        has no path: :math:`T_b < N_b + R_b` for the CTC graph (:math:`R_b`
        adjacent repeats), :math:`T_b < N_b` or :math:`N_b = 0 < T_b` for the
        blank-free one (wildcards count as labels that may be empty); it gets
        ``log_prob = -inf`` and ``-1`` everywhere. A row with a label outside
        :math:`[0, K)` (or equal to the blank) or NaN logits in a valid frame
        gets ``log_prob = NaN``. Frames a wildcard covers have
        ``frame_labels = star_id``.

    Raises:
        ValueError: if a rank or shape is wrong, ``labels`` is not integer,
            ``blank_id`` is not ``None`` nor in ``[0, K)``, ``star_id`` is a
            class in ``[0, K)`` or not an int, or ``star_penalty`` is negative
            or not finite.

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

        A wildcard (``3``, no class) before label 2 absorbs the first frames:

        >>> seqctc.viterbi_align(logits, jnp.zeros((1, 3)), jnp.array([[3, 2]]),
        ...                      jnp.zeros((1, 2)), star_id=3).frame_labels
        Array([[3, 3, 2]], dtype=int32)

    References:
        Viterbi, `Error bounds for convolutional codes and an asymptotically
        optimum decoding algorithm
        <https://doi.org/10.1109/TIT.1967.1054010>`_, IEEE Trans. Inf. Theory 1967.

        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

        Pratap et al., `Star Temporal Classification: Sequence Classification
        with Partially Labeled Data <https://arxiv.org/abs/2201.12208>`_,
        NeurIPS 2022 (the wildcard token with a per-frame penalty).

    See also:
        :func:`token_spans`, :func:`seqctc.viterbi_loss`, :func:`seqctc.ctc_loss`.
    """
    logits, logit_paddings, labels, label_paddings = check_sequence_args(
        logits, logit_paddings, labels, label_paddings, blank_id
    )
    batch, num_frames, num_classes = logits.shape
    penalty = _check_star(star_id, star_penalty, num_classes)
    frames = prepare_frames(logits, logit_paddings)
    graph, _, lgraph, bad_labels, real = _states_graph(
        labels, label_paddings, num_classes, blank_id, star_id
    )
    frame_valid, log_probs = frames.valid, frames.log_probs  # [B, T], [B, T, K]
    num_labels = lgraph.num_labels
    # [B] labels that are not wildcards
    num_real = jnp.sum(real, axis=1, dtype=jnp.int32)
    feasible = frames.lengths >= lgraph.min_frames(blank_id is not None)
    if blank_id is None:
        # The blank-free graph needs a frame per label, and an empty label
        # sequence only fits an empty row.
        feasible = feasible & ((num_labels > 0) | (frames.lengths == 0))
    # Rows whose log probability is NaN: bad labels, or NaN (or +inf) logits in
    # a counted frame (which make the whole frame NaN).
    nan_frames = frame_valid & jnp.isnan(log_probs[:, :, 0])  # [B, T]
    bad_rows = bad_labels | jnp.any(nan_frames, axis=1)
    classes = graph.classes  # [B, S]
    num_all_states = classes.shape[1]
    dtype = log_probs.dtype
    if star_id is not None:
        # [B, T] what a wildcard frame scores (log_softmax is <= 0 everywhere).
        best_class = jnp.max(log_probs, axis=2)
        star_emit = best_class - jnp.asarray(penalty, dtype)
        if blank_id is not None:
            star_emit = jnp.maximum(log_probs[:, :, blank_id], star_emit)
    if num_frames == 0 or num_all_states == 0 or batch == 0:
        # Static edge cases: no frames, or no labels on the blank-free graph.
        # Only rows without frames and without labels are feasible (log 1).
        if star_id is not None:
            feasible = (frames.lengths == 0) & (num_real == 0)
        none = jnp.full((batch, num_frames), -1, jnp.int32)
        log_prob = jnp.where(feasible, jnp.zeros((batch,), dtype), -jnp.inf)
        return Alignment(none, none, jnp.where(bad_rows, jnp.nan, log_prob))
    # The first counted frame of each row enters the initial states; the
    # following counted frames run the recursion, skipped frames keep delta.
    steps = jnp.arange(num_frames, dtype=jnp.int32)
    first = jnp.min(jnp.where(frame_valid, steps, num_frames), axis=1)  # [B]

    rows = jnp.arange(batch, dtype=jnp.int32)[:, None]  # [B, 1]
    # The largest step a path takes in one frame (a skip over an empty star).
    max_step = (1 if blank_id is None else 2) * (1 if star_id is None else 2)

    def make_forward(g):
        """The max-product step over the states of ``g`` (all of them, or a window)."""
        # Flat indices into a frame's [B, K] log probabilities: a 1-D in-bounds
        # gather is several times faster on CPU than take_along_axis in the scan.
        emit_index = rows * num_classes + g.classes  # [B, W]

        def emissions(log_probs_t, star_t):  # [B, K], [B] -> [B, W]
            flat = log_probs_t.reshape(-1)
            emit = flat.at[emit_index].get(mode="promise_in_bounds")
            if g.star is not None:
                emit = jnp.where(g.star, star_t[:, None], emit)
            return jnp.where(g.enabled, jnp.maximum(emit, _EMIT_FLOOR), NEG_INF)

        def forward(delta, inputs):
            # delta: [B, W] best log probability of a prefix ending in each state.
            t, log_probs_t, valid_t, star_t = inputs  # [], [B, K], [B], [B]
            emit = emissions(log_probs_t, star_t)
            from_prev = _shift(delta, 1)
            # Strict comparisons: on a tie the larger predecessor (stay, then
            # the previous state, then the skips) is kept.
            best = jnp.maximum(delta, from_prev)
            back = jnp.where(from_prev > delta, 1, 0)  # [B, W]
            if max_step > 1:  # static: the blank-free graph skips only stars
                from_skip = jnp.where(g.skip, _shift(delta, 2), NEG_INF)
                back = jnp.where(from_skip > best, 2, back)
                best = jnp.maximum(best, from_skip)
            if g.skip4 is not None:
                from_skip4 = jnp.where(g.skip4, _shift(delta, 4), NEG_INF)
                back = jnp.where(from_skip4 > best, 4, back)
                best = jnp.maximum(best, from_skip4)
            back = back.astype(jnp.int8)
            new = jnp.where(
                (t == first)[:, None],
                jnp.where(g.initial, emit, NEG_INF),
                emit + best,
            )
            # Skipped frames keep delta; their back-pointers are ignored when
            # backtracking (masking them here costs more than the recursion).
            return jnp.where(valid_t[:, None], new, delta), back

        return forward

    def backward(state, t, valid_t, back_of):
        # state: [B] state at frame t; back_of(state) its [B] offsets to t - 1.
        step = jnp.where(valid_t & (t > first), back_of(state).astype(jnp.int32), 0)
        return jnp.maximum(state - step, 0), state

    forward = make_forward(graph)
    log_probs_tm = jnp.swapaxes(lax.stop_gradient(log_probs), 0, 1)  # [T, B, K]
    valid_tm = jnp.swapaxes(frame_valid, 0, 1)  # [T, B]
    if star_id is None:
        star_tm = jnp.zeros((num_frames, batch), dtype)  # unread
    else:
        star_tm = jnp.swapaxes(lax.stop_gradient(star_emit), 0, 1)  # [T, B]
    delta0 = jnp.full((batch, num_all_states), NEG_INF, dtype)
    inputs = (steps, log_probs_tm, valid_tm, star_tm)
    chunk = _chunk_frames(num_frames, batch * num_all_states)
    if chunk is None:
        delta, backs = lax.scan(forward, delta0, inputs)
        # delta: [B, S]; backs: [T, B, S], offsets from frame t to frame t - 1.
    else:
        # Bounded memory: keep delta at the start of each chunk of frames.
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
        # checkpoints: [C#, B, S], delta before each chunk's first frame.
    last_delta = jnp.where(graph.final, delta, -jnp.inf)  # [B, S]
    # The best final state, ties to the larger index.
    end = num_all_states - 1 - jnp.argmax(last_delta[:, ::-1], axis=1)
    end = end.astype(jnp.int32)
    if star_id is not None:
        # Reachability decides feasibility: a real path scores >= _EMIT_FLOOR
        # per frame, an unreachable state <= NEG_INF.
        reached = jnp.max(last_delta, axis=1) > _UNREACHABLE
        feasible = jnp.where(frames.lengths == 0, num_real == 0, reached)

    if chunk is None:

        def backward_full(state, xs):
            t, back_t, valid_t = xs  # [], [B, S], [B]
            flat = rows[:, 0] * num_all_states + state  # [B], state in [0, S)
            return backward(
                state,
                t,
                valid_t,
                lambda s: back_t.reshape(-1).at[flat].get(mode="promise_in_bounds"),
            )

        _, path = lax.scan(backward_full, end, (steps, backs, valid_tm), reverse=True)
    else:
        # Within a chunk of C frames the path moves at most max_step * C states
        # down from where it leaves the chunk, and delta at a state depends
        # only on states at or below it. So the chunk's pointers along the
        # path are recomputed exactly (same values, same comparisons) on a
        # window of W = max_step * C + 1 states ending at that state, started
        # from the window of the checkpoint: O(C^2) per chunk instead of O(C S).
        window = min(max_step * chunk + 1, num_all_states)
        offsets = jnp.arange(window, dtype=jnp.int32)[None, :]  # [1, W]

        def backward_chunk(state, xs):
            checkpoint, inputs_c = xs  # [B, S], ([C], [C, B, K], [C, B], [C, B])
            low = jnp.clip(state - (window - 1), 0, num_all_states - window)  # [B]
            index = low[:, None] + offsets  # [B, W]

            def take(a):
                return None if a is None else jnp.take_along_axis(a, index, axis=1)

            forward_w = make_forward(_Graph(*(take(a) for a in graph)))
            _, backs_c = lax.scan(forward_w, take(checkpoint), inputs_c)  # [C, B, W]

            def back_step(state, xs):
                t, back_t, valid_t = xs  # [], [B, W], [B]
                inside = jnp.clip(state - low, 0, window - 1)
                return backward(
                    state,
                    t,
                    valid_t,
                    lambda s: jnp.take_along_axis(back_t, inside[:, None], axis=1)[
                        :, 0
                    ],
                )

            steps_c, _, valid_c, _ = inputs_c
            return lax.scan(back_step, state, (steps_c, backs_c, valid_c), reverse=True)

        _, path = lax.scan(backward_chunk, end, (checkpoints, inputs), reverse=True)
        path = path.reshape(-1, batch)[:num_frames]  # [T, B]
    path = jnp.swapaxes(path, 0, 1)  # [B, T]
    on_path = frame_valid & feasible[:, None]  # [B, T]
    states = jnp.where(on_path, path, -1)
    state_classes = jnp.take_along_axis(classes, jnp.maximum(path, 0), axis=1)
    path_log_probs = jnp.take_along_axis(log_probs, state_classes[:, :, None], axis=2)[
        :, :, 0
    ]  # [B, T]
    if star_id is not None:
        on_star = jnp.take_along_axis(graph.star, jnp.maximum(path, 0), axis=1)
        path_log_probs = jnp.where(on_star, star_emit, path_log_probs)
        state_classes = jnp.where(on_star, star_id, state_classes)
    frame_labels = jnp.where(on_path, state_classes, -1)
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
    star_id: int | None = None,
) -> TokenSpans:
    r"""Reads off the frames each label token occupies on an alignment.

    Token :math:`n` of a row is the label state visited on the path: state
    :math:`2n + 1` of the CTC graph (blanks belong to no token), or label
    position :math:`n` of the blank-free graph. Each token occupies one
    contiguous run of frames ``starts[b, n] ≤ t < ends[b, n]`` (end exclusive, as
    in torchaudio's ``TokenSpan``). Its score is the mean per-frame log
    probability of its class over that run, and its confidence the mean (and
    the smallest) frame posterior :math:`y_{l_n}[t]` of its class there (the
    network's softmax output, what torchaudio's ``TokenSpan.score`` holds once
    the aligner's scores are exponentiated): a low confidence points at a badly
    aligned or mispronounced region.

    .. math::

        \mathrm{score}_n = \frac{1}{e_n - s_n} \sum_{t = s_n}^{e_n - 1}
            \log y_{l_n}[t], \qquad
        \mathrm{confidence}_n = \frac{1}{e_n - s_n} \sum_{t = s_n}^{e_n - 1}
            y_{l_n}[t], \qquad
        \mathrm{min\_confidence}_n = \min_{s_n \le t < e_n} y_{l_n}[t].

    A wildcard token (``star_id``, see :func:`viterbi_align`) matches any
    class: its score and confidences use the best class of each frame,
    :math:`\max_k y_k[t]` (how sure the network was of whatever it heard there,
    penalty excluded). A wildcard left empty keeps its slot unused.

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
        star_id: the wildcard label the alignment was made with (a static
            Python int outside ``[0, K)``), or ``None``.

    Returns:
        A :class:`TokenSpans` with ``tokens``, ``starts``, ``ends``, ``scores``,
        ``confidence`` and ``min_confidence`` of shape ``[B, M]``, padded with
        ``-1`` (``-inf`` for ``scores``, ``0`` for the confidences).
        Infeasible rows have no tokens.

    Raises:
        ValueError: if a rank or shape is wrong, ``max_tokens`` is not a
            positive int, or ``star_id`` is not ``None`` nor an int outside
            ``[0, K)``.

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
        >>> [round(float(c), 2) for c in spans.confidence[0]]  # (0.8 + 0.7) / 2
        [0.75, 0.8]
        >>> [round(float(c), 2) for c in spans.min_confidence[0]]
        [0.7, 0.8]

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
    batch, num_frames, num_classes = logits.shape
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or max_tokens < 1
    ):
        raise ValueError(f"`max_tokens` must be a positive int, got {max_tokens!r}.")
    _check_star(star_id, 0.0, num_classes)
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
        log_probs, jnp.clip(frame_labels, 0, num_classes - 1)[:, :, None], axis=2
    )[:, :, 0]  # [B, T]
    if star_id is not None:
        frame_scores = jnp.where(
            frame_labels == star_id, jnp.max(log_probs, axis=2), frame_scores
        )
    frame_scores = jnp.where(in_token, frame_scores, 0)
    frame_probs = jnp.exp(frame_scores)

    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], (batch, num_frames))
    frames = jnp.broadcast_to(
        jnp.arange(num_frames, dtype=jnp.int32)[None, :], (batch, num_frames)
    )
    big = jnp.int32(num_frames + 1)

    def scatter(init, values, how):  # [B, T] values -> [B, M] per-token reduction
        slots = jnp.full((batch, max_tokens), init, values.dtype).at[rows, token]
        return getattr(slots, how)(values, mode="drop")

    starts = scatter(big, frames, "min")
    ends = scatter(-1, frames + 1, "max")
    # Every frame of a token carries its label (star_id on a wildcard).
    tokens = scatter(jnp.iinfo(jnp.int32).max, frame_labels.astype(jnp.int32), "min")
    totals = scatter(0, frame_scores, "add")
    prob_totals = scatter(0, frame_probs, "add")
    min_probs = scatter(jnp.inf, frame_probs.astype(dtype), "min")
    used = ends >= 0
    durations = jnp.maximum(ends - starts, 1).astype(dtype)
    return TokenSpans(
        tokens=jnp.where(used, tokens, -1),
        starts=jnp.where(used, starts, -1),
        ends=jnp.where(used, ends, -1),
        scores=jnp.where(used, totals / durations, -jnp.inf),
        confidence=jnp.where(used, prob_totals / durations, 0),
        min_confidence=jnp.where(used, min_probs, 0),
    )
