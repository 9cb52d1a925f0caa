"""Decoding CTC outputs: greedy best path and prefix beam search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seqctc._lm import LanguageModel, hotword_automaton
from seqctc._types import NEG_INF, Array, ArrayLike
from seqctc._utils import check_blank_id, check_rank, check_same_dim, compute_dtype

# Scores below this are "no path": sums of a few NEG_INF terms stay below it.
_HALF_NEG_INF = NEG_INF / 2
# Extensions per prefix tried first when no fusion is on (see _beam_search).
_NUM_FAST = 8


class Decoded(NamedTuple):
    """Decoded token sequences, right padded with −1.

    Attributes:
        tokens: ``[B, L]`` int32 (``[B, top_k, L]`` for beam search) emitted
            tokens, blanks and repeats removed; unused slots hold −1.
        lengths: ``[B]`` (``[B, top_k]``) int32 number of emitted tokens.
        scores: ``[B]`` (``[B, top_k]``) float log score of each hypothesis,
            −inf where there is none.
        starts: same shape as ``tokens``, int32 first frame of each emitted
            token; −1 in unused slots.
    """

    tokens: Array
    lengths: Array
    scores: Array
    starts: Array


def _log_probs(logits: Array, logit_paddings: Array, blank_id: Any) -> Array:
    """log_softmax in the compute dtype; padded frames are replaced by zeros."""
    dtype = compute_dtype(logits)
    padded = logit_paddings > 0  # [B, T]
    logits = jnp.where(padded[:, :, None], jnp.zeros((), dtype), logits.astype(dtype))
    return jax.nn.log_softmax(logits, axis=-1)


def _check_inputs(logits: ArrayLike, logit_paddings: ArrayLike, blank_id: int):
    logits = jnp.asarray(logits)
    logit_paddings = jnp.asarray(logit_paddings)
    check_rank(logits, 3, "logits")
    check_rank(logit_paddings, 2, "logit_paddings")
    check_same_dim(logits, 0, "logits", logit_paddings, 0, "logit_paddings")
    check_same_dim(logits, 1, "logits", logit_paddings, 1, "logit_paddings")
    check_blank_id(blank_id, logits.shape[-1])
    return logits, logit_paddings


def _compact(frame_tokens: Array, dtype: jnp.dtype) -> tuple[Array, Array, Array]:
    """Packs per-frame emissions (−1 = none) to the left.

    Args:
        frame_tokens: ``[..., T]`` int32 token emitted at each frame, or −1.
        dtype: unused, kept for symmetry.

    Returns:
        ``(tokens, lengths, starts)``: ``[..., T]`` tokens and their first frames,
        right padded with −1, and ``[...]`` counts.
    """
    del dtype
    num_frames = frame_tokens.shape[-1]
    emit = frame_tokens >= 0
    frames = jnp.broadcast_to(
        jnp.arange(num_frames, dtype=jnp.int32), frame_tokens.shape
    )
    # A stable sort on "not emitted" moves the emissions to the front in order.
    order = jnp.argsort(~emit, axis=-1, stable=True)
    tokens = jnp.take_along_axis(frame_tokens, order, axis=-1)
    starts = jnp.where(tokens >= 0, jnp.take_along_axis(frames, order, axis=-1), -1)
    lengths = jnp.sum(emit, axis=-1, dtype=jnp.int32)
    return tokens, lengths, starts


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
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame. Padded frames are
            never read.
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
    logits, logit_paddings = _check_inputs(logits, logit_paddings, blank_id)
    dtype = compute_dtype(logits)
    valid = logit_paddings == 0  # [B, T]
    logits = jnp.where(valid[:, :, None], logits.astype(dtype), jnp.zeros((), dtype))
    # argmax and the best log probability need no full log_softmax.
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, T]
    best_logit = jnp.take_along_axis(logits, best[:, :, None], axis=-1)[:, :, 0]
    best_lp = best_logit - jax.nn.logsumexp(logits, axis=-1)
    scores = jnp.sum(jnp.where(valid, best_lp, jnp.zeros((), dtype)), axis=-1)
    previous = jnp.pad(best[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    emit = valid & (best != blank_id) & (best != previous)
    frame_tokens = jnp.where(emit, best, -1)
    tokens, lengths, starts = _compact(frame_tokens, dtype)
    return Decoded(tokens=tokens, lengths=lengths, scores=scores, starts=starts)


# --------------------------------------------------------------------------
# Prefix beam search.
# --------------------------------------------------------------------------


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


# Columns of _Beams.probs and _Beams.prefix.
_PB, _PNB, _BEST_B, _BEST_NB = range(4)
_LAST, _LENGTH, _HASH1, _HASH2, _PARENT1, _PARENT2 = range(6)


class _Beams(NamedTuple):
    """Beam state, packed so that a frame takes few (fused) ops."""

    # [B, 4, W] log prob of the paths ending in blank (p_b) and in the last
    # token (p_nb), and of the best single path of each kind.
    probs: Array
    # [B, 6, W] int32 last token (−1 for the empty prefix), prefix length, two
    # uint32 hashes of the prefix and two of its parent (bit-cast to int32).
    prefix: Array
    bonus: Array  # [B, W] fused extra score (LM, insertion, hotwords)
    lm_state: Any  # pytree, leading axes [B, W]
    hot_state: Array  # [B, W, H] int32 hotword automaton states


class _Stay(NamedTuple):
    """Per-utterance scores of the prefixes that stay, and their merging."""

    alive: Array  # [W] bool
    total: Array  # [W] log(p_b + p_nb)
    score: Array  # [W] ranking score
    child: Array  # [W (child), W (parent)] bool
    # [6, W]: new p_b, p_nb, best_b, best_nb; old best_b, best_nb.
    probs: Array
    # [8, W] int32: back-pointers (blank end, last-token end), then the six
    # columns of the prefix.
    rows: Array


def _encode(token: Array, slot: Array, end: Array, width: int) -> Array:
    """Back-pointer: (emitted token or −1, parent slot, parent end 0=b/1=nb)."""
    return ((token + 1) * width + slot) * 2 + end


def _as_u32(x: Array) -> Array:
    return lax.bitcast_convert_type(x, jnp.uint32)


def _as_i32(x: Array) -> Array:
    return lax.bitcast_convert_type(x, jnp.int32)


def _beam_search(
    log_probs: Array,
    ext_log_probs: Array,
    valid_frames: Array,
    *,
    num_cand: int,
    beam_width: int,
    top_k: int,
    blank_id: int,
    lm: LanguageModel | None,
    lm_weight: Array,
    insertion_bonus: Array,
    hot: tuple[Array, Array] | None,
    hotword_weight: Array,
    fused: bool,
    num_fast: int | None,
) -> tuple[Array, Array, Array]:
    """Prefix beam search over a batch.

    Args:
        log_probs: ``[B, T, K]`` log probabilities (padded frames zeroed).
        ext_log_probs: ``[B, T, K]`` the same, NEG_INF for classes that may not
            extend a prefix (blank, pruned classes).
        valid_frames: ``[B, T]`` bool.
        num_cand: ``M``, the classes that may extend a prefix at a frame: the
            ``M`` best by ``ext_log_probs`` (ties to the lower class).
        num_fast: ``C < M`` or None. Without fusion a prefix's extensions are
            ordered like ``classes``, so the best ``W`` candidates usually lie
            among the stays and the first ``C`` extensions of every prefix;
            a frame is searched that way when a bound proves it for the whole
            batch, and over all ``M`` extensions otherwise (same result).

    Returns:
        ``(frame_tokens [B, top_k, T], scores [B, top_k], valid [B, top_k])``.
    """
    dtype = log_probs.dtype
    batch = log_probs.shape[0]
    width = beam_width
    neg = jnp.asarray(NEG_INF, dtype)
    slots = jnp.arange(width, dtype=jnp.int32)
    no_token = jnp.full((width,), -1, jnp.int32)

    if lm is not None:
        lm_init = jax.tree.map(
            lambda x: jnp.broadcast_to(jnp.asarray(x), (batch, width, *jnp.shape(x))),
            lm.initial_state(),
        )
        lm_score_grid = jax.vmap(
            jax.vmap(lm.score, in_axes=(None, 0)), in_axes=(0, None)
        )
        lm_score_rows = jax.vmap(lm.score)
    else:
        lm_init = jnp.zeros((batch, width), jnp.int32)
    if hot is not None:
        hot_trans, hot_lengths = hot  # [H, L + 1, K], [H]
        num_hot = hot_lengths.shape[0]
        hot_init = jnp.zeros((batch, width, num_hot), jnp.int32)
    else:
        hot_init = jnp.zeros((batch, width, 0), jnp.int32)

    def hot_step(state: Array, token: Array) -> tuple[Array, Array]:
        """Hotword automaton step; returns (new state, bonus increment in tokens)."""
        # state [..., H], token [...]
        h_idx = jnp.broadcast_to(
            jnp.arange(state.shape[-1], dtype=jnp.int32), state.shape
        )
        nxt = hot_trans[h_idx, state, jnp.broadcast_to(token[..., None], state.shape)]
        lengths = jnp.broadcast_to(hot_lengths, nxt.shape)
        done = nxt == lengths
        completed = jnp.sum(jnp.where(done, lengths, 0), axis=-1).astype(dtype)
        nxt = jnp.where(done, 0, nxt)
        gain = (
            completed
            + jnp.max(nxt, axis=-1, initial=0).astype(dtype)
            - jnp.max(state, axis=-1, initial=0).astype(dtype)
        )
        return nxt, gain

    # Only slot 0 (the empty prefix, p_b = 1) is alive at the start.
    start = jnp.where(slots == 0, jnp.zeros((), dtype), neg)
    probs0 = jnp.stack([start, jnp.full((width,), neg)] * 2)
    no_hash = jnp.full((width,), -1, jnp.int32)  # 0xFFFFFFFF
    zeros = jnp.zeros((width,), jnp.int32)
    prefix0 = jnp.stack([no_token, zeros, zeros, zeros, no_hash, no_hash])
    init = _Beams(
        probs=jnp.broadcast_to(probs0, (batch, 4, width)),
        prefix=jnp.broadcast_to(prefix0, (batch, 6, width)),
        bonus=jnp.zeros((batch, width), dtype),
        lm_state=lm_init,
        hot_state=hot_init,
    )
    identity = jnp.stack(
        [_encode(no_token, slots, 0, width), _encode(no_token, slots, 1, width)],
        axis=-1,
    )  # [W, 2]

    def stay(beams: _Beams, lp: Array, ext_lp: Array) -> _Stay:
        """1. A prefix stays (blank or repeat); 2. children merge extensions."""
        pb, pnb, best_b, best_nb = beams.probs
        last, length, hash1, hash2, parent1, parent2 = beams.prefix
        alive = (pb > _HALF_NEG_INF) | (pnb > _HALF_NEG_INF)
        total = jnp.logaddexp(pb, pnb)  # [W]
        has_last = length > 0
        last_lp = jnp.stack([lp, ext_lp], axis=-1)[jnp.maximum(last, 0)]  # [W, 2]
        lp_last = jnp.where(has_last, last_lp[:, 0], neg)
        ext_lp_last = jnp.where(has_last, last_lp[:, 1], neg)
        lp_blank = lp[blank_id]

        stay_pb = total + lp_blank
        stay_pnb = pnb + lp_last
        best_b_from_nb = best_nb > best_b
        stay_best_b = jnp.maximum(best_b, best_nb) + lp_blank
        stay_best_nb = best_nb + lp_last

        child = (
            alive[:, None]
            & alive[None, :]
            & (length[:, None] == length[None, :] + 1)
            & (parent1[:, None] == hash1[None, :])
            & (parent2[:, None] == hash2[None, :])
        )  # [W (child), W (parent)]
        has_parent = jnp.any(child, axis=1)
        parent = jnp.argmax(child, axis=1).astype(jnp.int32)
        par = jnp.concatenate([beams.probs, total[None]])[:, parent]
        par_last = last[parent]
        p_same = par_last == last
        merge_pnb = jnp.where(p_same, par[_PB], par[4]) + ext_lp_last
        p_from_nb = (~p_same) & (par[_BEST_NB] > par[_BEST_B])
        merge_best = jnp.where(p_from_nb, par[_BEST_NB], par[_BEST_B]) + ext_lp_last
        stay_pnb = jnp.where(has_parent, jnp.logaddexp(stay_pnb, merge_pnb), stay_pnb)
        take_ext = has_parent & (merge_best > stay_best_nb)
        stay_best_nb = jnp.where(take_ext, merge_best, stay_best_nb)
        stay_bp_nb = jnp.where(
            take_ext,
            _encode(last, parent, p_from_nb.astype(jnp.int32), width),
            identity[:, 1],
        )
        stay_bp_b = _encode(no_token, slots, best_b_from_nb.astype(jnp.int32), width)
        stay_score = jnp.logaddexp(stay_pb, stay_pnb)
        if fused:
            stay_score = stay_score + beams.bonus
        return _Stay(
            alive=alive,
            total=total,
            score=stay_score,
            child=child,
            probs=jnp.stack(
                [stay_pb, stay_pnb, stay_best_b, stay_best_nb, best_b, best_nb]
            ),
            rows=jnp.concatenate([jnp.stack([stay_bp_b, stay_bp_nb]), beams.prefix]),
        )

    def extend(beams: _Beams, st: _Stay, cls: Array, e_cls: Array):
        """3. Extensions by the classes ``cls [n]`` (``e_cls = ext_lp[cls]``)."""
        n = cls.shape[0]
        last = beams.prefix[_LAST]
        same = last[:, None] == cls[None, :]
        ext_pnb = (
            jnp.where(same, beams.probs[_PB, :, None], st.total[:, None])
            + e_cls[None, :]
        )
        merged = jnp.any(
            st.child[:, :, None] & (last[:, None, None] == cls[None, None, :]),
            axis=0,
        )  # [W (parent), n]
        ext_pnb = jnp.where(merged | ~st.alive[:, None], neg, ext_pnb)
        ext_score = ext_pnb
        delta = None
        if fused:
            delta = jnp.broadcast_to(insertion_bonus, (width, n))
            if lm is not None:
                _, lm_lp = lm_score_grid(beams.lm_state, cls)
                delta = delta + lm_weight * lm_lp.astype(dtype)
            if hot is not None:
                _, gain = hot_step(
                    jnp.broadcast_to(beams.hot_state[:, None, :], (width, n, num_hot)),
                    jnp.broadcast_to(cls[None, :], (width, n)),
                )
                delta = delta + hotword_weight * gain
            ext_score = ext_score + beams.bonus[:, None] + delta
        return ext_pnb, ext_score, delta

    def select(st: _Stay, ext_score: Array, cls: Array, e_cls: Array):
        """4. The ``W`` best of the ``W + W n`` candidates, by (score, index)."""
        n = ext_score.shape[-1]
        scores = jnp.concatenate([st.score, ext_score.reshape(-1)])
        top, idx = lax.top_k(scores, width)
        idx = idx.astype(jnp.int32)
        is_ext = idx >= width
        flat = jnp.maximum(idx - width, 0)
        src = jnp.where(is_ext, flat // n, idx)
        col = flat % n
        return top, src, col, is_ext, cls[col], e_cls[col]

    def update(beams, st, top, src, col, is_ext, new_c, e_new, ext_pnb, delta):
        """5. The new beams and their back-pointers."""
        sp = st.probs[:, src]  # [6, W]
        sr = st.rows[:, src]  # [8, W]
        s_bp_b, s_bp_nb, s_last, s_length, s_hash1, s_hash2, s_par1, s_par2 = sr
        sel_from_nb = (s_last != new_c) & (sp[5] > sp[4])
        ext_best = jnp.where(sel_from_nb, sp[5], sp[4]) + e_new
        if fused:
            sel_pnb = ext_pnb[src, col]
            s_bonus = beams.bonus[src]
            new_bonus = jnp.where(is_ext, s_bonus + delta[src, col], s_bonus)
        else:
            sel_pnb = top  # the ranking score is p_nb itself
            new_bonus = beams.bonus
        if lm is not None:
            src_state = jax.tree.map(lambda x: x[src], beams.lm_state)
            ext_state, _ = lm_score_rows(src_state, new_c)
            new_lm = jax.tree.map(
                lambda e, s: jnp.where(
                    is_ext.reshape((width,) + (1,) * (s.ndim - 1)), e, s
                ),
                ext_state,
                src_state,
            )
        else:
            new_lm = beams.lm_state
        if hot is not None:
            ext_hot, _ = hot_step(beams.hot_state[src], new_c)
            new_hot = jnp.where(is_ext[:, None], ext_hot, beams.hot_state[src])
        else:
            new_hot = beams.hot_state

        def pick(stay_val, ext_val):
            return jnp.where(is_ext, ext_val, stay_val)

        mix1 = _as_i32(_mix_hash(_as_u32(s_hash1), new_c, 0x27D4EB2F))
        mix2 = _as_i32(_mix_hash(_as_u32(s_hash2), new_c, 0x165667B1))
        new = _Beams(
            probs=jnp.stack(
                [
                    pick(sp[0], neg),
                    pick(sp[1], sel_pnb),
                    pick(sp[2], neg),
                    pick(sp[3], ext_best),
                ],
            ),
            prefix=jnp.stack(
                [
                    pick(s_last, new_c),
                    s_length + is_ext.astype(jnp.int32),
                    pick(s_hash1, mix1),
                    pick(s_hash2, mix2),
                    pick(s_par1, s_hash1),
                    pick(s_par2, s_hash2),
                ],
            ),
            bonus=new_bonus,
            lm_state=new_lm,
            hot_state=new_hot,
        )
        bp = jnp.stack(
            [
                pick(s_bp_b, _encode(no_token, src, 0, width)),
                pick(
                    s_bp_nb, _encode(new_c, src, sel_from_nb.astype(jnp.int32), width)
                ),
            ],
            axis=-1,
        )
        return new, bp

    v_stay = jax.vmap(stay)
    v_extend = jax.vmap(extend)
    v_select = jax.vmap(select)
    v_update = jax.vmap(update)

    def full(beams, st, cls, e_cls):
        ext_pnb, ext_score, delta = v_extend(beams, st, cls, e_cls)
        return v_select(st, ext_score, cls, e_cls), ext_pnb, delta

    def step(beams: _Beams, xs):
        lp, ext_lp, cls, e_cls, is_valid = xs  # [B, K], [B, K], [B, n], [B, n], [B]
        st = v_stay(beams, lp, ext_lp)
        if num_fast is None:
            picked, ext_pnb, delta = full(beams, st, cls, e_cls)
        else:
            cls_c, e_c = cls[:, :num_fast], e_cls[:, :num_fast]
            _, ext_score, _ = v_extend(beams, st, cls_c, e_c)
            picked = v_select(st, ext_score, cls_c, e_c)
            # Every extension left out scores at most total + e_cls[C]. The last
            # selected score is the minimum (a slice of top_k's values would
            # turn it into a full sort on CPU).
            bound = jnp.where(st.alive, st.total + e_cls[:, num_fast:], neg)
            bound = jnp.max(bound, axis=1)
            exact = (
                (bound < jnp.min(picked[0], axis=1))
                | (bound <= _HALF_NEG_INF)
                | ~is_valid
            )

            def search_all():
                e_all, cls_all = lax.top_k(ext_lp, num_cand)
                return full(beams, st, cls_all.astype(jnp.int32), e_all)[0]

            picked = lax.cond(jnp.all(exact), lambda: picked, search_all)
            ext_pnb = delta = None
        new, bp = v_update(beams, st, *picked, ext_pnb, delta)
        # Padded frames keep the beams and point every slot at itself.
        new = jax.tree.map(
            lambda n, o: jnp.where(
                is_valid.reshape((batch,) + (1,) * (n.ndim - 1)), n, o
            ),
            new,
            beams,
        )
        bp = jnp.where(is_valid[:, None, None], bp, identity)
        return new, bp

    # Candidate classes of each frame by descending ext_log_probs (ties to the
    # lower class): all M, or the C + 1 the fast path reads.
    e_cls, classes = lax.top_k(
        ext_log_probs, num_cand if num_fast is None else num_fast + 1
    )  # [B, T, n]
    time_major = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
    beams, back = lax.scan(
        step,
        init,
        (
            time_major(log_probs),  # [T, B, K]
            time_major(ext_log_probs),  # [T, B, K]
            time_major(classes.astype(jnp.int32)),  # [T, B, n]
            time_major(e_cls),  # [T, B, n]
            time_major(valid_frames),  # [T, B]
        ),
    )  # back: [T, B, W, 2]

    def finish(beams: _Beams, back: Array):
        pb, pnb, best_b, best_nb = beams.probs
        alive = (pb > _HALF_NEG_INF) | (pnb > _HALF_NEG_INF)
        final = jnp.logaddexp(pb, pnb)
        if fused:
            final = final + beams.bonus
        if lm is not None:
            final = final + lm_weight * jax.vmap(lm.final_score)(beams.lm_state).astype(
                dtype
            )
        final = jnp.where(alive, final, -jnp.inf)
        scores, order = lax.top_k(final, top_k)
        order = order.astype(jnp.int32)
        found = alive[order]
        end = (best_nb[order] > best_b[order]).astype(jnp.int32)

        def backtrack(carry, bp_t):
            slot, end = carry
            code = bp_t[slot, end]  # [top_k]
            token = code // (2 * width) - 1
            return (((code // 2) % width), code % 2), token

        _, frame_tokens = lax.scan(backtrack, (order, end), back, reverse=True)
        frame_tokens = jnp.where(found[None, :], frame_tokens, -1)  # [T, top_k]
        return frame_tokens.T, scores, found

    return jax.vmap(finish, in_axes=(0, 1))(beams, back)


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

    After every frame equal prefixes are merged (an extension that equals a
    prefix already in the beam adds to its :math:`p_{nb}`) and the
    ``beam_width`` prefixes of highest :math:`p_b + p_{nb}` are kept. Equal
    prefixes are found through two 32-bit rolling hashes of each prefix and of
    its parent, and the tokens are recovered at the end from per-frame
    back-pointers, so the work per frame is :math:`O(W \cdot M)` (``M``
    candidate classes) and does not grow with ``T``. Without pruning the search
    is exact prefix beam search: only the ``2W`` most probable non-blank classes
    of a frame are expanded, which provably changes nothing (each prefix
    contributes at most ``W`` survivors and at most ``W`` of its extensions are
    set aside by merging or by the repeat rule). Without fusion, a frame first
    ranks only the stays and the extensions of every prefix by the frame's 8
    most probable classes; when a bound (a prefix's best extension left out
    scores at most its total times the 9th class probability) cannot prove that
    this keeps the same beams, the frame is ranked again over all candidates,
    so the result is that of the full search.

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
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame; never read.
        beam_width: ``W``, prefixes kept per frame (static Python int ≥ 1).
        top_k: hypotheses returned, ``1 ≤ top_k ≤ beam_width`` (static).
        blank_id: the blank class (static).
        prune_top_k: if set, only the ``prune_top_k`` most probable non-blank
            classes of each frame may extend a prefix (static).
        prune_threshold: if set, classes whose log probability at a frame is
            below it do not extend prefixes there.
        lm: a :class:`seqctc.LanguageModel` scoring each extension, or None.
        lm_weight: ``α``, weight of the LM log probability.
        insertion_bonus: ``β``, added per emitted token.
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
            int, ``top_k > beam_width``, or a hotword that is empty or holds the
            blank or a class outside ``[0, K)``.

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
    logits, logit_paddings = _check_inputs(logits, logit_paddings, blank_id)
    _check_positive_int(beam_width, "beam_width")
    _check_positive_int(top_k, "top_k")
    if top_k > beam_width:
        raise ValueError(
            f"`top_k` must not exceed `beam_width`, got top_k={top_k} > "
            f"beam_width={beam_width}."
        )
    if prune_top_k is not None:
        _check_positive_int(prune_top_k, "prune_top_k")
    num_classes = logits.shape[-1]
    hot = None
    if hotwords is not None and len(hotwords) > 0:
        hot = hotword_automaton(hotwords, num_classes, blank_id)
    log_probs = _log_probs(logits, logit_paddings, blank_id)  # [B, T, K]
    dtype = log_probs.dtype
    log_probs = jnp.maximum(log_probs, jnp.asarray(NEG_INF, dtype))
    neg = jnp.asarray(NEG_INF, dtype)

    # Classes allowed to extend a prefix, per frame.
    is_blank = jnp.arange(num_classes) == blank_id
    ext_lp = jnp.where(is_blank[None, None, :], neg, log_probs)  # [B, T, K]
    if prune_threshold is not None:
        threshold = jnp.asarray(prune_threshold, dtype)
        ext_lp = jnp.where(ext_lp >= threshold, ext_lp, neg)
    if prune_top_k is not None and prune_top_k < num_classes - 1:
        # The minimum, not a slice: a slice of top_k turns it into a sort on CPU.
        kth = jnp.min(lax.top_k(ext_lp, prune_top_k)[0], axis=-1, keepdims=True)
        ext_lp = jnp.where(ext_lp >= kth, ext_lp, neg)
    fused = lm is not None or hot is not None
    if not (isinstance(insertion_bonus, (int, float)) and insertion_bonus == 0):
        fused = True
    num_cand = num_classes - 1
    if not fused:
        num_cand = min(num_cand, 2 * beam_width)
    if prune_top_k is not None:
        num_cand = min(num_cand, prune_top_k)
    num_cand = max(num_cand, 1)

    # Without fusion, a prefix's extensions rank like the classes; most frames
    # need only the first few of them (see _beam_search).
    num_fast = _NUM_FAST if not fused and _NUM_FAST < num_cand else None
    frame_tokens, scores, _ = _beam_search(
        log_probs,
        ext_lp,
        logit_paddings == 0,
        num_cand=num_cand,
        beam_width=beam_width,
        top_k=top_k,
        blank_id=blank_id,
        lm=lm,
        lm_weight=jnp.asarray(lm_weight, dtype),
        insertion_bonus=jnp.asarray(insertion_bonus, dtype),
        hot=hot,
        hotword_weight=jnp.asarray(hotword_weight, dtype),
        fused=fused,
        num_fast=num_fast,
    )  # [B, top_k, T], [B, top_k]
    tokens, lengths, starts = _compact(frame_tokens, dtype)
    return Decoded(tokens=tokens, lengths=lengths, scores=scores, starts=starts)
