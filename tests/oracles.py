"""Plain numpy references shared by the tests (independent of seqctc)."""

import math

import jax
import numpy as np


def log_softmax(x):
    """log_softmax over the last axis, in float64."""
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def collapse(path, blank):
    """The CTC collapse: merge repeats, then drop blanks; a tuple of ints."""
    out, prev = [], None
    for k in path:
        if k != prev and k != blank:
            out.append(int(k))
        prev = k
    return tuple(out)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def gru_step(w_ih, w_hh, b_ih, b_hh, h, x):
    """One GRU step in torch's convention (gates r, z, n; b_hn inside r * ...)."""
    hid = w_hh.shape[1]
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    r = sigmoid(gi[..., :hid] + gh[..., :hid])
    z = sigmoid(gi[..., hid : 2 * hid] + gh[..., hid : 2 * hid])
    n = np.tanh(gi[..., 2 * hid :] + r * gh[..., 2 * hid :])
    return (1 - z) * n + z * h


def paddings(lengths, max_len):
    """``[B, T]`` float32 right paddings, 1.0 = padded."""
    lengths = np.asarray(lengths)
    return (np.arange(max_len)[None, :] >= lengths[:, None]).astype(np.float32)


def lstm_step(w_ih, w_hh, b_ih, b_hh, h, c, x):
    """One LSTM step in torch's convention (gates i, f, g, o); returns (h', c')."""
    hid = w_hh.shape[1]
    a = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i = sigmoid(a[..., :hid])
    f = sigmoid(a[..., hid : 2 * hid])
    g = np.tanh(a[..., 2 * hid : 3 * hid])
    o = sigmoid(a[..., 3 * hid :])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def compact(values, paddings):
    """Moves each row's valid entries (padding 0) to the front, in order.

    Returns ``(values, paddings)`` right padded: the reference for "a padded
    position is skipped wherever it is". Padded slots of ``values`` are zeros.
    """
    values, paddings = np.asarray(values), np.asarray(paddings)
    out = np.zeros_like(values)
    lengths = np.sum(paddings == 0, axis=1)
    for b in range(values.shape[0]):
        kept = values[b][paddings[b] == 0]
        out[b, : len(kept)] = kept
    positions = np.arange(values.shape[1])[None, :]
    return out, (positions >= lengths[:, None]).astype(np.float32)


def padding_patterns(rng, batch, length):
    """``[B, L]`` paddings of mixed patterns: tails, heads, holes, all, none."""
    out = np.zeros((batch, length), np.float32)
    for b in range(batch):
        kind = b % 5
        cut = int(rng.integers(0, length + 1))
        if kind == 0:  # right padded
            out[b, cut:] = 1
        elif kind == 1:  # left padded
            out[b, : length - cut] = 1
        elif kind == 2:  # random holes
            out[b] = rng.random(length) < 0.3
        elif kind == 3 and b % 10 == 3:  # everything padded
            out[b] = 1
    return out


# --- References for the property-based suite (tests/test_properties.py). ---

import functools  # noqa: E402
import itertools  # noqa: E402


@functools.cache
def _all_paths(num_frames, num_classes, blank):
    """Every path of ``num_frames`` classes (``[P, T]``) and its collapse."""
    paths = list(itertools.product(range(num_classes), repeat=num_frames))
    paths = np.array(paths, np.int64).reshape(len(paths), num_frames)
    return paths, [collapse(p, blank) for p in paths]


def ctc_brute_force(logp, labels, blank):
    """CTC of one row over all ``K**T`` paths of its valid frames.

    ``logp`` is ``[T, K]`` log probabilities (float64), ``labels`` the valid
    labels. Returns ``(log_p, best, occupancy)``: the log of the summed
    probability of the paths that collapse to ``labels`` (``-inf`` if none),
    the log probability of the best such path (Viterbi), and ``[T, K]`` the
    posterior probability that such a path emits class k at frame t (zeros
    if infeasible).
    """
    logp = np.asarray(logp, np.float64)
    num_frames, num_classes = logp.shape
    labels = tuple(int(v) for v in labels)
    paths, collapsed = _all_paths(num_frames, num_classes, blank)
    keep = np.array([c == labels for c in collapsed], bool)
    occupancy = np.zeros((num_frames, num_classes))
    if not keep.any():
        return -np.inf, -np.inf, occupancy
    kept = paths[keep]
    scores = logp[np.arange(num_frames)[None, :], kept].sum(axis=1)
    best = np.max(scores)
    log_p = best + np.log(np.sum(np.exp(scores - best)))
    weights = np.exp(scores - log_p)
    for t in range(num_frames):
        np.add.at(occupancy[t], kept[:, t], weights)
    return log_p, best, occupancy


def blank_free_best(logp, labels):
    """Best log prob of the blank-free segmentation: each label ≥ 1 frame, in order."""
    logp = np.asarray(logp, np.float64)
    num_frames, n = logp.shape[0], len(labels)
    if num_frames < n or (n == 0 and num_frames > 0):
        return -np.inf
    if n == 0:
        return 0.0
    best = -np.inf
    for cuts in itertools.combinations(range(1, num_frames), n - 1):
        bounds = (0, *cuts, num_frames)
        score = sum(logp[bounds[i] : bounds[i + 1], labels[i]].sum() for i in range(n))
        best = max(best, score)
    return best


def ctc_log_prob(log_probs, labels, blank=0):
    """log p_ctc(labels) of one row by the forward recursion, vectorised over
    the states (float64): the textbook α without its tables."""
    log_probs = np.asarray(log_probs, np.float64)
    ext = np.array([blank] + [x for k in labels for x in (int(k), blank)])
    skip = np.zeros(len(ext), bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = np.full(len(ext), -np.inf)
    alpha[0] = log_probs[0, ext[0]]
    if len(ext) > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, len(log_probs)):
        one = np.concatenate([[-np.inf], alpha[:-1]])
        two = np.where(skip, np.concatenate([[-np.inf] * 2, alpha[:-2]]), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, one), two) + log_probs[t, ext]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if len(ext) > 1 else alpha[-1])


def ctc_log_tables(logp, labels, blank):
    """log α (emission included) and log β (emission excluded) by recursion.

    One row: ``logp [T, K]`` float64 log probabilities of the valid frames,
    ``labels`` its valid labels. ``-inf`` marks unreachable entries.
    """
    logp = np.asarray(logp, np.float64)
    num_frames = logp.shape[0]
    ext = [blank]
    for v in labels:
        ext += [int(v), blank]
    num_states = len(ext)

    def preds(s):  # states that may precede s
        out = [s, s - 1]
        if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
            out.append(s - 2)
        return [p for p in out if p >= 0]

    alpha = np.full((num_frames, num_states), -np.inf)
    beta = np.full((num_frames, num_states), -np.inf)
    if num_frames == 0:
        return alpha, beta
    alpha[0, 0] = logp[0, ext[0]]
    if num_states > 1:
        alpha[0, 1] = logp[0, ext[1]]
    for t in range(1, num_frames):
        for s in range(num_states):
            alpha[t, s] = (
                np.logaddexp.reduce([alpha[t - 1, p] for p in preds(s)])
                + logp[t, ext[s]]
            )
    beta[-1, num_states - 1] = 0.0
    if num_states > 1:
        beta[-1, num_states - 2] = 0.0
    for t in range(num_frames - 2, -1, -1):
        for s in range(num_states):
            terms = [
                beta[t + 1, n] + logp[t + 1, ext[n]]
                for n in range(s, min(s + 3, num_states))
                if s in preds(n)
            ]
            beta[t, s] = np.logaddexp.reduce(terms)
    return alpha, beta


def greedy(logp, frames, blank):
    """Best-path decoding of one row: ``(tokens, starts, score)``.

    ``logp [T_b, K]`` holds the valid frames in order and ``frames`` their
    indices in the input (what ``starts`` refer to).
    """
    path = np.argmax(logp, axis=-1)  # ties to the lowest class
    tokens, starts, prev = [], [], None
    for i, k in enumerate(path):
        if k != prev and k != blank:
            tokens.append(int(k))
            starts.append(int(frames[i]))
        prev = k
    score = float(np.sum(np.max(logp, axis=-1))) if len(path) else 0.0
    return tokens, starts, score


def _logaddexp(a: float, b: float) -> float:
    """``log(e^a + e^b)`` of two Python floats (as numpy's, without its call cost)."""
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def prefix_beam_search(logp, blank, beam_width, prefix_score=None, final_score=None):
    """CTC prefix beam search of one row with merging; standard pruning.

    With ``prefix_score(prefix) -> float`` (shallow fusion), prefixes are
    ranked by ``log p_ctc + prefix_score`` and the hypotheses by that plus
    ``final_score(prefix)``.

    Returns ``(hypotheses, gap)``: ``[(prefix, score)]`` best first (at
    most ``beam_width``), and the smallest margin seen at a pruning cut
    (between the last kept and the first dropped prefix; ``inf`` if none was
    dropped), so callers can skip near-ties whose order is arbitrary.
    """
    logp = np.asarray(logp, np.float64)
    fused = prefix_score or (lambda prefix: 0.0)
    final = final_score or (lambda prefix: 0.0)

    def key(item):
        return _logaddexp(*item[1]) + fused(item[0])

    beams = {(): (0.0, -math.inf)}  # prefix -> (blank-ending, non-blank-ending)
    gap = math.inf
    for row in logp.tolist():  # Python floats: scalar numpy calls are slow
        new = {}

        def add(prefix, pb=-math.inf, pnb=-math.inf, new=new):
            ob, onb = new.get(prefix, (-math.inf, -math.inf))
            new[prefix] = (_logaddexp(ob, pb), _logaddexp(onb, pnb))

        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            add(prefix, pb=total + row[blank])
            for k in range(len(row)):
                if k == blank:
                    continue
                if prefix and prefix[-1] == k:
                    add(prefix, pnb=pnb + row[k])
                    add(prefix + (k,), pnb=pb + row[k])
                else:
                    add(prefix + (k,), pnb=total + row[k])
        ranked = sorted(new.items(), key=lambda kv: -key(kv))
        if len(ranked) > beam_width:
            cut = key(ranked[beam_width - 1])
            dropped = key(ranked[beam_width])
            if math.isfinite(cut):
                gap = min(gap, cut - dropped)
        beams = dict(ranked[:beam_width])
    hyps = sorted(
        ((p, float(key((p, s)) + final(p))) for p, s in beams.items()),
        key=lambda h: -h[1],
    )
    return hyps, gap


def _compositions(total, parts):
    """Every tuple of ``parts`` non-negative ints summing to ``total``."""
    if parts == 0:
        if total == 0:
            yield ()
        return
    for cuts in itertools.combinations(range(total + parts - 1), parts - 1):
        bounds = (-1, *cuts, total + parts - 1)
        yield tuple(bounds[i + 1] - bounds[i] - 1 for i in range(parts))


def wildcard_viterbi_brute(logp, labels, star, blank, penalty, every=False):
    """Best alignment of one row whose labels may hold wildcards, by enumeration.

    ``labels`` is the valid label sequence, ``star`` the wildcard value in it,
    ``blank`` the blank class or ``None`` for the blank-free graph. The labels
    that are not wildcards cut the frames into runs (each at least one frame)
    and gaps: before the first, between two, after the last. A gap that holds
    wildcards is theirs: each of its frames scores
    ``max(logp[t, blank], max(logp[t]) - penalty)`` (``max(logp[t]) - penalty``
    without a blank). A gap without one holds blanks (it must be empty on the
    blank-free graph). Gap lengths: a gap between two equal labels without a
    wildcard needs a frame (CTC), and so does a gap between two labels that
    holds several wildcards; any other gap may be empty.

    Returns ``(best, frame_labels)``: the best score (``-inf`` if none) and
    the set of frame-label tuples that reach it (``star`` on wildcard
    frames, ``blank`` in plain gaps); with ``every=True``, a dict of every
    valid path's frame labels to its score instead of the set.
    """
    logp = np.asarray(logp, np.float64)
    num_frames = logp.shape[0]
    real = [int(v) for v in labels if v != star]
    gaps = [0] * (len(real) + 1)  # wildcards in each gap
    position = 0
    for v in labels:
        if v == star:
            gaps[position] += 1
        else:
            position += 1
    star_score = np.max(logp, axis=1) - penalty if num_frames else np.zeros(0)
    if blank is not None and num_frames:
        star_score = np.maximum(logp[:, blank], star_score)

    def gap_min(g):
        middle = 0 < g < len(real)
        if gaps[g] == 0:
            if blank is None:
                return None  # must be empty
            return 1 if middle and real[g - 1] == real[g] else 0
        if middle and (gaps[g] > 1 or (blank is not None and real[g - 1] == real[g])):
            return 1
        return 0

    best, paths, scores = -np.inf, set(), {}
    parts = 2 * len(real) + 1  # gap, run, gap, run, ..., gap
    for lengths in _compositions(num_frames, parts):
        ok = True
        for i, length in enumerate(lengths):
            if i % 2:  # a label run
                ok &= length >= 1
            else:
                low = gap_min(i // 2)
                ok &= length == 0 if low is None else length >= low
        if not ok:
            continue
        score, path, t = 0.0, [], 0
        for i, length in enumerate(lengths):
            for _ in range(length):
                if i % 2:
                    score += logp[t, real[i // 2]]
                    path.append(real[i // 2])
                elif gaps[i // 2]:
                    score += star_score[t]
                    path.append(star)
                else:
                    score += logp[t, blank]
                    path.append(blank)
                t += 1
        scores[tuple(path)] = max(score, scores.get(tuple(path), -np.inf))
        if score > best + 1e-9:
            best, paths = score, {tuple(path)}
        elif abs(score - best) <= 1e-9:
            paths.add(tuple(path))
    return best, scores if every else paths


def on_host(fn):
    """``fn`` whose outputs come back as numpy arrays: the tests index them
    row by row, and each slice of a JAX array would compile a program."""

    def call(*args, **kwargs):
        return jax.tree.map(np.asarray, fn(*args, **kwargs))

    return call
