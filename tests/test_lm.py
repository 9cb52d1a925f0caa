"""Language models and hotwords in beam search, against independent oracles.

Oracles: counts by hand and a plain-Python dict Kneser–Ney on tiny corpora,
normalisation over next tokens, exhaustive search over all K^T paths with the
fused score written out here, and a naive hotword count.
"""

import functools
import itertools
import pathlib
from collections import Counter, defaultdict
from typing import NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
from absl.testing import absltest, parameterized
from jax import lax
from oracles import collapse as _collapse
from oracles import log_softmax as _log_softmax
from oracles import prefix_beam_search as _prefix_beam_search

import seqctc
from seqctc import _decode
from seqctc._fusion import make_fusion

_CORPUS = [[1, 2], [1, 1], [2], [1, 2, 2, 1], [2, 1, 3]]

_beam = oracles.on_host(
    jax.jit(
        seqctc.beam_decode,
        static_argnames=("beam_width", "top_k", "blank_id", "hotwords"),
    )
)


def _ctc_table(log_probs, blank):
    """{labels: log p(labels)} by summing over all K^T paths."""
    table = defaultdict(lambda: -np.inf)
    for path in itertools.product(range(log_probs.shape[1]), repeat=len(log_probs)):
        lp = sum(log_probs[t, k] for t, k in enumerate(path))
        labels = _collapse(path, blank)
        table[labels] = np.logaddexp(table[labels], lp)
    return dict(table)


def _kneser_ney_dict(corpus, order, support, discount, boundary):
    """Interpolated Kneser–Ney with continuation counts, over Python dicts."""
    grams = [Counter() for _ in range(order + 1)]  # grams[j][(ctx, w)]
    for seq in corpus:
        padded = [boundary] * (order - 1) + list(seq) + [boundary]
        for i in range(order - 1, len(padded)):
            grams[order][(tuple(padded[i - order + 1 : i]), padded[i])] += 1
    for j in range(order - 1, 0, -1):  # continuation counts N1+(. ctx w)
        for (ctx, w), c in grams[j + 1].items():
            if c > 0:
                grams[j][(ctx[1:], w)] += 1

    def prob(ctx, w, j):
        if j == 0:
            return 1.0 / len(support) if w in support else 0.0
        ctx = ctx[len(ctx) - (j - 1) :] if j > 1 else ()
        row = {v: c for (h, v), c in grams[j].items() if h == ctx}
        total = sum(row.values())
        lower = prob(ctx, w, j - 1)
        if total == 0:
            return lower
        return (
            max(row.get(w, 0) - discount, 0) / total
            + discount * len(row) / total * lower
        )

    return lambda ctx, w: prob(tuple(ctx), w, order)


_TABLES = {}


def _dense_table(lm):
    """``[V ** (n − 1), V]`` log p(w | context) for every context tuple.

    Row ``Σ_i ctx[i] · V ** (n − 2 − i)`` (oldest token in the highest digit)
    holds the context ``ctx``; read through ``lm.score``.
    """
    if id(lm) in _TABLES:
        return _TABLES[id(lm)][1]
    vocab = lm.num_classes + 1
    contexts = list(itertools.product(range(vocab), repeat=lm.order - 1))
    contexts = np.array(contexts, np.int32).reshape(len(contexts), lm.order - 1)
    tokens = np.arange(vocab, dtype=np.int32)
    states = np.broadcast_to(contexts[:, None, :], (len(contexts), vocab, lm.order - 1))
    _, table = lm.score(states, np.broadcast_to(tokens, (len(contexts), vocab)))
    _TABLES[id(lm)] = (lm, np.asarray(table, np.float64))
    return _TABLES[id(lm)][1]


def _lm_log_prob(lm, labels):
    """log p(labels + end) from the table, contexts written out by hand."""
    vocab = lm.num_classes + 1
    table = _dense_table(lm)
    history = [lm.num_classes] * (lm.order - 1)
    total = 0.0
    for w in list(labels) + [lm.num_classes]:
        state = 0
        for x in history[len(history) - (lm.order - 1) :] if lm.order > 1 else []:
            state = state * vocab + x
        total += float(table[state, w])
        history.append(w)
    return total


def _hotword_count(labels, hotwords):
    """Tokens of leftmost non-overlapping hotword matches + longest open match."""
    labels = tuple(labels)
    completed, partial = 0, 0
    for word in hotwords:
        word, n = tuple(word), len(word)
        i, end = 0, 0
        while i + n <= len(labels):
            if labels[i : i + n] == word:
                completed += n
                i += n
                end = i
            else:
                i += 1
        for m in range(n - 1, 0, -1):
            if len(labels) - m >= end and labels[len(labels) - m :] == word[:m]:
                partial = max(partial, m)
                break
    return completed + partial


class CharNGramLMTest(parameterized.TestCase):
    def test_add_k_counts_by_hand(self):
        lm = seqctc.CharNGramLM.fit(
            [[1, 2], [1, 1], [2]], order=2, num_classes=3, smoothing="add_k"
        )
        # Support {1, 2, end}; after the start: 1 twice, 2 once.
        p = np.exp(_dense_table(lm))  # order 2: row = the last token

        def row(state):
            return int(np.asarray(state)[-1])

        start = lm.initial_state()
        np.testing.assert_allclose(
            p[row(start), [1, 2, 3]], [3 / 6, 2 / 6, 1 / 6], rtol=1e-6
        )
        # After 1: 2, 1 and the end once each; after 2: the end twice.
        state1, _ = lm.score(start, 1)
        np.testing.assert_allclose(
            p[row(state1), [1, 2, 3]], [2 / 6, 2 / 6, 2 / 6], rtol=1e-6
        )
        state2, log_p = lm.score(state1, 2)
        np.testing.assert_allclose(np.exp(log_p), 2 / 6, rtol=1e-6)
        np.testing.assert_allclose(
            p[row(state2), [1, 2, 3]], [1 / 5, 1 / 5, 3 / 5], rtol=1e-6
        )
        np.testing.assert_allclose(np.exp(lm.final_score(state2)), 3 / 5, rtol=1e-6)
        self.assertEqual(p[row(start), 0], 0.0)  # the blank is never predicted

    @parameterized.parameters(1, 2, 3)
    def test_kneser_ney_equals_dict_counting(self, order):
        lm = seqctc.CharNGramLM.fit(_CORPUS, order=order, num_classes=4, discount=0.6)
        ref = _kneser_ney_dict(_CORPUS, order, {1, 2, 3, 4}, 0.6, boundary=4)
        table = _dense_table(lm)
        for ctx in itertools.product([1, 2, 3, 4], repeat=order - 1):
            state = 0
            for x in ctx:
                state = state * 5 + x
            for w in range(5):
                expected = ref(ctx, w)
                got = np.exp(float(table[state, w]))
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)

    @parameterized.product(
        smoothing=["add_k", "kneser_ney"], order=[1, 3], sentence_end=[True, False]
    )
    def test_normalises_over_next_tokens(self, smoothing, order, sentence_end):
        lm = seqctc.CharNGramLM.fit(
            _CORPUS,
            order=order,
            num_classes=4,
            smoothing=smoothing,
            sentence_end=sentence_end,
            add_k=0.5,
        )
        table = _dense_table(lm)
        total = jax.nn.logsumexp(table, axis=-1)
        np.testing.assert_allclose(total, 0.0, atol=1e-5)
        self.assertTrue(np.all(table[:, 0] < -1e29))

    def test_state_holds_last_tokens_and_jits(self):
        lm = seqctc.CharNGramLM.fit(_CORPUS, order=3, num_classes=4)

        @jax.jit
        def run(lm, tokens):
            def step(state, token):
                return lm.score(state, token)

            return jax.lax.scan(step, lm.initial_state(), tokens)

        state, log_ps = run(lm, jnp.array([2, 1, 3], jnp.int32))
        np.testing.assert_array_equal(state, [1, 3])  # context (1, 3)
        table = _dense_table(lm)
        np.testing.assert_allclose(
            log_ps,
            [table[4 * 5 + 4, 2], table[4 * 5 + 2, 1], table[11, 3]],
            rtol=1e-6,
        )

    @parameterized.named_parameters(
        ("kneser_ney_3", "kneser_ney", 3),
        ("add_k_2", "add_k", 2),
        ("kn_1", "kneser_ney", 1),
    )
    def test_next_tokens_are_the_best_and_bound_the_others(self, smoothing, order):
        rng = np.random.default_rng(3)
        corpus = [list(rng.integers(1, 12, rng.integers(1, 9))) for _ in range(40)]
        lm = seqctc.CharNGramLM.fit(
            corpus, order=order, num_classes=12, smoothing=smoothing, num_next=4
        )
        every = jnp.arange(12, dtype=jnp.int32)
        row = jax.jit(
            lambda s: lm.score(jnp.broadcast_to(s, (12, s.shape[0])), every)[1]
        )
        contexts = {
            tuple(c[max(0, i - order + 1) : i])
            for c in corpus
            for i in range(len(c) + 1)
        }
        contexts |= {tuple(rng.integers(1, 12, order - 1)) for _ in range(10)}
        for context in sorted(contexts):
            state = lm.state_of(context)
            log_p = np.asarray(row(state))
            best, rest = lm.next_tokens(state)
            best = np.asarray(best)
            self.assertLen(set(best.tolist()), 4)
            others = np.delete(log_p, best)
            self.assertGreaterEqual(log_p[best].min(), others.max() - 1e-5)
            self.assertGreaterEqual(float(rest), others.max())  # the bound holds
            self.assertLess(float(rest), others.max() + 1e-2)  # and is tight
            # The stored log p of the listed classes is the score's, to the bit
            # (the search ranks them by it; the score is checked against
            # counting by hand above).
            listed, listed_lp, listed_rest = lm.next_log_probs(state)
            np.testing.assert_array_equal(np.asarray(listed), best)
            np.testing.assert_array_equal(np.asarray(listed_lp), log_p[best])
            self.assertEqual(float(listed_rest), float(rest))

    def test_static_misuse(self):
        with pytest.raises(ValueError, match="order"):
            seqctc.CharNGramLM.fit(_CORPUS, order=0, num_classes=4)
        with pytest.raises(ValueError, match="order"):
            seqctc.CharNGramLM.fit(_CORPUS, order=1.5, num_classes=4)
        with pytest.raises(ValueError, match="sequences"):
            seqctc.CharNGramLM.fit([[0, 1]], order=2, num_classes=4)
        with pytest.raises(ValueError, match="smoothing"):
            seqctc.CharNGramLM.fit(_CORPUS, order=2, num_classes=4, smoothing="x")


class _UnigramLM(NamedTuple):
    """A user-written LM through the protocol: fixed log p per token."""

    log_p: jax.Array  # [K]

    def initial_state(self):
        return jnp.zeros((), jnp.int32)

    def score(self, state, token):
        return state + 1, self.log_p[token]

    def final_score(self, state):
        return jnp.zeros((), self.log_p.dtype)


class FusionTest(parameterized.TestCase):
    def _exhaustive_fused(self, logits, lm, alpha, beta, gamma, hotwords):
        table = _ctc_table(_log_softmax(logits), 0)
        fused = {}
        for labels, log_p in table.items():
            score = log_p + beta * len(labels)
            if lm is not None:
                score += alpha * _lm_log_prob(lm, labels)
            if hotwords:
                score += gamma * _hotword_count(labels, hotwords)
            fused[labels] = score
        return sorted(fused.items(), key=lambda kv: -kv[1])

    @parameterized.named_parameters(
        ("lm", True, None), ("hotwords", False, ((1, 2, 1), (2, 2)))
    )
    def test_wide_beam_equals_exhaustive_fused_search(self, use_lm, hotwords):
        rng = np.random.default_rng(0)
        lm = seqctc.CharNGramLM.fit([[1, 2, 2], [2, 1], [1]], order=2, num_classes=3)
        logits = (1.5 * rng.normal(size=(2, 6, 3))).astype(np.float32)
        alpha, beta, gamma = 0.7, 0.4, 0.8
        out = _beam(
            logits,
            np.zeros((2, 6), np.float32),
            beam_width=128,
            top_k=5,
            lm=lm if use_lm else None,
            lm_weight=alpha,
            insertion_bonus=beta,
            hotwords=hotwords,
            hotword_weight=gamma,
        )
        for b in range(2):
            ranked = self._exhaustive_fused(
                logits[b], lm if use_lm else None, alpha, beta, gamma, hotwords
            )
            for i in range(5):
                n = int(out.lengths[b, i])
                self.assertEqual(
                    tuple(int(x) for x in out.tokens[b, i, :n]), ranked[i][0]
                )
                np.testing.assert_allclose(out.scores[b, i], ranked[i][1], rtol=1e-5)

    @parameterized.named_parameters(
        ("default", 8, 48, 24, 4),
        ("one_class", 1, 2, 24, 4),
        # K > 1,024 and B > 8: a frame that few utterances fail re-ranks those.
        ("few_rows", 4, 16, 1100, 10),
    )
    def test_listed_search_equals_the_reference_search(
        self, num_fast, num_lead, k, batch
    ):
        # K − 1 > 2W: each prefix ranks the frame's best classes, the LM's best
        # next classes and (the prefix of the highest bound) more of the
        # frame's; the bound covers the rest. With 1 class first the bound
        # decides most frames. The reference ranks every class.
        rng = np.random.default_rng(5)
        width, alpha, beta, gamma = 4, 0.8, 0.3, 1.0
        corpus = [list(rng.integers(1, 8, rng.integers(2, 9))) for _ in range(30)]
        lm = seqctc.CharNGramLM.fit(corpus, order=3, num_classes=k, num_next=4)
        hotwords = ((3, 4, 5), (9, 10))
        logits = rng.normal(size=(batch, 14, k)).astype(np.float32)
        peak = rng.integers(0, 12, (batch, 14))
        logits += 4.0 * np.eye(k, dtype=np.float32)[peak]
        # The search compiled under the patched constants only (it is cached
        # per configuration, not per constant).
        _decode._beam_decode.clear_cache()
        with mock.patch.multiple(
            _decode, _NUM_FAST_LISTED=num_fast, _NUM_LEAD=num_lead
        ):
            out = jax.jit(
                lambda x, p, m: seqctc.beam_decode(
                    x,
                    p,
                    beam_width=width,
                    lm=m,
                    lm_weight=alpha,
                    insertion_bonus=beta,
                    hotwords=hotwords,
                    hotword_weight=gamma,
                )
            )(logits, np.zeros((batch, 14), np.float32), lm)
        _decode._beam_decode.clear_cache()
        every = jnp.arange(k, dtype=jnp.int32)
        row = jax.jit(lambda s: lm.score(jnp.broadcast_to(s, (k, 2)), every)[1])
        rows, lm_scores = {}, {(): 0.0}

        def lm_score(prefix):
            if prefix not in lm_scores:
                context = prefix[:-1]
                if context not in rows:
                    rows[context] = np.asarray(row(lm.state_of(context)), np.float64)
                lm_scores[prefix] = lm_score(context) + rows[context][prefix[-1]]
            return lm_scores[prefix]

        def prefix_score(prefix):
            return (
                alpha * lm_score(prefix)
                + beta * len(prefix)
                + gamma * _hotword_count(prefix, hotwords)
            )

        def final_score(prefix):
            return alpha * float(lm.final_score(lm.state_of(prefix)))

        for b in range(batch):
            hyps, gap = _prefix_beam_search(
                _log_softmax(logits[b]), 0, width, prefix_score, final_score
            )
            if gap < 1e-3:  # a near-tie at a cut: either order is right
                continue
            n = int(out.lengths[b, 0])
            self.assertEqual(tuple(int(x) for x in out.tokens[b, 0, :n]), hyps[0][0])
            np.testing.assert_allclose(out.scores[b, 0], hyps[0][1], rtol=1e-5)

    def test_zero_weight_is_pure_ctc(self):
        rng = np.random.default_rng(1)
        logits = (2.0 * rng.normal(size=(3, 12, 7))).astype(np.float32)
        paddings = np.zeros((3, 12), np.float32)
        paddings[1, 8:] = 1.0
        lm = seqctc.CharNGramLM.fit(_CORPUS, order=2, num_classes=7)
        decode = functools.partial(_beam, beam_width=2, top_k=2)
        plain = decode(logits, paddings)
        # The fused search expands every class; the plain one only the 2W best,
        # which must change nothing.
        zero = decode(logits, paddings, lm=lm, lm_weight=0.0)
        jax.tree.map(np.testing.assert_array_equal, plain, zero)

    def test_strong_lm_changes_top1(self):
        probs = np.tile([[0.1, 0.6, 0.3]], (1, 4, 1))
        logits = np.log(probs).astype(np.float32)
        paddings = np.zeros((1, 4), np.float32)

        def top1(out):
            return tuple(int(x) for x in out.tokens[0, 0, : int(out.lengths[0, 0])])

        table = _ctc_table(np.log(probs[0]), 0)
        self.assertEqual(max(table, key=table.get), (1, 2, 1))
        self.assertEqual(top1(_beam(logits, paddings, beam_width=4)), (1, 2, 1))
        # A user-written LM that strongly prefers token 2.
        lm = _UnigramLM(jnp.log(jnp.array([1e-9, 0.05, 0.95])))
        fused = _beam(logits, paddings, beam_width=4, lm=lm, lm_weight=1.0)
        self.assertEqual(top1(fused), (2,))
        # An n-gram LM trained on "2 1" only.
        ngram = seqctc.CharNGramLM.fit([[2, 1]] * 10, order=2, num_classes=3)
        fused = _beam(logits, paddings, beam_width=4, lm=ngram, lm_weight=2.0)
        self.assertEqual(top1(fused), (2, 1))

    def test_only_the_expected_hotword_tokens_gain(self):
        # The search ranks, for each prefix, the token each hotword expects
        # next, and bounds the others' gain by the fusion's delta_bound. Over
        # every prefix of 4 tokens: the other tokens gain no hotword count
        # (the count by plain string matching) and the bound covers them.
        hotwords, gamma, beta = ((1, 2, 1), (2, 2), (3,)), 0.8, 0.3
        fusion = make_fusion(
            num_classes=5,
            blank_id=0,
            lm=None,
            lm_weight=1.0,
            insertion_bonus=beta,
            hotwords=hotwords,
            hotword_weight=gamma,
            dtype=jnp.float32,
        )
        prefixes = np.array(list(itertools.product(range(1, 5), repeat=4)), np.int32)

        @jax.jit
        def expected_and_bound(prefix):
            def step(state, token):
                return fusion.step(state, token, jnp.float32)[0], None

            state, _ = lax.scan(step, fusion.initial_state(), prefix)
            bound = fusion.delta_bound(state, jnp.float32, hot_listed=True)
            return fusion.hot_next(state), bound

        expected, bound = jax.vmap(expected_and_bound)(prefixes)
        for prefix, listed, top in zip(prefixes, expected, bound, strict=True):
            prefix = tuple(int(x) for x in prefix)
            count = _hotword_count(prefix, hotwords)
            for c in range(1, 5):
                gain = _hotword_count(prefix + (c,), hotwords) - count
                if c in listed:
                    continue
                self.assertLessEqual(gain, 0, (prefix, c))
                self.assertLessEqual(beta + gamma * gain, float(top) + 1e-6)

    def test_hotword_brings_a_hypothesis_up(self):
        raw = np.loadtxt(
            pathlib.Path(__file__).parent
            / "data"
            / "ctcdecoder-samples"
            / "harald_word_rnnOutput.csv",
            delimiter=";",
            usecols=range(80),
        ).astype(np.float32)[None]
        paddings = np.zeros((1, 32), np.float32)
        plain = _beam(raw, paddings, beam_width=8, top_k=2, blank_id=79)
        second = tuple(int(x) for x in plain.tokens[0, 1, : int(plain.lengths[0, 1])])
        boosted = _beam(
            raw,
            paddings,
            beam_width=8,
            top_k=2,
            blank_id=79,
            hotwords=(second,),
            hotword_weight=1.0,
        )
        n = int(boosted.lengths[0, 0])
        self.assertEqual(tuple(int(x) for x in boosted.tokens[0, 0, :n]), second)


if __name__ == "__main__":
    absltest.main()
