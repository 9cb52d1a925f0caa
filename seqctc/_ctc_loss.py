"""The engine of ``ctc_loss``: α forward, γ backward as its adjoint, one layout.

Everything runs on one flat state axis ``[B * S]`` (row ``b``'s state ``s`` at
``b * S + s``), so that the loops vectorise whatever ``B`` and ``S`` are; a
transition from ``s - 1`` is masked at the start of each row and one from
``s - 2`` by the graph's ``skip``. A frame that is skipped (padding not 0, or
every frame of a row whose loss is NaN) carries the emission ``_SKIP`` (> 0,
which no log-probability is) and leaves α and γ unchanged, so padded frames may
sit anywhere. The design and the measurements behind it are in
``docs/concepts/ctc.md`` and ``docs/benchmarks.md``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from seqctc._graph import LabelGraph, label_graph
from seqctc._inputs import positions_valid
from seqctc._types import NEG_INF, Array
from seqctc._utils import check_sequence_args, compute_dtype

# The emission of a skipped frame: log-probabilities are <= 0.
_SKIP = 1.0


class Lattice(NamedTuple):
    """The transitions of the recursions, on the flat state axis ``[B * S]``.

    The emissions are read from the logits a chunk of frames at a time (see
    :func:`emissions`).

    Attributes:
        enter1: ``[B * S]`` bool, the state has a predecessor ``s - 1``.
        skip: ``[B * S]`` bool, the state may be entered from ``s - 2``.
        alpha0: ``[B * S]`` α before the first frame: log 1 in each row's state 0.
    """

    enter1: Array
    skip: Array
    alpha0: Array


class Normaliser(NamedTuple):
    """Per-frame log-softmax normaliser of the logits, ``[B, T]`` each."""

    shift: Array  # the max over classes (0 where it is not finite)
    log_sum: Array  # log Σ_k exp(z_k - shift)


def normaliser(x: Array) -> Normaliser:
    """The log-softmax normaliser of ``x [B, T, K]``."""
    shift = jnp.max(x, axis=2)
    shift = jnp.where(jnp.isfinite(shift), shift, 0)
    log_sum = jnp.log(jnp.sum(jnp.exp(x - shift[:, :, None]), axis=2))
    # The barrier keeps XLA from fusing the reduction into its consumers,
    # which would recompute it for every state that reads it.
    return Normaliser(*lax.optimization_barrier((shift, log_sum)))


def lattice(graph: LabelGraph, dtype) -> Lattice:
    """The transitions of ``graph``'s states and α before the first frame."""
    batch, num_states = graph.states.shape
    state = jnp.arange(num_states, dtype=jnp.int32)
    enter1 = jnp.broadcast_to(state > 0, (batch, num_states)).reshape(-1)
    alpha0 = jnp.where(state == 0, 0, NEG_INF).astype(dtype)
    alpha0 = jnp.broadcast_to(alpha0, (batch, num_states)).reshape(-1)
    return Lattice(enter1, graph.skip.reshape(-1), alpha0)


def emissions(prep: Prepared, frames: Array | None = None) -> Array:
    """``[T', B * S]`` log y_t(state) of ``frames [T']`` (every frame if None).

    NEG_INF stands for log 0, ``_SKIP`` marks skipped frames and frames past
    the end. The gather runs in the logits' batch-major order and only its
    result is transposed: gathering straight into the time-major order of the
    recursions was 5-10x slower on CPU.
    """
    max_frames = prep.x.shape[1]
    states = prep.graph.states[:, None, :]  # [B, 1, S]
    count = prep.count  # [B, T]
    source = prep.x if prep.log_probs is None else prep.log_probs
    shift, log_sum = prep.norm
    if frames is not None:
        inside = frames < max_frames
        frames = jnp.minimum(frames, max_frames - 1)
        count = jnp.take(count, frames, axis=1) & inside[None, :]
        source = jnp.take(source, frames, axis=1)
        if prep.log_probs is None:
            shift, log_sum = (jnp.take(v, frames, axis=1) for v in prep.norm)
    emit = jnp.take_along_axis(source, states, axis=2)  # [B, T', S]
    if prep.log_probs is None:
        emit = lax.optimization_barrier(emit)
        emit = (emit - shift[:, :, None]) - log_sum[:, :, None]
    emit = jnp.maximum(emit, jnp.asarray(NEG_INF, emit.dtype))
    emit = jnp.where(count[:, :, None], emit, jnp.asarray(_SKIP, emit.dtype))
    emit = lax.optimization_barrier(emit)
    return jnp.transpose(emit, (1, 0, 2)).reshape(emit.shape[1], prep.graph.states.size)


def shift_down(x: Array, k: int, fill) -> Array:
    """``y[i] = x[i - k]`` along the last axis, ``fill`` for ``i < k``."""
    widths = [(0, 0, 0)] * (x.ndim - 1) + [(k, -k, 0)]
    return lax.pad(x, jnp.asarray(fill, x.dtype), widths)


def shift_up(x: Array, k: int, fill) -> Array:
    """``y[i] = x[i + k]`` along the last axis, ``fill`` for ``i >= L - k``."""
    widths = [(0, 0, 0)] * (x.ndim - 1) + [(-k, k, 0)]
    return lax.pad(x, jnp.asarray(fill, x.dtype), widths)


def logsumexp3(a: Array, b: Array, c: Array) -> Array:
    """Elementwise log(e^a + e^b + e^c) with a single max shift."""
    m = jnp.maximum(jnp.maximum(a, b), c)
    return m + jnp.log(jnp.exp(a - m) + jnp.exp(b - m) + jnp.exp(c - m))


def predecessors(alpha: Array, enter1: Array, skip: Array):
    """α of each state's three predecessors ``s``, ``s - 1``, ``s - 2``."""
    return (
        alpha,
        jnp.where(enter1, shift_down(alpha, 1, NEG_INF), NEG_INF),
        jnp.where(skip, shift_down(alpha, 2, NEG_INF), NEG_INF),
    )


def alpha_step(alpha: Array, emit: Array, enter1: Array, skip: Array) -> Array:
    """α_t from α_{t-1}: log y_t(s) + logsumexp_j α_{t-1}(s - j) (frozen if skipped)."""
    new = logsumexp3(*predecessors(alpha, enter1, skip)) + emit
    return jnp.where(emit > 0, alpha, new)


def alpha_shares_step(alpha: Array, emit: Array, enter1: Array, skip: Array):
    """One α step and the shares ``w^1, w^2`` of the predecessors ``s - 1, s - 2``.

    ``alpha`` is α with two leading ``NEG_INF`` (``[n + 2]``, as returned,
    updated in place), so that the predecessors are plain slices of the
    carry: shifting it by padding made XLA materialise two shifted copies
    every frame. The shares are 0 on skipped frames, where α stays as it was.
    """
    own = alpha[2:]
    a = jnp.stack(
        (
            own,
            jnp.where(enter1, alpha[1:-1], NEG_INF),
            jnp.where(skip, alpha[:-2], NEG_INF),
        )
    )  # [3, n]
    m = jnp.max(a, axis=0)
    e = jnp.exp(a - m[None])
    z = e[0] + e[1] + e[2]
    step = emit <= 0
    new = jnp.where(step, m + jnp.log(z) + emit, own)
    zero = jnp.zeros((), z.dtype)
    shares = (jnp.where(step, e[1] / z, zero), jnp.where(step, e[2] / z, zero))
    return lax.dynamic_update_slice(alpha, new, (2,)), shares


def padded(alpha: Array) -> Array:
    """α with the two leading ``NEG_INF`` that :func:`alpha_shares_step` reads."""
    return jnp.pad(alpha, (2, 0), constant_values=NEG_INF)


def gamma_step(gamma: Array, w1: Array, w2: Array, w1_up: Array, w2_up: Array) -> Array:
    """γ at frame ``t - 1`` from γ and the shares at frame ``t``.

    ``w1_up [n - 1]`` and ``w2_up [n - 2]`` are the shares of the states one
    and two above (``w1[1:]``, ``w2[2:]``), read separately: XLA:CPU does
    not vectorise a loop that reads one row of a table at two offsets.
    """
    up1 = jnp.pad(gamma[1:] * w1_up, (0, 1))
    up2 = jnp.pad(gamma[2:] * w2_up, (0, 2))
    return gamma - gamma * w1 - gamma * w2 + up1 + up2


def frame_row(table: Array, t: Array, first: int = 0) -> Array:
    """Row ``t >= 0`` of ``[T, n]`` ``table`` from column ``first`` on (no wrap
    of negative indices: wrapping a traced frame costs a kernel of its own each
    frame)."""
    size = (1, table.shape[1] - first)
    return lax.dynamic_slice(table, (t, first), size, allow_negative_indices=False)[0]


def set_frame_row(table: Array, value: Array, t: Array) -> Array:
    """``table`` with row ``t >= 0`` set to ``value`` (in place in a loop)."""
    return lax.dynamic_update_slice(
        table, value[None], (t, 0), allow_negative_indices=False
    )


def alpha_scan(lat: Lattice, alpha: Array, emit: Array) -> Array:
    """α after the frames of ``emit [C, B * S]``."""

    def step(alpha, emit):
        return alpha_step(alpha, emit, lat.enter1, lat.skip), None

    return lax.scan(step, alpha, emit)[0]


# Emissions are gathered this many bytes at a time (a chunk of frames), so
# that each chunk's table stays in cache and no table of every frame is kept.
_CHUNK_BYTES = 2**19


def alpha_pass(prep: Prepared, shares: bool):
    """α after each row's last frame ``[B * S]``, and with ``shares`` the shares
    ``w^1, w^2`` of every frame (``2 x [T', B * S]``, ``T' > T``: at least one
    frame past the end, for :func:`gammas`; the frames past the end have
    shares 0).

    A loop over chunks of frames gathers each chunk's emissions, then runs the
    recursion over them.
    """
    lat = prep.lat
    max_frames = prep.x.shape[1]
    size = prep.graph.states.size  # B * S
    if shares and not max_frames:  # no frames: the spare frame alone, shares 0
        zero = jnp.zeros((1, size), lat.alpha0.dtype)
        return lat.alpha0, (zero, zero)
    chunk = max(8, _CHUNK_BYTES // max(size * lat.alpha0.dtype.itemsize, 1))
    if 2 * chunk > max_frames:  # one chunk, or two that would not pay
        if shares:
            frames = jnp.arange(max_frames, dtype=jnp.int32)
            return alpha_shares_chunks(prep, frames, 1)
        return alpha_scan(lat, lat.alpha0, emissions(prep)), None
    num_chunks = -(-max_frames // chunk)
    chunk = -(-max_frames // num_chunks)  # fewest frames past the end
    offsets = jnp.arange(chunk, dtype=jnp.int32)
    if shares:
        return alpha_shares_chunks(prep, offsets, num_chunks)

    def body(alpha, first):
        return alpha_scan(lat, alpha, emissions(prep, first + offsets)), None

    starts = chunk * jnp.arange(num_chunks, dtype=jnp.int32)
    alpha, _ = lax.scan(body, lat.alpha0, starts)
    return alpha, None


def alpha_shares_chunks(prep: Prepared, offsets: Array, num_chunks: int):
    """:func:`alpha_pass` with shares, over ``num_chunks`` chunks of frames.

    Each frame's shares are written straight into the tables of every frame:
    a scan would stack each chunk's shares and then copy them into the tables.
    """
    lat = prep.lat
    chunk = offsets.shape[0]
    # One spare frame past the end: the γ pass writes γ_t into row t + 1.
    shape = (num_chunks * chunk + 1, prep.graph.states.size)

    def chunk_body(c, carry):
        first = c * chunk
        emit = emissions(prep, first + offsets)  # [C, B * S]

        def frame(i, carry):
            alpha, w1s, w2s = carry
            alpha, (w1, w2) = lax.optimization_barrier(
                alpha_shares_step(alpha, frame_row(emit, i), lat.enter1, lat.skip)
            )
            w1s = set_frame_row(w1s, w1, first + i)
            w2s = set_frame_row(w2s, w2, first + i)
            return alpha, w1s, w2s

        return lax.fori_loop(0, chunk, frame, carry)

    # The second table starts from -0.0: XLA merges equal broadcasts and then
    # copies one into the other loop carry (a read and a write of a whole
    # table, where a broadcast only writes).
    zero = jnp.zeros(shape, lat.alpha0.dtype)
    tables = (zero, jnp.full(shape, -0.0, lat.alpha0.dtype))
    carry = (padded(lat.alpha0), *tables)
    alpha, *out = lax.fori_loop(0, num_chunks, chunk_body, carry)
    return alpha[2:], tuple(out)


def gammas(gamma_last: Array, shares, num_frames: int) -> Array:
    """``[T, B * S]`` γ of every frame, from the end (skipped frames pass it on).

    ``shares`` hold at least ``T + 1`` frames (frame ``T`` past the end has
    shares 0). γ is written over the table of ``w^1``, whose row ``t`` is
    free once frame ``t`` is done: row ``t + 1`` receives ``γ_t``.
    """
    w1s, w2s = shares
    size = w1s.shape[1]
    if size < 3:  # too few states for the shifted reads
        w1s, w2s = (jnp.pad(w, ((0, 0), (0, 3 - size))) for w in (w1s, w2s))
        gamma_last = jnp.pad(gamma_last, (0, 3 - size))

    def body(i, carry):
        gamma, table = carry
        # The frame comes from the loop counter: an index read from an array
        # keeps XLA:CPU from vectorising the step.
        t = num_frames - i
        w1, w1_up = frame_row(table, t), frame_row(table, t, 1)
        w2, w2_up = frame_row(w2s, t), frame_row(w2s, t, 2)
        previous = gamma_step(gamma, w1, w2, w1_up, w2_up)
        return previous, set_frame_row(table, previous, t)

    _, table = lax.fori_loop(0, num_frames, body, (gamma_last, w1s))
    return table[1 : num_frames + 1, :size]


def final_states(graph: LabelGraph) -> tuple[Array, Array]:
    """``[B, S]`` bool masks of each row's last state and the one before it."""
    s = jnp.arange(graph.states.shape[1], dtype=jnp.int32)[None, :]
    last = graph.num_states[:, None]
    return s == last - 1, (s == last - 2) & (graph.num_labels > 0)[:, None]


def log_likelihood(graph: LabelGraph, alpha: Array) -> Array:
    """``[B]`` log p(labels | logits) from the flat α after the last frame."""
    alpha = alpha.reshape(graph.states.shape)
    end1, end2 = final_states(graph)
    a1 = jnp.max(jnp.where(end1, alpha, NEG_INF), axis=1)
    a2 = jnp.max(jnp.where(end2, alpha, NEG_INF), axis=1)
    return jnp.logaddexp(a1, a2)


def final_gamma(graph: LabelGraph, alpha: Array, log_p: Array, possible: Array):
    """``[B * S]`` γ at each row's last frame: on the two final states only."""
    end1, end2 = final_states(graph)
    final = (end1 | end2) & possible[:, None]
    z = jnp.where(final, alpha.reshape(final.shape) - log_p[:, None], 0)
    return jnp.where(final, jnp.exp(z), 0).reshape(-1)


# Below this N * K, class sums are a fused reduction rather than a matmul.
_FUSED_SUM_SIZE = 512
# Above this many classes they are scattered into the gradient instead.
_SCATTER_CLASSES = 512


def minus_class_sums(
    grad: Array, gamma: Array, graph: LabelGraph, blank_id: int
) -> Array:
    """``grad [B, T, K]`` minus Σ_{s: class(s) = k} γ_t(s), from ``[T, B, S]`` γ."""
    batch, max_frames, num_classes = grad.shape
    labels = graph.labels  # [B, N]
    time_major = gamma[:, :, 1::2]  # [T, B, N]
    per_label = jnp.transpose(time_major, (1, 0, 2))  # [B, T, N]
    blanks = jnp.transpose(jnp.sum(gamma[:, :, 0::2], axis=2))  # [B, T]
    if num_classes > _SCATTER_CLASSES:
        # Many classes: scatter the few label posteriors of each frame instead
        # of a matmul with a [B, N, K] one-hot table.
        # The blanks are subtracted first, elementwise, so that the scatter is
        # the last write and updates the gradient in place.
        is_blank = jnp.arange(num_classes) == blank_id
        grad = grad - jnp.where(is_blank, blanks[:, :, None], 0)
        rows = jnp.arange(batch)[:, None, None]
        frames = jnp.arange(max_frames)[None, :, None]
        return grad.at[rows, frames, labels[:, None, :]].add(-per_label)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=gamma.dtype)  # [B, N, K]
    if labels.shape[1] * num_classes <= _FUSED_SUM_SIZE:
        # Small label x class products: one fused multiply-and-reduce beats
        # a batch of tiny matmuls.
        sums = jnp.sum(per_label[:, :, :, None] * one_hot[:, None], axis=2)
    else:
        sums = jnp.einsum("tbn,bnk->btk", time_major, one_hot)
    is_blank = jnp.arange(num_classes) == blank_id
    return grad - (sums + jnp.where(is_blank, blanks[:, :, None], 0))


def gradient(prep: Prepared, gamma_last: Array, shares, possible: Array) -> Array:
    """``[B, T, K]`` d(−log p)/d logits = softmax Σ_s γ − class sums of γ."""
    x, norm, valid, graph = prep.x, prep.norm, prep.valid, prep.graph
    batch, max_frames, num_classes = x.shape
    num_states = graph.states.shape[1]
    gamma = gammas(gamma_last, shares, max_frames)
    gamma = gamma.reshape(max_frames, batch, num_states)  # [T, B, S]
    gamma = jnp.where(jnp.transpose(valid)[:, :, None], gamma, 0)
    log_p = prep.log_probs
    if log_p is None:
        log_p = (x - norm.shift[:, :, None]) - norm.log_sum[:, :, None]
    counted = (valid & possible[:, None])[:, :, None]
    softmax = jnp.where(counted, jnp.exp(log_p), 0)
    # NaN rows are set here, before the class sums: a pass over the gradient
    # after them would need a second [B, T, K] buffer.
    softmax = jnp.where(prep.frozen[:, None, None], jnp.nan, softmax)
    return minus_class_sums(softmax, gamma, graph, prep.blank_id)


# --------------------------------------------------------------------------
# The drivers: the loss alone, and the loss with its gradient.


class Prepared(NamedTuple):
    """The checked inputs of one call, in the forms the recursions read."""

    x: Array  # [B, T, K] logits in the compute dtype (skipped frames as given)
    norm: Normaliser
    log_probs: Array | None  # [B, T, K] log-softmax of x, when K is narrow
    valid: Array  # [B, T] bool
    count: Array  # [B, T] bool, the frames the recursions run: valid, not frozen
    graph: LabelGraph
    frozen: Array  # [B] bool, rows whose loss is NaN (bad labels or logits)
    infeasible: Array  # [B] bool, too few frames for the labels
    lat: Lattice
    blank_id: int


# Classes per graph state up to which the log-softmax is kept whole.
_NARROW = 2


def prepare(logits, logit_paddings, labels, label_paddings, blank_id) -> Prepared:
    """Checks the arguments and builds the frames, the graph and the lattice."""
    logits, logit_paddings, labels, label_paddings = check_sequence_args(
        logits, logit_paddings, labels, label_paddings, blank_id
    )
    valid = positions_valid(logit_paddings)  # [B, T]
    # Skipped frames are not masked here (a masked copy of [B, T, K] cost as
    # much as the loss at K in the thousands): whatever they hold only reaches
    # values that the frame masks below replace.
    x = logits.astype(compute_dtype(logits))
    norm = normaliser(x)
    graph = label_graph(labels, label_paddings, logits.shape[2], blank_id)
    # NaN or +inf logits, or a frame of only -inf, in a counted frame.
    bad_frames = valid & ~jnp.isfinite(norm.log_sum)
    frozen = graph.bad_labels | jnp.any(bad_frames, axis=1)
    lengths = jnp.sum(valid, axis=1, dtype=jnp.int32)
    infeasible = lengths < graph.min_frames()
    # Up to ~2 classes per state the log-softmax is cheaper to keep whole
    # (the gather and the gradient's softmax read it) than to recompute.
    log_probs = None
    if logits.shape[2] <= _NARROW * graph.states.shape[1]:
        log_probs = (x - norm.shift[:, :, None]) - norm.log_sum[:, :, None]
        log_probs = lax.optimization_barrier(log_probs)
    count = valid & ~frozen[:, None]
    lat = lattice(graph, x.dtype)
    return Prepared(
        x, norm, log_probs, valid, count, graph, frozen, infeasible, lat, blank_id
    )


def finish(prep: Prepared, log_p: Array) -> tuple[Array, Array]:
    """Per-row loss and a mask of the rows with a (nonzero) gradient."""
    # A feasible row whose probability is 0 (``-inf`` logits) is as impossible
    # as an infeasible one.
    impossible = prep.infeasible | (log_p < 0.5 * NEG_INF)
    loss = jnp.where(impossible, jnp.inf, -log_p)
    loss = jnp.where(prep.frozen, jnp.nan, loss)
    # Rounding may leave -log p a hair below 0 for a certain path.
    return jnp.maximum(loss, 0), ~impossible & ~prep.frozen


def nll(logits, logit_paddings, labels, label_paddings, blank_id) -> Array:
    """``[B]`` −log p(labels | logits): the forward recursion only."""
    prep = prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    log_p = log_likelihood(prep.graph, alpha_pass(prep, shares=False)[0])
    return finish(prep, log_p)[0]


def nll_and_gradient(logits, logit_paddings, labels, label_paddings, blank_id):
    """``([B], [B, T, K])`` the loss and its gradient with respect to the logits."""
    prep = prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    alpha, shares = alpha_pass(prep, shares=True)
    log_p = log_likelihood(prep.graph, alpha)
    loss, possible = finish(prep, log_p)
    gamma_last = final_gamma(prep.graph, alpha, log_p, possible)
    return loss, gradient(prep, gamma_last, shares, possible)
