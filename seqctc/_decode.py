"""Decoding CTC outputs: greedy best path and prefix beam search.

Layout: one dense pass over the valid frames of ``[B, T, K]`` (the frame
summary: normaliser, blank, the few best classes), then a loop over small
``[T, B, ·]`` arrays (a ``lax.scan``, or utterances packed into shared lanes,
:class:`_Schedule`) whose steps are the module-level functions below, over the
named beam state :class:`_Beams`. Design notes and measurements are in
``docs/concepts/decoding.md`` ("Large vocabularies").
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seqctc._fusion import Fusion, FusionState, is_fused, make_fusion
from seqctc._inputs import check_frame_args, positions_valid
from seqctc._lm import LanguageModel
from seqctc._types import NEG_INF, Array, ArrayLike
from seqctc._utils import compute_dtype

# Scores below this are "no path": sums of a few NEG_INF terms stay below it.
_HALF_NEG_INF = NEG_INF / 2
# Classes per prefix a frame ranks first (see _search_frame): without an LM
# at K <= 1,024 at most this many (see _num_fast) ...
_NUM_FAST = 8
# ... with an LM at K > 1,024 that pins no tokens (PP-OCRv4 + order-3 character
# LM: 2x faster than 8).
_NUM_FAST_LM = 48
# ... with an LM that lists its best next classes (ranked for each prefix).
_NUM_FAST_LISTED = 8
# ... for the prefix of the highest bound, with an LM that lists its best
# next classes (that prefix's extensions fill most of the beam): at most this
# many, and W - _NUM_FAST_LISTED (PP-OCRv4 + order-3 character LM: none at
# W = 16, 1.45x faster than 48; 24 at W = 32, 1.2x; 48 at W = 64, 1.3x faster
# than none).
_NUM_LEAD = 48
# From this beam width on, each prefix's parent is matched one slot at a time.
_WIDE_MATCH = 32
# Utterances whose frame is re-ranked alone when only these few need it.
_NUM_FEW = 4
# Bytes of logits one step of the dense pass reads (a chunk of frames).
_CHUNK_BYTES = 1 << 21
# Lanes of the strided groups of a large row (see _top_classes).
_GROUP_LANES = 256


class Decoded(NamedTuple):
    """Decoded token sequences, right padded with −1.

    Attributes:
        tokens: ``[B, L]`` int32 (``[B, top_k, L]`` for beam search) emitted
            tokens, blanks and repeats removed; unused slots hold −1.
        lengths: ``[B]`` (``[B, top_k]``) int32 number of emitted tokens.
        scores: ``[B]`` (``[B, top_k]``) float log score of each hypothesis,
            −inf where there is none.
        starts: same shape as ``tokens``, int32 first frame of each emitted
            token (an index into the frame axis of the input); −1 in unused
            slots.
    """

    tokens: Array
    lengths: Array
    scores: Array
    starts: Array


# --------------------------------------------------------------------------
# The dense pass: statistics of every valid frame, read once.
# --------------------------------------------------------------------------


def _map_valid_frames(
    fn: Callable[[Array], Any], logits: Array, valid: Array, fill: Any
) -> Any:
    """``fn`` applied to chunks of the valid frames of ``logits``, scattered back.

    Padded frames are skipped wherever they lie (never read; their entries
    keep ``fill``), so a mostly padded batch costs its valid frames only, and
    no copy of ``[B, T, K]`` is made (one chunk of rows at a time).

    Args:
        fn: maps ``[C, K]`` compute-dtype logits and ``read`` to a pytree of
            ``[C, ...]``; ``read(cols [C, m])`` gives the entries ``cols`` of
            the same rows, read from ``logits`` itself: a gather from the
            chunk is one more consumer of it, and XLA:CPU then copies the
            chunk's rows out instead of fusing their gather into a pass.
        logits: ``[B, T, K]``.
        valid: ``[B, T]`` bool.
        fill: pytree of ``[...]`` values for padded frames (its structure and
            trailing shapes equal ``fn``'s output).

    Returns:
        The pytree with leading axes ``[B, T]``.
    """
    batch, frames, num_classes = logits.shape
    rows = batch * frames
    dtype = compute_dtype(logits)

    def expand(x, n):
        return jnp.broadcast_to(x, (n, *jnp.shape(x)))

    if rows == 0:
        return jax.tree.map(
            lambda x: expand(x, 0).reshape(batch, frames, *jnp.shape(x)), fill
        )
    chunk = min(rows, max(8, _CHUNK_BYTES // (4 * num_classes)))
    num_chunks = -(-rows // chunk)
    flat = logits.reshape(rows, num_classes)  # [R, K], no copy
    flat_valid = valid.reshape(rows)
    # Valid frames first, in order: valid frame r goes to position rank[r].
    rank = _running(jnp.add, flat_valid.astype(jnp.int32), axis=0) - 1  # [R]
    num_valid = jnp.sum(flat_valid, dtype=jnp.int32)
    order = (
        jnp.zeros((rows + 1,), jnp.int32)
        .at[jnp.where(flat_valid, rank, rows)]
        .set(jnp.arange(rows, dtype=jnp.int32))[:rows]
    )  # [R]: the valid frames, then zeros
    out = jax.tree.map(lambda x: expand(x, num_chunks * chunk), fill)

    def body(i, out):
        start = i * chunk
        # The tail of the last chunk reads the last valid frame again (its
        # outputs land past num_valid): a plain gather, no mask over [C, K].
        pos = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), num_valid - 1)
        idx = order[pos]  # [C]
        x = flat.at[idx].get(mode="promise_in_bounds").astype(dtype)

        def read(cols):
            return flat[idx[:, None], cols].astype(dtype)

        return jax.tree.map(
            lambda o, r: lax.dynamic_update_slice_in_dim(
                o, r.astype(o.dtype), start, 0
            ),
            out,
            fn(x, read),
        )

    out = lax.fori_loop(0, -(-num_valid // chunk), body, out)
    done = jnp.arange(num_chunks * chunk) < num_valid
    out = jax.tree.map(
        lambda o, f: jnp.where(done.reshape((-1,) + (1,) * (o.ndim - 1)), o, f),
        out,
        fill,
    )
    # Back to frame order: frame r sits at position inverse[r]; a padded frame
    # reads the last position, which holds the fill whenever a frame is padded
    # (then num_valid < rows <= num_chunks * chunk).
    inverse = jnp.where(flat_valid, rank, num_chunks * chunk - 1)
    return jax.tree.map(
        lambda o: jnp.take(o, inverse, axis=0).reshape(batch, frames, *o.shape[1:]),
        out,
    )


def _log_normaliser(x: Array, top: Array) -> Array:
    """``[C]`` logsumexp of ``x [C, K]`` given its row maxima ``top [C]``."""
    safe = jnp.where(jnp.isfinite(top), top, jnp.zeros((), x.dtype))
    return safe + jnp.log(jnp.sum(jnp.exp(x - safe[:, None]), axis=-1))


def _best_class(x: Array, read: Callable[[Array], Array]) -> tuple[Array, Array]:
    """``(best class [C] (ties to the lowest), its logit [C])`` of ``x [C, K]``
    (``read`` as in :func:`_map_valid_frames`)."""
    num_classes = x.shape[-1]
    if num_classes > 4 * _GROUP_LANES:
        return _best_class_by_lanes(x, read)
    top = jnp.max(x, axis=-1)
    classes = jnp.arange(num_classes, dtype=jnp.int32)
    best = jnp.min(
        jnp.where(x == top[:, None], classes[None, :], num_classes - 1), axis=-1
    )
    return best, top


def _best_class_by_lanes(
    x: Array, read: Callable[[Array], Array]
) -> tuple[Array, Array]:
    """:func:`_best_class` of a large row, without a select over the whole row.

    A select inside a reduction over ``[C, K]`` runs ~15x slower on CPU than
    a plain maximum. So: the lane maxima of the row's 256-class slices (an
    elementwise maximum), the first lane that holds the row maximum, then the
    first slice where that lane does. When the maximum sits in several lanes
    (an exact tie; the lowest class may be in a later lane) the chunk takes
    the direct select instead.
    """
    num_classes = x.shape[-1]
    lanes = _GROUP_LANES
    slices = _slices(x)
    lane_max = functools.reduce(jnp.maximum, slices)  # [C, G]
    top = jnp.max(lane_max, axis=-1)  # [C]
    lane_ids = jnp.arange(lanes, dtype=jnp.int32)
    at_top = lane_max == top[:, None]
    lane = jnp.min(jnp.where(at_top, lane_ids[None, :], lanes - 1), axis=-1)
    offsets = lanes * jnp.arange(len(slices), dtype=jnp.int32)
    cand = lane[:, None] + offsets[None, :]  # [C, g] the classes of that lane
    # Read from the logits: the chunk then has one consumer, its pass here,
    # into which XLA fuses the gather of its rows (tokens alone 1.13x faster).
    values = read(jnp.minimum(cand, num_classes - 1))
    hit = (values == top[:, None]) & (cand < num_classes)
    best = jnp.min(jnp.where(hit, cand, num_classes - 1), axis=-1)
    tied = jnp.any(jnp.sum(at_top, axis=-1) > 1) | jnp.any(~jnp.isfinite(top))

    def direct():
        classes = jnp.arange(num_classes, dtype=jnp.int32)
        return jnp.min(
            jnp.where(x == top[:, None], classes[None, :], num_classes - 1), axis=-1
        )

    best = lax.cond(tied, direct, lambda: best)
    return best, top


def _slices(x: Array) -> list[Array]:
    """``x [C, K]`` as slices ``[C, G]`` of ``G = _GROUP_LANES`` classes (class
    ``j + i·G`` is lane ``j`` of slice ``i``); the last is padded with −inf."""
    lanes = _GROUP_LANES
    num_classes = x.shape[-1]
    out = [x[:, i : i + lanes] for i in range(0, num_classes, lanes)]
    out[-1] = jnp.pad(
        out[-1], ((0, 0), (0, lanes - out[-1].shape[-1])), constant_values=-jnp.inf
    )
    return out


def _top_k(x: Array, k: int) -> tuple[Array, Array]:
    """``lax.top_k`` behind an optimization barrier.

    XLA:CPU runs a top-k as its TopK kernel only when it sees a sort whose
    outputs are sliced once to the first ``k``; slices of the result taken
    later (the last entry, all but the last) merge into that slice and leave
    a full sort of the row, 10-20x slower.
    """
    return lax.optimization_barrier(lax.top_k(x, k))


def _top_classes(
    x: Array, count: int, *, exclude: int | None = None
) -> tuple[Array, Array, Array]:
    """The ``count`` largest entries of each row of ``x [C, K]`` and their classes.

    A two-level selection (``lax.top_k`` of a whole row of thousands of classes
    costs ~15 µs on CPU): the maxima of ``G`` strided groups (class ``j + i·G``
    in group ``j``; an elementwise maximum of the row's slices of ``G``
    classes, which vectorises, where a padded reshape and a strided reduction
    do not), the ``count`` best groups, then the best entries of those groups,
    which hold the ``count`` best classes. Class ``exclude`` (the blank) is
    left out without copying the row.

    Returns:
        ``(values [C, count], classes [C, count] int32, row maximum [C])``,
        descending; the maximum is over the classes other than ``exclude``.
    """
    num_classes = x.shape[-1]
    lanes = _GROUP_LANES
    if num_classes <= 4 * lanes or count > lanes // 4:
        if exclude is not None:
            x = x.at[:, exclude].set(-jnp.inf)
        values, classes = _top_k(x, count)
        return values, classes.astype(jnp.int32), values[:, 0]
    slices = _slices(x)
    if exclude is not None:
        i, j = divmod(exclude, lanes)
        slices[i] = slices[i].at[:, j].set(-jnp.inf)
    num_slices = len(slices)
    group_max = functools.reduce(jnp.maximum, slices)  # [C, G]
    best_group = lax.top_k(group_max, count)[1]
    # Ascending groups make the candidates ascend by class: ties go low.
    best_group = jnp.sort(best_group, axis=-1).astype(jnp.int32)  # [C, count]
    offsets = lanes * jnp.arange(num_slices, dtype=jnp.int32)
    cand = best_group[:, None, :] + offsets[None, :, None]
    cand = cand.reshape(x.shape[0], num_slices * count)  # [C, g · count]
    inside = (cand < num_classes) & (cand != (-1 if exclude is None else exclude))
    values = jnp.take_along_axis(x, jnp.minimum(cand, num_classes - 1), axis=-1)
    values = jnp.where(inside, values, -jnp.inf)
    values, pos = _top_k(values, count)
    return values, jnp.take_along_axis(cand, pos, axis=-1), values[:, 0]


class _FrameSummary(NamedTuple):
    """What the beam search reads of each frame (``[B, T, ...]``)."""

    normaliser: Array  # [B, T] logsumexp of the frame's logits
    blank: Array  # [B, T] log p(blank)
    cand_lp: Array  # [B, T, Q] log p of the best non-blank classes, descending
    # (every non-blank class in class order for a search that ranks them all)
    cand_cls: Array  # [B, T, Q] int32 their classes


def _summarise(
    logits: Array, valid: Array, *, blank_id: int, count: int, ordered: bool = True
):
    """The frames' :class:`_FrameSummary`; with ``ordered=False`` and ``count =
    K − 1`` the candidates are every non-blank class in class order (no
    selection: a search that ranks every class needs no order)."""
    dtype = compute_dtype(logits)
    neg = jnp.asarray(NEG_INF, dtype)
    every = not ordered and count == logits.shape[-1] - 1

    def stats(x, read):  # [C, K]
        del read  # (no gain: the chunk has other consumers)
        # A max pass of its own: reusing the selection's maximum makes XLA
        # fuse the selection into the exponentials (3x slower on CPU).
        norm = _log_normaliser(x, jnp.max(x, axis=-1))
        if every:
            values = jnp.concatenate([x[:, :blank_id], x[:, blank_id + 1 :]], axis=1)
            every_class = np.delete(np.arange(x.shape[-1], dtype=np.int32), blank_id)
            classes = jnp.broadcast_to(jnp.asarray(every_class), values.shape)
        elif count == 0:
            values = jnp.zeros((x.shape[0], 0), dtype)
            classes = jnp.zeros((x.shape[0], 0), jnp.int32)
        else:
            values, classes, _ = _top_classes(x, count, exclude=blank_id)
        return _FrameSummary(
            norm, x[:, blank_id] - norm, values - norm[:, None], classes
        )

    fill = _FrameSummary(
        jnp.zeros((), dtype),
        jnp.zeros((), dtype),
        jnp.full((count,), neg),
        jnp.zeros((count,), jnp.int32),
    )
    out = _map_valid_frames(stats, logits, valid, fill)
    floor = lambda v: jnp.maximum(v, neg)  # noqa: E731  (log 0 = -inf → NEG_INF)
    return out._replace(blank=floor(out.blank), cand_lp=floor(out.cand_lp))


def _running(op: Callable[[Array, Array], Array], x: Array, axis: int) -> Array:
    """Inclusive running ``op`` (add, maximum) along ``axis``: a log-depth scan
    (XLA:CPU runs ``cumsum``/``cummax`` as a reduce-window tree, ~2x slower)."""
    return lax.associative_scan(op, x, axis=axis)


def _compact(frame_tokens: Array) -> tuple[Array, Array, Array]:
    """Packs per-frame emissions (−1 = none) to the left.

    Args:
        frame_tokens: ``[..., T]`` int32 token emitted at each frame, or −1.

    Returns:
        ``(tokens, lengths, starts)``: ``[..., T]`` tokens and their frames,
        right padded with −1, and ``[...]`` counts.
    """
    num_frames = frame_tokens.shape[-1]
    lead = frame_tokens.shape[:-1]
    emit = frame_tokens >= 0
    flat = emit.reshape(math.prod(lead), num_frames)
    # Each emission's place among its row's emissions; the others go to an
    # extra column that is dropped (a scan and a scatter: XLA:CPU's stable sort
    # of the row cost ~20x more).
    place = _running(jnp.add, flat.astype(jnp.int32), axis=1) - 1
    place = jnp.where(flat, place, num_frames)
    rows = jnp.arange(flat.shape[0], dtype=jnp.int32)[:, None]
    frames = jnp.broadcast_to(jnp.arange(num_frames, dtype=jnp.int32), flat.shape)

    def packed(values):
        out = jnp.full((flat.shape[0], num_frames + 1), -1, jnp.int32)
        return (
            out.at[rows, place].set(values)[:, :num_frames].reshape(frame_tokens.shape)
        )

    tokens = packed(frame_tokens.reshape(flat.shape).astype(jnp.int32))
    starts = packed(frames)
    lengths = jnp.sum(emit, axis=-1, dtype=jnp.int32).reshape(lead)
    return tokens, lengths, starts


# --------------------------------------------------------------------------
# Greedy.
# --------------------------------------------------------------------------


def greedy_decode(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Decoded:
    r"""Best-path (greedy) CTC decoding.

    Takes the most probable class at every valid frame (ties go to the lowest
    class index), merges repeats and drops blanks. The score is the log
    probability of that single path, not of the decoded label sequence:

    .. math::

        \pi_t = \arg\max_k y_t(k), \qquad
        \mathrm{score} = \sum_{t < T_b} \log y_t(\pi_t).

    Args:
        logits: ``[B, T, K]`` unnormalised logits (log-probabilities work too);
            ``log_softmax`` is applied here. Half precision is computed in
            float32.
        logit_paddings: ``[B, T]`` paddings: a frame is valid iff its padding
            is 0. Padded frames are never read and are skipped wherever they
            lie (repeats merge across them); ``starts`` index the input's
            frames.
        blank_id: the blank class (a Python int, static).

    Returns:
        A :class:`Decoded` with ``tokens [B, T]`` (−1 padded), ``lengths [B]``,
        ``scores [B]`` (log probability of the best path) and ``starts [B, T]``
        (first frame of each token, −1 padded).

    Raises:
        ValueError: if ``logits`` is not rank 3, ``logit_paddings`` not rank 2,
            their batch or time sizes differ, or ``blank_id`` is outside
            ``[0, K)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.log(jnp.array([[[.1, .9], [.2, .8], [.9, .1], [.3, .7]]]))
        >>> out = seqctc.greedy_decode(logits, jnp.zeros((1, 4)))
        >>> out.tokens, out.lengths, out.starts
        (Array([[ 1,  1, -1, -1]], dtype=int32), Array([2], dtype=int32),
         Array([[ 0,  3, -1, -1]], dtype=int32))

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`beam_decode` for the most probable label sequence.
    """
    logits, logit_paddings = check_frame_args(logits, logit_paddings, blank_id=blank_id)
    # One compiled program (called eagerly, the ops would compile one by one).
    return _greedy_decode(logits, logit_paddings, blank_id=blank_id)


@functools.partial(jax.jit, static_argnames="blank_id")
def _greedy_decode(logits: Array, logit_paddings: Array, *, blank_id: int) -> Decoded:
    """:func:`greedy_decode` after its argument checks."""
    dtype = compute_dtype(logits)
    valid = positions_valid(logit_paddings)  # [B, T]

    def stats(x, read):  # [C, K]: best class (ties to the lowest) and its log p
        best, top = _best_class(x, read)
        return best, top - _log_normaliser(x, top)

    fill = (jnp.zeros((), jnp.int32), jnp.zeros((), dtype))
    best, best_lp = _map_valid_frames(stats, logits, valid, fill)  # [B, T] each
    scores = jnp.sum(jnp.where(valid, best_lp, jnp.zeros((), dtype)), axis=-1)
    # Repeats merge across padded frames: compare with the previous valid frame.
    frames = jnp.arange(logits.shape[1], dtype=jnp.int32)
    last_valid = _running(jnp.maximum, jnp.where(valid, frames, -1), axis=1)  # [B, T]
    previous = jnp.pad(last_valid[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    prev_best = jnp.take_along_axis(best, jnp.maximum(previous, 0), axis=1)
    prev_best = jnp.where(previous >= 0, prev_best, -1)
    emit = valid & (best != blank_id) & (best != prev_best)
    tokens, lengths, starts = _compact(jnp.where(emit, best, -1))
    return Decoded(tokens=tokens, lengths=lengths, scores=scores, starts=starts)


# --------------------------------------------------------------------------
# Prefix beam search: configuration, state, and the steps of one frame.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _SearchConfig:
    """Static facts of one search (hashable, so steps can be partial'd on it).

    ``num_fast`` classes per prefix are ranked first; ``num_exact`` classes
    provably suffice without fusion (``2W``, see :func:`beam_decode`);
    ``num_summary`` are read per frame in the dense pass.
    """

    beam_width: int
    top_k: int
    blank_id: int
    num_classes: int
    num_allowed: int  # non-blank classes that may extend (prune_top_k)
    num_fast: int
    num_exact: int
    num_summary: int
    fused: bool
    thresholded: bool
    # The LM's most probable next classes each prefix ranks too (0: none).
    num_listed: int = 0
    # Classes the prefix of the highest bound ranks (num_fast if no more).
    num_lead: int = 0

    @property
    def fast_is_complete(self) -> bool:
        return self.num_fast >= self.num_allowed


class _Beams(NamedTuple):
    """The ``W`` prefixes of one utterance (every field ``[W]`` unless noted)."""

    p_b: Array  # log prob of the prefix's paths ending in a blank
    p_nb: Array  # ... ending in the prefix's last token
    best_b: Array  # log prob of the best single such path
    best_nb: Array
    last: Array  # int32 last token, −1 for the empty prefix
    length: Array  # int32
    hashes: Array  # [W, 2] uint32 two rolling hashes of the prefix
    parent: Array  # [W, 2] uint32 the hashes of the prefix minus its last token
    bonus: Array  # fused score so far (0 without fusion)
    fusion: FusionState  # leaves with leading axis W


class _Frame(NamedTuple):
    """One frame of one utterance, as the search reads it."""

    valid: Array  # bool
    blank: Array  # log p(blank)
    last_lp: Array  # [W] log p of each prefix's last token
    last_ext: Array  # [W] the same, NEG_INF where that class may not extend
    cand_lp: Array  # [Q] the best non-blank classes (NEG_INF where pruned)
    cand_cls: Array  # [Q] int32
    pinned_lp: Array  # [P] log p of the pinned tokens (the LM's word boundaries
    # and letters; NEG_INF where pruned or already among the first cand_cls)
    listed_cls: Array  # [W, M] int32 the LM's best next classes of each prefix
    listed_lp: Array  # [W, M] their log p (NEG_INF where pruned, the blank, or
    # already among the classes above)
    listed_lm: Array | None  # [W, M] the LM's log p of them (None: not given)
    hot_cls: Array  # [W, H] int32 the token each hotword expects next
    hot_lp: Array  # [W, H] their log p (NEG_INF where pruned, ranked above, or
    # a repeat within the row)


class _Stay(NamedTuple):
    """Scores of the prefixes that stay (after a blank or a repeat)."""

    alive: Array  # [W] bool
    total: Array  # [W] log(p_b + p_nb) before the frame
    score: Array  # [W] ranking score of the prefix after the frame
    parent_slot: Array  # [W] int32 slot of the prefix minus its last token, −1
    # where that prefix is not in the beam (each prefix has at most one parent)
    p_b: Array  # [W] new p_b, p_nb, best_b, best_nb
    p_nb: Array
    best_b: Array
    best_nb: Array
    back_b: Array  # [W] int32 back-pointers of the new best paths
    back_nb: Array


class _Picked(NamedTuple):
    """The ``W`` candidates kept at a frame."""

    score: Array  # [W] descending
    src: Array  # [W] int32 slot of the prefix they come from
    is_ext: Array  # [W] bool: an extension (else a stay)
    token: Array  # [W] int32 the extending class
    token_lp: Array  # [W] its log p at the frame


def _mix_hash(h: Array, token: Array, seed: int) -> Array:
    """Hash of a prefix extended by ``token``: multiply-add, then murmur3 fmix32."""
    x = h * jnp.uint32(0x9E3779B1) + (token.astype(jnp.uint32) + jnp.uint32(1)) * (
        jnp.uint32(seed)
    )
    x = x ^ (x >> jnp.uint32(16))
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> jnp.uint32(13))
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> jnp.uint32(16))


def _extend_hashes(hashes: Array, token: Array) -> Array:
    """``[W, 2]`` hashes of the prefixes extended by ``token [W]``."""
    return jnp.stack(
        [
            _mix_hash(hashes[:, 0], token, 0x27D4EB2F),
            _mix_hash(hashes[:, 1], token, 0x165667B1),
        ],
        axis=-1,
    )


def _encode(token: Array, slot: Array, end: Array, width: int) -> Array:
    """Back-pointer: (emitted token or −1, parent slot, parent end 0=b/1=nb)."""
    return ((token + 1) * width + slot) * 2 + end


def _initial_beams(cfg: _SearchConfig, fusion: Fusion, dtype) -> _Beams:
    """Only slot 0, the empty prefix with p_b = 1, is alive."""
    width = cfg.beam_width
    neg = jnp.full((width,), NEG_INF, dtype)
    slot0 = jnp.where(jnp.arange(width) == 0, jnp.zeros((), dtype), neg)
    state = jax.tree.map(
        lambda x: jnp.broadcast_to(x, (width, *jnp.shape(x))), fusion.initial_state()
    )
    return _Beams(
        p_b=slot0,
        p_nb=neg,
        best_b=slot0,
        best_nb=neg,
        last=jnp.full((width,), -1, jnp.int32),
        length=jnp.zeros((width,), jnp.int32),
        hashes=jnp.zeros((width, 2), jnp.uint32),
        parent=jnp.full((width, 2), 0xFFFFFFFF, jnp.uint32),
        bonus=jnp.zeros((width,), dtype),
        fusion=state,
    )


def _stay(cfg: _SearchConfig, beams: _Beams, frame: _Frame) -> _Stay:
    """Every prefix stays (blank, or its last token again); children merge."""
    width = cfg.beam_width
    slots = jnp.arange(width, dtype=jnp.int32)
    neg = jnp.asarray(NEG_INF, beams.p_b.dtype)
    alive = (beams.p_b > _HALF_NEG_INF) | (beams.p_nb > _HALF_NEG_INF)
    total = jnp.logaddexp(beams.p_b, beams.p_nb)
    has_last = beams.length > 0
    lp_last = jnp.where(has_last, frame.last_lp, neg)
    ext_last = jnp.where(has_last, frame.last_ext, neg)

    p_b = total + frame.blank
    p_nb = beams.p_nb + lp_last
    best_b = jnp.maximum(beams.best_b, beams.best_nb) + frame.blank
    best_nb = beams.best_nb + lp_last
    back_b = _encode(-1, slots, (beams.best_nb > beams.best_b).astype(jnp.int32), width)

    # A prefix whose parent is also in the beam collects the parent's extension.
    # Each prefix has at most one parent; its slot is a max-reduction, which
    # XLA:CPU runs several times faster than an any-and-argmax pair.
    if width < _WIDE_MATCH:
        child = (
            alive[:, None]
            & alive[None, :]
            & (beams.length[:, None] == beams.length[None, :] + 1)
            & (beams.parent[:, None, 0] == beams.hashes[None, :, 0])
            & (beams.parent[:, None, 1] == beams.hashes[None, :, 1])
        )  # [W (child), W (parent)]
        parent_slot = jnp.max(jnp.where(child, slots[None, :], -1), axis=1)
    else:
        # A wide beam: one [W] comparison per candidate parent, so that no
        # [W, W] table is stored (XLA:CPU ran the reduction over it 1.5-2x
        # slower).
        parent_slot = jnp.full((width,), -1, jnp.int32)
        for q in range(width):
            match = (
                alive
                & alive[q]
                & (beams.length == beams.length[q] + 1)
                & (beams.parent[:, 0] == beams.hashes[q, 0])
                & (beams.parent[:, 1] == beams.hashes[q, 1])
            )
            parent_slot = jnp.where(match, q, parent_slot)
    has_parent = parent_slot >= 0
    par = jnp.maximum(parent_slot, 0)
    same = beams.last[par] == beams.last  # a repeat extends the parent's p_b only
    merge_pnb = jnp.where(same, beams.p_b[par], total[par]) + ext_last
    from_nb = ~same & (beams.best_nb[par] > beams.best_b[par])
    merge_best = jnp.where(from_nb, beams.best_nb[par], beams.best_b[par]) + ext_last
    p_nb = jnp.where(has_parent, jnp.logaddexp(p_nb, merge_pnb), p_nb)
    take = has_parent & (merge_best > best_nb)
    best_nb = jnp.where(take, merge_best, best_nb)
    back_nb = jnp.where(
        take,
        _encode(beams.last, par, from_nb.astype(jnp.int32), width),
        _encode(-1, slots, 1, width),
    )
    return _Stay(
        alive=alive,
        total=total,
        score=jnp.logaddexp(p_b, p_nb) + beams.bonus,
        parent_slot=parent_slot,
        p_b=p_b,
        p_nb=p_nb,
        best_b=best_b,
        best_nb=best_nb,
        back_b=back_b,
        back_nb=back_nb,
    )


def _merged(st: _Stay, last: Array, r_src: Array, own: Array) -> Array:
    """``[R, m]`` bool: prefix ``r_src[r]`` extended by ``own[r, j]`` is in the beam.

    Such an extension was merged into the stay of that prefix (its child).
    Each child marks its one entry (a scatter of ``W`` flags): a batched
    ``[W, W] @ [W, m]`` product of one-hot tables cost 5-10x more on CPU.
    The ``r_src`` are distinct slots. A class listed twice in a row of
    ``own`` (a pinned token among the frame's best classes, whose second copy
    has log p NEG_INF) is marked at its first copy.
    """
    width = last.shape[0]
    rows, m = own.shape
    if m == 0:
        return jnp.zeros((rows, 0), bool)
    row_of_slot = (
        jnp.full((width,), -1, jnp.int32)
        .at[r_src]
        .set(jnp.arange(rows, dtype=jnp.int32))
    )
    row = jnp.where(st.parent_slot >= 0, row_of_slot[st.parent_slot], -1)  # [W]
    hit = own[jnp.maximum(row, 0)] == last[:, None]  # [W (child), m]
    # The first hit (a min-reduction: XLA:CPU's argmax is several times slower).
    col = jnp.min(jnp.where(hit, jnp.arange(m, dtype=jnp.int32), m), axis=1)
    col = jnp.where(row >= 0, col, m)  # m: no entry
    flags = jnp.zeros((rows, m + 1), bool).at[jnp.maximum(row, 0), col].set(True)
    return flags[:, :m]


def _rank(
    cfg: _SearchConfig,
    fusion: Fusion,
    beams: _Beams,
    st: _Stay,
    classes: Array,
    class_lp: Array,
    extras: Sequence[tuple[Array, Array, Array]] = (),
) -> _Picked:
    """The ``W`` best of the stays and the extensions by ``classes [n]``.

    ``class_lp [n]`` is their log p (NEG_INF where a class may not extend).
    Each of ``extras``, ``(src [R], own [R, m], own_lp [R, m], own_lm)``,
    extends prefix ``src[r]`` by the classes ``own[r]`` too (none of them
    among ``classes`` nor in another row of the same prefix); ``own_lm
    [R, m]``, if not None, is the LM's log p of them (the LM's listed
    classes: no LM look-up). Ties go to the lower candidate index (stays
    first).
    """
    width = cfg.beam_width
    n = classes.shape[0]
    neg = jnp.asarray(NEG_INF, st.total.dtype)
    slots = jnp.arange(width, dtype=jnp.int32)
    same = beams.last[:, None] == classes[None, :]
    ext = jnp.where(same, beams.p_b[:, None], st.total[:, None]) + class_lp[None, :]
    # An extension equal to a prefix already in the beam was merged into its stay.
    merged = _merged(st, beams.last, slots, jnp.broadcast_to(classes, (width, n)))
    ext = jnp.where(merged | ~st.alive[:, None], neg, ext)
    score = ext + beams.bonus[:, None]
    if cfg.fused:
        step = jax.vmap(
            jax.vmap(lambda s, c: fusion.step(s, c, ext.dtype)[1], in_axes=(None, 0)),
            in_axes=(0, None),
        )
        score = score + step(beams.fusion, classes)
    scores = [st.score, score.reshape(-1)]
    for r_src, own, own_lp, own_lm in extras:
        last = beams.last[r_src]
        same = last[:, None] == own
        ext = jnp.where(same, beams.p_b[r_src, None], st.total[r_src, None]) + own_lp
        merged = _merged(st, beams.last, r_src, own)
        ext = jnp.where(merged | ~st.alive[r_src, None], neg, ext)
        own_score = ext + beams.bonus[r_src, None]
        if cfg.fused:
            state = jax.tree.map(
                functools.partial(jnp.take, indices=r_src, axis=0), beams.fusion
            )
            if own_lm is None:
                own_step = jax.vmap(
                    jax.vmap(lambda s, c: fusion.step(s, c, neg.dtype)[1], (None, 0))
                )
                own_score = own_score + own_step(state, own)
            else:
                own_delta = jax.vmap(
                    jax.vmap(
                        lambda s, c, lp: fusion.listed_delta(s, c, lp, neg.dtype),
                        (None, 0, 0),
                    )
                )
                own_score = own_score + own_delta(state, own, own_lm)
        scores.append(own_score.reshape(-1))
    top, idx = lax.top_k(jnp.concatenate(scores), width)
    idx = idx.astype(jnp.int32)
    is_ext = idx >= width
    flat = jnp.maximum(idx - width, 0)
    col = flat % max(n, 1)
    src = jnp.where(is_ext, flat // max(n, 1), idx)
    token = classes[col] if n else jnp.zeros((width,), jnp.int32)
    token_lp = class_lp[col] if n else jnp.full((width,), neg)
    start = width * n
    for r_src, own, own_lp, _ in extras:
        m = own.shape[1]
        inside = is_ext & (flat >= start) & (flat < start + own.size)
        o = jnp.clip(flat - start, 0, own.size - 1)
        row, o_col = o // m, o % m
        src = jnp.where(inside, r_src[row], src)
        token = jnp.where(inside, own[row, o_col], token)
        token_lp = jnp.where(inside, own_lp[row, o_col], token_lp)
        start += own.size
    return _Picked(score=top, src=src, is_ext=is_ext, token=token, token_lp=token_lp)


def _is_exact(
    cfg: _SearchConfig,
    fusion: Fusion,
    beams: _Beams,
    st: _Stay,
    picked: _Picked,
    rest_lp: Array,
    pinned_ranked: bool = False,
    hot_listed: bool = False,
) -> Array:
    """Bool: no class left out (each of log p ≤ ``rest_lp``) beats the picks.

    An extension of prefix ``ℓ`` by such a class scores at most
    ``log(p_b + p_nb)(ℓ) + rest_lp + bonus(ℓ) + max_c δ(ℓ, c)``, the maximum
    over the classes other than the pinned tokens when ``pinned_ranked`` and
    other than the LM's listed classes of ``ℓ`` when ``cfg.num_listed`` and
    other than the tokens its hotwords expect when ``hot_listed``.
    """
    bound = st.total + rest_lp + beams.bonus
    if cfg.fused:
        bound = bound + jax.vmap(
            lambda s: fusion.delta_bound(
                s,
                bound.dtype,
                pinned_ranked=pinned_ranked,
                listed=cfg.num_listed > 0,
                hot_listed=hot_listed,
            )
        )(beams.fusion)
    bound = jnp.max(jnp.where(st.alive, bound, NEG_INF))
    return (bound < jnp.min(picked.score)) | (bound <= _HALF_NEG_INF)


def _update(
    cfg: _SearchConfig, fusion: Fusion, beams: _Beams, st: _Stay, pk: _Picked
) -> tuple[_Beams, Array]:
    """The new beams and their ``[W, 2]`` back-pointers (blank end, token end)."""
    width = cfg.beam_width
    src, is_ext, token = pk.src, pk.is_ext, pk.token
    neg = jnp.asarray(NEG_INF, st.total.dtype)

    def pick(stay_value, ext_value):
        return jnp.where(is_ext, ext_value, stay_value)

    last = beams.last[src]
    same = last == token
    ext_pnb = jnp.where(same, beams.p_b[src], st.total[src]) + pk.token_lp
    from_nb = ~same & (beams.best_nb[src] > beams.best_b[src])
    ext_best = jnp.where(from_nb, beams.best_nb[src], beams.best_b[src]) + pk.token_lp
    hashes = beams.hashes[src]
    state = jax.tree.map(lambda x: x[src], beams.fusion)
    bonus = beams.bonus[src]
    if cfg.fused:
        ext_state, delta = jax.vmap(lambda s, c: fusion.step(s, c, neg.dtype))(
            state, token
        )
        state = jax.tree.map(
            lambda e, s: jnp.where(
                is_ext.reshape((width,) + (1,) * (s.ndim - 1)), e, s
            ),
            ext_state,
            state,
        )
        bonus = pick(bonus, bonus + delta)
    new = _Beams(
        p_b=pick(st.p_b[src], neg),
        p_nb=pick(st.p_nb[src], ext_pnb),
        best_b=pick(st.best_b[src], neg),
        best_nb=pick(st.best_nb[src], ext_best),
        last=pick(last, token),
        length=beams.length[src] + is_ext.astype(jnp.int32),
        hashes=jnp.where(is_ext[:, None], _extend_hashes(hashes, token), hashes),
        parent=jnp.where(is_ext[:, None], hashes, beams.parent[src]),
        bonus=bonus,
        fusion=state,
    )
    back = jnp.stack(
        [
            pick(st.back_b[src], _encode(-1, src, 0, width)),
            pick(
                st.back_nb[src], _encode(token, src, from_nb.astype(jnp.int32), width)
            ),
        ],
        axis=-1,
    )
    return new, back


class _FullRow(NamedTuple):
    """One frame of every utterance, read from the logits in a rare fallback."""

    lp: Array  # [B, K] log p, NEG_INF where a class may not extend
    valid: Array  # [B]


def _allowed(cfg: _SearchConfig, lp: Array, kth: Array, threshold: Array) -> Array:
    """Which classes of log p ``lp`` may extend (pruning), as a bool mask."""
    ok = jnp.ones(lp.shape, bool)
    if cfg.num_allowed < cfg.num_classes - 1:
        ok = ok & (lp >= kth)
    if cfg.thresholded:
        ok = ok & (lp >= threshold)
    return ok


def _listed_classes(fusion: Fusion, beams: _Beams) -> tuple[Array, Array | None]:
    """``[B, W, M]`` int32 the LM's most probable next classes of each prefix,
    and ``[B, W, M]`` their log p when the LM gives it (else None)."""
    return jax.vmap(jax.vmap(fusion.listed))(beams.fusion)


def _among(own: Array, classes: Array) -> Array:
    """``[B, W, M]`` bool: ``own [B, W, M]`` is one of ``classes [B, n]``."""
    return jnp.any(own[:, :, :, None] == classes[:, None, None, :], axis=-1)


def _hot_classes(fusion: Fusion, beams: _Beams) -> Array:
    """``[B, W, H]`` int32 the token each hotword expects next, per prefix."""
    return jax.vmap(jax.vmap(fusion.hot_next))(beams.fusion)


def _hot_ranked(hot: Array, shared: Array, own: Array | None) -> Array:
    """``[B, W, H]`` bool: the expected token ``hot`` is ranked already, among
    the classes ``shared [B, n]`` of every prefix, the prefix's listed classes
    ``own [B, W, M]`` (if any) or an earlier hotword's expected token."""
    ranked = _among(hot, shared)
    if own is not None:
        ranked = ranked | jnp.any(hot[:, :, :, None] == own[:, :, None, :], axis=-1)
    num_hot = hot.shape[-1]
    earlier = np.tril(np.ones((num_hot, num_hot), bool), -1)  # [h, h' < h]
    same = hot[:, :, :, None] == hot[:, :, None, :]  # [B, W, h, h']
    repeat = jnp.any(same & earlier[None, None], axis=-1)
    return ranked | repeat


def _row_log_probs(lp: Array, classes: Array) -> Array:
    """``[F, W, M]`` entries ``classes [F, W, M]`` of the rows ``lp [F, K]``."""
    flat = classes.reshape(classes.shape[0], -1)
    return jnp.take_along_axis(lp, flat, axis=1).reshape(classes.shape)


def _search_frame(
    cfg: _SearchConfig,
    fusion: Fusion,
    beams: _Beams,
    frame: _Frame,
    full_row: Callable[..., _FullRow],
) -> tuple[_Beams, Array]:
    """One frame for the whole batch (``beams`` and ``frame`` batched over B).

    Tier 1 ranks the stays and the extensions of every prefix by the frame's
    ``num_fast`` best classes. A bound on everything left out proves, in most
    frames, that the full search keeps the same beams; when it cannot prove it
    for some utterance, the frame is ranked again (``lax.cond``) over the
    ``num_exact = 2W`` best classes of the full row, which suffices without
    fusion, and with fusion once more over every class if the bound fails again.
    At large ``K``, when at most ``_NUM_FEW`` utterances need it, only their
    rows are read and re-ranked (the others keep their tier-1 picks).
    """
    st = jax.vmap(functools.partial(_stay, cfg))(beams, frame)
    rank = jax.vmap(functools.partial(_rank, cfg, fusion))
    dtype = st.total.dtype

    fast = cfg.num_fast
    classes, class_lp = frame.cand_cls[:, :fast], frame.cand_lp[:, :fast]
    pinned_ranked = fusion.pinned is not None and not cfg.fast_is_complete
    num_pinned = 0 if fusion.pinned is None else fusion.pinned.shape[0]
    hot_listed = fusion.num_hot > 0 and not cfg.fast_is_complete
    exact = jax.vmap(
        functools.partial(
            _is_exact,
            cfg,
            fusion,
            pinned_ranked=pinned_ranked,
            hot_listed=hot_listed,
        )
    )
    if pinned_ranked:
        # The pinned tokens are ranked too, so the bound on the classes left
        # out needs no LM gain of a completed word (only word boundaries
        # complete one). Likewise each prefix ranks the tokens its hotwords
        # expect next (hot_listed): no other token gains a hotword match.
        pinned = jnp.broadcast_to(fusion.pinned, frame.pinned_lp.shape)
        classes = jnp.concatenate([classes, pinned], axis=1)
        class_lp = jnp.concatenate([class_lp, frame.pinned_lp], axis=1)
    slots = jnp.broadcast_to(
        jnp.arange(cfg.beam_width, dtype=jnp.int32), frame.last_lp.shape
    )
    extras = []
    rest = None if cfg.fast_is_complete else frame.cand_lp[:, fast]
    if cfg.num_listed:
        extras.append((slots, frame.listed_cls, frame.listed_lp, frame.listed_lm))
    if hot_listed:
        extras.append((slots, frame.hot_cls, frame.hot_lp, None))
    if cfg.num_lead > fast:
        # The prefix whose bound is highest (its extensions are the ones that
        # fill the beam) ranks the next classes of the frame too.
        bound = jax.vmap(
            jax.vmap(
                lambda s: fusion.delta_bound(
                    s,
                    dtype,
                    pinned_ranked=pinned_ranked,
                    listed=cfg.num_listed > 0,
                    hot_listed=hot_listed,
                )
            )
        )(beams.fusion)
        bound = jnp.where(st.alive, st.total + beams.bonus + bound, NEG_INF)
        lead = jnp.argmax(bound, axis=1).astype(jnp.int32)  # [B]
        more = frame.cand_cls[:, fast : cfg.num_lead]  # [B, e]
        more_lp = frame.cand_lp[:, fast : cfg.num_lead]
        ranked = jnp.take_along_axis(frame.listed_cls, lead[:, None, None], axis=1)[
            :, 0
        ]  # [B, M] the classes the lead prefix ranks already
        if pinned_ranked:
            ranked = jnp.concatenate([ranked, pinned], axis=1)
        if hot_listed:
            lead_hot = jnp.take_along_axis(frame.hot_cls, lead[:, None, None], axis=1)
            ranked = jnp.concatenate([ranked, lead_hot[:, 0]], axis=1)
        dup = jnp.any(more[:, :, None] == ranked[:, None, :], axis=-1)
        more_lp = jnp.where(dup, NEG_INF, more_lp)
        extras.append((lead[:, None], more[:, None, :], more_lp[:, None, :], None))
        rest = jnp.where(
            slots == lead[:, None],
            frame.cand_lp[:, cfg.num_lead, None],
            rest[:, None],
        )  # [B, W]
    picked = rank(beams, st, classes, class_lp, extras)
    if not cfg.fast_is_complete:
        ok = exact(beams, st, picked, rest)
        ok = ok | ~frame.valid

        # Without fusion 2W classes are exact; with fusion, 2W, 8W, 32W
        # classes with the bound checked after each, then every class.
        counts = [cfg.num_exact]
        # At large K a full row's 2W best classes take a sort of the row;
        # first the best classes a two-level selection finds (bound checked).
        mid = min(4 * cfg.num_fast, _GROUP_LANES // 4)
        if not cfg.fused and cfg.num_classes > 4 * _GROUP_LANES:
            counts = sorted({min(mid, cfg.num_exact), cfg.num_exact})
        if cfg.fused:
            counts += [min(m * cfg.beam_width, cfg.num_allowed) for m in (8, 32)]
            counts = sorted(set(counts))

        def rank_row(beams, st, row, counts):
            count = counts[0]
            if count >= cfg.num_allowed or (not cfg.fused and len(counts) == 1):
                values, classes, _ = _top_classes(row.lp, count)
                return rank(beams, st, classes, values)
            values, classes, _ = _top_classes(row.lp, count + 1)
            ranked, ranked_lp = classes[:, :-1], values[:, :-1]
            if pinned_ranked:  # as in tier 1, so the same tight bound holds
                pinned = jnp.broadcast_to(fusion.pinned, (ranked.shape[0], num_pinned))
                dup = jnp.any(pinned[:, :, None] == ranked[:, None, :], axis=-1)
                pinned_lp = jnp.take_along_axis(row.lp, pinned, axis=1)
                ranked = jnp.concatenate([ranked, pinned], axis=1)
                ranked_lp = jnp.concatenate(
                    [ranked_lp, jnp.where(dup, NEG_INF, pinned_lp)], axis=1
                )
            row_extras = []
            slots = jnp.broadcast_to(
                jnp.arange(cfg.beam_width, dtype=jnp.int32), st.total.shape
            )
            own = None
            if cfg.num_listed:
                own, own_lm = _listed_classes(fusion, beams)  # [F, W, M]
                own_lp = _row_log_probs(row.lp, own)
                own_lp = jnp.where(_among(own, ranked), NEG_INF, own_lp)
                row_extras.append((slots, own, own_lp, own_lm))
            if hot_listed:
                hot = _hot_classes(fusion, beams)  # [F, W, H]
                hot_lp = jnp.where(
                    _hot_ranked(hot, ranked, own), NEG_INF, _row_log_probs(row.lp, hot)
                )
                row_extras.append((slots, hot, hot_lp, None))
            pk = rank(beams, st, ranked, ranked_lp, row_extras)
            ok_row = exact(beams, st, pk, values[:, -1]) | ~row.valid
            if len(counts) > 1:
                rest = functools.partial(rank_row, beams, st, row, counts[1:])
            else:  # every class

                def rest():
                    classes = jnp.broadcast_to(
                        jnp.arange(cfg.num_classes, dtype=jnp.int32), row.lp.shape
                    )
                    return rank(beams, st, classes, row.lp)

            return lax.cond(jnp.all(ok_row), lambda: pk, rest)

        def every_utterance():
            return rank_row(beams, st, full_row(), counts)

        def few_utterances():
            # The failing utterances first; re-ranking one that passed is
            # harmless (tier 2 is exact for any utterance).
            idx = lax.top_k((~ok).astype(jnp.int32), _NUM_FEW)[1].astype(jnp.int32)
            sub = functools.partial(jax.tree.map, lambda a: a[idx])
            pk = rank_row(sub(beams), sub(st), full_row(idx), counts)
            return jax.tree.map(lambda a, s: a.at[idx].set(s), picked, pk)

        # Only where a row is long: at small K a second copy of tier 2 costs
        # more compile time than it saves.
        if ok.shape[0] > 2 * _NUM_FEW and cfg.num_classes > 4 * _GROUP_LANES:
            tier2 = functools.partial(
                lax.cond,
                jnp.sum(~ok) <= _NUM_FEW,
                few_utterances,
                every_utterance,
            )
        else:
            tier2 = every_utterance
        picked = lax.cond(jnp.all(ok), lambda: picked, tier2)
    new, back = jax.vmap(functools.partial(_update, cfg, fusion))(beams, st, picked)
    # Padded frames keep the beams and point every slot at itself.
    keep = frame.valid
    new = jax.tree.map(
        lambda n, o: jnp.where(keep.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
        new,
        beams,
    )
    width = cfg.beam_width
    slots = jnp.arange(width, dtype=jnp.int32)
    identity = jnp.stack(
        [_encode(-1, slots, 0, width), _encode(-1, slots, 1, width)], axis=-1
    )
    back = jnp.where(keep[:, None, None], back, identity)
    return new, back


def _finish(
    cfg: _SearchConfig,
    fusion: Fusion,
    beams: _Beams,
    back: Callable[[Array], Array],
    frames: int,
):
    """Top-k hypotheses of one utterance from its beams and back-pointers.

    Args:
        back: ``back(t)`` the ``[W, 2]`` int32 back-pointers of frame ``t``.
        frames: ``T``.

    Returns:
        ``(frame_tokens [top_k, T], scores [top_k])``.
    """
    width = cfg.beam_width
    alive = (beams.p_b > _HALF_NEG_INF) | (beams.p_nb > _HALF_NEG_INF)
    final = jnp.logaddexp(beams.p_b, beams.p_nb) + beams.bonus
    if cfg.fused:
        final = final + jax.vmap(lambda s: fusion.final_score(s, final.dtype))(
            beams.fusion
        )
    final = jnp.where(alive, final, -jnp.inf)
    scores, order = lax.top_k(final, cfg.top_k)
    order = order.astype(jnp.int32)
    end = (beams.best_nb[order] > beams.best_b[order]).astype(jnp.int32)

    def backtrack(carry, t):
        slot, end = carry
        code = back(t)[slot, end]  # [top_k]
        return ((code // 2) % width, code % 2), code // (2 * width) - 1

    _, frame_tokens = lax.scan(
        backtrack, (order, end), jnp.arange(frames, dtype=jnp.int32), reverse=True
    )
    frame_tokens = jnp.where(alive[order][None, :], frame_tokens, -1)  # [T, top_k]
    return frame_tokens.T, scores


class _Schedule(NamedTuple):
    """Utterances packed into lanes: each lane reads its utterances one after
    another, so a batch of varied lengths takes about its valid frames over
    the lanes in steps, not ``B`` times its longest utterance.

    ``[S, L]`` fields say what lane ``l`` reads at step ``s``; ``[B]`` fields
    where each utterance went.
    """

    utt: Array  # [S, L] int32 the utterance (B: none)
    frame: Array  # [S, L] int32 its frame (0 where none)
    first: Array  # [S, L] bool: the utterance's first frame (fresh beams)
    last: Array  # [S, L] bool: its last frame (the beams after it are final)
    steps: Array  # int32 steps the longest lane takes
    lane: Array  # [B] int32
    start: Array  # [B] int32 the step of each utterance's first frame
    extent: Array  # [B] int32 frames each utterance reads (to its last valid one)


def _max_steps(batch: int, frames: int, lanes: int) -> int:
    """A static bound on the steps of :func:`_schedule`: a lane takes an
    utterance when its load is the least, at most the others' mean."""
    return min(-(-(batch - 1) * frames // lanes) + frames, batch * frames)


def _schedule(valid: Array, lanes: int) -> _Schedule:
    """Longest utterance first, each to the lane that is free first (LPT)."""
    batch, frames = valid.shape
    max_steps = _max_steps(batch, frames, lanes)
    frame_ids = jnp.arange(frames, dtype=jnp.int32)
    extent = jnp.max(jnp.where(valid, frame_ids + 1, 0), axis=1).astype(jnp.int32)
    order = jnp.argsort(-extent, stable=True).astype(jnp.int32)

    def assign(i, carry):
        load, lane, start = carry
        u = order[i]
        free = jnp.argmin(load).astype(jnp.int32)
        return (
            load.at[free].add(extent[u]),
            lane.at[u].set(free),
            start.at[u].set(load[free]),
        )

    zeros = jnp.zeros((batch,), jnp.int32)
    load, lane, start = lax.fori_loop(
        0, batch, assign, (jnp.zeros((lanes,), jnp.int32), zeros, zeros)
    )
    inside = frame_ids[None, :] < extent[:, None]  # [B, T]
    step = jnp.where(inside, start[:, None] + frame_ids[None, :], max_steps)
    at = (step, jnp.broadcast_to(lane[:, None], step.shape))
    utt = jnp.full((max_steps, lanes), batch, jnp.int32)
    utt = utt.at[at].set(
        jnp.broadcast_to(jnp.arange(batch, dtype=jnp.int32)[:, None], step.shape),
        mode="drop",
    )
    frame = jnp.zeros((max_steps, lanes), jnp.int32)
    frame = frame.at[at].set(jnp.broadcast_to(frame_ids, step.shape), mode="drop")
    used = utt < batch
    ext = jnp.concatenate([extent, jnp.zeros((1,), jnp.int32)])[utt]
    return _Schedule(
        utt=utt,
        frame=frame,
        first=used & (frame == 0),
        last=used & (frame == ext - 1),
        steps=jnp.max(load),
        lane=lane,
        start=start,
        extent=extent,
    )


def _beam_search(
    cfg: _SearchConfig,
    fusion: Fusion,
    logits: Array,
    valid: Array,
    threshold: Array,
) -> tuple[Array, Array]:
    """Prefix beam search over a batch: ``(frame_tokens [B, top_k, T], scores)``."""
    batch, frames, _ = logits.shape
    dtype = compute_dtype(logits)
    neg = jnp.asarray(NEG_INF, dtype)
    width = cfg.beam_width
    slots = jnp.arange(width, dtype=jnp.int32)
    identity = jnp.stack(
        [_encode(-1, slots, 0, width), _encode(-1, slots, 1, width)], axis=-1
    )  # [W, 2] back-pointers of a frame that keeps the beams
    initial = _initial_beams(cfg, fusion, dtype)

    def fresh_beams(n):  # n rows of the initial beams
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), initial)

    if frames == 0 or batch == 0:  # nothing to read: the empty prefix
        return jax.vmap(
            lambda beams: _finish(cfg, fusion, beams, lambda t: identity, frames)
        )(fresh_beams(batch))
    summary = _summarise(
        logits,
        valid,
        blank_id=cfg.blank_id,
        count=cfg.num_summary,
        ordered=not (cfg.fast_is_complete and cfg.num_allowed == cfg.num_classes - 1),
    )
    # The pruning cut of each frame: its num_allowed-th best class.
    if cfg.num_allowed < cfg.num_classes - 1:
        kth = summary.cand_lp[:, :, cfg.num_allowed - 1]
    else:
        kth = jnp.full((batch, frames), neg)
    cand_lp = jnp.where(
        _allowed(cfg, summary.cand_lp, kth[:, :, None], threshold)
        & (jnp.arange(cfg.num_summary) < cfg.num_allowed)[None, None, :],
        summary.cand_lp,
        neg,
    )
    per_frame = (valid, summary.normaliser, summary.blank, kth, cand_lp)
    per_frame = (*per_frame, summary.cand_cls)

    def step(beams, utt, t, xs):
        """One frame ``t [L]`` of the utterances ``utt [L]`` (clamped), whose
        summary is ``xs``."""
        ok, norm, blank, cut, lp, cls = xs
        num = utt.shape[0]
        # The prefixes' last tokens: a [L, W] gather from the logits at frame t.
        x = logits[utt[:, None], t[:, None], jnp.maximum(beams.last, 0)].astype(dtype)
        x = jnp.where(ok[:, None], x, jnp.zeros((), dtype))
        last_lp = jnp.maximum(x - norm[:, None], neg)
        last_ext = jnp.where(
            _allowed(cfg, last_lp, cut[:, None], threshold), last_lp, neg
        )
        if fusion.pinned is None:
            pinned_lp = jnp.zeros((num, 0), dtype)
        else:
            h = logits[utt[:, None], t[:, None], fusion.pinned[None, :]].astype(dtype)
            h = jnp.maximum(jnp.where(ok[:, None], h, 0) - norm[:, None], neg)
            dup = jnp.any(
                fusion.pinned[None, :, None] == cls[:, None, : cfg.num_fast],
                axis=-1,
            )  # [L, P] already among the classes ranked first
            keep = _allowed(cfg, h, cut[:, None], threshold) & ~dup
            pinned_lp = jnp.where(keep, h, neg)
        # The classes every prefix ranks, and the log p of a prefix's own.
        shared = cls[:, : cfg.num_fast]
        if fusion.pinned is not None:
            pinned = jnp.broadcast_to(fusion.pinned, (num, fusion.pinned.shape[0]))
            shared = jnp.concatenate([shared, pinned], axis=1)

        def prefix_log_probs(classes):
            """``[L, W, m]`` log p of ``classes [L, W, m]``, NEG_INF where pruned."""
            h = logits[utt[:, None, None], t[:, None, None], classes].astype(dtype)
            h = jnp.where(ok[:, None, None], h, 0) - norm[:, None, None]
            h = jnp.maximum(h, neg)
            return jnp.where(_allowed(cfg, h, cut[:, None, None], threshold), h, neg)

        if cfg.num_listed:
            # Each prefix's LM-favoured classes, unless ranked for all already.
            own, own_lm = _listed_classes(fusion, beams)  # [L, W, M]
            keep = (own != cfg.blank_id) & ~_among(own, shared)
            listed_lp = jnp.where(keep, prefix_log_probs(own), neg)
        else:
            own = jnp.zeros((num, width, 0), jnp.int32)
            listed_lp = jnp.zeros((num, width, 0), dtype)
            own_lm = None
        if fusion.num_hot and not cfg.fast_is_complete:
            # The tokens each prefix's hotwords expect, unless ranked already.
            hot = _hot_classes(fusion, beams)  # [L, W, H]
            ranked = _hot_ranked(hot, shared, own if cfg.num_listed else None)
            hot_lp = jnp.where(~ranked, prefix_log_probs(hot), neg)
        else:
            hot = jnp.zeros((num, width, 0), jnp.int32)
            hot_lp = jnp.zeros((num, width, 0), dtype)
        frame = _Frame(
            ok,
            blank,
            last_lp,
            last_ext,
            lp,
            cls,
            pinned_lp,
            own,
            listed_lp,
            own_lm,
            hot,
            hot_lp,
        )

        def full_row(idx=None):
            """Frame t of the lanes ``idx [F]`` (all if None): ``[F, K]``."""
            u, f, ok_r, norm_r, cut_r = (
                (utt, t, ok, norm, cut)
                if idx is None
                else tuple(a[idx] for a in (utt, t, ok, norm, cut))
            )
            row = logits[u, f]
            row = jnp.where(ok_r[:, None], row.astype(dtype), jnp.zeros((), dtype))
            row = jnp.maximum(row - norm_r[:, None], neg)  # [F, K]
            is_blank = jnp.arange(cfg.num_classes) == cfg.blank_id
            allowed = _allowed(cfg, row, cut_r[:, None], threshold) & ~is_blank[None, :]
            return _FullRow(jnp.where(allowed, row, neg), ok_r)

        return _search_frame(cfg, fusion, beams, frame, full_row)

    def whole():
        """One utterance a lane: a scan over the frames."""
        rows = jnp.arange(batch, dtype=jnp.int32)

        def body(beams, xs):
            t, *frame_xs = xs
            return step(beams, rows, jnp.full((batch,), t), tuple(frame_xs))

        time_major = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
        beams, back = lax.scan(
            body,
            fresh_beams(batch),
            (jnp.arange(frames, dtype=jnp.int32), *map(time_major, per_frame)),
        )  # back: [T, B, W, 2]
        return jax.vmap(
            lambda beams, back: _finish(cfg, fusion, beams, back.__getitem__, frames),
            in_axes=(0, 1),
        )(beams, back)

    def packed(sched):
        """Utterances one after another in the lanes of ``sched``."""
        lanes = sched.utt.shape[1]
        max_steps = sched.utt.shape[0]
        utt = jnp.minimum(sched.utt, batch - 1)
        # The summary in step order, [S, L, ...]: each step reads one row.
        xs = tuple(x[utt, sched.frame] for x in per_frame)
        xs = (xs[0] & (sched.utt < batch), *xs[1:])
        init = fresh_beams(lanes)
        # One spare row: the finals of lanes that finish nothing at a step.
        finals = fresh_beams(batch + 1)
        back = jnp.zeros((max_steps, lanes, width, 2), jnp.int32)

        def at(x, s):
            return lax.dynamic_index_in_dim(x, s, keepdims=False)

        def body(carry):
            s, beams, finals, back = carry
            u = at(sched.utt, s)
            new, back_s = step(
                beams,
                jnp.minimum(u, batch - 1),
                at(sched.frame, s),
                tuple(at(x, s) for x in xs),
            )
            last = at(sched.last, s)
            finals = lax.cond(
                jnp.any(last),
                lambda: jax.tree.map(
                    lambda f, n: f.at[jnp.where(last, u, batch)].set(n), finals, new
                ),
                lambda: finals,
            )
            back = lax.dynamic_update_index_in_dim(back, back_s, s, 0)
            # Lanes that start an utterance at the next step start afresh.
            fresh = at(sched.first, s + 1)
            new = jax.tree.map(
                lambda i, b: jnp.where(
                    fresh.reshape((-1,) + (1,) * (b.ndim - 1)), i, b
                ),
                init,
                new,
            )
            return s + 1, new, finals, back

        carry = (jnp.zeros((), jnp.int32), init, finals, back)
        _, _, finals, back = lax.while_loop(lambda c: c[0] < sched.steps, body, carry)

        def finish(b):
            def row(t):  # frame t of utterance b: a row of its lane
                s = jnp.minimum(sched.start[b] + t, max_steps - 1)
                inside = t < sched.extent[b]
                return jnp.where(inside, back[s, sched.lane[b]], identity)

            final = jax.tree.map(lambda f: f[b], finals)
            return _finish(cfg, fusion, final, row, frames)

        return jax.vmap(finish)(jnp.arange(batch, dtype=jnp.int32))

    lanes = _num_lanes(batch)
    if lanes == batch:
        return whole()
    sched = _schedule(valid, lanes)
    longest = jnp.max(sched.extent)  # the steps of one utterance a lane
    # Packed when that costs less (lengths vary), else one utterance a lane
    # (lengths alike: a few lanes would idle at the end). A step costs about
    # `lanes + r` lanes: its fixed part is worth r = max(8, 160 / W) lanes
    # (measured on random K = 32 and PP-OCRv4 batches, W = 4 to 64).
    r = max(8, 160 // width)
    cheaper = sched.steps * (lanes + r) < longest * (batch + r)
    return lax.cond(cheaper, lambda: packed(sched), whole)


def _num_lanes(batch: int) -> int:
    """Lanes of a packed search: a third of the batch, from 8 utterances on.

    PP-OCRv4 lines (T = 40-216) at W = 16 and 64: 32 utterances in 11
    lanes 1.2x and 1.45x faster than in 32; 128 in 43, 1.2x and 1.35x. A
    quarter of the batch left the longest line's lanes waiting less but
    needed more steps than it saved at B = 32; below 8 utterances the
    steps a lane adds cost more than its lanes save.
    """
    return -(-batch // 3) if batch >= 8 else batch


def _num_fast(beam_width: int, num_classes: int) -> int:
    """Classes per prefix the plain search ranks first.

    A bound that fails costs a re-ranking of ``2W`` classes. At small ``K``
    that is cheap, so the first tier stays small: ``W`` classes, 4 to 8. At
    large ``K`` it reads the frame's row, and the bound holds less often the
    wider the beam (its ``W``-th score lies deeper): ``W / 4`` classes, 4 to
    16. PP-OCRv4 batch, packed lanes: W64 16 classes 1.07x faster than 12,
    W16 and W32 (4, 8) as fast as 6, 8; 3 at W16 and 6 at W64: 0.92-0.98x.
    """
    if num_classes <= 4 * _GROUP_LANES:
        return min(_NUM_FAST, max(4, beam_width))
    return min(16, max(4, beam_width // 4))


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be a Python int, got {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be at least 1, got {value}.")


def beam_decode(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    *,
    beam_width: int = 8,
    top_k: int = 1,
    blank_id: int = 0,
    prune_top_k: int | None = None,
    prune_threshold: float | None = None,
    lm: LanguageModel | None = None,
    lm_weight: ArrayLike = 1.0,
    insertion_bonus: ArrayLike = 0.0,
    hotwords: Sequence[Sequence[int]] | None = None,
    hotword_weight: ArrayLike = 1.0,
) -> Decoded:
    r"""CTC prefix beam search with path merging, fixed shapes and an LM hook.

    Keeps ``beam_width`` label prefixes. For each prefix :math:`\ell` it carries
    the log probability of the paths that collapse to :math:`\ell` and end in a
    blank, :math:`p_b`, or in the last token, :math:`p_{nb}`. At frame ``t``
    every prefix either stays or is extended by a non-blank class ``c``:

    .. math::

        p_b^t(\ell) &= (p_b^{t-1}(\ell) + p_{nb}^{t-1}(\ell))\, y_t(\epsilon),
        \\
        p_{nb}^t(\ell c) &\mathrel{+}= y_t(c) \cdot
            \begin{cases} p_b^{t-1}(\ell) & c = \ell_{-1} \\
            p_b^{t-1}(\ell) + p_{nb}^{t-1}(\ell) & \text{otherwise,}\end{cases}
        \\
        p_{nb}^t(\ell) &\mathrel{+}= p_{nb}^{t-1}(\ell)\, y_t(\ell_{-1}).

    After every frame equal prefixes are merged (an extension that equals a prefix
    already in the beam adds to its :math:`p_{nb}`) and the ``beam_width`` prefixes
    of highest :math:`p_b + p_{nb}` are kept. Equal prefixes are found through two
    32-bit rolling hashes of each prefix and of its parent, and the tokens are
    recovered at the end from per-frame back-pointers, so the work per frame is
    :math:`O(W \cdot M)` (``M`` candidate classes) and does not grow with ``T``.
    Without pruning the search is exact prefix beam search: only the ``2W`` most
    probable non-blank classes of a frame are expanded, which provably changes
    nothing (each prefix contributes at most ``W`` survivors and at most ``W`` of
    its extensions are set aside by merging or by the repeat rule). A frame first
    ranks only the stays and the extensions of every prefix by the frame's 8 most
    probable classes (48 with an ``lm`` at ``K > 1024`` that neither pins tokens nor
    lists its next classes; every class with an ``lm`` when ``2W`` cover them, as
    the re-ranking would), plus the LM's pinned tokens, the LM's listed next classes
    of each prefix and the token each of its hotwords expects next; when a bound (an
    extension left out scores at most the prefix's total times the next class's
    probability, times the largest fused increment with fusion) cannot prove that
    this keeps the same beams, the frame is ranked again over the ``2W`` best
    classes of the full row (only for the utterances that need it when they are at
    most 4 at ``K > 1024``), and with fusion over more classes, then every class, if
    the bound fails again, so the result is that of the full search. The logits are
    read once, in a pass over the valid frames only, that keeps the normaliser, the
    blank and the best classes of each frame; the scan reads those and gathers the
    prefixes' last tokens.

    ``starts`` follow the most probable single path among those merged into a
    prefix (a Viterbi back-pointer kept next to the sums), so they increase.
    ``beam_width=1`` keeps the prefix of highest total probability, which equals
    greedy decoding on peaked outputs but not always (a blank and a repeat of the
    last token can together outweigh the frame's most probable class).

    **Shallow fusion.** With a language model ``lm`` (see
    :class:`seqctc.LanguageModel`, e.g. :class:`seqctc.CharNGramLM`),
    ``insertion_bonus`` or ``hotwords``, prefixes are ranked by the fused score

    .. math::

        \log p_{ctc}(\ell) + \alpha \log p_{lm}(\ell) + \beta |\ell|
            + \gamma\, h(\ell),

    with ``α = lm_weight``, ``β = insertion_bonus``, ``γ = hotword_weight`` and
    :math:`h(\ell)` the hotword count (tokens of completed hotwords plus the
    longest partial match at the end of :math:`\ell`; a partial match that
    breaks off loses its bonus again). The LM's end-of-sentence score is added
    to the final ranking. ``scores`` then hold this fused score. Without them
    the result is pure CTC and ``scores`` are :math:`\log p_{ctc}(\ell)`.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (log-probabilities work too);
            half precision is computed in float32.
        logit_paddings: ``[B, T]`` paddings: a frame is valid iff its padding
            is 0. Padded frames are never read and are skipped wherever they
            lie (the beams do not change there).
        beam_width: ``W``, prefixes kept per frame (static Python int ≥ 1).
        top_k: hypotheses returned, ``1 ≤ top_k ≤ beam_width`` (static).
        blank_id: the blank class (static).
        prune_top_k: if set, only the ``prune_top_k`` most probable non-blank
            classes of each frame may extend a prefix (static).
        prune_threshold: if set, classes whose log probability at a frame is
            below it do not extend prefixes there.
        lm: a :class:`seqctc.LanguageModel` scoring each extension, or None.
            Without a ``max_score`` method (an upper bound of its log
            probabilities given a state) every fused frame ranks all classes.
        lm_weight: ``α``, weight of the LM log probability.
        insertion_bonus: ``β``, added per emitted token; with a
            :class:`seqctc.WordNGramLM` as ``lm``, per word (``α`` and ``β``
            then fold into :meth:`seqctc.WordNGramLM.with_weights`).
        hotwords: token sequences to boost (static), e.g. ``[[3, 4, 5]]``.
        hotword_weight: ``γ``, bonus per matched hotword token.

    Returns:
        A :class:`Decoded` with ``tokens [B, top_k, T]`` (−1 padded),
        ``lengths [B, top_k]``, ``scores [B, top_k]`` sorted descending and
        ``starts [B, top_k, T]``. Slots beyond the number of distinct
        hypotheses hold tokens −1, length 0 and score −inf.

    Raises:
        ValueError: for wrong ranks or mismatched shapes of ``logits`` and
            ``logit_paddings``, ``blank_id`` outside ``[0, K)``, a
            ``beam_width``, ``top_k`` or ``prune_top_k`` that is not a positive
            int, ``top_k > beam_width``, an ``lm`` whose ``num_classes`` is not
            ``K``, or a hotword that is empty or holds the blank or a class
            outside ``[0, K)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> probs = jnp.array([[[.4, .6], [.3, .7], [.8, .2]]])
        >>> out = seqctc.beam_decode(jnp.log(probs), jnp.zeros((1, 3)),
        ...                          beam_width=4, top_k=2)
        >>> out.tokens[0, :, :2], out.lengths
        (Array([[ 1, -1], [-1, -1]], dtype=int32), Array([[1, 0]], dtype=int32))
        >>> jnp.exp(out.scores)  # 1 - p("") - p("1 1"), and .4 * .3 * .8
        Array([[0.868, 0.096]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.
        Hannun et al., `First-pass large vocabulary continuous speech
        recognition using bi-directional recurrent DNNs
        <https://arxiv.org/abs/1408.2873>`_, 2014.

    See also:
        :func:`greedy_decode`, :class:`seqctc.CharNGramLM`.
    """
    logits, logit_paddings = check_frame_args(logits, logit_paddings, blank_id=blank_id)
    _check_positive_int(beam_width, "beam_width")
    _check_positive_int(top_k, "top_k")
    if top_k > beam_width:
        raise ValueError(
            f"`top_k` must not exceed `beam_width`, got top_k={top_k} > "
            f"beam_width={beam_width}."
        )
    if prune_top_k is not None:
        _check_positive_int(prune_top_k, "prune_top_k")
    if hotwords is not None:  # static: a tuple of tuples of Python ints
        hotwords = tuple(tuple(int(x) for x in word) for word in hotwords)
    # One compiled program per configuration (called eagerly, the dense pass
    # and the scan would otherwise be traced and compiled op by op each call).
    return _beam_decode(
        logits,
        logit_paddings,
        lm,
        lm_weight,
        insertion_bonus,
        hotword_weight,
        NEG_INF if prune_threshold is None else prune_threshold,
        beam_width=beam_width,
        top_k=top_k,
        blank_id=blank_id,
        prune_top_k=prune_top_k,
        hotwords=hotwords,
        fused=is_fused(lm, insertion_bonus, hotwords),
        thresholded=prune_threshold is not None,
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "beam_width",
        "top_k",
        "blank_id",
        "prune_top_k",
        "hotwords",
        "fused",
        "thresholded",
    ),
)
def _beam_decode(
    logits: Array,
    logit_paddings: Array,
    lm: LanguageModel | None,
    lm_weight: ArrayLike,
    insertion_bonus: ArrayLike,
    hotword_weight: ArrayLike,
    prune_threshold: ArrayLike,
    *,
    beam_width: int,
    top_k: int,
    blank_id: int,
    prune_top_k: int | None,
    hotwords: tuple[tuple[int, ...], ...] | None,
    fused: bool,
    thresholded: bool,
) -> Decoded:
    """:func:`beam_decode` after its argument checks (``fused`` static)."""
    batch, frames, num_classes = logits.shape
    dtype = compute_dtype(logits)
    fusion = make_fusion(
        num_classes=num_classes,
        blank_id=blank_id,
        lm=lm,
        lm_weight=lm_weight,
        insertion_bonus=insertion_bonus,
        hotwords=hotwords,
        hotword_weight=hotword_weight,
        dtype=dtype,
    )
    non_blank = num_classes - 1
    allowed = non_blank if prune_top_k is None else min(prune_top_k, non_blank)
    # With an LM at large K the bound fails more often (the LM lowers the
    # scores of the ranked extensions): rank more classes first, unless the
    # LM pins the tokens it favours (ranked anyway, so the bound stays tight).
    # An LM that lists its most probable next classes has them ranked for
    # each prefix, which keeps the bound tight too.
    listed = fusion.num_listed
    wide = (
        lm is not None
        and num_classes > 4 * _GROUP_LANES
        and not getattr(fusion.lm, "pinned_tokens", ())
        and not listed
    )
    fast = min(
        _NUM_FAST_LM
        if wide
        else _NUM_FAST_LISTED
        if listed
        else _num_fast(beam_width, num_classes),
        allowed,
    )
    if lm is not None and allowed <= 2 * beam_width:
        # The exact re-ranking would read every class anyway, and with an LM
        # the bound fails on most frames: rank every class once.
        fast = allowed
    lead = (
        min(_NUM_LEAD, allowed - 1, beam_width - _NUM_FAST_LISTED)
        if listed and fast < allowed
        else 0
    )
    lead = lead if lead > fast else 0
    cfg = _SearchConfig(
        beam_width=beam_width,
        top_k=top_k,
        blank_id=blank_id,
        num_classes=num_classes,
        num_allowed=allowed,
        num_fast=fast,
        num_exact=min(2 * beam_width, allowed),
        num_summary=min(
            non_blank, max(fast + 1, lead + 1, allowed if prune_top_k else 0)
        ),
        fused=fused,
        thresholded=thresholded,
        num_listed=listed if fast < allowed else 0,
        num_lead=lead,
    )
    threshold = jnp.asarray(prune_threshold, dtype)
    frame_tokens, scores = _beam_search(
        cfg, fusion, logits, positions_valid(logit_paddings), threshold
    )  # [B, top_k, T], [B, top_k]
    tokens, lengths, starts = _compact(frame_tokens)
    return Decoded(tokens=tokens, lengths=lengths, scores=scores, starts=starts)
