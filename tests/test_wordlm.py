"""Word and sparse token n-gram LMs, against independent oracles.

Oracles: the kenlm module scoring the same ARPA files (skipped when kenlm is
missing), Kneser–Ney probabilities worked out by hand on a tiny corpus,
normalisation over the vocabulary, exhaustive search over all K^T paths with
the fused score written out here (over host-side float64 scores), and
pyctcdecode + kenlm on the same logits (skipped when either is missing).
"""

import functools
import itertools
import math
import pathlib
from collections import defaultdict
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
import wordlm_data
from absl.testing import parameterized
from oracles import collapse as _collapse
from oracles import log_softmax as _log_softmax

import seqctc
from seqctc import _decode, _ngram

LN10 = math.log(10.0)
_TINY = ["a b", "a c"]
_TINY_TOKENS = ["", " ", "a", "b", "c"]

_beam = oracles.on_host(
    jax.jit(seqctc.beam_decode, static_argnames=("beam_width", "top_k", "prune_top_k"))
)


def _kenlm():
    return pytest.importorskip("kenlm")


def _corpus_lm(order, **kwargs):
    key = tuple(
        sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items())
    )
    return _cached_lm(order, key)


@functools.cache
def _cached_lm(order, kwargs):
    # One object per configuration, so that jitted searches share compilations.
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs}
    return seqctc.WordNGramLM.fit(
        wordlm_data.sentences(300, seed=0),
        order=order,
        tokens=wordlm_data.TOKENS,
        **kwargs,
    )


def _device_sentence(score_word, table, words, bos=True, eos=True):
    """ln p(words) through the jittable lookup (``score_word`` jitted)."""
    ids = [table.word_id(w) for w in words]
    if eos:
        ids.append(table.host.index["</s>"])
    context, total = table.initial_context(bos=bos), 0.0
    for i in ids:
        log_prob, context = score_word(context, i)
        total += float(log_prob)
    return total


def _host_sentence(lm, words, oov_penalty=0.0):
    """ln p(words </s> | <s>) from the float64 host tables, plus penalties."""
    table = lm.table
    ids = [table.word_id(w) for w in words] + [table.host.index["</s>"]]
    history = [table.host.index["<s>"]]
    total = 0.0
    for i in ids:
        total += table.host_log_prob(history, i)
        history.append(i)
    unk = table.host.index["<unk>"]
    return total + oov_penalty * sum(table.word_id(w) == unk for w in words)


# --------------------------------------------------------------- estimator


def test_kneser_ney_by_hand():
    # Corpus "a b", "a c"; every count-of-counts table is too small, so the
    # fallback discounts (0.5, 1, 1.5) hold. Unigram continuation counts:
    # a 1, b 1, c 1, </s> 2 (total 5); gamma = (0.5 * 3 + 1 * 1) / 5 = 0.5 over
    # the 5 words without <s>: p(a) = 0.5/5 + 0.1 = 0.2, p(</s>) = 1/5 + 0.1.
    # Bigrams (raw counts): p(a|<s>) = (2 - 1)/2 + 0.5 p(a) = 0.6,
    # p(b|a) = 0.5/2 + (0.5 * 2 / 2) p(b) = 0.35, p(</s>|b) = 0.5 + 0.5 * 0.3.
    lm = seqctc.WordNGramLM.fit(_TINY, order=2, tokens=_TINY_TOKENS)
    table = lm.table
    idx = table.host.index
    np.testing.assert_allclose(
        math.exp(table.host_log_prob([], idx["a"])), 0.2, rtol=1e-12
    )
    np.testing.assert_allclose(
        math.exp(table.host_log_prob([], idx["<unk>"])), 0.1, rtol=1e-12
    )
    np.testing.assert_allclose(
        math.exp(table.host_log_prob([idx["a"]], idx["b"])), 0.35, rtol=1e-12
    )
    np.testing.assert_allclose(
        lm.sentence_log_prob("a b"), math.log(0.6 * 0.35 * 0.65), rtol=1e-6
    )
    # An unseen bigram backs off: p(c|b) = gamma(b) p(c) = 0.5 * 0.2.
    np.testing.assert_allclose(
        math.exp(table.host_log_prob([idx["b"]], idx["c"])), 0.1, rtol=1e-12
    )


def test_discounts_from_count_of_counts():
    # Chen & Goodman: Y = t1 / (t1 + 2 t2), D_c = c - (c + 1) Y t_{c+1} / t_c.
    d = _ngram.kn_discounts([10, 4, 2, 1])
    y = 10 / 18
    np.testing.assert_allclose(
        d, [1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y * 1 / 2]
    )
    assert _ngram.kn_discounts([5, 0, 0, 0]) == (0.5, 1.0, 1.5)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_distributions_sum_to_one(order):
    lm = _corpus_lm(order)
    table = lm.table
    idx = table.host.index
    targets = [i for w, i in idx.items() if w != "<s>"]
    histories = [[], [idx["<s>"]], [idx["<s>"], idx["the"]], [idx["cat"]]]
    histories += [[idx["the"], idx["old"], idx["man"], idx["sees"]], [idx["<unk>"]]]
    for history in histories:
        total = sum(math.exp(table.host_log_prob(history, w)) for w in targets)
        np.testing.assert_allclose(total, 1.0, rtol=1e-9)


def test_jitted_lookup_equals_host_back_off():
    lm = _corpus_lm(4)
    table = lm.table
    rng = np.random.default_rng(0)
    score = jax.jit(table.score_word)
    for sentence in wordlm_data.sentences(5, seed=3) + ["the zebra sees a map"]:
        ids = [table.word_id(w) for w in sentence.split()]
        context = table.initial_context()
        history = [table.host.index["<s>"]]
        for i in [*ids, int(rng.integers(table.vocab_size))]:
            if table.vocab[i] == "<s>":
                continue
            got, context = score(context, i)
            np.testing.assert_allclose(
                got, table.host_log_prob(history, i), rtol=1e-5, atol=1e-5
            )
            history.append(i)


# ------------------------------------------------------------------ kenlm


@pytest.mark.parametrize("order", [2, 3, 5])
def test_scores_equal_kenlm(order, tmp_path):
    kenlm = _kenlm()
    lm = _corpus_lm(order)
    path = tmp_path / "lm.arpa"
    lm.to_arpa(path)
    model = kenlm.Model(str(path))
    loaded = seqctc.WordNGramLM.from_arpa(path, wordlm_data.TOKENS)
    texts = wordlm_data.sentences(20, seed=5) + [
        "the zebra sees a flying saucer",  # unknown words
        "map map map the the",  # backoff everywhere
        "",
    ]
    score_word = jax.jit(loaded.table.score_word)
    for text in texts:
        want = model.score(text, bos=True, eos=True) * LN10
        np.testing.assert_allclose(lm.sentence_log_prob(text), want, atol=1e-4)
        np.testing.assert_allclose(loaded.sentence_log_prob(text), want, atol=1e-4)
        jitted = _device_sentence(score_word, loaded.table, text.split())
        np.testing.assert_allclose(jitted, want, atol=1e-4)
        no_ends = model.score(text, bos=False, eos=False) * LN10
        np.testing.assert_allclose(
            lm.sentence_log_prob(text, bos=False, eos=False), no_ends, atol=1e-4
        )


_HAND_ARPA = """\\data\\
ngram 1=6
ngram 2=4
ngram 3=2

\\1-grams:
-1.0\t<s>\t-0.30103
-0.69897\tthe\t-0.39794
-1.0\tcat\t-0.2
-1.2\tdog
-0.9\t</s>
-1.5\tsat\t-0.1

\\2-grams:
-0.30103\t<s> the\t-0.1
-0.5\tthe cat\t-0.05
-0.7\tthe dog
-0.4\tcat sat

\\3-grams:
-0.2\t<s> the cat
-0.1\tthe cat sat

\\end\\
"""


def test_hand_written_arpa_equals_kenlm(tmp_path):
    # No <unk> in the file: kenlm scores unknown words with log10 p = -100.
    kenlm = _kenlm()
    path = tmp_path / "hand.arpa"
    path.write_text(_HAND_ARPA)
    model = kenlm.Model(str(path))
    lm = seqctc.WordNGramLM.from_arpa(path, [""] + list(" acdeghost"))
    score_word = jax.jit(lm.table.score_word)
    for text in ["the cat sat", "the dog sat", "cat the", "the bird sat", "sat"]:
        for bos, eos in [(True, True), (False, True), (True, False)]:
            want = model.score(text, bos=bos, eos=eos) * LN10
            got = lm.sentence_log_prob(text, bos=bos, eos=eos)
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=text)
            got = _device_sentence(score_word, lm.table, text.split(), bos, eos)
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=text)


def test_hand_written_arpa_by_hand(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(_HAND_ARPA)
    lm = seqctc.WordNGramLM.from_arpa(path, [""] + list(" acdeghost"))
    # p(sat | <s> dog): "<s> dog" unlisted, "dog sat" unlisted, dog has no
    # back-off: log10 p = -1.5. p(dog | <s>) = b(<s>) p(dog) = -0.30103 - 1.2.
    # p(</s> | dog sat) -> b(sat) + p(</s>) = -0.1 - 0.9.
    want = (-0.30103 - 1.2) + (-1.5) + (-0.1 - 0.9)
    np.testing.assert_allclose(lm.sentence_log_prob("dog sat"), want * LN10, atol=1e-5)
    override = seqctc.WordNGramLM.from_arpa(
        path, [""] + list(" acdeghost"), unk_log_prob=-5.0
    )
    # p(zzz | <s>) = b(<s>) + unk; p(</s> | zzz) = p(</s>).
    np.testing.assert_allclose(
        override.sentence_log_prob("zzz"), -0.30103 * LN10 - 5.0 - 0.9 * LN10, atol=1e-5
    )


def test_arpa_round_trip(tmp_path):
    lm = _corpus_lm(3)
    path = tmp_path / "a.arpa"
    lm.to_arpa(path)
    again = seqctc.WordNGramLM.from_arpa(path, wordlm_data.TOKENS)
    path2 = tmp_path / "b.arpa"
    again.to_arpa(path2)
    assert path.read_text() == path2.read_text()


def test_bad_arpa_raises(tmp_path):
    path = tmp_path / "bad.arpa"
    path.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1 a\n-1 b\n\\end\\\n")
    with pytest.raises(ValueError, match="declares 3 1-grams"):
        seqctc.WordNGramLM.from_arpa(path, ["", " ", "a", "b"])
    path.write_text("no header\n")
    with pytest.raises(ValueError, match="header"):
        seqctc.WordNGramLM.from_arpa(path, ["", " ", "a", "b"])


# -------------------------------------------------------- words from tokens


def _spell(lm, token_ids):
    """Sum of LM increments along a token sequence, plus the final score."""
    state, total = lm.initial_state(), 0.0
    for t in token_ids:
        state, delta = lm.score(state, t)
        total += float(delta)
    return total + float(lm.final_score(state))


@jax.jit
def _spell_state(lm, token_ids):
    """The LM state after ``token_ids`` (a list of ints, one compile per length)."""
    state = lm.initial_state()
    for t in token_ids:
        state, _ = lm.score(state, t)
    return state


@jax.jit
def _all_deltas(model, state, tokens):
    return jax.vmap(model.score, in_axes=(None, 0))(state, tokens)[1]


@functools.partial(jax.jit, static_argnums=2)
def _max_score(model, state, unpinned):
    return model.max_score(state, unpinned=unpinned)


class SpellingTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("in_vocabulary", "the cat sees a map"),
        ("oov_word", "the cat sees a oaf"),
        ("extra_spaces", "  the  cat "),
        ("empty", ""),
    )
    def test_char_tokens_spell_the_sentence_score(self, text):
        penalty = -7.0
        lm = _corpus_lm(3, oov_penalty=penalty)
        tokens = wordlm_data.TOKENS
        ids = [tokens.index(c) for c in text]
        score = self.variant(lm.score)
        state, total = lm.initial_state(), 0.0
        for t in ids:
            state, delta = score(state, jnp.int32(t))
            total += float(delta)
        total += float(lm.final_score(state))
        want = _host_sentence(lm, text.split(), oov_penalty=penalty)
        np.testing.assert_allclose(total, want, rtol=1e-5, atol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    def test_word_pieces(self):
        # "▁" starts a word; pieces without it continue the word.
        tokens = ["<blank>", "\u2581the", "\u2581ca", "t", "\u2581s", "ees", "\u2581"]
        tokens += ["a", "\u2581map"]
        lm = seqctc.WordNGramLM.fit(
            wordlm_data.sentences(300, seed=0), order=3, tokens=tokens
        )
        ids = [1, 2, 3, 4, 5, 6, 7, 8]  # ▁the ▁ca t ▁s ees ▁ a ▁map
        score = self.variant(lm.score)
        state, total = lm.initial_state(), 0.0
        for t in ids:
            state, delta = score(state, jnp.int32(t))
            total += float(delta)
        total += float(lm.final_score(state))
        want = _host_sentence(lm, "the cat sees a map".split())
        np.testing.assert_allclose(total, want, rtol=1e-5, atol=1e-4)

    def test_pipe_delimiter_and_no_lookahead(self):
        tokens = ["", "|", *wordlm_data.CHARS]
        lm = seqctc.WordNGramLM.fit(
            wordlm_data.sentences(300, seed=0),
            order=2,
            tokens=tokens,
            word_delimiter="|",
            lookahead=False,
        )
        text = "a|red|fox|sells"
        state = lm.initial_state()
        deltas = []
        for c in text:
            state, d = lm.score(state, tokens.index(c))
            deltas.append(float(d))
        # Without look-ahead only the delimiters score (every partial word here
        # starts a known word).
        assert all(d == 0 for c, d in zip(text, deltas, strict=True) if c != "|")
        total = sum(deltas) + float(lm.final_score(state))
        np.testing.assert_allclose(
            total, _host_sentence(lm, text.split("|")), rtol=1e-5, atol=1e-4
        )

    def test_lexicon_restricts(self):
        lm = _corpus_lm(2, lexicon=["the", "cat", "sees", "pat"])
        tokens = wordlm_data.TOKENS
        assert np.isfinite(_spell(lm, [tokens.index(c) for c in "the cat"]))
        # "pat" is in the lexicon but not the LM: scored as <unk>.
        got = _spell(lm, [tokens.index(c) for c in "the pat"])
        np.testing.assert_allclose(got, _host_sentence(lm, ["the", "pat"]), rtol=1e-5)
        # "ca" is a prefix, not a word; "dog" is not in the lexicon at all.
        assert _spell(lm, [tokens.index(c) for c in "the ca"]) < -1e20
        state = lm.initial_state()
        state, _ = lm.score(state, tokens.index("d"))
        _, delta = lm.score(state, tokens.index("o"))
        assert delta < -1e20

    @pytest.mark.long
    def test_max_score_bounds_every_token(self):
        tokens = wordlm_data.TOKENS
        for restrict in [False, True]:
            lexicon = ["the", "cat", "sees", "a", "map"] if restrict else None
            lm = _corpus_lm(3, lexicon=lexicon, oov_penalty=-3.0)
            fused = lm.with_weights(0.7, 1.5)
            for prefix in ["", "th", "the", "the ", "the ca", "the cqt", "a"]:
                state = _spell_state(lm, [tokens.index(c) for c in prefix])
                for model in (lm, fused):
                    deltas = _all_deltas(model, state, jnp.arange(len(tokens)))
                    assert (
                        float(jnp.max(deltas[1:]))
                        <= float(_max_score(model, state, False)) + 1e-5
                    ), (restrict, prefix)

    def test_max_score_bounds_word_pieces(self):
        tokens = ["", "\u2581the", "\u2581ca", "t", "\u2581", "a", "zz", "\u2581map"]
        lm = seqctc.WordNGramLM.fit(
            wordlm_data.sentences(300, seed=0), order=3, tokens=tokens, oov_penalty=-2.0
        )
        all_scores = jax.jit(jax.vmap(lm.score, in_axes=(None, 0)))
        max_score = jax.jit(lm.max_score)
        for prefix in [[], [1], [1, 2], [1, 2, 3], [1, 6], [4], [1, 4, 5]]:
            state = lm.initial_state()
            for t in prefix:
                state, _ = lm.score(state, t)
            _, deltas = all_scores(state, jnp.arange(len(tokens)))
            assert float(jnp.max(deltas[1:])) <= float(max_score(state)) + 1e-5

    def test_unpinned_bound_covers_every_other_token(self):
        for restrict in [False, True]:
            lexicon = ["the", "cat", "sees", "a", "map"] if restrict else None
            tokens, lm = _foreign_lm(lexicon=lexicon, oov_penalty=-3.0)
            alphabet = {c for w in (lexicon or lm.vocab[3:]) for c in w}
            want = {
                k
                for k, t in enumerate(tokens)
                if t == " " or (t and all(c in alphabet for c in t))
            }
            assert set(lm.pinned_tokens) == want
            others = jnp.array([k for k in range(1, len(tokens)) if k not in want])
            fused = lm.with_weights(0.7, 1.5)
            for prefix in ["", "th", "the", "the ", "the ca", "the c\u03b1", "a"]:
                state = _spell_state(lm, [tokens.index(c) for c in prefix])
                for model in (lm, fused):
                    deltas = _all_deltas(model, state, others)
                    bound = float(_max_score(model, state, True))
                    assert float(jnp.max(deltas)) <= bound + 1e-5, (restrict, prefix)
                    if prefix == "th" and not restrict:
                        # Far below the bound over every token (a word ending).
                        assert bound < float(_max_score(model, state, False)) - 3.0

    def test_pytree_under_vmap(self):
        lm = _corpus_lm(3)
        states = jax.vmap(lambda _: lm.initial_state())(jnp.arange(4))
        new, deltas = jax.jit(jax.vmap(lm.score))(states, jnp.array([3, 4, 5, 6]))
        chex.assert_shape(deltas, (4,))
        chex.assert_shape(new.context, (4, 2))
        leaves = jax.tree.leaves(jax.jit(lambda m: m)(lm))
        assert len(leaves) == len(jax.tree.leaves(lm))

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="order"):
            seqctc.WordNGramLM.fit(_TINY, order=0, tokens=_TINY_TOKENS)
        with pytest.raises(ValueError, match="blank_id"):
            seqctc.WordNGramLM.fit(_TINY, order=2, tokens=_TINY_TOKENS, blank_id=9)
        with pytest.raises(ValueError, match="tokens"):
            seqctc.WordNGramLM.fit(_TINY, order=2, tokens=[])


# Tokens no known word spells (another script, and a mixed one): the word LM
# pins the others, and the search bounds these.
_FOREIGN = [chr(0x3B1 + i) for i in range(12)] + ["a\u03b1"]


def _foreign_lm(**kwargs):
    tokens = list(wordlm_data.TOKENS) + _FOREIGN
    lm = seqctc.WordNGramLM.fit(
        wordlm_data.sentences(300, seed=0), order=3, tokens=tokens, **kwargs
    )
    return tokens, lm


# ------------------------------------------------- beam search, exhaustive


def _exhaustive_best(log_probs, tokens, lm, alpha, beta, penalty, lexicon=None):
    """argmax over label sequences of ctc + α ln p_lm + β words (float64)."""
    table = defaultdict(lambda: -np.inf)
    for path in itertools.product(range(log_probs.shape[1]), repeat=len(log_probs)):
        lp = sum(log_probs[t, k] for t, k in enumerate(path))
        labels = _collapse(path, 0)
        table[labels] = np.logaddexp(table[labels], lp)
    best, best_labels = -np.inf, None
    for labels, ctc in table.items():
        words = _words(labels, tokens)
        if lexicon is not None and any(w not in lexicon for w in words):
            continue
        fused = ctc + alpha * _host_sentence(lm, words, penalty) + beta * len(words)
        if fused > best:
            best, best_labels = fused, labels
    return best, best_labels


def _words(labels, tokens):
    text = "".join(tokens[k] for k in labels)
    return text.replace("\u2581", " ").split()


class BeamSearchTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("chars", False, 0.8, 0.5, None),
        ("chars_lexicon", False, 0.8, 0.5, ("ab", "b", "ba")),
        ("word_pieces", True, 1.2, -0.3, None),
    )
    def test_wide_beam_equals_exhaustive_search(self, pieces, alpha, beta, lexicon):
        rng = np.random.default_rng(7)
        # Fewer distinct prefixes than beam slots: the search drops nothing.
        tokens = ["", "\u2581a", "\u2581b", "a", "b"] if pieces else ["", " ", "a", "b"]
        num_frames = 3
        corpus = ["a b", "ab b", "b a ab", "ba ab", "a a b"]
        penalty = -2.0
        lm = seqctc.WordNGramLM.fit(
            corpus, order=2, tokens=tokens, lexicon=lexicon, oov_penalty=penalty
        )
        for _ in range(3):
            logits = rng.normal(size=(1, num_frames, len(tokens))) * 2
            log_probs = _log_softmax(logits[0])
            want, labels = _exhaustive_best(
                log_probs, tokens, lm, alpha, beta, penalty, lexicon
            )
            # Word pieces go through beam_decode's own weights, which fold
            # into the word scorer (β per word); characters through
            # with_weights.
            weights = (
                {"lm": lm, "lm_weight": alpha, "insertion_bonus": beta}
                if pieces
                else {"lm": lm.with_weights(alpha, beta)}
            )
            out = _beam(
                jnp.asarray(logits, jnp.float32),
                jnp.zeros((1, num_frames)),
                beam_width=128,
                **weights,
            )
            got = tuple(int(t) for t in out.tokens[0, 0] if t >= 0)
            assert _words(got, tokens) == _words(labels, tokens)
            np.testing.assert_allclose(out.scores[0, 0], want, rtol=1e-5, atol=1e-4)

    @pytest.mark.long
    def test_lm_fixes_confusions(self):
        texts, logits, pads = _confusable_batch()
        plain = _beam(logits, pads, beam_width=16)
        fused = _fused_search(logits, pads)

        def errors(out):
            n = 0
            for b, text in enumerate(texts):
                ids = [int(t) for t in out.tokens[b, 0] if t >= 0]
                hyp = "".join(wordlm_data.TOKENS[i] for i in ids).split()
                n += sum(h != r for h, r in zip(hyp, text.split(), strict=False))
                n += abs(len(hyp) - len(text.split()))
            return n

        assert errors(fused) < errors(plain) / 4
        assert errors(fused) <= 3

    @parameterized.parameters(8, 1)
    def test_pinned_search_equals_the_reference_search(self, num_fast):
        # K − 1 > 2W: frames rank their best classes (8, or 1 to make the
        # bound decide most frames) and the pinned tokens, and bound the
        # others; the reference ranks every class at every frame.
        tokens, lm = _foreign_lm(oov_penalty=-1.0)
        fused = lm.with_weights(0.5, 1.0)
        texts = wordlm_data.sentences(4, seed=31)
        logits, pads = wordlm_data.simulate_logits(
            texts, tokens, seed=32, confusion=0.5, noise=1.5
        )
        width = 4
        # The search compiled under the patched constant only (it is cached
        # per configuration, not per constant).
        _decode._beam_decode.clear_cache()
        with mock.patch.object(_decode, "_NUM_FAST", num_fast):
            out = jax.jit(
                lambda x, p, f: seqctc.beam_decode(x, p, beam_width=width, lm=f)
            )(logits, pads, fused)
        _decode._beam_decode.clear_cache()
        score_all = jax.jit(jax.vmap(fused.score, in_axes=(None, 0)))
        final = jax.jit(fused.final_score)
        every = jnp.arange(len(tokens))
        # Per prefix: its LM state, and (once it is extended) the states and
        # fused increments of all its children, as numpy.
        states, scores, children = {(): lm.initial_state()}, {(): 0.0}, {}

        def state(prefix):
            if prefix not in states:
                new, _ = row(prefix[:-1])
                states[prefix] = jax.tree.map(lambda x: x[prefix[-1]], new)
            return states[prefix]

        def row(prefix):
            if prefix not in children:
                new, deltas = score_all(state(prefix), every)
                children[prefix] = (jax.tree.map(np.asarray, new), np.asarray(deltas))
            return children[prefix]

        def prefix_score(prefix):
            if prefix not in scores:
                _, deltas = row(prefix[:-1])
                scores[prefix] = prefix_score(prefix[:-1]) + float(deltas[prefix[-1]])
            return scores[prefix]

        def final_score(prefix):
            return float(final(state(prefix)))

        entered = 0
        for b in range(len(texts)):
            n = int(np.sum(pads[b] == 0))
            hyps, gap = oracles.prefix_beam_search(
                _log_softmax(logits[b, :n]), 0, width, prefix_score, final_score
            )
            if gap < 1e-3:  # a near-tie at a cut: either order is right
                continue
            got = tuple(int(t) for t in out.tokens[b, 0] if t >= 0)
            assert got == hyps[0][0]
            np.testing.assert_allclose(out.scores[b, 0], hyps[0][1], rtol=1e-5)
            entered += any(tokens[k] in _FOREIGN for k in got)
        assert entered  # a bounded token made it into a result


_ALPHA, _BETA, _UNK_OFFSET = 0.5, 1.0, -10.0


@functools.cache
def _confusable_batch():
    texts = wordlm_data.sentences(16, seed=21)
    logits, pads = wordlm_data.simulate_logits(
        texts, wordlm_data.TOKENS, seed=22, confusion=0.3
    )
    return texts, logits, pads


def _fused_search(logits, pads):
    lm = _corpus_lm(3, oov_penalty=_UNK_OFFSET * LN10)
    return _beam(logits, pads, beam_width=16, lm=lm.with_weights(_ALPHA, _BETA))


# ------------------------------------------------------------ pyctcdecode


def test_top1_as_likely_as_pyctcdecode(tmp_path):
    _kenlm()
    pyctcdecode = pytest.importorskip("pyctcdecode")
    import logging

    logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
    lm = _corpus_lm(3, oov_penalty=_UNK_OFFSET * LN10)
    path = tmp_path / "lm.arpa"
    lm.to_arpa(path)
    words = [w for w in lm.vocab if w not in ("<s>", "</s>", "<unk>")]
    decoder = pyctcdecode.build_ctcdecoder(
        wordlm_data.TOKENS,
        str(path),
        unigrams=words,
        alpha=_ALPHA,
        beta=_BETA,
        unk_score_offset=_UNK_OFFSET,
    )
    texts, logits, pads = _confusable_batch()
    log_probs = _log_softmax(logits)
    out = _fused_search(logits, pads)
    same = 0
    for b in range(len(texts)):
        lp = log_probs[b, : int((pads[b] == 0).sum())]
        theirs = decoder.decode(lp, beam_width=16)
        ids = [int(t) for t in out.tokens[b, 0] if t >= 0]
        ours = "".join(wordlm_data.TOKENS[i] for i in ids)

        def fused(text, lp=lp):
            words = text.split()
            ids = [wordlm_data.TOKENS.index(c) for c in text]
            lm_score = _host_sentence(lm, words, _UNK_OFFSET * LN10)
            return (
                oracles.ctc_log_prob(lp, ids) + _ALPHA * lm_score + _BETA * len(words)
            )

        assert fused(ours) >= fused(theirs) - 1e-3, (ours, theirs)
        same += " ".join(ours.split()) == theirs
    assert same >= 0.7 * len(texts)


# ----------------------------------------------------- sparse token-level LM


@pytest.mark.long
def test_token_lm_large_vocabulary(tmp_path):
    num_classes = 6625
    rng = np.random.default_rng(0)
    # Zipf-like token sequences over 6,624 classes.
    seqs = [
        list(np.minimum(rng.zipf(1.3, size=rng.integers(3, 12)), num_classes - 1))
        for _ in range(200)
    ]
    lm = seqctc.TokenNGramLM.fit(seqs, order=3, num_classes=num_classes)
    table = lm.table
    # Normalised over every class plus </s>, after a seen and an unseen history.
    context, _ = lm.score(lm.initial_state(), seqs[0][0])
    for ctx in [context, lm.initial_state()]:
        _, lp = jax.jit(jax.vmap(lm.score, in_axes=(None, 0)))(
            ctx, jnp.arange(1, num_classes)
        )
        total = jax.nn.logsumexp(jnp.append(lp, lm.final_score(ctx)))
        np.testing.assert_allclose(total, 0.0, atol=2e-4)
        assert float(jnp.max(lp)) <= float(lm.max_score(ctx)) + 1e-6
    assert sum(w.shape[0] for w in table.words) < 50_000  # no dense K^3 table
    # Beam search with it at K = 6,625 (pruned to the 8 best classes a frame).
    logits = rng.normal(size=(2, 8, num_classes)).astype(np.float32)
    out = _beam(
        logits, jnp.zeros((2, 8)), beam_width=4, lm=lm, prune_top_k=8, lm_weight=0.3
    )
    chex.assert_shape(out.tokens, (2, 1, 8))
    kenlm = pytest.importorskip("kenlm")
    path = tmp_path / "tokens.arpa"
    lm.to_arpa(path)
    model = kenlm.Model(str(path))
    for seq in seqs[:5] + [[5, 4000, 6000]]:
        want = model.score(" ".join(map(str, seq)), bos=True, eos=True) * LN10
        np.testing.assert_allclose(lm.sequence_log_prob(seq), want, atol=1e-4)


def test_token_lm_rejects_blank():
    with pytest.raises(ValueError, match="blank"):
        seqctc.TokenNGramLM.fit([[0, 1]], order=2, num_classes=3)


def test_docs_page_exists():
    page = pathlib.Path(__file__).parent.parent / "docs/concepts/language_models.md"
    assert page.exists()
