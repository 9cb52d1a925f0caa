"""Connectionist temporal classification: blank-extended labels, α, β, γ, loss."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import NEG_INF, Array, ArrayLike
from seqctc._utils import (
    check_rank,
    check_same_dim,
    check_sequence_args,
    compute_dtype,
    paddings_to_lengths,
)


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


# --------------------------------------------------------------------------
# Static checks and shared preparation.


class _Prepared(NamedTuple):
    """Everything the recursions need, derived from the public arguments."""

    log_probs: Array  # [B, T, K] compute dtype; 0-logits on padded frames
    frame_lengths: Array  # [B] int32, T_b
    num_states: Array  # [B] int32, S_b = 2 N_b + 1
    num_labels: Array  # [B] int32, N_b
    states: Array  # [B, S] int32, clipped into [0, K)
    skip: Array  # [B, S] bool
    infeasible: Array  # [B] bool, T_b < N_b + adjacent repeats
    bad_labels: Array  # [B] bool, a valid label is the blank or outside [0, K)


def _prepare(logits, logit_paddings, labels, label_paddings, blank_id) -> _Prepared:
    logits, logit_paddings, labels, label_paddings = check_sequence_args(
        logits, logit_paddings, labels, label_paddings, blank_id
    )
    batch, max_frames, num_classes = logits.shape
    max_labels = labels.shape[1]
    dtype = compute_dtype(logits)

    frame_lengths = paddings_to_lengths(logit_paddings)  # [B]
    num_labels = paddings_to_lengths(label_paddings)  # [B]
    frame_valid = (
        jnp.arange(max_frames, dtype=jnp.int32)[None, :] < frame_lengths[:, None]
    )  # [B, T]
    label_valid = (
        jnp.arange(max_labels, dtype=jnp.int32)[None, :] < num_labels[:, None]
    )  # [B, N]
    labels = labels.astype(jnp.int32)
    bad = label_valid & ((labels < 0) | (labels >= num_classes) | (labels == blank_id))
    bad_labels = jnp.any(bad, axis=1)  # [B]
    safe_labels = jnp.where(label_valid, jnp.clip(labels, 0, num_classes - 1), 0)
    repeats = jnp.sum(
        label_valid[:, 1:] & (safe_labels[:, 1:] == safe_labels[:, :-1]),
        axis=1,
        dtype=jnp.int32,
    )  # [B]
    infeasible = frame_lengths < num_labels + repeats

    ext = extend_with_blanks(
        safe_labels, (~label_valid).astype(jnp.float32), blank_id=blank_id
    )
    # Padded frames are never read: their logits become zeros before any op.
    x = jnp.where(frame_valid[:, :, None], logits.astype(dtype), 0)  # [B, T, K]
    log_probs = jax.nn.log_softmax(x, axis=-1)  # [B, T, K]
    return _Prepared(
        log_probs=log_probs,
        frame_lengths=frame_lengths,
        num_states=2 * num_labels + 1,
        num_labels=num_labels,
        states=ext.states,
        skip=ext.skip,
        infeasible=infeasible,
        bad_labels=bad_labels,
    )


# --------------------------------------------------------------------------
# The recursions (time-major).


def _logsumexp3(a: Array, b: Array, c: Array) -> Array:
    """Elementwise log(e^a + e^b + e^c) with a single max shift."""
    m = jnp.maximum(jnp.maximum(a, b), c)
    return m + jnp.log(jnp.exp(a - m) + jnp.exp(b - m) + jnp.exp(c - m))


def _shift_down(x: Array, k: int, fill=NEG_INF) -> Array:
    """``y[s] = x[s - k]`` along the first (state) axis, ``fill`` for ``s < k``."""
    pad = jnp.full((k,) + x.shape[1:], fill, x.dtype)
    return jnp.concatenate([pad, x[:-k]], axis=0)


def _shift_up(x: Array, k: int, fill=NEG_INF) -> Array:
    """``y[s] = x[s + k]`` along the first (state) axis, ``fill`` for ``s >= S - k``."""
    pad = jnp.full((k,) + x.shape[1:], fill, x.dtype)
    return jnp.concatenate([x[k:], pad], axis=0)


def _alpha_init(batch: int, num_states: int, dtype) -> Array:
    """α before the first frame: log 1 in state 0, which may also enter state 1."""
    init = jnp.full((batch, num_states), NEG_INF, dtype)
    return init.at[:, 0].set(0)


def _beta_init(num_states_b: Array, num_states: int, dtype) -> Array:
    """β at each row's last frame: log 1 in the two final states."""
    s = jnp.arange(num_states, dtype=jnp.int32)[None, :]
    last = num_states_b[:, None]
    final = (s == last - 1) | (s == last - 2)
    return jnp.where(final, jnp.asarray(0, dtype), jnp.asarray(NEG_INF, dtype))


# The recursions run state-major, on ``[S, B]`` arrays: XLA vectorises the
# batch axis (6x faster per step than ``[B, S]`` for S=11, B=64; 1.1-1.8x for
# larger S).


def _alpha_step(prev: Array, emit: Array, skip: Array) -> Array:
    """α at frame t from α at t - 1, all ``[S, B]``."""
    skip2 = jnp.where(skip, _shift_down(prev, 2), NEG_INF)
    return _logsumexp3(prev, _shift_down(prev, 1), skip2) + emit


def _beta_step(nxt: Array, emit_next: Array, skip_next2: Array) -> Array:
    """β at frame t from β and the emissions at t + 1, all ``[S, B]``."""
    b = nxt + emit_next
    skip2 = jnp.where(skip_next2, _shift_up(b, 2), NEG_INF)
    return _logsumexp3(b, _shift_up(b, 1), skip2)


def _tables(prep: _Prepared, *, alpha: bool, beta: bool):
    """Runs the α and/or β recursions in one scan.

    Returns ``(log_alpha [T, B, S] | None, log_beta [T, B, S] | None,
    alpha_last [B, S])`` where ``alpha_last`` is α at each row's last valid
    frame (the initial α for rows without frames).
    """
    log_probs_tm = jnp.transpose(prep.log_probs, (1, 0, 2))  # [T, B, K]
    emissions = _gather_emissions(log_probs_tm, prep.states.T)  # [T, S, B]
    max_frames, num_states, batch = emissions.shape
    dtype = emissions.dtype
    lengths = prep.frame_lengths  # [B]
    steps = jnp.arange(max_frames, dtype=jnp.int32)  # [T]
    skip = prep.skip.T  # [S, B]
    skip_next2 = _shift_up(skip, 2, False)  # skip[s + 2]
    beta0 = _beta_init(prep.num_states, num_states, dtype).T

    def body(carry, xs):
        a_prev, b_next = carry
        u, emit = xs
        out_a = out_b = None
        if alpha:
            a_new = _alpha_step(a_prev, emit, skip)
            a_prev = jnp.where((u < lengths)[None, :], a_new, a_prev)
            out_a = a_prev
        if beta:
            t = max_frames - 1 - u
            # β at frame t reads the emissions of frame t + 1 (a reversed
            # copy of the table as a scan input was 10x slower on CPU).
            emit_next = jax.lax.dynamic_index_in_dim(
                emissions, jnp.minimum(t + 1, max_frames - 1), keepdims=False
            )
            b_new = _beta_step(b_next, emit_next, skip_next2)
            b_next = jnp.where((t < lengths - 1)[None, :], b_new, beta0)
            out_b = b_next
        return (a_prev, b_next), (out_a, out_b)

    carry0 = (_alpha_init(batch, num_states, dtype).T, beta0)
    (alpha_last, _), (log_alpha, log_beta_rev) = jax.lax.scan(
        body, carry0, (steps, emissions)
    )
    if log_alpha is not None:
        log_alpha = jnp.transpose(log_alpha, (0, 2, 1))
    if log_beta_rev is not None:
        log_beta_rev = jnp.transpose(log_beta_rev[::-1], (0, 2, 1))
    return log_alpha, log_beta_rev, alpha_last.T


def _valid_mask(prep: _Prepared, max_frames: int, num_states: int) -> Array:
    """``[T, B, S]`` bool: frame and state both unpadded."""
    t = jnp.arange(max_frames, dtype=jnp.int32)[:, None, None]
    s = jnp.arange(num_states, dtype=jnp.int32)[None, None, :]
    return (t < prep.frame_lengths[None, :, None]) & (
        s < prep.num_states[None, :, None]
    )


def _log_likelihood(prep: _Prepared, alpha_last: Array) -> Array:
    """``[B]`` log p(labels | logits) from α at the last valid frame."""
    last = prep.num_states[:, None]  # [B, 1]
    end1 = jnp.take_along_axis(alpha_last, last - 1, axis=1)[:, 0]
    end2 = jnp.take_along_axis(alpha_last, jnp.maximum(last - 2, 0), axis=1)[:, 0]
    end2 = jnp.where(prep.num_labels > 0, end2, NEG_INF)
    return jnp.logaddexp(end1, end2)


def _finish(prep: _Prepared, log_p: Array) -> tuple[Array, Array]:
    """Per-row loss and a mask of rows whose gradient is zero."""
    # A feasible row whose probability is 0 (``-inf`` logits) is as impossible
    # as an infeasible one.
    impossible = prep.infeasible | (log_p < 0.5 * NEG_INF)
    loss = jnp.where(impossible, jnp.inf, -log_p)
    loss = jnp.where(prep.bad_labels, jnp.nan, loss)
    # Rounding may leave -log p a hair below 0 for a certain path.
    loss = jnp.maximum(loss, 0)
    return loss, impossible


def _posteriors_tm(prep, log_alpha, log_beta, log_p, impossible) -> Array:
    """``[T, B, S]`` γ = exp(α + β − log p); 0 on padding and impossible rows."""
    max_frames, _, num_states = log_alpha.shape
    mask = _valid_mask(prep, max_frames, num_states) & ~impossible[None, :, None]
    z = log_alpha + log_beta - log_p[None, :, None]
    return jnp.where(mask, jnp.exp(jnp.where(mask, z, 0)), 0)


# --------------------------------------------------------------------------
# The loss and its gradient.
#
# The gradient is the adjoint of the α recursion, run in probability space.
# Write α_t(s) = u_t(s) + log y_t(s) with u_t(s) = log Σ_j e^{α_{t-1}(s-j)}
# over the predecessors j ∈ {0, 1, 2 if skip}. Then ∂α_t(s)/∂α_{t-1}(s-j) =
# w_t^j(s) = e^{α_{t-1}(s-j) - u_t(s)}, the share of the paths into (t, s) that
# come from s - j (the three shares sum to 1; the forward step computes them
# anyway, as the normalised terms of its logsumexp). The adjoint of α_t is the
# state posterior γ_t = ∂ log p / ∂ α_t, so
#
#     γ_{T_b-1}(s) = e^{α_{T_b-1}(s) - log p}   on the two final states,
#     γ_{t-1}(s)   = Σ_j γ_t(s + j) w_t^j(s + j),
#
# a recursion of multiply-adds on numbers in [0, 1]: no transcendental, no
# β, and nothing to underflow that matters (a γ below 1e-38 is a gradient
# below 1e-38). d(-log p)/d logits_t = softmax_t Σ_s γ_t(s) - Σ_{s ∈ k} γ_t(s).
# This is the exact derivative of the computed loss, and Σ_s γ_t(s) is
# conserved from frame to frame.
#
# fwd runs α forward (pass 1) and keeps w^1 and w^2 of every frame (w^0 = 1 -
# w^1 - w^2), then pass 2 runs γ backward chunk by chunk and takes each chunk's
# class sums of γ with one matmul; the gradient is assembled from them after
# the loop and is the only residual. When the shares ([2, T, S, B]) fit in
# _STORE_BYTES there is one chunk. Otherwise pass 1 keeps only α at chunk
# boundaries (~sqrt(T) chunks of ~sqrt(T) frames) and pass 2 recomputes each
# chunk's shares from its checkpoint, so the temp memory is O(sqrt(T) B S)
# instead of O(T B S).
#
# Measured on the benchmark shapes (benchmarks/bench_ctc.py, a loaded 2-core
# CPU, so only large factors count):
# - emissions gathered once per chunk with take_along_axis instead of per frame:
#   6x faster on (32, 200, 32, 40); a one-hot einsum gather was 4-7x slower.
# - class sums of γ by one einsum per chunk instead of one per frame: 3x; as a
#   batch-major [B, C, S] x [B, S, K] matmul rather than contracting the
#   time-major [C, S, B] γ: 2.7x for the einsum, 5-7 % for the whole gradient.
# - the forward of the loss alone in ~sqrt(T) chunks rather than one chunk:
#   1.7x on (16, 1000, 32, 200) (each chunk's emission table stays in cache).
# - shares as exp((x - m) - log z) instead of e / z: 5-15 % slower overall.
# - blank and label states in two arrays (optax's layout) so that blanks take
#   a 2-term logsumexp: no faster than one interleaved array.
# - dropping the first version's five [T, B, S] tables (emissions twice, α, β,
#   γ): the loss+grad of (16, 1000, 32, 200) went from 2x slower than optax to
#   about 1.5-2x faster, temp memory from 125 MiB to ~30 MiB (optax 137 MiB).
# - state-major [S, B] arrays in the loops instead of [B, S]: XLA vectorises
#   the batch axis; 6x faster per step for S=11, B=64, 1.1-1.8x for larger S.
# - γ by the adjoint recursion above instead of a log-space β (3 exp + 1 log
#   per state and frame) and exp(α + β - log p): 1.26x faster on (32, 200, 32,
#   40), 1.36x on (64, 100, 11, 5), the same on (16, 1000, 32, 200); keeping
#   all three shares instead of two cost 10-20 % more (memory traffic), and
#   recomputing the shares from a stored α (3 exp per state, vectorised over
#   the chunk) was slower than the β it replaced.
# - keeping everything rather than recomputing per chunk: 1.6x faster for
#   (32, 200, 32, 40), 1.2x slower for (16, 1000, 32, 200), hence the threshold
#   (raising it to 128 MiB made (16, 1000, 32, 200) 7 % slower). Fixed chunks
#   of 8 frames instead of ~sqrt(T): 5-9 % faster there, but the checkpoints
#   would grow as T / 8 instead of sqrt(T).
# - scan unroll=4 or 16: 2-4x slower. α and β stacked in one scan ([2B, S], β
#   on flipped states): no gain on small shapes, slower on the large one.
# - in the α step, a logsumexp of the three terms sorted by min/max (2 exp +
#   log1p instead of 3 exp + log): 10-20 % slower. The loop body is vectorised
#   (AVX2, inlined exp/log polynomials): with 3 exp + 1 log per state and frame
#   it is compute bound, and the forward alone costs about what optax's forward
#   costs, which is what bounds the speed-up over optax.
# - probability space with per-frame rescaling: no transcendental in the loop,
#   but α spans > 600 nats across states at T=1000, N=200 (random logits), so
#   f32 underflow lost real mass (loss off by 2 %); measured with float64
#   log-space tables, the states with posterior > 1e-20 lie up to 275 nats
#   below the frame's maximum of α (100 nats on (32, 200, 32, 40)), and a tilt
#   of the states by the label density only brings that to 146: an exact
#   fallback would run on most long inputs.
# - extended-range floats: α = m 2^k with an f32 mantissa and an int32 exponent
#   per state, the three-term sum aligned by building 2^(k_j - max k) from its
#   bits, no transcendental in the loop. Exact, and more so than log space
#   (gradient within 1.5e-6 of float64 on (16, 1000, 32, 200) instead of
#   4.2e-4; loss 9e-8 relative instead of 6e-7). The α step alone ran 1.6-2x
#   faster than the log-space step in a bare loop, but the whole loss+grad was
#   no faster (97-129 ms against 114-138 ms on (16, 1000, 32, 200), slower on
#   the small shapes): the mantissa and exponent need two emission gathers,
#   and what is left per frame is fusion launches, stacked-output updates and
#   copies, not arithmetic. Renormalising m in every frame made XLA compute
#   the whole step once per output (1.1-1.4x slower than log space), and
#   eight frames per loop iteration made it 5-9x slower.
# - A profile of value+grad on (16, 1000, 32, 200) (jax.profiler, XLA:CPU
#   thunks, per call): pass 1 ~32 ms; in pass 2 the α-with-shares step is ~10
#   fusions per frame (the three exps, the log and the division each in their
#   own, ~45 ms in all), the three stacked-output updates of the shares and γ
#   ~19 ms, the class-sum matmuls ~13 ms, the emission gathers ~8 ms.


_UNROLL = 1  # frames per loop iteration in the inner scans (more was slower)
# Keep all the shares instead of recomputing them when they are at most this big.
_STORE_BYTES = 32 * 2**20


def _chunking(max_frames: int, store: bool) -> tuple[int, int]:
    """``(num_chunks, chunk)`` with ``num_chunks * chunk >= T``, both ~sqrt(T).

    One chunk when all of α is kept: chunks only save memory.
    """
    if store:
        return 1, max(max_frames, 1)
    num_chunks = max(1, math.isqrt(max(max_frames - 1, 0)) + 1)
    chunk = -(-max_frames // num_chunks)
    num_chunks = -(-max_frames // chunk)
    return num_chunks, chunk


def _gather_emissions(log_probs_tm: Array, states_sb: Array) -> Array:
    """``[C, S, B]`` log y_t(states[s]) from ``[C, B, K]`` log-probabilities.

    One gather along the flat minor axis ``B * K`` of each frame (8-25 %
    faster than ``take_along_axis`` on a ``[C, K, B]`` table for the chunked
    loss on (32, 200, 32, 40) and (16, 1000, 32, 200)). -inf (log 0) emissions
    become NEG_INF so the recursions stay finite; NaN stays NaN.
    """
    frames, batch, num_classes = log_probs_tm.shape
    rows = jnp.arange(batch, dtype=jnp.int32)[None, :] * num_classes
    index = (rows + states_sb).reshape(-1)  # [S * B] into the flat [B * K]
    emit = log_probs_tm.reshape(frames, batch * num_classes)[:, index]
    emit = emit.reshape(frames, -1, batch)
    return jnp.maximum(emit, jnp.asarray(NEG_INF, emit.dtype))


def _alpha_shares_step(prev: Array, emit: Array, skip: Array, valid: Array):
    """One α step on ``[S, B]`` and the shares ``w^1, w^2`` of its predecessors.

    The shares are 0 on frames that are not ``valid`` (``[1, B]``), where α
    stays as it was.
    """
    prev1 = _shift_down(prev, 1)
    prev2 = jnp.where(skip, _shift_down(prev, 2), NEG_INF)
    m = jnp.maximum(jnp.maximum(prev, prev1), prev2)
    e0, e1, e2 = jnp.exp(prev - m), jnp.exp(prev1 - m), jnp.exp(prev2 - m)
    z = e0 + e1 + e2
    alpha = jnp.where(valid, m + jnp.log(z) + emit, prev)
    r = jnp.where(valid, 1 / z, 0)
    return alpha, (e1 * r, e2 * r)


def _gamma_step(gamma: Array, w1: Array, w2: Array) -> Array:
    """γ at frame ``t - 1`` from γ and the shares at frame ``t`` (``[S, B]``)."""
    g1, g2 = gamma * w1, gamma * w2
    return gamma - g1 - g2 + _shift_up(g1, 1, 0) + _shift_up(g2, 2, 0)


def _table_bytes(prep: _Prepared) -> int:
    """Bytes of one ``[T, S, B]`` table in the compute dtype."""
    batch, max_frames, _ = prep.log_probs.shape
    return max_frames * prep.states.shape[1] * batch * prep.log_probs.dtype.itemsize


def _store_all(prep: _Prepared) -> bool:
    """Whether the shares of all frames (``2 x [T, S, B]``) are small enough to keep."""
    return 2 * _table_bytes(prep) <= _STORE_BYTES


def _chunked_inputs(prep: _Prepared, store: bool):
    """Log-probabilities ``[C#, C, B, K]`` padded to whole chunks, frame indices."""
    batch, max_frames, num_classes = prep.log_probs.shape
    num_chunks, chunk = _chunking(max_frames, store)
    padded = num_chunks * chunk
    log_probs = jnp.transpose(prep.log_probs, (1, 0, 2))  # [T, B, K]
    log_probs = jnp.pad(log_probs, ((0, padded - max_frames), (0, 0), (0, 0)))
    log_probs = log_probs.reshape(num_chunks, chunk, batch, num_classes)
    frames = jnp.arange(padded, dtype=jnp.int32).reshape(num_chunks, chunk)
    return log_probs, frames  # [C#, C, B, K], [C#, C]


def _chunk_shares(prep: _Prepared, alpha: Array, ts: Array, emit: Array):
    """Runs α through one chunk from ``alpha``; returns the end α and the shares."""
    lengths = prep.frame_lengths
    skip_sb = prep.skip.T

    def frame_step(alpha, xs):
        t, emit_t = xs
        alpha, shares = _alpha_shares_step(
            alpha, emit_t, skip_sb, (t < lengths)[None, :]
        )
        # Without the barrier XLA computes the step twice, once for the carry
        # and once for the stacked output.
        return jax.lax.optimization_barrier((alpha, shares))

    return jax.lax.scan(frame_step, alpha, (ts, emit), unroll=_UNROLL)


def _alpha_pass(prep: _Prepared, log_probs, frames, store: bool, shares: bool):
    """α at each row's last frame ``[B, S]``, and what pass 2 needs.

    With ``shares``, that is every frame's shares (``2 x [C#, C, S, B]``) when
    ``store``, else the α before each chunk (``[C#, S, B]``). Without, nothing.
    """
    batch, num_states = prep.states.shape
    dtype = log_probs.dtype
    lengths = prep.frame_lengths
    states_sb, skip_sb = prep.states.T, prep.skip.T  # [S, B]

    def frame_step(alpha, xs):
        t, emit = xs
        new = _alpha_step(alpha, emit, skip_sb)
        return jnp.where((t < lengths)[None, :], new, alpha), None

    def chunk_step(alpha, xs):
        ts, log_probs_c = xs
        emit = _gather_emissions(log_probs_c, states_sb)  # [C, S, B]
        if shares and store:
            return _chunk_shares(prep, alpha, ts, emit)
        end, _ = jax.lax.scan(frame_step, alpha, (ts, emit), unroll=_UNROLL)
        return end, alpha if shares else None

    alpha0 = _alpha_init(batch, num_states, dtype).T  # [S, B]
    alpha_last, saved = jax.lax.scan(chunk_step, alpha0, (frames, log_probs))
    return alpha_last.T, saved


def _final_gamma(prep: _Prepared, alpha_last: Array, log_p: Array, possible: Array):
    """``[S, B]`` γ at each row's last frame: on the two final states only."""
    num_states = prep.states.shape[1]
    s = jnp.arange(num_states, dtype=jnp.int32)[:, None]
    last = prep.num_states[None, :]
    final = (s == last - 1) | ((s == last - 2) & (prep.num_labels > 0)[None, :])
    final = final & possible[None, :]
    z = jnp.where(final, alpha_last.T - log_p[None, :], 0)
    return jnp.where(final, jnp.exp(z), 0)


def _gradient_pass(prep, log_probs, frames, saved, gamma_last, store):
    """``[B, T, K]`` d(−log p)/d logits, chunk by chunk from the end."""
    batch, num_states = prep.states.shape
    num_classes = log_probs.shape[3]
    dtype = log_probs.dtype
    last = prep.frame_lengths - 1
    states_sb = prep.states.T  # [S, B]
    one_hot = jax.nn.one_hot(prep.states, num_classes, dtype=dtype)  # [B, S, K]

    def frame_step(gamma, xs):
        t, w1, w2 = xs
        gamma = jnp.where((t == last)[None, :], gamma_last, gamma)
        previous = _gamma_step(gamma, w1, w2)
        return jax.lax.optimization_barrier((previous, gamma))

    def chunk_step(gamma, xs):
        ts, log_probs_c, saved_c = xs
        if store:
            w1, w2 = saved_c
        else:  # recompute the chunk's shares from its checkpoint
            emit = _gather_emissions(log_probs_c, states_sb)  # [C, S, B]
            _, (w1, w2) = _chunk_shares(prep, saved_c, ts, emit)
        gamma, gammas = jax.lax.scan(
            frame_step, gamma, (ts, w1, w2), reverse=True, unroll=_UNROLL
        )  # [C, S, B]
        # The class sums of γ for the whole chunk in one batch-major matmul
        # (2.7x faster than contracting the time-major γ directly).
        gammas = jnp.transpose(gammas, (2, 0, 1))  # [B, C, S]
        per_class = jnp.einsum("bcs,bsk->bck", gammas, one_hot)  # [B, C, K]
        return gamma, (per_class, jnp.sum(gammas, axis=2))  # [B, C]

    gamma0 = jnp.zeros((num_states, batch), dtype)
    _, (per_class, total) = jax.lax.scan(
        chunk_step, gamma0, (frames, log_probs, saved), reverse=True
    )  # [C#, B, C, K], [C#, B, C]
    max_frames = prep.log_probs.shape[1]
    per_class = jnp.moveaxis(per_class, 1, 0).reshape(batch, -1, num_classes)
    total = jnp.moveaxis(total, 1, 0).reshape(batch, -1)
    per_class, total = per_class[:, :max_frames], total[:, :max_frames, None]
    return jnp.exp(prep.log_probs) * total - per_class  # [B, T, K]


def _loss_and_gradient(logits, logit_paddings, labels, label_paddings, blank_id):
    prep = _prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    store = _store_all(prep)
    log_probs, frames = _chunked_inputs(prep, store)
    alpha_last, saved = _alpha_pass(prep, log_probs, frames, store, shares=True)
    log_p = _log_likelihood(prep, alpha_last)
    loss, impossible = _finish(prep, log_p)
    gamma_last = _final_gamma(prep, alpha_last, log_p, ~impossible)
    grad = _gradient_pass(prep, log_probs, frames, saved, gamma_last, store)
    grad = jnp.where(prep.bad_labels[:, None, None], jnp.nan, grad)
    return loss, grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _ctc_nll(logits, logit_paddings, labels, label_paddings, blank_id):
    prep = _prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    # ~sqrt(T) chunks, so that each chunk's emission table stays in cache (1.7x
    # faster than one table of all frames on (16, 1000, 32, 200)), unless the
    # whole table is small (one chunk: 10 % faster on (64, 100, 11, 5)).
    log_probs, frames = _chunked_inputs(prep, store=_table_bytes(prep) <= 2**20)
    alpha_last, _ = _alpha_pass(prep, log_probs, frames, store=False, shares=False)
    loss, _ = _finish(prep, _log_likelihood(prep, alpha_last))
    return loss


def _ctc_nll_fwd(logits, logit_paddings, labels, label_paddings, blank_id):
    loss, grad = _loss_and_gradient(
        logits, logit_paddings, labels, label_paddings, blank_id
    )
    dtype_tag = jnp.zeros((0,), jnp.asarray(logits).dtype)
    return loss, (grad, dtype_tag)


def _ctc_nll_bwd(blank_id, residuals, g):
    del blank_id
    grad, dtype_tag = residuals
    grad = (g[:, None, None].astype(grad.dtype) * grad).astype(dtype_tag.dtype)
    return grad, None, None, None


_ctc_nll.defvjp(_ctc_nll_fwd, _ctc_nll_bwd)


# --------------------------------------------------------------------------
# Public functions.


def _nan_rows(x: Array, rows: Array) -> Array:
    """Sets every entry of the rows flagged in ``rows`` ([B]) of ``[B, ...]`` to NaN."""
    rows = rows.reshape(rows.shape + (1,) * (x.ndim - 1))
    return jnp.where(rows, jnp.nan, x)


def ctc_log_alpha(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Array:
    r"""Log forward variables α of CTC, emission at frame ``t`` included.

    ``α[b, t, s]`` is the log of the total probability of the path prefixes
    :math:`\pi_0 \dots \pi_t` through the blank-extended states (see
    :func:`extend_with_blanks`) that end in state ``s`` at frame ``t``:

    .. math::

        \alpha_0(s) = \log y_0(\ell'_s) \text{ for } s \in \{0, 1\}, \qquad
        \alpha_t(s) = \log y_t(\ell'_s) + \log\!\big(e^{\alpha_{t-1}(s)}
            + e^{\alpha_{t-1}(s-1)}
            + \mathrm{skip}_s\, e^{\alpha_{t-1}(s-2)}\big).

    ``log p(labels | logits) = logaddexp(α[T_b−1, S_b−1], α[T_b−1, S_b−2])``.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (log-probabilities work too);
            ``log_softmax`` is applied inside. Half precision accumulates in
            float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class, a static Python int in ``[0, K)``.

    Returns:
        ``[B, T, 2N + 1]`` log α in the compute dtype. Padded frames and padded
        states hold ``NEG_INF`` (``-1e30``); unreachable states in valid frames
        hold ``NEG_INF`` or less (finite). Rows with a label that is the blank or
        outside ``[0, K)`` are NaN on their valid entries.

    Raises:
        ValueError: on a wrong rank, mismatched shapes or ``blank_id`` outside
            ``[0, K)``, naming the argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.zeros((1, 2, 2))  # two frames, classes {blank, a}
        >>> alpha = seqctc.ctc_log_alpha(logits, jnp.zeros((1, 2)),
        ...                              jnp.array([[1]]), jnp.zeros((1, 1)))
        >>> jnp.exp(alpha[0])  # rows: frames; columns: states (ε, a, ε)
        Array([[0.5 , 0.5 , 0.  ],
               [0.25, 0.5 , 0.25]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`ctc_log_beta`, :func:`ctc_posteriors`, :func:`ctc_loss`.
    """
    prep = _prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    log_alpha, _, _ = _tables(prep, alpha=True, beta=False)
    mask = _valid_mask(prep, log_alpha.shape[0], log_alpha.shape[2])
    log_alpha = jnp.where(mask, log_alpha, NEG_INF)
    return _nan_rows(jnp.transpose(log_alpha, (1, 0, 2)), prep.bad_labels)


def ctc_log_beta(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Array:
    r"""Log backward variables β of CTC, emission at frame ``t`` excluded.

    ``β[b, t, s]`` is the log of the total probability of the path suffixes
    :math:`\pi_{t+1} \dots \pi_{T_b-1}` that continue from state ``s`` at frame
    ``t`` and finish in one of the two final states (the seed's convention):

    .. math::

        \beta_{T_b-1}(S_b-1) = \beta_{T_b-1}(S_b-2) = 0, \qquad
        \beta_t(s) = \log\!\big(e^{\beta_{t+1}(s) + \log y_{t+1}(\ell'_s)}
            + e^{\beta_{t+1}(s+1) + \log y_{t+1}(\ell'_{s+1})}
            + \mathrm{skip}_{s+2}\, e^{\beta_{t+1}(s+2)
            + \log y_{t+1}(\ell'_{s+2})}\big).

    Hence ``logsumexp_s(α[t] + β[t]) = log p(labels | logits)`` on every valid
    frame ``t``.

    Args:
        logits: ``[B, T, K]`` unnormalised logits; ``log_softmax`` is applied
            inside.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class, a static Python int in ``[0, K)``.

    Returns:
        ``[B, T, 2N + 1]`` log β in the compute dtype; ``NEG_INF`` on padded
        frames and states, NaN on the valid entries of rows with bad labels.

    Raises:
        ValueError: on a wrong rank, mismatched shapes or ``blank_id`` outside
            ``[0, K)``, naming the argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> beta = seqctc.ctc_log_beta(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
        ...                            jnp.array([[1]]), jnp.zeros((1, 1)))
        >>> jnp.exp(beta[0])
        Array([[0.5, 1. , 0.5],
               [0. , 1. , 1. ]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`ctc_log_alpha`, :func:`ctc_posteriors`.
    """
    prep = _prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    _, log_beta, _ = _tables(prep, alpha=False, beta=True)
    mask = _valid_mask(prep, log_beta.shape[0], log_beta.shape[2])
    log_beta = jnp.where(mask, log_beta, NEG_INF)
    return _nan_rows(jnp.transpose(log_beta, (1, 0, 2)), prep.bad_labels)


def ctc_posteriors(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Array:
    r"""State posteriors γ of CTC: the probability of each state at each frame.

    .. math::

        \gamma_t(s) = P(\pi_t = s \mid \text{labels}, \text{logits})
            = \exp\big(\alpha_t(s) + \beta_t(s) - \log p(\text{labels} \mid
            \text{logits})\big),

    so ``γ[b, t]`` sums to 1 over the states on every valid frame of a feasible
    row.

    Args:
        logits: ``[B, T, K]`` unnormalised logits; ``log_softmax`` is applied
            inside.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class, a static Python int in ``[0, K)``.

    Returns:
        ``[B, T, 2N + 1]`` probabilities in the compute dtype; 0 on padded frames
        and states and on rows that cannot emit their labels (too few frames or
        probability 0); NaN on the valid entries of rows with bad labels.

    Raises:
        ValueError: on a wrong rank, mismatched shapes or ``blank_id`` outside
            ``[0, K)``, naming the argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> gamma = seqctc.ctc_posteriors(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
        ...                               jnp.array([[1]]), jnp.zeros((1, 1)))
        >>> gamma[0].round(4)  # paths: (ε a), (a a), (a ε)
        Array([[0.3333, 0.6667, 0.    ],
               [0.    , 0.6667, 0.3333]], dtype=float32)

    See also:
        :func:`ctc_log_alpha`, :func:`ctc_log_beta`, :func:`ctc_loss`.
    """
    prep = _prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    log_alpha, log_beta, alpha_last = _tables(prep, alpha=True, beta=True)
    log_p = _log_likelihood(prep, alpha_last)
    _, impossible = _finish(prep, log_p)
    gamma = _posteriors_tm(prep, log_alpha, log_beta, log_p, impossible)
    return _nan_rows(jnp.transpose(gamma, (1, 0, 2)), prep.bad_labels)


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    zero_infinity: bool = False,
    reduction: str = "none",
) -> Array:
    r"""Exact CTC loss, −log p(labels | logits), with an analytic gradient.

    A positional drop-in for ``optax.ctc_loss``: the same arguments in the same
    order and the same values on feasible pairs, but exact at the edges. The loss
    is never negative; a pair that no path can emit (``T_b < N_b`` + the number
    of adjacent repeated labels, decided from the lengths, or a probability of 0
    from ``-inf`` logits) gives ``+inf`` and an all-zero gradient, where optax
    returns a large finite number.

    .. math::

        \mathcal{L} = -\log \sum_s \exp \alpha_{T_b-1}(s) \, [s \ge S_b - 2],
        \qquad
        \frac{\partial \mathcal{L}}{\partial z_t(k)} = \mathrm{softmax}(z_t)_k
            - \sum_{s:\, \ell'_s = k} \gamma_t(s).

    The gradient (the seed's derivation, in logit space) comes from a
    ``jax.custom_vjp``: the forward pass runs α forward, keeping the share of
    each predecessor in every state's logsumexp, then runs γ backward as the
    adjoint of α in probability space (multiply-adds, no β), in chunks that
    recompute the shares from checkpoints of α when keeping them would exceed
    32 MiB. Only the ``[B, T, K]`` gradient is kept; nothing is differentiated
    through the scans. It is zero on padded frames. Labels and paddings get no
    gradient. Not forward-mode differentiable (``jax.jvp``), as for any
    ``custom_vjp``.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (log-probabilities work too);
            ``log_softmax`` is applied inside. Half precision accumulates in
            float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class, a static Python int in ``[0, K)``.
        zero_infinity: replace infinite losses (and their gradients) by 0, as
            ``torch.nn.functional.ctc_loss`` does.
        reduction: ``"none"`` (per sequence), ``"sum"``, or ``"mean"`` (torch
            semantics: the mean over the batch of ``loss / max(N_b, 1)``).

    Returns:
        ``[B]`` losses in the compute dtype (float32 for half inputs), or a scalar
        when ``reduction`` is ``"sum"`` or ``"mean"``. A row with NaN logits in a
        valid frame, or a valid label equal to the blank or outside ``[0, K)``,
        gives NaN for that row only.

    Raises:
        ValueError: on a wrong rank, mismatched shapes, ``blank_id`` outside
            ``[0, K)`` or an unknown ``reduction``, naming the argument.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.zeros((2, 2, 2))
        >>> labels = jnp.array([[1, 1], [1, 0]])
        >>> label_paddings = jnp.array([[0., 0.], [0., 1.]])
        >>> seqctc.ctc_loss(logits, jnp.zeros((2, 2)), labels, label_paddings)
        Array([     inf, 0.28768...], dtype=float32)
        >>> grad = jax.grad(lambda x: seqctc.ctc_loss(
        ...     x, jnp.zeros((2, 2)), labels, label_paddings, reduction="sum"))
        >>> grad(logits)[0]  # the infeasible row: zero, finite
        Array([[0., 0.],
               [0., 0.]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`ctc_log_alpha`, :func:`ctc_posteriors`, :func:`check_inputs`,
        ``optax.ctc_loss``, ``torch.nn.functional.ctc_loss``.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(
            f"`reduction` must be 'none', 'sum' or 'mean', got {reduction!r}."
        )
    loss = _ctc_nll(logits, logit_paddings, labels, label_paddings, blank_id)
    if zero_infinity:
        loss = jnp.where(jnp.isinf(loss), jnp.zeros_like(loss), loss)
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "mean":
        num_labels = paddings_to_lengths(jnp.asarray(label_paddings))
        denominator = jnp.maximum(num_labels, 1).astype(loss.dtype)
        return jnp.mean(loss / denominator)
    return loss


def check_inputs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> None:
    r"""Checks the values of CTC inputs eagerly; not jittable.

    The CTC functions check only static facts (ranks, shapes, ``blank_id``) and
    turn bad values into NaN rows. Call this once on your data to get a readable
    error instead.

    Args:
        logits: ``[B, T, K]`` logits.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame.
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label.
        blank_id: the blank class, a Python int in ``[0, K)``.

    Raises:
        ValueError: on static misuse (naming the argument), or when a row has
            NaN logits in a valid frame, a valid label equal to ``blank_id`` or
            outside ``[0, K)``, or too few frames for its labels. The message
            names each bad row and the reason.

    Examples:
        >>> import numpy as np
        >>> import seqctc
        >>> seqctc.check_inputs(np.zeros((1, 3, 4)), np.zeros((1, 3)),
        ...                     np.array([[1, 2]]), np.zeros((1, 2)))
        >>> seqctc.check_inputs(np.zeros((2, 3, 4)), np.zeros((2, 3)),
        ...                     np.array([[1, 2], [1, 7]]), np.zeros((2, 2)))
        Traceback (most recent call last):
          ...
        ValueError: row 1: label 7 at position 1 is outside [0, 4).

    See also:
        :func:`ctc_loss`.
    """
    logits, logit_paddings, labels, label_paddings = check_sequence_args(
        logits, logit_paddings, labels, label_paddings, blank_id, xp=np
    )
    num_classes = logits.shape[2]
    frame_lengths = np.sum(logit_paddings == 0, axis=1)
    num_labels = np.sum(label_paddings == 0, axis=1)
    problems = []
    for b in range(logits.shape[0]):
        t_b, n_b = int(frame_lengths[b]), int(num_labels[b])
        nan_frames = np.nonzero(np.isnan(logits[b, :t_b]).any(axis=-1))[0]
        if nan_frames.size:
            problems.append(f"row {b}: NaN logits in valid frame {nan_frames[0]}.")
        row = labels[b, :n_b]
        for n, label in enumerate(row.tolist()):
            if label == blank_id:
                problems.append(
                    f"row {b}: label at position {n} equals blank_id={blank_id}."
                )
            elif not 0 <= label < num_classes:
                problems.append(
                    f"row {b}: label {label} at position {n} is outside "
                    f"[0, {num_classes})."
                )
        repeats = int(np.sum(row[1:] == row[:-1])) if n_b > 1 else 0
        if t_b < n_b + repeats:
            problems.append(
                f"row {b}: infeasible: {t_b} frames cannot emit {n_b} labels "
                f"with {repeats} adjacent repeats (needs {n_b + repeats})."
            )
    if problems:
        raise ValueError(" ".join(problems))
