"""Greedy and beam decoding against independent oracles.

Oracles: a plain numpy argmax-collapse loop (greedy), exhaustive enumeration of
all K^T paths (beam top-k, scores, starts), a textbook dict-based prefix beam
search written here in Python (beam), optax.ctc_loss (scores); padding
invariance with NaN garbage, jit/vmap, static misuse.
"""

import functools
import importlib.util
import itertools
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import oracles
import pytest
from absl.testing import parameterized
from oracles import collapse as _collapse
from oracles import log_softmax as _log_softmax
from oracles import paddings as _paddings
from oracles import prefix_beam_search as _prefix_beam_search

import seqctc

_DATA = pathlib.Path(__file__).parent / "data" / "ctcdecoder-samples"

# One jitted decoder shared by the tests: equal shapes and static arguments reuse
# one compilation (each compilation of the search costs seconds).
_beam = oracles.on_host(
    jax.jit(
        seqctc.beam_decode,
        static_argnames=("beam_width", "top_k", "blank_id", "prune_top_k"),
    )
)


# --------------------------------------------------------------------------
# Oracles.


def _greedy_reference(logits, lengths, blank):
    """Argmax per frame, collapse repeats, drop blanks: a plain loop."""
    out = []
    for b in range(logits.shape[0]):
        lp = _log_softmax(logits[b, : lengths[b]])
        tokens, starts, score, prev = [], [], 0.0, -1
        for t in range(lengths[b]):
            k = int(np.argmax(lp[t]))  # first maximum = lowest class
            score += lp[t, k]
            if k != blank and k != prev:
                tokens.append(k)
                starts.append(t)
            prev = k
        out.append((tokens, starts, score))
    return out


def _assert_greedy_equals_reference(out, logits, lengths, blank):
    """``greedy_decode``'s output against :func:`_greedy_reference`, row by row."""
    for b, (tokens, starts, score) in enumerate(
        _greedy_reference(logits, lengths, blank)
    ):
        n = len(tokens)
        assert int(out.lengths[b]) == n
        np.testing.assert_array_equal(out.tokens[b, :n], tokens)
        np.testing.assert_array_equal(out.tokens[b, n:], -1)
        np.testing.assert_array_equal(out.starts[b, :n], starts)
        np.testing.assert_array_equal(out.starts[b, n:], -1)
        np.testing.assert_allclose(out.scores[b], score, rtol=1e-5, atol=1e-5)


def _exhaustive(log_probs, blank):
    """{labels: (log p(labels), best path log p, starts of the best path)}."""
    num_frames, num_classes = log_probs.shape
    table = {}
    for path in itertools.product(range(num_classes), repeat=num_frames):
        lp = float(sum(log_probs[t, k] for t, k in enumerate(path)))
        labels = _collapse(path, blank)
        starts = [
            t for t, k in enumerate(path) if k != blank and (t == 0 or path[t - 1] != k)
        ]
        total, best, best_starts = table.get(labels, (-np.inf, -np.inf, None))
        if lp > best:
            best, best_starts = lp, starts
        table[labels] = (np.logaddexp(total, lp), best, best_starts)
    return table


def _hypotheses(out, b):
    """List of (tokens tuple, score, starts tuple) of row b of a beam result."""
    hyps = []
    for i in range(out.tokens.shape[1]):
        n = int(out.lengths[b, i])
        hyps.append(
            (
                tuple(int(x) for x in out.tokens[b, i, :n]),
                float(out.scores[b, i]),
                tuple(int(x) for x in out.starts[b, i, :n]),
            )
        )
    return hyps


def _handwriting(name):
    raw = np.loadtxt(
        _DATA / f"harald_{name}_rnnOutput.csv", delimiter=";", usecols=range(80)
    )
    return raw.astype(np.float32)  # [T, 80], blank = 79


def _peaked_logits(rng, batch, frames, classes, blank):
    """Logits whose argmax class has probability > 0.99 at every frame."""
    best = rng.integers(0, classes, size=(batch, frames))
    best = np.where(rng.random((batch, frames)) < 0.4, blank, best)
    logits = rng.normal(size=(batch, frames, classes))
    logits += 12.0 * np.eye(classes)[best]
    return logits.astype(np.float32)


# --------------------------------------------------------------------------
# Greedy.


class GreedyTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("blank0", 0), ("blank_last", 4))
    def test_matches_numpy_loop(self, blank):
        rng = np.random.default_rng(0)
        batch, frames, classes = 4, 9, 5
        # Small integer logits create ties, which go to the lowest class.
        logits = rng.integers(0, 3, size=(batch, frames, classes)).astype(np.float32)
        lengths = np.array([9, 5, 1, 0])
        out = self.variant(functools.partial(seqctc.greedy_decode, blank_id=blank))(
            logits, _paddings(lengths, frames)
        )
        chex.assert_shape(out.tokens, (batch, frames))
        _assert_greedy_equals_reference(out, logits, lengths, blank)

    def test_large_vocabulary_best_class_and_ties(self):
        # K > 1024 takes the lane path (maxima of 256-class slices); exact ties
        # in other lanes or slices still go to the lowest class.
        rng = np.random.default_rng(2)
        batch, frames, classes = 2, 6, 1500
        logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
        for b, t, tied in [
            (0, 0, (300, 40)),
            (0, 1, (260, 1029)),
            (0, 2, (5, 261)),
            (1, 0, (1499, 1243)),
            (1, 1, (7, 1031, 263)),
        ]:
            logits[b, t, list(tied)] = 9.0
        logits[1, 2] = -np.inf
        logits[1, 2, 1400] = 0.0
        lengths = np.array([6, 4])
        out = seqctc.greedy_decode(logits, _paddings(lengths, frames))
        _assert_greedy_equals_reference(out, logits, lengths, 0)

    def test_padding_is_never_read(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(2, 6, 4)).astype(np.float32)
        paddings = _paddings([6, 3], 6)
        garbage = logits.copy()
        garbage[1, 3:] = np.nan
        a = seqctc.greedy_decode(logits[:, :], paddings)
        b = seqctc.greedy_decode(garbage, paddings)
        chex.assert_trees_all_equal(a, b)

    def test_static_misuse(self):
        logits = np.zeros((2, 3, 4), np.float32)
        with pytest.raises(ValueError, match="blank_id"):
            seqctc.greedy_decode(logits, np.zeros((2, 3)), blank_id=4)
        with pytest.raises(ValueError, match="blank_id"):
            seqctc.greedy_decode(logits, np.zeros((2, 3)), blank_id=-1)
        with pytest.raises(ValueError, match="logits"):
            seqctc.greedy_decode(logits[0], np.zeros((2, 3)))
        with pytest.raises(ValueError, match="logit_paddings"):
            seqctc.greedy_decode(logits, np.zeros((3, 3)))


# --------------------------------------------------------------------------
# Beam search.


class BeamExhaustiveTest(chex.TestCase):
    """A beam wide enough to hold every prefix equals exhaustive search."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_top_k_equals_enumeration(self):
        rng = np.random.default_rng(2)
        batch, frames, classes, top_k, blank = 3, 6, 3, 6, 2
        logits = (2.0 * rng.normal(size=(batch, frames, classes))).astype(np.float32)
        lengths = np.array([6, 4, 1])
        decode = functools.partial(
            seqctc.beam_decode, beam_width=128, top_k=top_k, blank_id=blank
        )
        out = self.variant(decode)(logits, _paddings(lengths, frames))
        chex.assert_shape(out.tokens, (batch, top_k, frames))
        chex.assert_shape(out.scores, (batch, top_k))
        for b in range(batch):
            table = _exhaustive(_log_softmax(logits[b, : lengths[b]]), blank)
            ranked = sorted(table.items(), key=lambda kv: -kv[1][0])
            hyps = _hypotheses(out, b)
            for i in range(top_k):
                if i >= len(ranked):  # fewer labelings than top_k
                    self.assertEqual(hyps[i][:2], ((), -np.inf))
                    continue
                labels, (total, _, best_starts) = ranked[i]
                self.assertEqual(hyps[i][0], labels)
                np.testing.assert_allclose(hyps[i][1], total, rtol=1e-5, atol=1e-5)
                # starts follow the most probable path of the prefix.
                self.assertEqual(hyps[i][2], tuple(best_starts))
        # Top-1 scores are -ctc_loss of the returned tokens (optax).
        labels = np.maximum(out.tokens[:, 0], 0)
        label_paddings = (out.tokens[:, 0] < 0).astype(np.float32)
        loss = optax.ctc_loss(
            logits, _paddings(lengths, frames), labels, label_paddings, blank_id=blank
        )
        np.testing.assert_allclose(out.scores[:, 0], -loss, rtol=1e-5, atol=1e-5)


class BeamTextbookTest(chex.TestCase):
    """Same pruning as a textbook dict-based prefix beam search."""

    def _check(self, log_probs, out, b, beam_width, blank, top_k):
        ref = _prefix_beam_search(log_probs, blank, beam_width)[0][:top_k]
        hyps = _hypotheses(out, b)
        self.assertEqual(hyps[0][0], ref[0][0])
        for (labels, score), hyp in zip(ref, hyps, strict=False):
            self.assertEqual(hyp[0], labels)
            np.testing.assert_allclose(hyp[1], score, rtol=1e-5, atol=1e-4)
            starts = np.asarray(hyp[2])
            # Starts increase and lie on frames that favour the token at all.
            self.assertTrue(np.all(np.diff(starts) > 0))
            self.assertTrue(np.all((starts >= 0) & (starts < len(log_probs))))

    def test_handwriting_word(self):
        logits = _handwriting("word")[None]  # [1, 32, 80]
        out = _beam(
            logits, np.zeros((1, 32), np.float32), beam_width=8, top_k=8, blank_id=79
        )
        self._check(_log_softmax(logits[0]), out, 0, 8, 79, 8)

    def test_random_inputs(self):
        rng = np.random.default_rng(4)
        batch, frames, classes, width = 3, 15, 20, 4  # 2W < K - 1: pre-pruning
        logits = (2.0 * rng.normal(size=(batch, frames, classes))).astype(np.float32)
        lengths = np.array([15, 11, 2])
        out = _beam(logits, _paddings(lengths, frames), beam_width=width, top_k=width)
        for b in range(batch):
            lp = _log_softmax(logits[b, : lengths[b]])
            self._check(lp, out, b, width, 0, width)

    @parameterized.named_parameters(
        # Lengths that vary: utterances share lanes (one long, many short, an
        # empty one); alike: one utterance a lane.
        ("packed", [30, 3, 7, 1, 0, 12, 5, 2, 9, 4, 6]),
        ("alike", [9, 9, 9, 8, 9, 9, 9, 9, 9]),
    )
    def test_batches_of_many_utterances(self, lengths):
        rng = np.random.default_rng(12)
        batch, frames, classes, width = len(lengths), max(lengths), 6, 4
        logits = (2.0 * rng.normal(size=(batch, frames, classes))).astype(np.float32)
        paddings = _paddings(lengths, frames)
        paddings[5, 4:7] = 1.0  # a hole inside an utterance
        out = _beam(logits, paddings, beam_width=width, top_k=3)
        for b in range(batch):
            valid = paddings[b] == 0
            lp = _log_softmax(logits[b, valid])
            if not len(lp):
                self.assertEqual(int(out.lengths[b, 0]), 0)
                self.assertEqual(float(out.scores[b, 0]), 0.0)
                continue
            ref = _prefix_beam_search(lp, 0, width)[0][:3]
            hyps = _hypotheses(out, b)
            for (labels, score), hyp in zip(ref, hyps, strict=False):
                self.assertEqual(hyp[0], labels)
                np.testing.assert_allclose(hyp[1], score, rtol=1e-5, atol=1e-4)
                # Starts index the input's frames: valid ones, increasing.
                starts = np.asarray(hyp[2], int)
                self.assertTrue(np.all(valid[starts]) and np.all(np.diff(starts) > 0))

    def test_large_vocabulary_tiers(self):
        # K > 1,024, W = 16: frames rank 6 classes per prefix, then the 24 best
        # of the row (a two-level selection, bound checked), then 2W = 32.
        rng = np.random.default_rng(13)
        batch, frames, classes, width = 2, 6, 1100, 16
        logits = (1.5 * rng.normal(size=(batch, frames, classes))).astype(np.float32)
        logits[:, :, 0] += 3.0  # some frames mostly blank, some flat
        lengths = np.array([6, 4])
        out = _beam(logits, _paddings(lengths, frames), beam_width=width, top_k=4)
        for b in range(batch):
            lp = _log_softmax(logits[b, : lengths[b]])
            self._check(lp, out, b, width, 0, 4)

    @parameterized.named_parameters(("flat", 0.5), ("peaked", 6.0))
    def test_first_classes_then_all(self, scale):
        # W = 16 and K = 40: frames rank the 8 best classes of each prefix first
        # and all of them when the bound fails (flat frames, the first frame).
        rng = np.random.default_rng(8)
        batch, frames, classes, width = 3, 24, 40, 16
        logits = (scale * rng.normal(size=(batch, frames, classes))).astype(np.float32)
        lengths = np.array([24, 17, 6])
        out = _beam(logits, _paddings(lengths, frames), beam_width=width, top_k=4)
        for b in range(batch):
            lp = _log_softmax(logits[b, : lengths[b]])
            self._check(lp, out, b, width, 0, 4)


class BeamGreedyTest(chex.TestCase):
    @parameterized.named_parameters(("width1", 1), ("width8", 8))
    def test_peaked_inputs_equal_greedy(self, width):
        rng = np.random.default_rng(5)
        logits = _peaked_logits(rng, 4, 20, 6, blank=0)
        paddings = _paddings([20, 17, 5, 1], 20)
        greedy = seqctc.greedy_decode(logits, paddings)
        beam = _beam(logits, paddings, beam_width=width)
        np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
        np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)
        np.testing.assert_array_equal(beam.starts[:, 0], greedy.starts)
        # The prefix holds the best path and a little more.
        self.assertTrue(np.all(beam.scores[:, 0] >= greedy.scores - 1e-5))


class BeamPropertiesTest(chex.TestCase):
    def test_padding_is_never_read(self):
        rng = np.random.default_rng(6)
        logits = rng.normal(size=(3, 10, 5)).astype(np.float32)
        paddings = _paddings([10, 6, 0], 10)
        garbage = logits.copy()
        garbage[1, 6:] = np.nan
        garbage[2] = np.inf
        decode = functools.partial(_beam, beam_width=4, top_k=3)
        a = decode(logits, paddings)
        b = decode(garbage, paddings)
        chex.assert_trees_all_equal(a, b)
        # Extra padded frames change nothing either.
        longer = np.concatenate([garbage, np.full((3, 4, 5), np.nan, np.float32)], 1)
        c = decode(longer, _paddings([10, 6, 0], 14))
        chex.assert_trees_all_equal(a.scores, c.scores)
        np.testing.assert_array_equal(c.tokens[:, :, :10], a.tokens)
        np.testing.assert_array_equal(c.tokens[:, :, 10:], -1)
        # The empty row decodes to the empty prefix with log probability 0.
        self.assertEqual(int(a.lengths[2, 0]), 0)
        self.assertEqual(float(a.scores[2, 0]), 0.0)

    def test_vmap_equals_rows(self):
        rng = np.random.default_rng(7)
        # Rows have the shapes of test_padding_is_never_read: one compilation.
        logits = rng.normal(size=(2, 3, 10, 5)).astype(np.float32)
        paddings = np.stack([_paddings([10, 5, 2], 10)] * 2)
        decode = functools.partial(_beam, beam_width=4, top_k=3)
        batched = jax.jit(
            jax.vmap(functools.partial(seqctc.beam_decode, beam_width=4, top_k=3))
        )(logits, paddings)
        for i in range(2):
            chex.assert_trees_all_close(
                jax.tree.map(lambda x, i=i: x[i], batched),
                decode(logits[i], paddings[i]),
            )

    def test_vmap_of_packed_batches_equals_rows(self):
        # Batches of 9 whose lengths vary (packed lanes) and are alike (one
        # utterance a lane): under vmap the choice is per row.
        rng = np.random.default_rng(14)
        lengths = np.array([[30, 3, 7, 1, 0, 12, 5, 2, 9], [9, 9, 9, 8, 9, 9, 9, 9, 9]])
        logits = (2.0 * rng.normal(size=(2, 9, 30, 6))).astype(np.float32)
        paddings = np.stack([_paddings(n, 30) for n in lengths])
        decode = functools.partial(seqctc.beam_decode, beam_width=4, top_k=3)
        batched = jax.jit(jax.vmap(decode))(logits, paddings)
        for i in range(2):
            chex.assert_trees_all_close(
                jax.tree.map(lambda x, i=i: x[i], batched),
                _beam(logits[i], paddings[i], beam_width=4, top_k=3),
            )

    def test_fewer_hypotheses_than_top_k(self):
        # One frame, two classes: only "" and "1" exist.
        logits = np.log(np.array([[[0.3, 0.7]]], np.float32))
        out = _beam(logits, np.zeros((1, 1)), beam_width=4, top_k=4)
        np.testing.assert_array_equal(out.lengths[0], [1, 0, 0, 0])
        np.testing.assert_array_equal(out.tokens[0, :, 0], [1, -1, -1, -1])
        np.testing.assert_array_equal(out.starts[0, :, 0], [0, -1, -1, -1])
        np.testing.assert_allclose(out.scores[0, :2], np.log([0.7, 0.3]), rtol=1e-6)
        np.testing.assert_array_equal(out.scores[0, 2:], -np.inf)

    def test_pruning_options(self):
        rng = np.random.default_rng(8)
        # Shapes and beam of test_padding_is_never_read, to share compilations.
        logits = (2.0 * rng.normal(size=(3, 10, 5))).astype(np.float32)
        paddings = _paddings([10, 8, 3], 10)
        decode = functools.partial(_beam, beam_width=4, top_k=3)
        # Expanding only the top class per frame: every emitted token is the
        # argmax of its start frame among non-blank classes.
        pruned = decode(logits, paddings, prune_top_k=1)
        for b in range(3):
            for i in range(3):
                n = int(pruned.lengths[b, i])
                tok, st = pruned.tokens[b, i, :n], pruned.starts[b, i, :n]
                top = np.argmax(logits[b, :, 1:], axis=-1) + 1
                np.testing.assert_array_equal(tok, top[st])
        # A threshold above every log probability leaves only the empty prefix;
        # one below all of them prunes nothing.
        exact = decode(logits, paddings)
        low = decode(logits, paddings, prune_threshold=-1e9)
        chex.assert_trees_all_close(exact, low)
        empty = decode(logits, paddings, prune_threshold=1.0)
        np.testing.assert_array_equal(empty.lengths, 0)
        np.testing.assert_array_equal(empty.scores[:, 1:], -np.inf)

    def test_half_precision_and_log_prob_inputs(self):
        rng = np.random.default_rng(9)
        logits = rng.normal(size=(3, 10, 5)).astype(np.float32)
        paddings = _paddings([10, 4, 7], 10)
        decode = functools.partial(_beam, beam_width=4, top_k=3)
        ref = decode(logits, paddings)
        logp = decode(jax.nn.log_softmax(logits), paddings)
        chex.assert_trees_all_close(ref, logp, rtol=1e-5, atol=1e-5)
        half = decode(jnp.asarray(logits, jnp.bfloat16), paddings)
        self.assertEqual(half.scores.dtype, jnp.float32)
        # -inf logits (log 0) are valid input: that class is never emitted.
        logits[:, :, 1] = -np.inf
        masked = decode(logits, paddings)
        self.assertTrue(np.all(np.isfinite(masked.scores[:, 0])))
        self.assertFalse(np.any(masked.tokens == 1))

    def test_static_misuse(self):
        logits = np.zeros((2, 3, 4), np.float32)
        paddings = np.zeros((2, 3), np.float32)
        with pytest.raises(ValueError, match="top_k"):
            seqctc.beam_decode(logits, paddings, beam_width=2, top_k=3)
        with pytest.raises(ValueError, match="beam_width"):
            seqctc.beam_decode(logits, paddings, beam_width=0)
        with pytest.raises(ValueError, match="prune_top_k"):
            seqctc.beam_decode(logits, paddings, prune_top_k=0)
        with pytest.raises(ValueError, match="blank_id"):
            seqctc.beam_decode(logits, paddings, blank_id=4)
        with pytest.raises(ValueError, match="logit_paddings"):
            seqctc.beam_decode(logits, paddings[:1])
        with pytest.raises(ValueError, match="hotwords"):
            seqctc.beam_decode(logits, paddings, hotwords=[[1, 0]])


# --------------------------------------------------------------------------
# Padding anywhere, degenerate sizes, vocabulary mismatches (issue 19).


def _compacted(logits, paddings):
    """Each row's valid frames moved to the front (right padded), and the map
    from compacted frame index to original frame index."""
    batch, frames, _ = logits.shape
    out = np.zeros_like(logits)
    index = np.full((batch, frames), -1)
    lengths = []
    for b in range(batch):
        keep = np.flatnonzero(paddings[b] == 0)
        out[b, : len(keep)] = logits[b, keep]
        index[b, : len(keep)] = keep
        lengths.append(len(keep))
    return out, _paddings(lengths, frames), index


class PaddingAnywhereTest(chex.TestCase):
    def _holes(self, rng, batch, frames, classes):
        logits = (2.0 * rng.normal(size=(batch, frames, classes))).astype(np.float32)
        paddings = np.zeros((batch, frames), np.float32)
        paddings[0, :3] = 1.0  # left padded
        paddings[1, 4:7] = 1.0  # a hole
        paddings[2, ::2] = 1.0  # every other frame
        paddings[3] = 1.0  # fully padded
        garbage = logits.copy()
        garbage[paddings > 0] = np.nan
        return logits, garbage, paddings

    @chex.variants(with_jit=True, without_jit=True)
    def test_greedy_equals_decoding_the_valid_frames(self):
        rng = np.random.default_rng(10)
        _, garbage, paddings = self._holes(rng, 4, 12, 4)
        out = self.variant(seqctc.greedy_decode)(garbage, paddings)
        ref_logits, ref_paddings, index = _compacted(garbage, paddings)
        ref = seqctc.greedy_decode(ref_logits, ref_paddings)
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_array_equal(out.lengths, ref.lengths)
        np.testing.assert_allclose(out.scores, ref.scores, rtol=1e-6)
        starts = np.where(
            ref.starts >= 0,
            np.take_along_axis(index, np.maximum(ref.starts, 0), 1),
            -1,
        )
        np.testing.assert_array_equal(out.starts, starts)

    def test_greedy_merges_repeats_across_a_hole(self):
        logits = np.log(np.array([[[0.1, 0.9], [0.9, 0.1], [0.1, 0.9]]], np.float32))
        out = seqctc.greedy_decode(logits, np.array([[0.0, 1.0, 0.0]]))
        self.assertEqual(int(out.lengths[0]), 1)  # a, pad, a -> "a"
        np.testing.assert_array_equal(out.starts[0], [0, -1, -1])

    def test_beam_equals_decoding_the_valid_frames(self):
        rng = np.random.default_rng(11)
        _, garbage, paddings = self._holes(rng, 4, 12, 5)
        out = _beam(garbage, paddings, beam_width=4, top_k=3)
        ref_logits, ref_paddings, index = _compacted(garbage, paddings)
        ref = _beam(ref_logits, ref_paddings, beam_width=4, top_k=3)
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_array_equal(out.lengths, ref.lengths)
        np.testing.assert_allclose(out.scores, ref.scores, rtol=1e-6)
        starts = np.where(
            ref.starts >= 0,
            np.take_along_axis(
                index[:, None, :].repeat(3, 1), np.maximum(ref.starts, 0), 2
            ),
            -1,
        )
        np.testing.assert_array_equal(out.starts, starts)
        # The fully padded row decodes to the empty prefix, log probability 0.
        self.assertEqual(float(out.scores[3, 0]), 0.0)

    # Jitted only: the sizes are static either way, so an eager run takes the
    # same branches at the cost of op-by-op compiles.
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(
        ("empty_batch", 0, 5, 4), ("no_frames", 2, 0, 4), ("blank_only", 2, 5, 1)
    )
    def test_degenerate_sizes(self, batch, frames, classes):
        logits = np.zeros((batch, frames, classes), np.float32)
        paddings = np.zeros((batch, frames), np.float32)
        greedy = self.variant(seqctc.greedy_decode)(logits, paddings)
        chex.assert_shape(greedy.tokens, (batch, frames))
        np.testing.assert_array_equal(greedy.lengths, 0)
        np.testing.assert_allclose(greedy.scores, 0.0, atol=1e-6)
        beam = self.variant(
            functools.partial(seqctc.beam_decode, beam_width=2, top_k=2)
        )(logits, paddings)
        chex.assert_shape(beam.tokens, (batch, 2, frames))
        np.testing.assert_array_equal(beam.lengths, 0)
        if batch:
            np.testing.assert_allclose(beam.scores[:, 0], 0.0, atol=1e-6)
            np.testing.assert_array_equal(beam.scores[:, 1], -np.inf)

    def test_vocabulary_mismatch_names_the_argument(self):
        logits = np.zeros((1, 3, 5), np.float32)
        paddings = np.zeros((1, 3), np.float32)
        lm = seqctc.CharNGramLM.fit([[1, 2]], order=2, num_classes=4)
        with pytest.raises(ValueError, match="`lm`"):
            seqctc.beam_decode(logits, paddings, lm=lm)
        with pytest.raises(ValueError, match="hotwords"):
            seqctc.beam_decode(logits, paddings, hotwords=[[1, 5]])


# --------------------------------------------------------------------------
# A real recogniser at K = 6,625: PP-OCRv4 outputs (benchmarks/bench_decode.py
# --save-sample keeps the 32 best classes of each frame; the other classes get
# probability 0, so a search over the kept classes is the whole search).


def _ppocr_sample():
    data = np.load(pathlib.Path(__file__).parent / "data" / "ppocr_sample.npz")
    values, classes = data["values"], data["classes"].astype(np.int64)
    batch, frames, _ = values.shape
    logits = np.full((batch, frames, int(data["num_classes"])), -np.inf, np.float32)
    np.put_along_axis(logits, classes, values, axis=-1)
    lengths = data["lengths"]
    logits[np.arange(frames)[None, :] >= lengths[:, None]] = 0.0
    return logits, lengths, classes


def _sparse_beam_search(log_probs, classes, beam_width, blank, lm_row=None, alpha=0.0):
    """The textbook prefix beam search over the given classes of each frame.

    ``lm_row(context)`` gives ``log p(· | context)`` over all classes and the
    end; the fused ranking adds ``alpha`` times the prefix's LM log probability.
    """
    beams = {(): (0.0, -np.inf)}
    lm_score = {(): 0.0}

    def fused(prefix, pb, pnb):
        return np.logaddexp(pb, pnb) + alpha * lm_score.get(prefix, 0.0)

    for lp, cls in zip(log_probs, classes, strict=True):
        nxt = {}

        def add(prefix, pb=-np.inf, pnb=-np.inf, nxt=nxt):
            old_b, old_nb = nxt.get(prefix, (-np.inf, -np.inf))
            nxt[prefix] = (np.logaddexp(old_b, pb), np.logaddexp(old_nb, pnb))

        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            add(prefix, pb=total + lp[blank])
            if prefix:
                add(prefix, pnb=pnb + lp[prefix[-1]])
            for c in cls:
                c = int(c)
                if c == blank or not np.isfinite(lp[c]):
                    continue
                new = prefix + (c,)
                if lm_row is not None and new not in lm_score:
                    lm_score[new] = lm_score[prefix] + lm_row(prefix)[c]
                add(new, pnb=(pb if prefix and prefix[-1] == c else total) + lp[c])
        ranked = sorted(nxt.items(), key=lambda kv: -fused(kv[0], *kv[1]))
        beams = dict(ranked[:beam_width])
    final = {
        p: fused(p, *s) + (alpha * lm_row(p)[-1] if lm_row is not None else 0.0)
        for p, s in beams.items()
    }
    return sorted(final.items(), key=lambda kv: -kv[1])


class RealRecogniserTest(chex.TestCase):
    @pytest.mark.long
    def test_greedy_and_beam_equal_the_references(self):
        logits, lengths, classes = _ppocr_sample()
        paddings = _paddings(lengths, logits.shape[1])
        greedy = seqctc.greedy_decode(logits, paddings)
        _assert_greedy_equals_reference(greedy, logits, lengths, 0)
        # Three copies of the lines: a batch above 8 utterances at K > 1,024
        # re-ranks a frame for the few utterances that need it (3 copies of a
        # line) or for the whole batch (more); at W = 16 both happen here.
        copies = 3
        out = _beam(
            np.tile(logits, (copies, 1, 1)),
            np.tile(paddings, (copies, 1)),
            beam_width=16,
            top_k=4,
        )
        tops = []
        for b in range(len(lengths)):
            lp = _log_softmax(logits[b, : lengths[b]])
            ref = _sparse_beam_search(lp, classes[b, : lengths[b]], 16, 0)[:4]
            for copy in range(copies):
                hyps = _hypotheses(out, b + copy * len(lengths))
                for (labels, score), hyp in zip(ref, hyps, strict=False):
                    self.assertEqual(hyp[0], labels)
                    np.testing.assert_allclose(hyp[1], score, rtol=1e-5, atol=1e-4)
            tops.append(list(hyps[0][0]))
        if importlib.util.find_spec("fast_ctc_decode") is not None:
            self._at_least_as_likely_as_fast_ctc_decode(logits, lengths, tops)

    def _at_least_as_likely_as_fast_ctc_decode(self, logits, lengths, ours):
        from fast_ctc_decode import beam_search

        paddings = _paddings(lengths, logits.shape[1])
        alphabet = "".join(chr(0x4E00 + i) for i in range(logits.shape[-1]))
        theirs = []
        for b in range(len(lengths)):
            probs = np.exp(_log_softmax(logits[b, : lengths[b]])).astype(np.float32)
            text, _ = beam_search(
                probs, alphabet, beam_size=16, beam_cut_threshold=1e-4
            )
            theirs.append([ord(c) - 0x4E00 for c in text])

        def log_likelihood(seqs):
            width = max(1, max(len(s) for s in seqs))
            labels = np.zeros((len(seqs), width), np.int32)
            label_paddings = np.ones((len(seqs), width), np.float32)
            for b, s in enumerate(seqs):
                labels[b, : len(s)] = s
                label_paddings[b, : len(s)] = 0.0
            return -np.asarray(
                seqctc.ctc_loss(logits, paddings, labels, label_paddings)
            )

        self.assertTrue(
            np.all(log_likelihood(ours) >= log_likelihood(theirs) - 1e-4),
            (ours, theirs),
        )

    @pytest.mark.long
    def test_fused_search_equals_the_reference(self):
        logits, lengths, classes = _ppocr_sample()
        num_classes = logits.shape[-1]
        paddings = _paddings(lengths, logits.shape[1])
        # Train on the greedy transcripts: the LM then matters on these lines.
        greedy = seqctc.greedy_decode(logits, paddings)
        corpus = [
            [int(x) for x in greedy.tokens[b, : int(greedy.lengths[b])]][::-1]
            for b in range(len(lengths))
        ]
        lm = seqctc.CharNGramLM.fit(corpus, order=3, num_classes=num_classes)
        rows = {}
        tokens = jnp.arange(num_classes + 1, dtype=jnp.int32)
        # One compiled row of LM scores per state (the reference reads thousands).
        score_row = jax.jit(
            lambda state: lm.score(
                jnp.broadcast_to(state, (num_classes + 1, 2)), tokens
            )[1]
        )

        def lm_row(prefix):
            if prefix not in rows:
                rows[prefix] = np.asarray(score_row(lm.state_of(prefix)), np.float64)
            return rows[prefix]

        out = _beam(logits, paddings, beam_width=8, top_k=2, lm=lm, lm_weight=0.8)
        for b in range(len(lengths)):
            lp = _log_softmax(logits[b, : lengths[b]])
            ref = _sparse_beam_search(lp, classes[b, : lengths[b]], 8, 0, lm_row, 0.8)
            hyps = _hypotheses(out, b)
            self.assertEqual(hyps[0][0], ref[0][0])
            np.testing.assert_allclose(hyps[0][1], ref[0][1], rtol=1e-5, atol=1e-4)
