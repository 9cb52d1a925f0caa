"""Property-based tests (hypothesis) of every public CTC, decoding and lecture function.

Inputs are drawn over random shapes including zeros (B 0-3, T 0-6, K 1-5,
N 0-3), dtypes (float16, bfloat16, float32, and float64 under
``jax.enable_x64``), padding patterns (tails, heads, holes, all, none; a
padded position is any value other than exactly 0, NaN included), label
contents (repeats, the blank, out of range) and NaN logits in valid frames.
Each call either raises ``ValueError`` naming an argument or agrees with an
independent numpy reference from ``tests/oracles.py`` computed on the valid
frames and labels alone (brute force over all ``K**T`` paths for the CTC
loss, its gradient and the Viterbi path; plain recursions for α and β; a
dictionary prefix beam search); the documented NaN rows are NaN and no other
entry is.

Logits are drawn on a grid of quarters in [-3, 3], exact in every dtype, so
ties (the lowest class wins) are deterministic and the references see the
same values as the library.

Profiles (``HYPOTHESIS_PROFILE``): ``default`` runs a few examples per test
(the whole file in well under a minute of CPU); ``nightly`` runs many::

    HYPOTHESIS_PROFILE=nightly python -m pytest -o addopts="" -q \
        tests/test_properties.py -p no:cacheprovider
"""

import contextlib
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import (
    blank_free_best,
    ctc_brute_force,
    ctc_log_tables,
    greedy,
    log_softmax,
    prefix_beam_search,
    wildcard_viterbi_brute,
)

import seqctc

settings.register_profile(
    "default",
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

DTYPES = ("float16", "bfloat16", "float32", "float64")
# Values a padded position may hold: anything but exactly 0.
PAD_VALUES = np.array([1.0, 1.0, 1.0, 0.5, 2.0, -1.0, np.nan], np.float32)


def _paddings(rng, batch, length):
    """Per row one of: tails, heads, holes, all, none; odd padded values."""
    out = np.zeros((batch, length), np.float32)
    for b in range(batch):
        kind = int(rng.integers(0, 5))
        cut = int(rng.integers(0, length + 1))
        mask = np.zeros(length, bool)
        if kind == 0:
            mask[cut:] = True
        elif kind == 1:
            mask[: length - cut] = True
        elif kind == 2:
            mask = rng.random(length) < 0.4
        elif kind == 3:
            mask[:] = True
        out[b] = np.where(mask, rng.choice(PAD_VALUES, size=length), 0.0)
    return out


@dataclasses.dataclass
class Case:
    logits: np.ndarray  # float32 values, grid exact in every dtype
    logit_paddings: np.ndarray
    labels: np.ndarray
    label_paddings: np.ndarray
    dtype: str
    blank: int

    @property
    def shape(self):
        return self.logits.shape

    def ctx(self):
        if self.dtype == "float64":
            return jax.enable_x64(True)
        return contextlib.nullcontext()

    def x(self):
        """The logits in the case's dtype (call inside ``ctx()``)."""
        return jnp.asarray(self.logits).astype(self.dtype)

    def frames(self, b):
        return np.flatnonzero(self.logit_paddings[b] == 0)

    def valid_labels(self, b):
        return [int(v) for v in self.labels[b][self.label_paddings[b] == 0]]

    def logp(self, b):
        """float64 log-softmax of the valid frames of row b, in order."""
        return log_softmax(self.logits[b, self.frames(b)].astype(np.float64))

    def nan_frames(self, b):
        return bool(np.isnan(self.logits[b, self.frames(b)]).any())

    def bad(self, b, blank="case"):
        """A documented NaN row: bad labels or NaN logits in a valid frame."""
        blank = self.blank if blank == "case" else blank
        k = self.shape[2]
        labels = self.valid_labels(b)
        wrong = any(v < 0 or v >= k or v == blank for v in labels)
        return wrong or self.nan_frames(b)


@st.composite
def cases(draw, bad=True, max_paths=4096, max_frames=6):
    batch = draw(st.integers(0, 3))
    classes = draw(st.integers(1, 5))
    frames = draw(st.integers(0, max_frames))
    while classes**frames > max_paths:
        frames -= 1
    width = draw(st.integers(0, 3))
    dtype = draw(st.sampled_from(DTYPES))
    blank = draw(st.sampled_from(sorted({0, classes - 1})))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = (rng.integers(-12, 13, size=(batch, frames, classes)) / 4).astype(
        np.float32
    )
    lp = _paddings(rng, batch, frames)
    lap = _paddings(rng, batch, width)
    others = [c for c in range(classes) if c != blank] or [blank]
    labels = rng.choice(others, size=(batch, width)).astype(np.int32)
    for b in range(batch):
        kind = int(rng.integers(0, 4))
        if kind == 1 and width:  # repeats
            labels[b] = labels[b, 0]
        elif kind == 2 and bad and width:  # the blank or out of range
            labels[b, rng.integers(0, width)] = rng.choice([blank, -1, classes, 99])
        if bad and frames and rng.random() < 0.15:  # NaN in a (maybe valid) frame
            logits[b, rng.integers(0, frames), rng.integers(0, classes)] = np.nan
    # Garbage where padded: never read.
    logits = np.where(lp[:, :, None] != 0, np.nan, logits).astype(np.float32)
    labels = np.where(lap != 0, -7, labels).astype(np.int32)
    return Case(logits, lp, labels, lap, dtype, blank)


def _tol(dtype):
    """(rtol, atol) for results computed from inputs of ``dtype``."""
    if dtype == "float64":
        return 1e-7, 1e-9
    if dtype == "float32":
        return 1e-5, 1e-5
    return 1e-2, 1e-2  # half inputs (their outputs may be rounded to half)


def _np(a):
    """A float result as a float64 numpy array (half widened exactly)."""
    a = jnp.asarray(a)
    if a.dtype in (jnp.float16, jnp.bfloat16):
        a = a.astype(jnp.float32)
    return np.asarray(a, np.float64)


# Jitted once per shape and dtype (much cheaper than eager calls on a new shape);
# the cache is shared by the examples.
_J = {
    name: jax.jit(getattr(seqctc, name), static_argnames=static)
    for name, static in (
        ("ctc_loss", ("blank_id", "zero_infinity", "reduction")),
        ("ctc_log_alpha", ("blank_id",)),
        ("ctc_log_beta", ("blank_id",)),
        ("ctc_posteriors", ("blank_id",)),
        ("greedy_decode", ("blank_id",)),
        ("beam_decode", ("beam_width", "top_k", "blank_id")),
        ("viterbi_align", ("blank_id", "star_id", "star_penalty")),
        ("viterbi_loss", ("blank_id",)),
        ("token_spans", ("max_tokens", "blank_id", "star_id")),
        ("framewise_loss", ()),
        ("weighted_sequence_loss", ()),
        ("weighted_vote", ()),
    )
}


@functools.partial(jax.jit, static_argnames=("blank_id",))
def _loss_grad(x, logit_paddings, labels, label_paddings, *, blank_id):
    def total(x):
        loss = seqctc.ctc_loss(
            x,
            logit_paddings,
            labels,
            label_paddings,
            blank_id=blank_id,
            zero_infinity=True,
        )
        return jnp.sum(jnp.where(jnp.isnan(loss), 0, loss))

    return jax.grad(total)(x)


# --- CTC loss and gradient -------------------------------------------------


@given(cases(), st.booleans(), st.sampled_from(["none", "sum", "mean"]))
def test_ctc_loss_and_gradient(case, zero_infinity, reduction):
    batch, frames, classes = case.shape
    args = (case.logit_paddings, case.labels, case.label_paddings)
    kw = dict(blank_id=case.blank, zero_infinity=zero_infinity)
    with case.ctx():
        x = case.x()
        rows = _np(_J["ctc_loss"](x, *args, **kw))
        reduced = None
        if batch and reduction != "none":
            reduced = float(_np(_J["ctc_loss"](x, *args, **kw, reduction=reduction)))
        grad = _np(_loss_grad(x, *args, blank_id=case.blank))
    assert rows.shape == (batch,) and grad.shape == (batch, frames, classes)
    rtol, atol = _tol(case.dtype)
    want = np.zeros(batch)
    for b in range(batch):
        frames_b = case.frames(b)
        if case.bad(b):
            want[b] = np.nan
            assert np.isnan(rows[b]), (b, rows[b])
            continue
        log_p, _, occupancy = ctc_brute_force(
            case.logp(b), case.valid_labels(b), case.blank
        )
        want[b] = -log_p if np.isfinite(log_p) or not zero_infinity else 0.0
        if np.isfinite(want[b]):
            np.testing.assert_allclose(rows[b], want[b], rtol=rtol, atol=atol)
            assert rows[b] >= 0
        else:
            assert rows[b] == np.inf
        want_grad = np.zeros((frames, classes))
        if np.isfinite(log_p):
            want_grad[frames_b] = np.exp(case.logp(b)) - occupancy
        np.testing.assert_allclose(grad[b], want_grad, rtol=rtol, atol=10 * atol)
    if batch:
        lengths = np.array([max(len(case.valid_labels(b)), 1) for b in range(batch)])
        with np.errstate(invalid="ignore"):
            expected = np.sum(want) if reduction == "sum" else np.mean(want / lengths)
        if reduction != "none":
            np.testing.assert_allclose(reduced, expected, rtol=rtol, atol=atol)


# --- α, β, γ -----------------------------------------------------------------


@given(cases())
def test_ctc_tables(case):
    batch, frames, _ = case.shape
    states = 2 * case.labels.shape[1] + 1
    args = (case.logit_paddings, case.labels, case.label_paddings)
    with case.ctx():
        x = case.x()
        alpha = _np(_J["ctc_log_alpha"](x, *args, blank_id=case.blank))
        beta = _np(_J["ctc_log_beta"](x, *args, blank_id=case.blank))
        gamma = _np(_J["ctc_posteriors"](x, *args, blank_id=case.blank))
    rtol, atol = _tol(case.dtype)
    for table in (alpha, beta, gamma):
        assert table.shape == (batch, frames, states)
    for b in range(batch):
        if case.bad(b):  # the whole row may be NaN (not specified further)
            continue
        padded = case.logit_paddings[b] != 0
        for table in (alpha, beta):
            assert np.all(np.isfinite(table[b, padded])), "NaN/inf on padded frames"
            assert np.all(table[b, padded] <= -1e3)
        assert np.all(gamma[b, padded] == 0)
        labels = case.valid_labels(b)
        s_b = 2 * len(labels) + 1
        for table in (alpha, beta):
            pad = table[b, :, s_b:]
            assert np.all(np.isfinite(pad)) and np.all(pad <= -1e3)
        assert np.all(gamma[b, :, s_b:] == 0)
        assert not np.isnan(alpha[b]).any() and not np.isnan(beta[b]).any()
        want_alpha, want_beta = ctc_log_tables(case.logp(b), labels, case.blank)
        valid = ~padded
        got_alpha, got_beta = alpha[b][valid][:, :s_b], beta[b][valid][:, :s_b]
        np.testing.assert_allclose(
            np.exp(got_alpha), np.exp(want_alpha), rtol=rtol, atol=atol
        )
        np.testing.assert_allclose(
            np.exp(got_beta), np.exp(want_beta), rtol=rtol, atol=atol
        )
        log_p, _, _ = ctc_brute_force(case.logp(b), labels, case.blank)
        want_gamma = np.zeros_like(want_alpha)
        if np.isfinite(log_p):
            want_gamma = np.exp(want_alpha + want_beta - log_p)
        np.testing.assert_allclose(
            gamma[b][valid][:, :s_b], want_gamma, rtol=rtol, atol=10 * atol
        )


# --- Decoding ----------------------------------------------------------------


@given(cases(bad=False))
def test_greedy_decode(case):
    batch, frames, _ = case.shape
    with case.ctx():
        out = _J["greedy_decode"](case.x(), case.logit_paddings, blank_id=case.blank)
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        starts, scores = np.asarray(out.starts), _np(out.scores)
    assert tokens.shape == starts.shape == (batch, frames)
    rtol, atol = _tol(case.dtype)
    for b in range(batch):
        want_tokens, want_starts, want_score = greedy(
            case.logp(b), case.frames(b), case.blank
        )
        n = len(want_tokens)
        assert lengths[b] == n
        np.testing.assert_array_equal(tokens[b], want_tokens + [-1] * (frames - n))
        np.testing.assert_array_equal(starts[b], want_starts + [-1] * (frames - n))
        np.testing.assert_allclose(scores[b], want_score, rtol=rtol, atol=atol)


@given(cases(bad=False, max_frames=5), st.integers(1, 4), st.data())
def test_beam_decode(case, beam_width, data):
    batch, frames, _ = case.shape
    top_k = data.draw(st.integers(1, beam_width))
    with case.ctx():
        out = _J["beam_decode"](
            case.x(),
            case.logit_paddings,
            beam_width=beam_width,
            top_k=top_k,
            blank_id=case.blank,
        )
        tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
        starts, scores = np.asarray(out.starts), _np(out.scores)
    assert tokens.shape == starts.shape == (batch, top_k, frames)
    assert scores.shape == lengths.shape == (batch, top_k)
    assert not np.isnan(scores).any()
    tol = 1e-4 if case.dtype in ("float32", "float64") else 1e-2
    for b in range(batch):
        hyps, gap = prefix_beam_search(case.logp(b), case.blank, beam_width)
        if gap < 1e-3:  # a near-tie at a pruning cut: either choice is right
            continue
        want_scores = [s for _, s in hyps[:top_k]] + [-np.inf] * (top_k - len(hyps))
        np.testing.assert_allclose(scores[b], want_scores, rtol=tol, atol=tol)
        for i in range(top_k):
            if i >= len(hyps):
                assert lengths[b, i] == 0 and np.all(tokens[b, i] == -1)
                assert np.all(starts[b, i] == -1)
                continue
            neighbours = [hyps[j][1] for j in (i - 1, i + 1) if 0 <= j < len(hyps)]
            if any(abs(hyps[i][1] - s) < 1e-3 for s in neighbours):
                continue  # tied hypotheses: their order is arbitrary
            prefix = list(hyps[i][0])
            assert lengths[b, i] == len(prefix)
            np.testing.assert_array_equal(
                tokens[b, i], prefix + [-1] * (frames - len(prefix))
            )
            row_starts = starts[b, i, : len(prefix)]
            assert np.all(np.isin(row_starts, case.frames(b)))
            assert np.all(np.diff(row_starts) > 0)
            assert np.all(starts[b, i, len(prefix) :] == -1)


# --- Viterbi alignment, its loss and token spans ------------------------------


def _check_path(case, b, labels, blank_id, frame_labels, states):
    """The path of row b is a path of the graph that spells ``labels``."""
    valid = case.frames(b)
    fl, st_ = frame_labels[b, valid], states[b, valid]
    if blank_id is None:
        assert st_[0] == 0 and st_[-1] == len(labels) - 1
        assert np.all(np.isin(np.diff(st_), [0, 1]))
        np.testing.assert_array_equal(fl, np.asarray(labels)[st_])
        return
    ext = [blank_id]
    for v in labels:
        ext += [v, blank_id]
    n_states = len(ext)
    assert st_[0] in (0, 1) and st_[-1] in (n_states - 1, n_states - 2)
    for a, c in zip(st_[:-1], st_[1:], strict=True):
        step = c - a
        assert step in (0, 1) or (step == 2 and ext[c] != blank_id and ext[c] != ext[a])
    np.testing.assert_array_equal(fl, np.asarray(ext)[st_])


STAR = 50  # a wildcard label: no class of any drawn case


@given(cases(), st.sampled_from(["case", None]), st.sampled_from([0.0, 0.75]))
def test_viterbi_align_with_wildcards(case, graph, penalty):
    """Some valid labels become wildcards; the best path and its spans match
    the enumeration of ``wildcard_viterbi_brute`` on the valid positions."""
    batch, frames, classes = case.shape
    blank_id = case.blank if graph == "case" else None
    rng = np.random.default_rng(int(np.nansum(case.logits) * 4) % 2**32)
    labels = np.where(rng.random(case.labels.shape) < 0.4, STAR, case.labels).astype(
        np.int32
    )
    args = (case.logit_paddings, labels, case.label_paddings)
    kw = {"blank_id": blank_id, "star_id": STAR, "star_penalty": penalty}
    slots = max(labels.shape[1], 1)
    with case.ctx():
        x = case.x()
        al = _J["viterbi_align"](x, *args, **kw)
        spans = _J["token_spans"](
            al, x, max_tokens=slots, blank_id=blank_id, star_id=STAR
        )
        frame_labels, log_prob = np.asarray(al.frame_labels), _np(al.log_prob)
        sp_tokens, sp_conf = np.asarray(spans.tokens), _np(spans.confidence)
    rtol, atol = _tol(case.dtype)
    for b in range(batch):
        valid = case.frames(b)
        row = [int(v) for v in labels[b][case.label_paddings[b] == 0]]
        real = [v for v in row if v != STAR]
        if any(v < 0 or v >= classes or v == blank_id for v in real) or (
            case.nan_frames(b)
        ):
            assert np.isnan(log_prob[b]), (b, log_prob[b])
            continue
        logp = case.logp(b)
        best, paths = wildcard_viterbi_brute(
            logp, row, STAR, blank_id, penalty, every=True
        )
        if not np.isfinite(best):
            assert log_prob[b] == -np.inf and np.all(frame_labels[b] == -1)
            assert np.all(sp_tokens[b] == -1) and np.all(sp_conf[b] == 0)
            continue
        np.testing.assert_allclose(log_prob[b], best, rtol=rtol, atol=atol)
        path = tuple(int(v) for v in frame_labels[b, valid])
        assert path in paths, (path, row)
        np.testing.assert_allclose(paths[path], best, rtol=rtol, atol=atol)
        assert np.all(frame_labels[b, case.logit_paddings[b] != 0] == -1)
        # Each non-empty token slot holds its label; a star may be empty.
        for n, v in enumerate(row[:slots]):
            assert sp_tokens[b, n] in ((v, -1) if v == STAR else (v,))
        assert np.all((sp_conf[b] >= 0) & (sp_conf[b] <= 1 + atol))


@given(cases(), st.sampled_from(["case", None]))
def test_viterbi_align_loss_and_token_spans(case, graph):
    batch, frames, classes = case.shape
    blank_id = case.blank if graph == "case" else None
    width = case.labels.shape[1]
    args = (case.logit_paddings, case.labels, case.label_paddings)
    with case.ctx():
        x = case.x()
        al = _J["viterbi_align"](x, *args, blank_id=blank_id)
        loss = _np(_J["viterbi_loss"](x, *args, blank_id=blank_id))
        slots = width if width else frames
        if slots == 0:
            # No frames: the default gives zero token slots.
            empty = _J["token_spans"](al, x, max_tokens=None, blank_id=blank_id)
            assert empty.tokens.shape == (len(x), 0), empty.tokens.shape
            slots = 1
        spans = _J["token_spans"](al, x, max_tokens=slots, blank_id=blank_id)
        frame_labels, states = np.asarray(al.frame_labels), np.asarray(al.states)
        log_prob = _np(al.log_prob)
        sp_tokens, sp_starts = np.asarray(spans.tokens), np.asarray(spans.starts)
        sp_ends, sp_scores = np.asarray(spans.ends), _np(spans.scores)
    rtol, atol = _tol(case.dtype)
    assert frame_labels.shape == states.shape == (batch, frames)
    assert log_prob.shape == loss.shape == (batch,)
    assert sp_tokens.shape == sp_scores.shape == (batch, slots)
    for b in range(batch):
        padded = case.logit_paddings[b] != 0
        assert np.all(frame_labels[b, padded] == -1) and np.all(states[b, padded] == -1)
        labels, logp = case.valid_labels(b), case.logp(b)
        if case.bad(b, blank=blank_id):
            assert np.isnan(loss[b]), (b, loss[b])
            continue
        if blank_id is None:
            best = blank_free_best(logp, labels)
        else:
            best = ctc_brute_force(logp, labels, blank_id)[1]
        if not np.isfinite(best):
            assert log_prob[b] == -np.inf and loss[b] == np.inf
            assert np.all(sp_tokens[b] == -1) and np.all(sp_scores[b] == -np.inf)
            continue
        np.testing.assert_allclose(log_prob[b], best, rtol=rtol, atol=atol)
        np.testing.assert_allclose(loss[b], -best, rtol=rtol, atol=atol)
        valid = case.frames(b)
        if len(valid):
            _check_path(case, b, labels, blank_id, frame_labels, states)
            path_score = logp[np.arange(len(valid)), frame_labels[b, valid]].sum()
            np.testing.assert_allclose(path_score, best, rtol=rtol, atol=atol)
        # Token spans: the frames (input indices) of each label's state.
        n = min(len(labels), slots)
        np.testing.assert_array_equal(sp_tokens[b, :n], labels[:n])
        assert np.all(sp_tokens[b, n:] == -1) and np.all(sp_scores[b, n:] == -np.inf)
        for i in range(n):
            state = i if blank_id is None else 2 * i + 1
            where = np.flatnonzero(states[b, valid] == state)
            assert sp_starts[b, i] == valid[where[0]]
            assert sp_ends[b, i] == valid[where[-1]] + 1
            np.testing.assert_allclose(
                sp_scores[b, i], logp[where, labels[i]].mean(), rtol=rtol, atol=atol
            )


@pytest.mark.parametrize("blank_id", [0, None])
def test_viterbi_loss_nan_logits_infeasible(blank_id):
    logits = np.array([[[np.nan, 0.0], [0.0, 0.0]]], np.float32)
    labels = np.array([[1, 1, 1]], np.int32)
    loss = seqctc.viterbi_loss(
        logits, np.zeros((1, 2)), labels, np.zeros((1, 3)), blank_id=blank_id
    )
    assert np.isnan(loss[0]), loss


# --- Lecture losses ------------------------------------------------------------


@given(cases(bad=False), st.data())
def test_lecture_losses(case, data):
    batch, frames, classes = case.shape
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    frame_labels = rng.integers(-1, classes, size=(batch, frames)).astype(np.int32)
    label = rng.integers(0, classes, size=(batch,)).astype(np.int32)
    bad_rows = rng.random(batch) < 0.3
    for b in np.flatnonzero(bad_rows):
        label[b] = rng.choice([-1, classes, 50])
        valid = case.frames(b)
        if len(valid):
            frame_labels[b, rng.choice(valid)] = rng.choice([-2, classes, 50])
    use_weights = data.draw(st.booleans())
    weights = None
    if use_weights:
        weights = (rng.integers(0, 9, size=(batch, frames)) / 4).astype(np.float32)
        weights = np.where(case.logit_paddings != 0, np.nan, weights)
    lp = case.logit_paddings
    with case.ctx():
        x = case.x()
        fw = _np(_J["framewise_loss"](x, frame_labels, lp))
        ws = _np(_J["weighted_sequence_loss"](x, lp, label, weights))
        vote = np.asarray(_J["weighted_vote"](x, lp, weights))
    rtol, atol = _tol(case.dtype)
    assert fw.shape == ws.shape == vote.shape == (batch,)
    for b in range(batch):
        valid, logp = case.frames(b), case.logp(b)
        w = np.ones(len(valid)) if weights is None else weights[b, valid]
        fl = frame_labels[b, valid]
        if np.any((fl < -1) | (fl >= classes)):
            assert np.isnan(fw[b])
        else:
            keep = fl != -1
            want = -logp[np.flatnonzero(keep), fl[keep]].sum()
            np.testing.assert_allclose(fw[b], want, rtol=rtol, atol=atol)
        if not 0 <= label[b] < classes:
            assert np.isnan(ws[b])
        else:
            want = -(w * logp[:, label[b]]).sum() if len(valid) else 0.0
            np.testing.assert_allclose(ws[b], want, rtol=rtol, atol=atol)
        if not len(valid):
            assert vote[b] == -1
        else:
            votes = np.zeros(classes)
            np.add.at(votes, np.argmax(logp, axis=-1), w)
            assert vote[b] == np.argmax(votes), (votes, vote[b])


# --- Static misuse ---------------------------------------------------------------

_MISUSES = (
    "logits_rank",
    "logit_paddings_rank",
    "logit_paddings_batch",
    "labels_batch",
    "label_paddings_width",
    "blank_id_high",
    "blank_id_negative",
    "top_k",
)


@settings(max_examples=max(settings().max_examples, 40))
@given(cases(bad=False), st.sampled_from(_MISUSES), st.integers(0, 10))
def test_static_misuse_raises_value_error_naming_the_argument(case, misuse, which):
    batch, frames, classes = case.shape
    x = case.logits.astype(np.float32)
    lp, labels, lap = case.logit_paddings, case.labels, case.label_paddings
    kw, names = {}, ()
    if misuse == "logits_rank":
        x, names = x.reshape(batch * frames, classes), ("logits",)
    elif misuse == "logit_paddings_rank":
        lp, names = lp[..., None], ("logit_paddings", "paddings")
    elif misuse == "logit_paddings_batch":
        lp, names = (
            np.zeros((batch + 1, frames), np.float32),
            (
                "logit_paddings",
                "paddings",
                "logits",
            ),
        )
    elif misuse == "labels_batch":
        labels, names = np.ones((batch + 1, labels.shape[1]), np.int32), ("labels",)
    elif misuse == "label_paddings_width":
        lap, names = (
            np.zeros((batch, labels.shape[1] + 1), np.float32),
            (
                "label_paddings",
                "labels",
            ),
        )
    elif misuse in ("blank_id_high", "blank_id_negative"):
        kw = {"blank_id": classes if misuse == "blank_id_high" else -1}
        names = ("blank_id",)
    frame_labels = np.zeros((batch, frames), np.int32)
    functions = {
        "ctc_loss": lambda: seqctc.ctc_loss(x, lp, labels, lap, **kw),
        "ctc_log_alpha": lambda: seqctc.ctc_log_alpha(x, lp, labels, lap, **kw),
        "ctc_log_beta": lambda: seqctc.ctc_log_beta(x, lp, labels, lap, **kw),
        "ctc_posteriors": lambda: seqctc.ctc_posteriors(x, lp, labels, lap, **kw),
        "viterbi_align": lambda: seqctc.viterbi_align(x, lp, labels, lap, **kw),
        "viterbi_loss": lambda: seqctc.viterbi_loss(x, lp, labels, lap, **kw),
        "greedy_decode": lambda: seqctc.greedy_decode(x, lp, **kw),
        "beam_decode": lambda: seqctc.beam_decode(x, lp, beam_width=2, **kw),
        "weighted_vote": lambda: seqctc.weighted_vote(x, lp),
        "framewise_loss": lambda: seqctc.framewise_loss(x, frame_labels, lp),
        "weighted_sequence_loss": lambda: seqctc.weighted_sequence_loss(
            x, lp, np.zeros(batch, np.int32)
        ),
    }
    if misuse == "top_k":
        names = ("top_k",)
        call = lambda: seqctc.beam_decode(x, lp, beam_width=2, top_k=3)  # noqa: E731
    else:
        uses_labels = ("ctc", "viterbi")
        no_blank = ("weighted_vote", "framewise_loss", "weighted_sequence_loss")
        candidates = [
            name
            for name in functions
            if not (misuse.startswith("label") and not name.startswith(uses_labels))
            and not (misuse.startswith("blank_id") and name in no_blank)
        ]
        call = functions[candidates[which % len(candidates)]]
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert any(name in message for name in names), (misuse, message)
