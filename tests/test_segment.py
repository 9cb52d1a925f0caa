"""The lecture's losses against closed forms, numpy loops and brute force."""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from oracles import collapse as _collapse
from oracles import log_softmax as _log_softmax
from oracles import paddings as _paddings

import seqctc

B, T, K, N = 4, 5, 4, 3  # one shape for (almost) everything: each shape recompiles

# Jitted once: eager op-by-op dispatch dominates the test time.
_framewise = jax.jit(seqctc.framewise_loss)
_viterbi_loss = jax.jit(seqctc.viterbi_loss, static_argnames="blank_id")
_optax_ctc = jax.jit(optax.ctc_loss)


def _all_paths(num_frames, labels, blank):
    """Every expanded label sequence (frame labels) of a segmentation graph."""
    if blank is None:
        n = len(labels)
        if n == 0 or num_frames < n:
            return [()] if num_frames == n == 0 else []
        paths = []
        for cuts in itertools.combinations(range(1, num_frames), n - 1):
            bounds = (0, *cuts, num_frames)
            paths.append(
                tuple(
                    labels[k] for k in range(n) for _ in range(bounds[k], bounds[k + 1])
                )
            )
        return paths
    return [
        p
        for p in itertools.product(range(K), repeat=num_frames)
        if _collapse(p, blank) == tuple(labels)
    ]


def _random_batch(rng, labels_from=1):
    logits = rng.normal(size=(B, T, K)).astype(np.float32) * 2
    frame_lengths = np.array([T, 4, 2, 0])
    label_lengths = np.array([N, 2, 2, 0])
    labels = rng.integers(labels_from, K, size=(B, N)).astype(np.int32)
    return logits, _paddings(frame_lengths, T), labels, _paddings(label_lengths, N)


# ---------------------------------------------------------------------------
# Setting I.


class FramewiseTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_and_gradient_match_numpy(self):
        rng = np.random.default_rng(0)
        logits, paddings, _, _ = _random_batch(rng)
        frame_labels = rng.integers(-1, K, size=(B, T)).astype(np.int32)
        garbage = np.where(paddings[:, :, None] > 0, np.nan, logits)
        loss_fn = self.variant(seqctc.framewise_loss)
        loss = loss_fn(garbage, frame_labels, paddings)
        log_probs = _log_softmax(logits)
        labelled = (paddings == 0) & (frame_labels >= 0)
        picked = np.take_along_axis(
            log_probs, np.maximum(frame_labels, 0)[:, :, None], 2
        )[:, :, 0]
        np.testing.assert_allclose(
            loss, -np.sum(np.where(labelled, picked, 0), 1), rtol=1e-5
        )
        grad = jax.grad(lambda x: jnp.sum(loss_fn(x, frame_labels, paddings)))(
            jnp.asarray(garbage)
        )
        one_hot = np.eye(K)[np.maximum(frame_labels, 0)]
        expected = np.where(labelled[:, :, None], np.exp(log_probs) - one_hot, 0)
        np.testing.assert_allclose(grad, expected, atol=1e-6)

    def test_closed_forms(self):
        paddings = _paddings([5, 3], T)
        labels = np.array([[0, 1, -1, 2, 3], [3, -1, 2, 0, 0]], np.int32)
        uniform = seqctc.framewise_loss(
            np.zeros((2, T, K), np.float32), labels, paddings
        )
        np.testing.assert_allclose(uniform, [4 * np.log(K), 2 * np.log(K)], rtol=1e-6)
        peaked = 50.0 * np.eye(K, dtype=np.float32)[np.maximum(labels, 0)]
        np.testing.assert_allclose(
            seqctc.framewise_loss(peaked, labels, paddings), [0, 0], atol=1e-6
        )
        # Frame labels outside [-1, K) poison their own row only.
        bad = labels.copy()
        bad[1, 0] = K
        loss = seqctc.framewise_loss(np.zeros((2, T, K), np.float32), bad, paddings)
        np.testing.assert_array_equal(np.isnan(loss), [False, True])

    def test_predict_is_argmax(self):
        rng = np.random.default_rng(1)
        logits, paddings, _, _ = _random_batch(rng)
        got = seqctc.framewise_predict(logits, paddings)
        expected = np.where(paddings == 0, np.argmax(logits, -1), -1)
        np.testing.assert_array_equal(got, expected)
        tie = seqctc.framewise_predict(
            np.zeros((1, 1, K), np.float32), np.zeros((1, 1))
        )
        np.testing.assert_array_equal(tie, [[0]])

    def test_static_misuse_raises(self):
        logits = np.zeros((2, 3, 4), np.float32)
        with self.assertRaisesRegex(ValueError, "`frame_labels`"):
            seqctc.framewise_loss(logits, np.zeros((2, 4), np.int32), np.zeros((2, 3)))
        with self.assertRaisesRegex(ValueError, "`frame_labels`"):
            seqctc.framewise_loss(logits, np.zeros((2, 3)), np.zeros((2, 3)))
        with self.assertRaisesRegex(ValueError, "`paddings`"):
            seqctc.framewise_predict(logits, np.zeros((3, 3)))


# ---------------------------------------------------------------------------
# Setting II.


class SequenceLossTest(chex.TestCase):
    def test_weight_schedules_follow_row_lengths(self):
        lengths = [5, 3, 1, 0]
        paddings = _paddings(lengths, T)
        for schedule in ("last", "uniform", "linear"):
            got = np.asarray(seqctc.sequence_weights(paddings, schedule=schedule))
            expected = np.zeros((4, T))
            for b, t_b in enumerate(lengths):
                for t in range(t_b):
                    expected[b, t] = {
                        "last": float(t == t_b - 1),
                        "uniform": 1.0,
                        "linear": (t + 1) / t_b,
                    }[schedule]
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=schedule)
        with self.assertRaisesRegex(ValueError, "`schedule`"):
            seqctc.sequence_weights(paddings, schedule="cosine")

    @chex.variants(with_jit=True, without_jit=True)
    def test_weighted_loss_matches_numpy(self):
        rng = np.random.default_rng(2)
        logits, paddings, _, _ = _random_batch(rng)
        label = rng.integers(0, K, size=B).astype(np.int32)
        weights = rng.uniform(size=(B, T)).astype(np.float32)
        garbage = np.where(paddings[:, :, None] > 0, np.nan, logits)
        garbage_weights = np.where(paddings > 0, np.nan, weights).astype(np.float32)
        loss_fn = self.variant(seqctc.weighted_sequence_loss)
        log_probs = _log_softmax(logits)
        nll = -log_probs[np.arange(B)[:, None], np.arange(T)[None, :], label[:, None]]
        valid = paddings == 0
        np.testing.assert_allclose(
            loss_fn(garbage, paddings, label, garbage_weights),
            np.sum(np.where(valid, weights * nll, 0), 1),
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            loss_fn(garbage, paddings, label, None),
            np.sum(np.where(valid, nll, 0), 1),
            rtol=1e-5,
        )
        grad = jax.grad(
            lambda x: jnp.sum(loss_fn(x, paddings, label, garbage_weights))
        )(jnp.asarray(garbage))
        one_hot = np.eye(K)[label][:, None, :]
        expected = np.where(
            valid[:, :, None], weights[:, :, None] * (np.exp(log_probs) - one_hot), 0
        )
        np.testing.assert_allclose(grad, expected, atol=1e-6)

    def test_closed_forms_and_schedules(self):
        paddings = _paddings([5, 3, 1, 0], T)
        label = np.array([0, 1, 2, 3], np.int32)
        flat = np.zeros((4, T, K), np.float32)
        np.testing.assert_allclose(
            seqctc.weighted_sequence_loss(flat, paddings, label),
            np.array([5, 3, 1, 0]) * np.log(K),
            rtol=1e-6,
        )
        # The naive loss reads the last valid output only.
        rng = np.random.default_rng(3)
        logits = rng.normal(size=(4, T, K)).astype(np.float32)
        last = seqctc.sequence_weights(paddings, schedule="last")
        got = seqctc.weighted_sequence_loss(logits, paddings, label, last)
        log_probs = _log_softmax(logits)
        expected = [-log_probs[b, t_b - 1, label[b]] for b, t_b in enumerate([5, 3, 1])]
        np.testing.assert_allclose(got, [*expected, 0.0], rtol=1e-5)
        bad = seqctc.weighted_sequence_loss(
            flat, paddings, np.array([0, K, -1, 1], np.int32)
        )
        np.testing.assert_array_equal(np.isnan(bad), [False, True, True, False])

    @chex.variants(with_jit=True, without_jit=True)
    def test_vote_matches_numpy_count(self):
        rng = np.random.default_rng(4)
        logits, paddings, _, _ = _random_batch(rng)
        weights = rng.uniform(size=(B, T)).astype(np.float32)
        vote = self.variant(seqctc.weighted_vote)
        for w in (None, weights):
            got = np.asarray(vote(logits, paddings, w))
            for b in range(B):
                t_b = int(np.sum(paddings[b] == 0))
                if t_b == 0:
                    self.assertEqual(got[b], -1)
                    continue
                counts = np.bincount(
                    np.argmax(logits[b, :t_b], -1),
                    weights=None if w is None else w[b, :t_b],
                    minlength=K,
                )
                self.assertEqual(got[b], int(np.argmax(counts)))

    def test_vote_ties_go_to_the_lowest_class(self):
        logits = np.log(
            np.array([[[0.1, 0.2, 0.7], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]]])
        ).astype(np.float32)
        self.assertEqual(int(seqctc.weighted_vote(logits, np.zeros((1, 3)))[0]), 0)
        weights = np.array([[2.0, 1.0, 1.0]], np.float32)
        self.assertEqual(
            int(seqctc.weighted_vote(logits, np.zeros((1, 3)), weights)[0]), 2
        )


# ---------------------------------------------------------------------------
# Setting III.


class GenieSegmentsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_expands_segments_like_the_lecture(self):
        rng = np.random.default_rng(5)
        logits = rng.normal(size=(2, T, K)).astype(np.float32)
        labels = np.array([[1, 2, 1], [3, 3, 0]], np.int32)
        label_paddings = _paddings([3, 2], N)
        ends = np.array([[1, 2, 4], [0, 3, 99]], np.int32)  # i_k - 1, 0-based
        logit_paddings = _paddings([5, 4], T)
        frame_labels = self.variant(seqctc.segments_to_frame_labels)(
            labels, label_paddings, ends, logit_paddings
        )
        np.testing.assert_array_equal(frame_labels, [[1, 1, 2, 1, 1], [3, 3, 3, 3, -1]])
        # The genie loss: sum over segments k of the frames (i_{k-1}, i_k].
        log_probs = _log_softmax(logits)
        genie = []
        for b, n_b in enumerate([3, 2]):
            bounds = [-1, *ends[b, :n_b]]
            genie.append(
                -sum(
                    log_probs[b, t, labels[b, k]]
                    for k in range(n_b)
                    for t in range(bounds[k] + 1, bounds[k + 1] + 1)
                )
            )
        np.testing.assert_allclose(
            seqctc.framewise_loss(logits, frame_labels, logit_paddings),
            genie,
            rtol=1e-5,
        )

    def test_invalid_segmentation(self):
        labels = np.array([[1, 2, 1]], np.int32)
        label_paddings = np.zeros((1, 3), np.float32)
        logit_paddings = np.zeros((1, T), np.float32)
        for ends in ([1, 1, 4], [1, 2, 3], [-1, 2, 4], [2, 1, 4]):
            ends = np.array([ends], np.int32)
            with self.assertRaisesRegex(ValueError, "`ends` row 0"):
                seqctc.segments_to_frame_labels(
                    labels, label_paddings, ends, logit_paddings
                )
            jitted = jax.jit(seqctc.segments_to_frame_labels)(
                labels, label_paddings, ends, logit_paddings
            )
            np.testing.assert_array_equal(jitted, -2)
            loss = _framewise(np.zeros((1, T, K), np.float32), jitted, logit_paddings)
            self.assertTrue(np.isnan(loss[0]))
        with self.assertRaisesRegex(ValueError, "`ends`"):
            seqctc.segments_to_frame_labels(
                labels, label_paddings, np.zeros((1, 2), np.int32), logit_paddings
            )


class ViterbiLossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("ctc", 0), ("blank_free", None))
    def test_matches_brute_force_and_its_gradient(self, blank_id):
        rng = np.random.default_rng(6)
        logits, logit_paddings, labels, label_paddings = _random_batch(
            rng, labels_from=1 if blank_id == 0 else 0
        )
        logits = 3 * logits  # no ties: the best path is unique
        loss_fn = self.variant(
            lambda x: seqctc.viterbi_loss(
                x, logit_paddings, labels, label_paddings, blank_id=blank_id
            )
        )
        garbage = np.where(logit_paddings[:, :, None] > 0, np.nan, logits)
        loss = loss_fn(garbage)
        grad = jax.grad(lambda x: jnp.sum(jnp.where(jnp.isinf(loss), 0, loss_fn(x))))(
            jnp.asarray(garbage)
        )
        chex.assert_tree_all_finite(grad)
        log_probs = _log_softmax(logits)
        for b in range(B):
            t_b = int(np.sum(logit_paddings[b] == 0))
            row_labels = [
                int(x) for x in labels[b, : int(np.sum(label_paddings[b] == 0))]
            ]
            paths = _all_paths(t_b, row_labels, blank_id)
            costs = [-sum(log_probs[b, t, c] for t, c in enumerate(p)) for p in paths]
            if not paths:
                self.assertEqual(float(loss[b]), np.inf)
                np.testing.assert_array_equal(grad[b], 0)
                continue
            best = paths[int(np.argmin(costs))]
            np.testing.assert_allclose(loss[b], min(costs), rtol=1e-5)
            # Gradient = framewise cross-entropy gradient on the best path.
            expected = np.zeros((T, K))
            for t, c in enumerate(best):
                expected[t] = np.exp(log_probs[b, t]) - np.eye(K)[c]
            np.testing.assert_allclose(grad[b], expected, atol=1e-5)

    def test_never_below_ctc_loss(self):
        rng = np.random.default_rng(7)
        logits = rng.normal(size=(B, T, K)).astype(np.float32)
        logit_paddings = _paddings([5, 5, 4, 3], T)
        labels = rng.integers(1, K, size=(B, N)).astype(np.int32)
        labels[:, 1] = (labels[:, 0] % (K - 1)) + 1  # no repeat in the first two
        label_paddings = _paddings([2, 1, 2, 0], N)
        viterbi = np.asarray(
            _viterbi_loss(logits, logit_paddings, labels, label_paddings)
        )
        ctc = np.asarray(_optax_ctc(logits, logit_paddings, labels, label_paddings))
        self.assertTrue(np.all(np.isfinite(viterbi)))
        # Strictly above where several paths share the mass; equal where the
        # only path is all blanks (no labels).
        self.assertTrue(np.all(viterbi[:3] > ctc[:3] + 1e-3))
        np.testing.assert_allclose(viterbi[3], ctc[3], rtol=1e-5)

    def test_infeasible_and_bad_rows(self):
        logits = np.zeros((B, T, K), np.float32)
        logits[3, 0, 0] = np.nan
        logit_paddings = _paddings([2, 5, 5, 5], T)
        labels = np.array([[1, 1, 2], [1, 2, 0], [1, 9, 2], [1, 2, 3]], np.int32)
        label_paddings = _paddings([2, 2, 3, 3], N)

        def total(x):
            loss = seqctc.viterbi_loss(x, logit_paddings, labels, label_paddings)
            return jnp.sum(jnp.where(jnp.isfinite(loss), loss, 0)), loss

        grad, loss = jax.jit(jax.grad(total, has_aux=True))(jnp.asarray(logits))
        self.assertEqual(float(loss[0]), np.inf)  # [1, 1] needs 3 frames
        self.assertTrue(np.isfinite(loss[1]))
        self.assertTrue(np.isnan(loss[2]))  # label out of range
        self.assertTrue(np.isnan(loss[3]))  # NaN logits
        np.testing.assert_array_equal(grad[0], 0)
        chex.assert_tree_all_finite(grad[:3])


# ---------------------------------------------------------------------------
# Counting segmentations.


class CountTest(parameterized.TestCase):
    def test_counts_equal_enumeration(self):
        label_sets = [[], [1], [1, 2], [1, 1], [1, 2, 1], [1, 1, 2], [2, 2, 2]]
        for num_frames in range(0, 7):
            for labels in label_sets:
                repeats = sum(a == b for a, b in itertools.pairwise(labels))
                for blank_id in (None, 0):
                    expected = len(_all_paths(num_frames, labels, blank_id))
                    got = seqctc.count_segmentations(
                        num_frames, len(labels), num_repeats=repeats, blank_id=blank_id
                    )
                    self.assertEqual(got, expected, (num_frames, labels, blank_id))

    def test_lecture_example(self):
        # Labels 121 over 5 frames: far fewer than the 3**5 label choices.
        self.assertEqual(seqctc.count_segmentations(5, 3), 6)
        self.assertLess(seqctc.count_segmentations(5, 3), 3**5)

    def test_log_count_matches_exact(self):
        cases = [
            (1000, 100, 0, None),
            (1000, 100, 0, 0),
            (500, 120, 30, 0),
            (7, 3, 1, 0),
        ]
        for t, n, r, blank_id in cases:
            exact = seqctc.count_segmentations(t, n, num_repeats=r, blank_id=blank_id)
            got = seqctc.log_count_segmentations(t, n, num_repeats=r, blank_id=blank_id)
            np.testing.assert_allclose(float(got), math.log(exact), rtol=1e-5)
        batched = seqctc.log_count_segmentations(
            np.array([0, 2, 5, 3]), np.array([0, 3, 3, 0]), blank_id=None
        )
        np.testing.assert_allclose(
            batched, [0.0, -np.inf, math.log(6), -np.inf], rtol=1e-6
        )

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "`num_frames`"):
            seqctc.count_segmentations(-1, 2)
        with self.assertRaisesRegex(ValueError, "`num_labels`"):
            seqctc.count_segmentations(5, 2.0)
        with self.assertRaisesRegex(ValueError, "`num_repeats`"):
            seqctc.count_segmentations(5, 2, num_repeats=2, blank_id=0)
