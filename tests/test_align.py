"""Viterbi alignment against brute force over every path and a plain numpy loop."""

import itertools
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from oracles import collapse as _collapse
from oracles import log_softmax as _log_softmax
from oracles import wildcard_viterbi_brute

import seqctc
from seqctc import _align as _align_module

# ---------------------------------------------------------------------------
# Independent references.


def _ctc_paths(num_frames, num_classes, labels, blank):
    """Every frame-label path of length T that collapses to ``labels``."""
    for path in itertools.product(range(num_classes), repeat=num_frames):
        if _collapse(path, blank) == tuple(labels):
            yield path


def _segmentation_paths(num_frames, labels):
    """Every expanded label sequence of the blank-free segmentation graph."""
    n = len(labels)
    if n == 0 or num_frames < n:
        if num_frames == n == 0:
            yield ()
        return
    for cuts in itertools.combinations(range(1, num_frames), n - 1):
        bounds = (0, *cuts, num_frames)
        yield tuple(
            labels[k] for k in range(n) for _ in range(bounds[k], bounds[k + 1])
        )


def _brute_best(log_probs, labels, blank):
    """(best log prob, log of the summed prob) over all valid paths."""
    num_frames, num_classes = log_probs.shape
    if blank is None:
        paths = _segmentation_paths(num_frames, labels)
    else:
        paths = _ctc_paths(num_frames, num_classes, labels, blank)
    scores = [sum(log_probs[t, c] for t, c in enumerate(p)) for p in paths]
    if not scores:
        return -np.inf, -np.inf
    return max(scores), np.logaddexp.reduce(scores)


def _numpy_viterbi(log_probs, labels, blank):
    """Textbook Viterbi over the extended labels, one row, plain numpy loops."""
    num_frames = log_probs.shape[0]
    if num_frames == 0:
        return 0.0 if not labels else -np.inf
    if blank is None:
        states = list(labels)
        starts, finals = [0], [len(states) - 1]
        preds = [[s] + ([s - 1] if s > 0 else []) for s in range(len(states))]
    else:
        states = [blank]
        for lab in labels:
            states += [lab, blank]
        starts = [0, 1][: len(states)]
        finals = [len(states) - 1] + ([len(states) - 2] if labels else [])
        preds = []
        for s in range(len(states)):
            p = [s] + ([s - 1] if s > 0 else [])
            if s >= 2 and states[s] != blank and states[s] != states[s - 2]:
                p.append(s - 2)
            preds.append(p)
    if not states:
        return -np.inf
    delta = np.full(len(states), -np.inf)
    for s in starts:
        delta[s] = log_probs[0, states[s]]
    for t in range(1, num_frames):
        delta = np.array(
            [
                max(delta[p] for p in preds[s]) + log_probs[t, states[s]]
                for s in range(len(states))
            ]
        )
    return max(delta[s] for s in finals)


def _random_batch(rng, batch, num_frames, num_classes, max_labels, blank=0):
    """Random logits, frame lengths, labels avoiding ``blank``, label lengths."""
    logits = rng.normal(size=(batch, num_frames, num_classes)).astype(np.float32)
    frame_lengths = rng.integers(0, num_frames + 1, size=batch)
    frame_lengths[0] = num_frames
    label_lengths = rng.integers(0, max_labels + 1, size=batch)
    label_lengths[0] = max_labels
    non_blank = [c for c in range(num_classes) if c != blank]
    labels = rng.choice(non_blank, size=(batch, max_labels)).astype(np.int32)
    logit_paddings = (np.arange(num_frames)[None] >= frame_lengths[:, None]) * 1.0
    label_paddings = (np.arange(max_labels)[None] >= label_lengths[:, None]) * 1.0
    logit_paddings = logit_paddings.astype(np.float32)
    label_paddings = label_paddings.astype(np.float32)
    return logits, logit_paddings, labels, label_paddings


def _rows(logits, logit_paddings, labels, label_paddings):
    for b in range(logits.shape[0]):
        t_b = int(np.sum(logit_paddings[b] == 0))
        n_b = int(np.sum(label_paddings[b] == 0))
        yield b, _log_softmax(logits[b, :t_b]), [int(x) for x in labels[b, :n_b]]


# Few distinct shapes (each one recompiles): TINY for brute force, MID elsewhere.
TINY = (8, 5, 4, 3)  # B, T, K, N
MID = (8, 40, 4, 12)

# Jitted once per shape: eager op-by-op dispatch dominates the test time.
_align = jax.jit(
    seqctc.viterbi_align, static_argnames=("blank_id", "star_id", "star_penalty")
)
_spans = jax.jit(
    seqctc.token_spans, static_argnames=("max_tokens", "blank_id", "star_id")
)
_optax_ctc = jax.jit(optax.ctc_loss)


def _embed(rows, shape=TINY):
    """Pads ``[(logits[T_b, K], labels), ...]`` into a batch of ``shape``.

    Unused rows and slots are padding filled with NaN logits and label 99, which
    must never be read.
    """
    batch, num_frames, num_classes, max_labels = shape
    logits = np.full((batch, num_frames, num_classes), np.nan, np.float32)
    logit_paddings = np.ones((batch, num_frames), np.float32)
    labels = np.full((batch, max_labels), 99, np.int32)
    label_paddings = np.ones((batch, max_labels), np.float32)
    for b, (row_logits, row_labels) in enumerate(rows):
        t_b, n_b = len(row_logits), len(row_labels)
        logits[b, :t_b] = row_logits
        logit_paddings[b, :t_b] = 0
        labels[b, :n_b] = row_labels
        label_paddings[b, :n_b] = 0
    return logits, logit_paddings, labels, label_paddings


# ---------------------------------------------------------------------------


class ViterbiAlignTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("ctc", 0, 0), ("blank_free", None, 1))
    def test_matches_brute_force(self, blank_id, seed):
        rng = np.random.default_rng(seed)
        logits, *rest = _random_batch(rng, *TINY)
        logits = logits * 3.0  # peaked: no ties, a unique best path
        align = self.variant(lambda *a: seqctc.viterbi_align(*a, blank_id=blank_id))(
            logits, *rest
        )
        chex.assert_shape((align.frame_labels, align.states), (TINY[0], TINY[1]))
        chex.assert_shape(align.log_prob, (TINY[0],))
        for b, log_probs, labels in _rows(logits, *rest):
            best, _ = _brute_best(log_probs, labels, blank_id)
            t_b = log_probs.shape[0]
            np.testing.assert_allclose(align.log_prob[b], best, rtol=1e-5, atol=1e-5)
            frame_labels = np.asarray(align.frame_labels[b])
            states = np.asarray(align.states[b])
            np.testing.assert_array_equal(frame_labels[t_b:], -1)
            np.testing.assert_array_equal(states[t_b:], -1)
            if best == -np.inf:
                np.testing.assert_array_equal(frame_labels, -1)
                np.testing.assert_array_equal(states, -1)
                continue
            path = frame_labels[:t_b]
            # The path is valid for its graph and scores what log_prob says.
            if blank_id is None:
                np.testing.assert_array_equal(path, [labels[s] for s in states[:t_b]])
                if t_b:
                    self.assertEqual(states[0], 0)
                    self.assertEqual(states[t_b - 1], len(labels) - 1)
                self.assertTrue(np.all(np.diff(states[:t_b]) >= 0))
                self.assertTrue(np.all(np.diff(states[:t_b]) <= 1))
            else:
                self.assertEqual(list(_collapse(path, blank_id)), list(labels))
                extended = [blank_id] + [x for lab in labels for x in (lab, blank_id)]
                np.testing.assert_array_equal(path, [extended[s] for s in states[:t_b]])
            np.testing.assert_allclose(
                best, sum(log_probs[t, c] for t, c in enumerate(path)), rtol=1e-5
            )

    @parameterized.named_parameters(
        ("ctc", 0), ("ctc_last_blank", MID[2] - 1), ("blank_free", None)
    )
    def test_matches_numpy_viterbi_on_longer_sequences(self, blank_id):
        rng = np.random.default_rng(3)
        batch = _random_batch(rng, *MID, blank=0 if blank_id is None else blank_id)
        align = _align(*batch, blank_id=blank_id)
        for b, log_probs, labels in _rows(*batch):
            expected = _numpy_viterbi(log_probs, labels, blank_id)
            np.testing.assert_allclose(align.log_prob[b], expected, rtol=1e-5)

    @parameterized.named_parameters(("ctc", 0), ("blank_free", None))
    def test_checkpointed_path_matches_numpy_viterbi(self, blank_id):
        # Long inputs keep delta at ~sqrt(T) checkpoints and recompute the
        # back-pointers; force that on a batch whose T is not a square.
        rng = np.random.default_rng(4)
        batch = _random_batch(rng, *MID, blank=0)
        with mock.patch.object(_align_module, "_FULL_TABLE_BYTES", 0):
            align = jax.jit(lambda *a: seqctc.viterbi_align(*a, blank_id=blank_id))(
                *batch
            )
        full = seqctc.viterbi_align(*batch, blank_id=blank_id)
        for b, log_probs, labels in _rows(*batch):
            expected = _numpy_viterbi(log_probs, labels, blank_id)
            np.testing.assert_allclose(align.log_prob[b], expected, rtol=1e-5)
        # The same path: the tie-breaking rule does not depend on the chunks.
        np.testing.assert_array_equal(align.states, full.states)

    def test_best_path_is_at_most_the_ctc_sum(self):
        rng = np.random.default_rng(4)
        batch = _random_batch(rng, *MID)
        align = _align(*batch)
        ctc = np.asarray(_optax_ctc(*batch))
        feasible = np.isfinite(np.asarray(align.log_prob))
        self.assertGreaterEqual(feasible.sum(), 3)
        self.assertTrue(np.all(align.log_prob[feasible] <= -ctc[feasible] + 1e-4))
        # Brute force on tiny rows: the sum over all paths bounds the best one.
        logits, *rest = _random_batch(rng, *TINY)
        tiny = _align(logits, *rest)
        for b, log_probs, labels in _rows(logits, *rest):
            _, total = _brute_best(log_probs, labels, 0)
            self.assertLessEqual(float(tiny.log_prob[b]), total + 1e-5)

    def test_infeasible_rows(self):
        flat = np.zeros((TINY[1], TINY[2]), np.float32)
        # (frames, labels): CTC needs T_b >= N_b + repeats, the blank-free graph
        # T_b >= N_b and at least one label when there are frames.
        rows = [
            (3, [1, 1]),
            (2, [1, 1]),
            (2, [1, 2]),
            (1, [1, 2]),
            (0, [1]),
            (0, []),
            (3, []),
        ]
        ctc_ok = [True, False, True, False, False, True, True]
        free_ok = [True, True, True, False, False, True, False]
        batch = _embed([(flat[:t], labels) for t, labels in rows])
        for blank_id, ok in ((0, ctc_ok), (None, free_ok)):
            align = _align(*batch, blank_id=blank_id)
            chex.assert_tree_all_finite((align.frame_labels, align.states))
            log_prob = np.asarray(align.log_prob)
            np.testing.assert_array_equal(np.isfinite(log_prob[: len(rows)]), ok)
            self.assertTrue(np.all(log_prob[: len(rows)][~np.array(ok)] == -np.inf))
            np.testing.assert_array_equal(
                align.frame_labels[~np.isfinite(log_prob)], -1
            )
            np.testing.assert_array_equal(align.states[~np.isfinite(log_prob)], -1)
            self.assertEqual(float(log_prob[5]), 0.0)  # no frames, no labels

    def test_static_empty_shapes(self):
        labels = np.array([[1], [1]], np.int32)
        label_paddings = np.array([[0], [1]], np.float32)
        no_frames = _align(
            np.zeros((2, 0, 3), np.float32), np.zeros((2, 0)), labels, label_paddings
        )
        chex.assert_shape(no_frames.states, (2, 0))
        np.testing.assert_array_equal(no_frames.log_prob, [-np.inf, 0.0])
        no_labels = _align(
            np.zeros((2, 3, 3), np.float32),
            np.array([[0, 0, 0], [1, 1, 1]], np.float32),
            np.zeros((2, 0), np.int32),
            np.zeros((2, 0)),
            blank_id=None,
        )
        np.testing.assert_array_equal(no_labels.log_prob, [-np.inf, 0.0])
        np.testing.assert_array_equal(no_labels.frame_labels, -1)
        # On the CTC graph no labels means all blanks.
        blanks = _align(
            np.zeros((1, 3, 3), np.float32),
            np.zeros((1, 3)),
            np.zeros((1, 0), np.int32),
            np.zeros((1, 0)),
        )
        np.testing.assert_array_equal(blanks.frame_labels, [[0, 0, 0]])
        np.testing.assert_allclose(blanks.log_prob, [-3 * np.log(3)], rtol=1e-6)

    def test_padding_is_never_read(self):
        rng = np.random.default_rng(5)
        logits, logit_paddings, labels, label_paddings = _random_batch(rng, *TINY)
        garbage_logits = np.where(logit_paddings[:, :, None] > 0, np.nan, logits)
        garbage_labels = np.where(label_paddings > 0, 99, labels).astype(np.int32)
        # The same rows padded out to the MID shape with NaN and bogus labels.
        wide = _embed(
            [
                (lp, lab)
                for _, lp, lab in _rows(logits, logit_paddings, labels, label_paddings)
            ],
            MID,
        )
        wide[0][:, :, :] = np.where(wide[1][:, :, None] > 0, np.nan, wide[0])
        for b, _, _ in _rows(logits, logit_paddings, labels, label_paddings):
            t_b = int(np.sum(logit_paddings[b] == 0))
            wide[0][b, :t_b] = logits[b, :t_b]
        for blank_id in (0, None):
            clean = _align(
                logits, logit_paddings, labels, label_paddings, blank_id=blank_id
            )
            dirty = _align(
                garbage_logits,
                logit_paddings,
                garbage_labels,
                label_paddings,
                blank_id=blank_id,
            )
            chex.assert_trees_all_equal(clean, dirty)
            padded = _align(*wide, blank_id=blank_id)
            np.testing.assert_array_equal(
                padded.frame_labels[: TINY[0], : TINY[1]], clean.frame_labels
            )
            np.testing.assert_array_equal(
                padded.states[: TINY[0], : TINY[1]], clean.states
            )
            np.testing.assert_array_equal(padded.frame_labels[:, TINY[1] :], -1)
            np.testing.assert_allclose(
                padded.log_prob[: TINY[0]], clean.log_prob, rtol=1e-6
            )

    def test_vmap_matches_loop(self):
        rng = np.random.default_rng(6)
        batches = [_random_batch(rng, *TINY) for _ in range(2)]
        stacked = [np.stack(parts) for parts in zip(*batches, strict=True)]
        mapped = jax.jit(jax.vmap(seqctc.viterbi_align))(*stacked)
        for i, batch in enumerate(batches):
            single = _align(*batch)
            chex.assert_trees_all_close(
                jax.tree.map(lambda x, i=i: x[i], mapped), single, rtol=1e-6
            )

    def test_ties_advance_as_early_as_possible(self):
        flat = np.zeros((TINY[1], TINY[2]), np.float32)
        batch = _embed([(flat, [1, 2, 1])])
        free = _align(*batch, blank_id=None)
        np.testing.assert_array_equal(free.states[0], [0, 1, 2, 2, 2])
        np.testing.assert_allclose(free.log_prob[0], -5 * np.log(4), rtol=1e-6)

    def test_log_zero_emissions_are_valid(self):
        rng = np.random.default_rng(7)
        logits = rng.normal(size=(2, TINY[1], TINY[2])).astype(np.float32)
        logits[:, 1, 1] = -np.inf  # class 1 impossible at frame 1
        logits[1, :, 2] = -np.inf  # class 2 impossible everywhere in row 1
        batch = _embed([(logits[0], [1, 2]), (logits[1], [1, 2])])
        for blank_id in (0, None):
            align = _align(*batch, blank_id=blank_id)
            for b in range(2):
                best, _ = _brute_best(_log_softmax(logits[b]), [1, 2], blank_id)
                np.testing.assert_allclose(align.log_prob[b], best, rtol=1e-5)
            self.assertEqual(float(align.log_prob[1]), -np.inf)
            # The path never uses a log(0) emission when it can avoid it.
            self.assertEqual(_collapse(np.asarray(align.frame_labels[0]), 0), (1, 2))
            self.assertNotEqual(int(align.frame_labels[0, 1]), 1)

    def test_half_precision_computes_in_float32(self):
        rng = np.random.default_rng(8)
        logits, *rest = _random_batch(rng, *TINY)
        half = jnp.asarray(logits, jnp.bfloat16)
        got = _align(half, *rest)
        expected = _align(half.astype(jnp.float32), *rest)
        self.assertEqual(got.log_prob.dtype, jnp.float32)
        chex.assert_trees_all_equal(got, expected)

    def test_bad_values_give_nan_in_their_row_only(self):
        rng = np.random.default_rng(9)
        logits = rng.normal(size=(4, TINY[1], TINY[2])).astype(np.float32)
        nan_logits = logits[3].copy()
        nan_logits[0, 1] = np.nan
        batch = _embed(
            [
                (logits[0], [1, 2]),
                (logits[1], [0, 2]),
                (logits[2], [1, 7]),
                (nan_logits, [1, 2]),
            ]
        )
        align = _align(*batch)
        np.testing.assert_array_equal(
            np.isnan(align.log_prob[:4]), [False, True, True, True]
        )
        free = _align(*batch, blank_id=None)  # label 0 is fine without a blank
        np.testing.assert_array_equal(
            np.isnan(free.log_prob[:4]), [False, False, True, True]
        )

    def test_log_prob_gradient_is_framewise_cross_entropy(self):
        rng = np.random.default_rng(10)
        logits, *rest = _random_batch(rng, *TINY)
        align = _align(logits, *rest)
        grad = jax.jit(
            jax.grad(lambda x: jnp.sum(seqctc.viterbi_align(x, *rest).log_prob))
        )(jnp.asarray(logits))
        probs = np.exp(_log_softmax(logits))
        one_hot = np.eye(TINY[2])[np.maximum(align.frame_labels, 0)]
        on_path = (np.asarray(align.frame_labels) >= 0)[:, :, None]
        np.testing.assert_allclose(
            grad, np.where(on_path, one_hot - probs, 0), atol=1e-6
        )

    def test_static_misuse_raises(self):
        logits = np.zeros((2, 4, 3), np.float32)
        pad = np.zeros((2, 4), np.float32)
        labels = np.ones((2, 2), np.int32)
        lpad = np.zeros((2, 2), np.float32)
        cases = [
            ((logits[0], pad, labels, lpad), {}, "`logits`"),
            ((logits, pad[0], labels, lpad), {}, "`logit_paddings`"),
            ((logits, pad[:, :3], labels, lpad), {}, "`logit_paddings`"),
            ((logits, pad, labels[:1], lpad), {}, "`labels`"),
            ((logits, pad, labels, lpad[:, :1]), {}, "`label_paddings`"),
            ((logits, pad, labels.astype(np.float32), lpad), {}, "`labels`"),
            ((logits, pad, labels, lpad), {"blank_id": 3}, "`blank_id`"),
            ((logits, pad, labels, lpad), {"blank_id": -1}, "`blank_id`"),
        ]
        for args, kwargs, name in cases:
            with self.assertRaisesRegex(ValueError, name):
                seqctc.viterbi_align(*args, **kwargs)


class TokenSpansTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("ctc", 0), ("blank_free", None))
    def test_spans_match_a_python_scan(self, blank_id):
        rng = np.random.default_rng(11)
        logits, *rest = _random_batch(rng, *MID)
        max_labels = MID[3]
        align = _align(logits, *rest, blank_id=blank_id)
        spans = self.variant(
            lambda a, x: seqctc.token_spans(
                a, x, max_tokens=max_labels, blank_id=blank_id
            )
        )(align, logits)
        chex.assert_shape(tuple(spans), (MID[0], max_labels))
        log_probs = _log_softmax(logits)
        for b, _, labels in _rows(logits, *rest):
            states = np.asarray(align.states[b])
            runs = []  # [state, start, end) of each run of a label state
            for t, s in enumerate(states):
                if s < 0 or (blank_id is not None and s % 2 == 0):
                    continue
                if runs and runs[-1][0] == s:
                    runs[-1][2] = t + 1
                else:
                    runs.append([s, t, t + 1])
            if np.isfinite(align.log_prob[b]):
                self.assertEqual(len(runs), len(labels))
            else:
                self.assertEqual(runs, [])
            tokens = np.full(max_labels, -1)
            starts, ends = np.full(max_labels, -1), np.full(max_labels, -1)
            scores = np.full(max_labels, -np.inf)
            confidence, min_confidence = np.zeros(max_labels), np.zeros(max_labels)
            for n, (_, start, end) in enumerate(runs):
                tokens[n] = labels[n]
                starts[n], ends[n] = start, end
                scores[n] = np.mean(log_probs[b, start:end, labels[n]])
                posteriors = np.exp(log_probs[b, start:end, labels[n]])
                confidence[n] = np.mean(posteriors)
                min_confidence[n] = np.min(posteriors)
            np.testing.assert_array_equal(spans.tokens[b], tokens)
            np.testing.assert_array_equal(spans.starts[b], starts)
            np.testing.assert_array_equal(spans.ends[b], ends)
            np.testing.assert_allclose(spans.scores[b], scores, rtol=1e-5)
            np.testing.assert_allclose(spans.confidence[b], confidence, rtol=1e-5)
            np.testing.assert_allclose(
                spans.min_confidence[b], min_confidence, rtol=1e-5
            )

    def test_default_slots_and_misuse(self):
        rng = np.random.default_rng(12)
        logits, *rest = _random_batch(rng, *MID)
        align = _align(logits, *rest)
        spans = _spans(align, logits)
        chex.assert_shape(spans.starts, (MID[0], MID[1]))
        narrow = _spans(align, logits, max_tokens=MID[3])
        chex.assert_trees_all_equal(
            jax.tree.map(lambda x: x[:, : MID[3]], spans), narrow
        )
        np.testing.assert_array_equal(spans.tokens[:, MID[3] :], -1)
        with self.assertRaisesRegex(ValueError, "`max_tokens`"):
            seqctc.token_spans(align, logits, max_tokens=0)
        with self.assertRaisesRegex(ValueError, "`logits`"):
            seqctc.token_spans(align, logits[:, :4])
        with self.assertRaisesRegex(ValueError, "`star_id`"):
            seqctc.token_spans(align, logits, star_id=1)


# ---------------------------------------------------------------------------
# Wildcards: labels equal to STAR match any class (partial transcripts).

STAR = 9  # no class of the K = 4 logits
WILD = (8, 6, 4, 4)  # B, T, K, N of the wildcard tests


def _wildcard_batch(rng, shape, blank):
    """A random batch whose labels hold wildcards: at the ends, between labels,
    several in a row, alone, and none."""
    batch, num_frames, num_classes, max_labels = shape
    non_blank = [c for c in range(num_classes) if c != blank]
    rows = []
    for b in range(batch):
        t_b = num_frames if b < batch // 2 else int(rng.integers(0, num_frames + 1))
        n_b = int(rng.integers(0, max_labels + 1)) if b else max_labels
        labels = [int(v) for v in rng.choice(non_blank, size=n_b)]
        for i in range(n_b):
            if rng.random() < 0.4:
                labels[i] = STAR
        if b == 1:
            labels = [STAR] * min(2, max_labels)
        logits = rng.normal(size=(t_b, num_classes)).astype(np.float32) * 3
        rows.append((logits, labels))
    return rows


class WildcardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("ctc", 0, 0, 1.0), ("ctc_free_star", 2, 1, 0.0), ("blank_free", None, 2, 0.5)
    )
    def test_matches_brute_force(self, blank_id, seed, penalty):
        rng = np.random.default_rng(20 + seed)
        shape = WILD
        for _ in range(1):
            rows = _wildcard_batch(rng, shape, blank_id)
            batch = _embed(rows, shape)
            align = self.variant(
                lambda *a: seqctc.viterbi_align(
                    *a, blank_id=blank_id, star_id=STAR, star_penalty=penalty
                )
            )(*batch)
            chex.assert_shape((align.frame_labels, align.states), shape[:2])
            for b, (logits, labels) in enumerate(rows):
                log_probs = _log_softmax(logits)
                best, paths = wildcard_viterbi_brute(
                    log_probs, labels, STAR, blank_id, penalty
                )
                t_b = len(logits)
                if best == -np.inf:
                    self.assertEqual(float(align.log_prob[b]), -np.inf)
                    np.testing.assert_array_equal(align.frame_labels[b], -1)
                    continue
                np.testing.assert_allclose(
                    align.log_prob[b], best, rtol=1e-5, atol=1e-5
                )
                got = tuple(int(v) for v in align.frame_labels[b, :t_b])
                self.assertIn(got, paths)
                np.testing.assert_array_equal(align.frame_labels[b, t_b:], -1)
                # Wildcard frames sit on wildcard states, the others on their label.
                states = np.asarray(align.states[b, :t_b])
                positions = states if blank_id is None else (states - 1) // 2
                for t, s in enumerate(states):
                    if blank_id is not None and s % 2 == 0:
                        self.assertEqual(got[t], blank_id)
                    else:
                        self.assertEqual(got[t], labels[positions[t]])

    def test_large_penalty_makes_a_star_the_blank_it_replaced(self):
        rng = np.random.default_rng(23)
        shape = (8, 7, 4, 5)
        plain, starred = [], []
        for b in range(shape[0]):
            logits = rng.normal(size=(shape[1], shape[2])).astype(np.float32) * 3
            labels = [int(v) for v in rng.integers(1, shape[2], size=3)]
            where = b % 4  # a star before, between or after the labels
            plain.append((logits, labels))
            starred.append((logits, labels[:where] + [STAR] + labels[where:]))
        ref = _align(*_embed(plain, shape))
        got = _align(*_embed(starred, shape), star_id=STAR, star_penalty=1e6)
        np.testing.assert_allclose(got.log_prob, ref.log_prob, rtol=1e-6)
        frame_labels = np.where(got.frame_labels == STAR, 0, got.frame_labels)
        np.testing.assert_array_equal(frame_labels, ref.frame_labels)

    def test_star_absorbs_an_untranscribed_stretch(self):
        # Frames 0-3 say "1 2", frames 4-7 say "3 3 1" confidently, but the
        # transcript only holds "1 2": a trailing star takes the rest.
        peaks = [1, 1, 0, 2, 3, 0, 3, 1]
        logits = np.full((8, 4), -4.0, np.float32)
        logits[np.arange(8), peaks] = 4.0
        batch = _embed([(logits, [1, 2, STAR])], (1, 8, 4, 3))
        align = _align(*batch, star_id=STAR)
        np.testing.assert_array_equal(align.frame_labels[0], [1, 1, 0, 2] + [STAR] * 4)
        spans = _spans(align, logits[None], max_tokens=3, star_id=STAR)
        np.testing.assert_array_equal(spans.tokens[0], [1, 2, STAR])
        np.testing.assert_array_equal(spans.starts[0], [0, 3, 4])
        np.testing.assert_array_equal(spans.ends[0], [2, 4, 8])
        # Without the star the same frames must be forced into "2" and blanks.
        plain = _align(*_embed([(logits, [1, 2])], (1, 8, 4, 2)))
        self.assertLess(float(plain.log_prob[0]), float(align.log_prob[0]))

    @parameterized.named_parameters(("ctc", 0), ("blank_free", None))
    def test_checkpointed_path_is_the_full_path(self, blank_id):
        rng = np.random.default_rng(24)
        shape = (8, 40, 4, 12)
        rows = _wildcard_batch(rng, shape, blank_id)
        batch = _embed(rows, shape)
        kwargs = {"blank_id": blank_id, "star_id": STAR}
        full = _align(*batch, **kwargs)
        # Chunks of 3 frames: the recomputed windows (4 * 3 + 1 states with
        # stars) are narrower than the graph.
        with (
            mock.patch.object(_align_module, "_FULL_TABLE_BYTES", 0),
            mock.patch.object(_align_module, "_chunk_frames", lambda t, w: 3),
        ):
            chunked = jax.jit(lambda *a: seqctc.viterbi_align(*a, **kwargs))(*batch)
        chex.assert_trees_all_equal(chunked, full)

    def test_padding_is_never_read(self):
        rng = np.random.default_rng(25)
        shape = WILD
        rows = _wildcard_batch(rng, shape, 0)
        clean = _align(*_embed(rows, shape), star_id=STAR)
        wide = _align(*_embed(rows, (8, 9, 4, 7)), star_id=STAR)
        np.testing.assert_array_equal(wide.frame_labels[:, :6], clean.frame_labels)
        np.testing.assert_array_equal(wide.states[:, :6], clean.states)
        np.testing.assert_allclose(wide.log_prob, clean.log_prob, rtol=1e-6)

    def test_bad_values_and_gradient(self):
        rng = np.random.default_rng(26)
        logits = rng.normal(size=(3, 6, 4)).astype(np.float32)
        nan_logits = logits[2].copy()
        nan_logits[1, 2] = np.nan
        rows = [(logits[0], [STAR, 1]), (logits[1], [0, STAR]), (nan_logits, [STAR])]
        batch = _embed(rows, WILD)
        align = _align(*batch, star_id=STAR)
        np.testing.assert_array_equal(np.isnan(align.log_prob[:3]), [False, True, True])
        # The gradient of log_prob is the framewise cross-entropy on the
        # classes the path emits (the best class on penalised star frames).
        grad = jax.jit(
            jax.grad(
                lambda u: seqctc.viterbi_align(u, *batch[1:], star_id=STAR).log_prob[0]
            )
        )(jnp.asarray(batch[0]))
        log_probs = _log_softmax(logits[0])
        frame_labels = np.asarray(align.frame_labels[0])
        emitted = np.where(
            frame_labels == STAR,
            np.where(log_probs[:, 0] >= log_probs.max(1) - 1.0, 0, log_probs.argmax(1)),
            frame_labels,
        )
        one_hot = np.eye(4)[emitted]
        np.testing.assert_allclose(grad[0], one_hot - np.exp(log_probs), atol=1e-5)

    def test_star_spans_score_the_best_class(self):
        rng = np.random.default_rng(27)
        shape = WILD
        rows = _wildcard_batch(rng, shape, 0)
        batch = _embed(rows, shape)
        align = _align(*batch, star_id=STAR)
        spans = _spans(align, batch[0], max_tokens=4, star_id=STAR)
        for b, (logits, labels) in enumerate(rows):
            if not np.isfinite(align.log_prob[b]):
                np.testing.assert_array_equal(spans.tokens[b], -1)
                continue
            log_probs = _log_softmax(logits)
            states = np.asarray(align.states[b, : len(logits)])
            for n, label in enumerate(labels):
                frames = np.flatnonzero(states == 2 * n + 1)
                if not len(frames):  # an empty star keeps its slot unused
                    self.assertEqual(label, STAR)
                    self.assertEqual(int(spans.tokens[b, n]), -1)
                    self.assertEqual(float(spans.confidence[b, n]), 0.0)
                    continue
                self.assertEqual(int(spans.tokens[b, n]), label)
                row = log_probs[frames]
                frame_scores = row.max(1) if label == STAR else row[:, label]
                np.testing.assert_allclose(
                    spans.scores[b, n], frame_scores.mean(), rtol=1e-5
                )
                np.testing.assert_allclose(
                    spans.confidence[b, n], np.exp(frame_scores).mean(), rtol=1e-5
                )
                np.testing.assert_allclose(
                    spans.min_confidence[b, n], np.exp(frame_scores).min(), rtol=1e-5
                )

    def test_static_misuse_raises(self):
        logits = np.zeros((1, 4, 3), np.float32)
        args = (logits, np.zeros((1, 4)), np.ones((1, 2), np.int32), np.zeros((1, 2)))
        cases = [
            ({"star_id": 1}, "`star_id`"),
            ({"star_id": 0}, "`star_id`"),
            ({"star_id": True}, "`star_id`"),
            ({"star_id": 2.5}, "`star_id`"),
            ({"star_id": 3, "star_penalty": -1.0}, "`star_penalty`"),
            ({"star_id": 3, "star_penalty": float("inf")}, "`star_penalty`"),
            ({"star_id": 3, "star_penalty": jnp.ones(2)}, "`star_penalty`"),
        ]
        for kwargs, name in cases:
            with self.assertRaisesRegex(ValueError, name):
                seqctc.viterbi_align(*args, **kwargs)

    def test_padding_anywhere_equals_the_valid_positions_alone(self):
        rng = np.random.default_rng(28)
        rows = _wildcard_batch(rng, WILD, 0)
        logits, lp, labels, lap = _embed(rows, WILD)
        batch, num_frames, num_classes, max_labels = WILD
        # The same rows with 3 padded frames and 2 padded labels anywhere.
        holey = [
            np.full((batch, num_frames + 3, num_classes), np.nan, np.float32),
            np.ones((batch, num_frames + 3), np.float32),
            np.full((batch, max_labels + 2), STAR, np.int32),  # never read
            np.ones((batch, max_labels + 2), np.float32),
        ]
        kept_frames = []
        for b in range(batch):
            frames = np.sort(rng.choice(num_frames + 3, num_frames, replace=False))
            slots = np.sort(rng.choice(max_labels + 2, max_labels, replace=False))
            holey[0][b, frames], holey[1][b, frames] = logits[b], lp[b]
            holey[2][b, slots], holey[3][b, slots] = labels[b], lap[b]
            kept_frames.append(frames)
        want = _align(logits, lp, labels, lap, star_id=STAR)
        got = _align(*holey, star_id=STAR)
        np.testing.assert_allclose(got.log_prob, want.log_prob, rtol=1e-6)
        for b, frames in enumerate(kept_frames):
            np.testing.assert_array_equal(
                got.frame_labels[b, frames], want.frame_labels[b]
            )
            np.testing.assert_array_equal(got.states[b, frames], want.states[b])
            padded = np.setdiff1d(np.arange(num_frames + 3), frames[lp[b] == 0])
            np.testing.assert_array_equal(got.frame_labels[b, padded], -1)
