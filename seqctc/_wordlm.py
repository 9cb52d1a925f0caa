"""Word n-gram language models for CTC beam search: words spelled by tokens.

A :class:`WordNGramLM` is a sparse back-off n-gram model over words
(:class:`seqctc._ngram.NGramTable`, loaded from an ARPA file or estimated with
modified Kneser–Ney) plus the spelling machinery that turns CTC tokens into
words: a character trie of the known words (dense ``[nodes, C]`` transitions),
what each token does (spell characters, end a word at ``word_delimiter``, or
start one, ``▁``-prefixed word pieces) and a look-ahead bound per trie node.
It implements :class:`seqctc.LanguageModel`, so it plugs into
:func:`seqctc.beam_decode`; :meth:`WordNGramLM.with_weights` folds ``α`` and
the per-word bonus ``β`` in (pyctcdecode's ``alpha``/``beta``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._ngram import (
    BOS,
    EOS,
    UNK,
    NGramTable,
    check_order,
    kneser_ney_table,
    read_arpa,
    table_from_arpa_grams,
)
from seqctc._types import NEG_INF, Array, ArrayLike

# What a token does to the word being spelled.
_IGNORE, _SPELL, _DELIMIT, _START = range(4)
_ROOT = 0  # trie node of the empty word
_OFF_TRIE = -1  # a partial word that no known word starts with
_PAD_CHAR, _UNKNOWN_CHAR = -1, -2
# Largest dense trie transition table ([nodes, characters] int32 entries).
_MAX_TRIE = 2**26
# Most tokens the beam search always ranks (see pinned_tokens).
_MAX_PINNED = 128
WORD_PIECE_START = "\u2581"  # "▁"


class WordState(NamedTuple):
    """State of a prefix under a :class:`WordNGramLM` (a pytree of arrays).

    Attributes:
        context: ``[n − 1]`` int32 n-gram context nodes of the completed words.
        node: int32 trie node of the word being spelled (0 = none, −1 = off
            the trie: no known word starts so).
        partial: float32 look-ahead score already given to that partial word,
            taken back when the word completes.
        word_log_prob: float32 n-gram log probability (plus OOV penalty) of
            that word if it ended now, computed once when the state is made
            (every extension of the prefix reads it).
        word_context: ``[n − 1]`` int32 context after that word.
    """

    context: Array
    node: Array
    partial: Array
    word_log_prob: Array
    word_context: Array


class _Step(NamedTuple):
    state: WordState
    log_prob: Array  # LM log score increment (look-ahead included)
    words: Array  # int32 words completed by this token (0 or 1)
    dead: Array  # bool: the lexicon rules this prefix out


@dataclasses.dataclass(frozen=True)
class WordNGramLM:
    r"""A word n-gram LM over CTC tokens, for shallow fusion in beam search.

    Words are spelled by the CTC tokens: a token equal to ``word_delimiter``
    ends the current word; a token starting with ``▁`` (word pieces) ends it and
    starts a new one with the rest of its text; any other token appends its
    text; the blank (and empty tokens) do nothing. A word is scored by the
    n-gram model when it is completed and at the end of the hypothesis, where
    ``</s>`` is scored too. While a word is spelled it holds a look-ahead score:
    the best unigram log probability of the known words it can still become
    (0 without ``lookahead``), taken back when it completes, so the prefix
    score always counts each word once:

    .. math::

        \log p_{lm}(\ell) = \sum_i \log p(w_i \mid w_{i-n+1} \ldots w_{i-1})
            + \log p(\texttt{</s>} \mid \ldots) + \lambda\, N_{oov}(\ell)
            + \mathrm{lookahead}(\text{partial word}),

    :math:`\lambda` = ``oov_penalty`` per word outside the vocabulary (scored
    as ``<unk>``). With a ``lexicon`` the hypotheses are restricted to its
    words: a token that spells no prefix of a lexicon word, or a word end that
    is not a lexicon word, scores ``NEG_INF``.

    The model is a pytree (tables and trie are arrays; the vocabulary is static
    data compared by identity), so it passes through ``jit`` and ``vmap``; the
    state is a :class:`WordState`.

    Build one with :meth:`from_arpa` or :meth:`fit`.

    Attributes:
        table: the word n-gram :class:`seqctc._ngram.NGramTable`.
        trie_next: ``[nodes, C]`` int32 child of each trie node per character,
            −1 for none.
        node_word: ``[nodes]`` int32 word id of the word ending at each node
            (``<unk>``'s id for lexicon words the LM lacks), −1 if none.
        node_bound: ``[nodes]`` float32 look-ahead score of each node.
        child_bound: ``[nodes]`` float32 largest look-ahead of a node's
            children (``NEG_INF`` for a leaf), for :meth:`max_score`.
        next_lookahead: ``[nodes, C]`` float32 look-ahead of the node one
            character spells from each node, ``NEG_INF`` where it leaves the
            trie: a one-character token is scored with one lookup, and the
            beam search scores every candidate token so before it keeps a few.
        token_chars: ``[K, L]`` int32 trie characters of each token (−1 pad,
            −2 for a character no known word has).
        token_kind: ``[K]`` int32 what each token does (ignore, spell, end a
            word, start a word).
        oov_penalty: float32 scalar ``λ``.
        max_lookahead: float32 scalar, the largest look-ahead of any partial
            word (for :meth:`max_score`).
        num_classes: ``K`` (static).
        restrict: whether the lexicon restricts hypotheses (static).
        sentence_end: whether :meth:`final_score` scores ``</s>`` (static).
        lookahead: whether partial words hold a look-ahead score (static).
        token_kinds: whether any non-blank token ignores, spells, ends or
            starts a word (static; tightens :meth:`max_score`).
        pinned_tokens: the tokens that end or start a word or spell only
            characters of the known words, when at most 128 (else empty;
            static). The beam search always ranks them, so it bounds only the
            other tokens (``max_score(state, unpinned=True)``), which leave the
            trie or do nothing: at a large vocabulary of another script, far
            tighter than the bound over every token.
    """

    table: NGramTable
    trie_next: Array
    node_word: Array
    node_bound: Array
    child_bound: Array
    next_lookahead: Array
    token_chars: Array
    token_kind: Array
    oov_penalty: Array
    max_lookahead: Array
    num_classes: int
    restrict: bool
    sentence_end: bool = True
    lookahead: bool = True
    token_kinds: tuple[bool, bool, bool, bool] = (True, True, True, True)
    pinned_tokens: tuple[int, ...] = ()

    # ------------------------------------------------------------ protocol

    @property
    def order(self) -> int:
        return self.table.order

    @property
    def vocab(self) -> list:
        """The words of the n-gram model (``<s>``, ``</s>``, ``<unk>`` included)."""
        return self.table.vocab

    def initial_state(self) -> WordState:
        """The state of the empty prefix: context ``<s>``, no partial word."""
        context = self.table.initial_context(bos=True)
        return WordState(
            context=context,
            node=jnp.asarray(_ROOT, jnp.int32),
            partial=jnp.zeros((), jnp.float32),
            word_log_prob=jnp.zeros((), jnp.float32),
            word_context=context,
        )

    def score(self, state: WordState, token: ArrayLike) -> tuple[WordState, Array]:
        """``(new state, LM log score increment)`` for one int32 ``token``.

        ``NEG_INF`` where the lexicon rules the extended prefix out.
        """
        step = self._step(state, token)
        return step.state, jnp.where(step.dead, NEG_INF, step.log_prob)

    def final_score(self, state: WordState) -> Array:
        """Score of ending the hypothesis: its partial word and ``</s>``."""
        log_prob, _, dead = self._final(state)
        return jnp.where(dead, NEG_INF, log_prob)

    def max_score(self, state: WordState, *, unpinned: bool = False) -> Array:
        """An upper bound of :meth:`score` over every token (for exact pruning).

        Spelling on moves to a trie node whose look-ahead is at most its
        parent's (the best word below it), so only a completed word, the start
        of a new word or leaving the trie can gain. With ``unpinned``, the
        bound over the tokens outside :attr:`pinned_tokens` (which the search
        ranks itself): they only spell on or do nothing.
        """
        return self._max_step(state, unpinned=unpinned)[0]

    def _max_step(
        self, state: WordState, *, unpinned: bool = False
    ) -> tuple[Array, Array]:
        """(bound of the LM increment over the non-blank tokens, word pending)."""
        pending = state.node != _ROOT
        word_lp, _, _ = self._complete(state)
        # A delimiter: the word's score, or 0 without a word.
        completed = jnp.where(pending, word_lp, 0.0) - state.partial
        off_trie = (
            self._lookahead(jnp.asarray(_OFF_TRIE))
            if not self.restrict
            else jnp.asarray(NEG_INF, jnp.float32)
        )
        # The best look-ahead a new partial word can get from the root.
        fresh = jnp.maximum(self.max_lookahead if self.lookahead else 0.0, off_trie)
        # Spelling on: the best look-ahead among the node's children, or the
        # <unk> score off the trie (where an off-trie prefix stays).
        safe = jnp.maximum(state.node, 0)
        here = self.child_bound[safe] if self.lookahead else 0.0
        spell = jnp.where(
            state.node > 0,
            jnp.maximum(here, off_trie),
            jnp.where(state.node == _ROOT, fresh, off_trie),
        )
        candidates = []
        has_ignore, has_spell, has_delimit, has_start = self.token_kinds
        if unpinned and self.pinned_tokens:
            # Every token that ends or starts a word, or spells only characters
            # of known words, is pinned: the others do nothing or leave the trie.
            has_delimit = has_start = False
            spell = off_trie
        if has_ignore:
            candidates.append(jnp.zeros((), jnp.float32))
        if has_spell:
            candidates.append(spell - state.partial)
        if has_delimit:
            candidates.append(completed)
        if has_start:
            candidates.append(completed + jnp.maximum(fresh, 0.0))
        bound = candidates[0] if candidates else jnp.zeros((), jnp.float32)
        for c in candidates[1:]:
            bound = jnp.maximum(bound, c)
        return bound.astype(jnp.float32), pending & (has_delimit or has_start)

    def with_weights(
        self, lm_weight: ArrayLike = 1.0, insertion_bonus: ArrayLike = 0.0
    ) -> WordLMFusion:
        r"""The fused scorer :math:`\alpha \log p_{lm} + \beta N_{words}`.

        Pass it as ``lm`` with ``lm_weight=1`` and ``insertion_bonus=0`` (the
        defaults) to :func:`seqctc.beam_decode`: ``β`` then counts words, as in
        pyctcdecode, rather than tokens.
        """
        return WordLMFusion(
            lm=self,
            lm_weight=jnp.asarray(lm_weight, jnp.float32),
            insertion_bonus=jnp.asarray(insertion_bonus, jnp.float32),
        )

    def _lookahead(self, node: Array) -> Array:
        """Look-ahead of a partial word; off the trie it is the ``<unk>`` score."""
        safe = jnp.maximum(node, 0)
        unk = self.table.log_probs[0][self.table.host.index[UNK]] + self.oov_penalty
        on_trie = self.node_bound[safe] if self.lookahead else 0.0
        return jnp.where(node >= 0, on_trie, unk)

    def _complete(self, state: WordState) -> tuple[Array, Array, Array]:
        """The partial word, completed: (log p + oov penalty, context, dead)."""
        word = jnp.where(
            state.node >= 0, self.node_word[jnp.maximum(state.node, 0)], -1
        )
        dead = jnp.asarray(self.restrict) & (word < 0)
        return state.word_log_prob, state.word_context, dead

    def _word_score(self, context: Array, node: Array) -> tuple[Array, Array]:
        """(log p + oov penalty, context after) of the word at trie ``node``."""
        unk_id = self.table.host.index[UNK]
        word = jnp.where(node >= 0, self.node_word[jnp.maximum(node, 0)], -1)
        word_id = jnp.where(word >= 0, word, unk_id)
        log_prob, new_context = self.table.score_word(context, word_id)
        log_prob = log_prob + jnp.where(word_id == unk_id, self.oov_penalty, 0.0)
        return log_prob.astype(jnp.float32), new_context

    def _step(self, state: WordState, token: ArrayLike) -> _Step:
        token = jnp.asarray(token, jnp.int32)
        kind = self.token_kind[token]
        chars = self.token_chars[token]  # [L]
        pending = state.node != _ROOT
        word_lp, word_ctx, word_dead = self._complete(state)  # the prefix's only
        node = jnp.where(kind == _START, _ROOT, state.node)
        for i in range(self.token_chars.shape[1]):
            c = chars[i]
            nxt = self.trie_next[jnp.maximum(node, 0), jnp.maximum(c, 0)]
            nxt = jnp.where((node < 0) | (c == _UNKNOWN_CHAR), _OFF_TRIE, nxt)
            node = jnp.where(c == _PAD_CHAR, node, nxt)
        ignore = kind == _IGNORE
        node = jnp.where(kind == _DELIMIT, _ROOT, node)
        node = jnp.where(ignore, state.node, node)
        completes = ((kind == _DELIMIT) | (kind == _START)) & pending
        if self.token_chars.shape[1] > 1:
            partial = jnp.where(node == _ROOT, 0.0, self._lookahead(node))
            off = node == _OFF_TRIE
        else:
            # The score from one lookup, without the node spelled: where only
            # the score is used (every candidate token), the trie walk above is
            # left out of the computation.
            c = chars[0]
            start = jnp.where(kind == _START, _ROOT, state.node)
            unknown = (start < 0) | (c == _UNKNOWN_CHAR)
            ahead = self.next_lookahead[jnp.maximum(start, 0), jnp.maximum(c, 0)]
            off = (c != _PAD_CHAR) & (unknown | (ahead <= NEG_INF / 2))
            partial = jnp.where(
                c == _PAD_CHAR,
                0.0,
                jnp.where(off, self._lookahead(jnp.asarray(_OFF_TRIE)), ahead),
            )
        partial = jnp.where(ignore, state.partial, partial)
        log_prob = jnp.where(completes, word_lp, 0.0) + partial - state.partial
        dead = jnp.asarray(self.restrict) & ((completes & word_dead) | off)
        context = jnp.where(completes, word_ctx, state.context)
        node = node.astype(jnp.int32)
        # Scored here once per new prefix, not once per extension tried.
        next_lp, next_ctx = self._word_score(context, node)
        new_state = WordState(
            context=context,
            node=node,
            partial=partial.astype(jnp.float32),
            word_log_prob=next_lp,
            word_context=next_ctx,
        )
        return _Step(new_state, log_prob, completes.astype(jnp.int32), dead)

    def _final(self, state: WordState) -> tuple[Array, Array, Array]:
        """(log score of ending here, words completed, dead)."""
        pending = state.node != _ROOT
        word_lp, word_ctx, word_dead = self._complete(state)
        context = jnp.where(pending, word_ctx, state.context)
        log_prob = jnp.where(pending, word_lp, 0.0) - state.partial
        if self.sentence_end:
            end_lp, _ = self.table.score_word(context, self.table.host.index[EOS])
            log_prob = log_prob + end_lp
        return log_prob, pending.astype(jnp.int32), pending & word_dead

    # ------------------------------------------------------------ scoring

    def sentence_log_prob(
        self, words: str | Sequence[str], *, bos: bool = True, eos: bool = True
    ) -> float:
        """Natural-log probability of a word sequence (= ln 10 · kenlm's score).

        Computed on the host in float64 from the same n-grams as the jittable
        :meth:`score` (which the tests hold to it and to kenlm).

        Args:
            words: a string (split on whitespace) or a sequence of words; words
                outside the vocabulary score as ``<unk>`` (no ``oov_penalty``).
            bos: start from the context ``<s>``.
            eos: score ``</s>`` at the end.
        """
        if isinstance(words, str):
            words = words.split()
        table = self.table
        ids = [table.word_id(w) for w in words]
        if eos:
            ids.append(table.host.index[EOS])
        history = [table.host.index[BOS]] if bos else []
        total = 0.0
        for i in ids:
            total += table.host_log_prob(history, i)
            history.append(i)
        return total

    def to_arpa(self, path: Any) -> None:
        """Writes the n-gram model as an ARPA file (readable by kenlm)."""
        self.table.write_arpa(path)

    # ------------------------------------------------------------ builders

    @classmethod
    def from_arpa(
        cls,
        path: Any,
        tokens: Sequence[str],
        *,
        word_delimiter: str = " ",
        lexicon: Iterable[str] | None = None,
        unk_log_prob: float | None = None,
        blank_id: int = 0,
        oov_penalty: float = 0.0,
        lookahead: bool = True,
        sentence_end: bool = True,
    ) -> WordNGramLM:
        r"""Loads an ARPA file (as written by KenLM ``lmplz``, SRILM, :meth:`to_arpa`).

        Args:
            path: the ARPA text file (log10 probabilities and back-offs).
            tokens: ``K`` strings, ``tokens[k]`` the text of class ``k`` (the
                blank's entry is ignored).
            word_delimiter: the token that ends a word (``" "`` or ``"|"``).
            lexicon: if given, the only words hypotheses may hold (kept as a
                trie); lexicon words the LM lacks score as ``<unk>``.
            unk_log_prob: natural-log probability of ``<unk>``, overriding the
                file's (a file without ``<unk>`` gets kenlm's log10 −100).
            blank_id: the blank class.
            oov_penalty: ``λ``, natural log, added per out-of-vocabulary word
                in decoding (pyctcdecode's ``unk_score_offset`` is
                ``λ / ln 10`` before ``α``).
            lookahead: give a partial word the best unigram score of the known
                words it can become (else 0 until it completes); a partial
                word no known word starts with holds the ``<unk>`` score plus
                ``oov_penalty`` either way (pyctcdecode penalises it too).
            sentence_end: score ``</s>`` at the end of a hypothesis.

        Returns:
            A :class:`WordNGramLM`.

        Raises:
            ValueError: for an unreadable ARPA file, an empty ``tokens``, a
                ``blank_id`` outside ``[0, K)`` or a trie too large.
        """
        _, grams = read_arpa(path)
        table = table_from_arpa_grams(grams, unk_log_prob=unk_log_prob)
        return cls._build(
            table,
            tokens,
            word_delimiter=word_delimiter,
            lexicon=lexicon,
            blank_id=blank_id,
            oov_penalty=oov_penalty,
            lookahead=lookahead,
            sentence_end=sentence_end,
        )

    @classmethod
    def fit(
        cls,
        sentences: Iterable[str | Sequence[str]],
        *,
        order: int,
        tokens: Sequence[str],
        word_delimiter: str = " ",
        lexicon: Iterable[str] | None = None,
        discounts: Sequence[Sequence[float]] | None = None,
        blank_id: int = 0,
        oov_penalty: float = 0.0,
        lookahead: bool = True,
        sentence_end: bool = True,
    ) -> WordNGramLM:
        r"""Estimates a word n-gram model with modified Kneser–Ney smoothing.

        Interpolated modified Kneser–Ney (Chen & Goodman 1998, as KenLM
        ``lmplz`` estimates it: continuation counts below the top order, three
        discounts per order from the count-of-counts, the unigrams interpolated
        with the uniform distribution over the vocabulary), stored in back-off
        form; :meth:`to_arpa` writes it out. See
        :func:`seqctc._ngram.kneser_ney_grams` for the formulas.

        Args:
            sentences: strings (split on whitespace) or word sequences.
            order: ``n ≥ 1``.
            tokens: as in :meth:`from_arpa`, like ``word_delimiter``,
                ``lexicon``, ``blank_id``, ``oov_penalty``, ``lookahead`` and
                ``sentence_end``.
            discounts: ``n`` triples ``(D1, D2, D3+)`` to use instead of the
                count-of-counts estimate (which falls back to ``(0.5, 1, 1.5)``
                on corpora too small for it, like lmplz's
                ``--discount_fallback``).

        Returns:
            A :class:`WordNGramLM`.

        Examples:
            >>> import seqctc
            >>> lm = seqctc.WordNGramLM.fit(["a b", "a c"], order=2,
            ...                             tokens=["", " ", "a", "b", "c"])
            >>> round(lm.sentence_log_prob("a b"), 4)  # ln(0.6 * 0.35 * 0.65)
            -1.9914
        """
        order = check_order(order)
        split = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        table = kneser_ney_table(split, order=order, discounts=discounts)
        return cls._build(
            table,
            tokens,
            word_delimiter=word_delimiter,
            lexicon=lexicon,
            blank_id=blank_id,
            oov_penalty=oov_penalty,
            lookahead=lookahead,
            sentence_end=sentence_end,
        )

    @classmethod
    def _build(
        cls,
        table: NGramTable,
        tokens: Sequence[str],
        *,
        word_delimiter: str,
        lexicon: Iterable[str] | None,
        blank_id: int,
        oov_penalty: float,
        lookahead: bool,
        sentence_end: bool,
    ) -> WordNGramLM:
        tokens = [str(t) for t in tokens]
        num_classes = len(tokens)
        if num_classes < 1:
            raise ValueError("`tokens` must not be empty.")
        if not 0 <= blank_id < num_classes:
            raise ValueError(
                f"`blank_id` must lie in [0, {num_classes}), got {blank_id}."
            )
        index = table.host.index
        unk_id = index[UNK]
        uni = table.host.grams[0]
        unk_score = uni[(unk_id,)][0] + oov_penalty
        if lexicon is None:
            words = [w for w in table.vocab if w not in (BOS, EOS, UNK)]
        else:
            words = list(dict.fromkeys(str(w) for w in lexicon))
        words = [w for w in words if w]
        alphabet = sorted({c for w in words for c in w})
        char_id = {c: i for i, c in enumerate(alphabet)}

        # The trie: children by insertion, so a child's id exceeds its parent's.
        children: list[dict[int, int]] = [{}]
        ends: dict[int, int] = {}
        for w in words:
            node = _ROOT
            for c in w:
                nxt = children[node].get(char_id[c])
                if nxt is None:
                    nxt = len(children)
                    children[node][char_id[c]] = nxt
                    children.append({})
                node = nxt
            ends[node] = index.get(w, unk_id)
        num_nodes = len(children)
        width = max(len(alphabet), 1)
        if num_nodes * width > _MAX_TRIE:
            raise ValueError(
                f"The word trie needs {num_nodes} x {width} transitions, more "
                f"than {_MAX_TRIE}."
            )
        trie_next = np.full((num_nodes, width), _OFF_TRIE, np.int32)
        parent = np.zeros(num_nodes, np.int64)
        for node, kids in enumerate(children):
            for c, child in kids.items():
                trie_next[node, c] = child
                parent[child] = node
        node_word = np.full(num_nodes, -1, np.int32)
        bound = np.full(num_nodes, -np.inf)
        for node, wid in ends.items():
            node_word[node] = wid
            bound[node] = uni[(wid,)][0] + (oov_penalty if wid == unk_id else 0.0)
        for node in range(num_nodes - 1, 0, -1):
            bound[parent[node]] = max(bound[parent[node]], bound[node])
        if not lookahead:
            bound[:] = 0.0
        bound[_ROOT] = 0.0
        bound = np.where(np.isfinite(bound), bound, unk_score)
        child_bound = np.full(num_nodes, NEG_INF)
        for node in range(1, num_nodes):
            child_bound[parent[node]] = max(child_bound[parent[node]], bound[node])

        kinds = np.full(num_classes, _SPELL, np.int32)
        spelled: list[list[int]] = []
        for k, text in enumerate(tokens):
            if k == blank_id or text == "":
                kinds[k] = _IGNORE
                text = ""
            elif text == word_delimiter:
                kinds[k] = _DELIMIT
                text = ""
            elif text.startswith(WORD_PIECE_START):
                kinds[k] = _START
                text = text[1:]
            spelled.append([char_id.get(c, _UNKNOWN_CHAR) for c in text])
        length = max(1, max(len(s) for s in spelled))
        token_chars = np.full((num_classes, length), _PAD_CHAR, np.int32)
        for k, s in enumerate(spelled):
            token_chars[k, : len(s)] = s
        known = np.array([all(c >= 0 for c in s) for s in spelled])
        pinned = np.flatnonzero(
            (kinds == _DELIMIT) | (kinds == _START) | ((kinds == _SPELL) & known)
        )
        return cls(
            table=table,
            trie_next=jnp.asarray(trie_next),
            node_word=jnp.asarray(node_word),
            node_bound=jnp.asarray(bound, jnp.float32),
            child_bound=jnp.asarray(child_bound, jnp.float32),
            next_lookahead=jnp.asarray(
                np.where(trie_next >= 0, bound[np.maximum(trie_next, 0)], NEG_INF),
                jnp.float32,
            ),
            token_chars=jnp.asarray(token_chars),
            token_kind=jnp.asarray(kinds),
            oov_penalty=jnp.asarray(oov_penalty, jnp.float32),
            max_lookahead=jnp.asarray(
                np.max(bound[1:]) if lookahead and num_nodes > 1 else 0.0, jnp.float32
            ),
            num_classes=num_classes,
            restrict=lexicon is not None,
            sentence_end=bool(sentence_end),
            lookahead=bool(lookahead),
            token_kinds=tuple(
                bool(np.any(np.delete(kinds, blank_id) == kind))
                for kind in (_IGNORE, _SPELL, _DELIMIT, _START)
            ),
            pinned_tokens=tuple(int(k) for k in pinned)
            if len(pinned) <= _MAX_PINNED
            else (),
        )


jax.tree_util.register_dataclass(
    WordNGramLM,
    data_fields=[
        "table",
        "trie_next",
        "node_word",
        "node_bound",
        "child_bound",
        "next_lookahead",
        "token_chars",
        "token_kind",
        "oov_penalty",
        "max_lookahead",
    ],
    meta_fields=[
        "num_classes",
        "restrict",
        "sentence_end",
        "lookahead",
        "token_kinds",
        "pinned_tokens",
    ],
)


@dataclasses.dataclass(frozen=True)
class WordLMFusion:
    r"""A :class:`WordNGramLM` with its weights: score :math:`\alpha \log p_{lm}
    + \beta N_{words}` per extension (``NEG_INF`` where the lexicon forbids).

    A :class:`seqctc.LanguageModel`; use it with ``lm_weight=1`` and
    ``insertion_bonus=0`` in :func:`seqctc.beam_decode`. Made by
    :meth:`WordNGramLM.with_weights`.
    """

    lm: WordNGramLM
    lm_weight: Array
    insertion_bonus: Array

    @property
    def num_classes(self) -> int:
        return self.lm.num_classes

    @property
    def pinned_tokens(self) -> tuple[int, ...]:
        return self.lm.pinned_tokens

    def initial_state(self) -> WordState:
        return self.lm.initial_state()

    def score(self, state: WordState, token: ArrayLike) -> tuple[WordState, Array]:
        step = self.lm._step(state, token)
        fused = self.lm_weight * step.log_prob + self.insertion_bonus * (
            step.words.astype(jnp.float32)
        )
        return step.state, jnp.where(step.dead, NEG_INF, fused)

    def max_score(self, state: WordState, *, unpinned: bool = False) -> Array:
        """An upper bound of :meth:`score` over every token (+inf if α < 0);
        over the tokens outside :attr:`pinned_tokens` with ``unpinned``."""
        bound, pending = self.lm._max_step(state, unpinned=unpinned)
        fused = self.lm_weight * bound + jnp.maximum(self.insertion_bonus, 0.0) * (
            pending.astype(jnp.float32)
        )
        return jnp.where(self.lm_weight >= 0, fused, jnp.inf)

    def final_score(self, state: WordState) -> Array:
        log_prob, words, dead = self.lm._final(state)
        fused = self.lm_weight * log_prob + self.insertion_bonus * words.astype(
            jnp.float32
        )
        return jnp.where(dead, NEG_INF, fused)


jax.tree_util.register_dataclass(
    WordLMFusion, data_fields=["lm", "lm_weight", "insertion_bonus"], meta_fields=[]
)
