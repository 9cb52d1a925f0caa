"""Shallow fusion for the beam search: LM, insertion bonus and hotwords, one score.

The beam search sees a single object, :class:`Fusion`, with four pure methods
over a per-prefix state: the state of the empty prefix, the score an extension
adds (``delta``), the advanced state, an upper bound of ``delta`` over every
class (what lets the search rank only a few classes per frame and still be
exact), and the end-of-sentence score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._lm import LanguageModel, hotword_automaton
from seqctc._types import Array, ArrayLike
from seqctc._wordlm import WordNGramLM

# Up to this many hotwords, each is matched with its own lookup.
_UNROLLED_HOTWORDS = 8


class FusionState(NamedTuple):
    """Per-prefix fusion state; every leaf has the prefixes as leading axes."""

    lm: Any  # the LM's state pytree (an int32 0 without an LM)
    hot: Array  # [..., H] int32 matched tokens of each hotword (H may be 0)


class Fusion(NamedTuple):
    r"""The fused extension score of a prefix ``ℓ`` by a token ``c``:

    .. math::

        \delta(\ell, c) = \alpha \log p_{lm}(c \mid \ell) + \beta
            + \gamma\,\bigl(h(\ell c) - h(\ell)\bigr),

    with ``h`` the hotword count. A pytree (arrays as leaves), so it passes
    through ``jit``. Build one with :func:`make_fusion`.
    """

    lm: LanguageModel | None
    lm_weight: Array  # α
    insertion_bonus: Array  # β
    # [H, L + 1, U + 1] int32 KMP transitions on the U distinct hotword tokens
    # and, in the last column, on any other token (which resets every match).
    hot_trans: Array | None
    hot_lengths: Array | None  # [H] int32
    hot_tokens: Array | None  # [U] int32 distinct tokens of the hotwords
    hot_index: Array | None  # [K] int32 column of each class in hot_trans
    hotword_weight: Array  # γ
    # [P] int32 tokens every frame ranks: the LM's ``pinned_tokens`` (None if
    # it has none).
    pinned: Array | None = None
    # [H, L] int32 the hotwords' tokens (−1 padded): each prefix ranks the
    # token each hotword expects next (see :meth:`hot_next`).
    hot_words: Array | None = None

    def initial_state(self) -> FusionState:
        lm = (
            jnp.zeros((), jnp.int32)
            if self.lm is None
            else jax.tree.map(jnp.asarray, self.lm.initial_state())
        )
        num_hot = 0 if self.hot_lengths is None else self.hot_lengths.shape[0]
        return FusionState(lm=lm, hot=jnp.zeros((num_hot,), jnp.int32))

    def _hot_step(self, state: Array, token: Array) -> tuple[Array, Array]:
        """``(new hotword state [..., H], gain in matched tokens [...])``."""
        num_hot = state.shape[-1]
        column = self.hot_index[token]
        if num_hot <= _UNROLLED_HOTWORDS:
            # One lookup per hotword and elementwise maxima and sums: a
            # reduction over a minor axis of a few entries is slow on CPU.
            completed = jnp.zeros(column.shape, jnp.int32)
            best = jnp.zeros(column.shape, jnp.int32)
            before = jnp.zeros(column.shape, jnp.int32)
            matched = []
            for h in range(num_hot):
                n = self.hot_trans[h, state[..., h], column]
                done = n == self.hot_lengths[h]
                completed = completed + jnp.where(done, self.hot_lengths[h], 0)
                n = jnp.where(done, 0, n)
                best = jnp.maximum(best, n)
                before = jnp.maximum(before, state[..., h])
                matched.append(n)
            nxt = jnp.stack(matched, axis=-1)
            return nxt, completed + best - before
        h_idx = jnp.broadcast_to(jnp.arange(num_hot, dtype=jnp.int32), state.shape)
        nxt = self.hot_trans[
            h_idx, state, jnp.broadcast_to(column[..., None], state.shape)
        ]
        lengths = jnp.broadcast_to(self.hot_lengths, nxt.shape)
        done = nxt == lengths
        completed = jnp.sum(jnp.where(done, lengths, 0), axis=-1)
        nxt = jnp.where(done, 0, nxt)
        gain = (
            completed
            + jnp.max(nxt, axis=-1, initial=0)
            - jnp.max(state, axis=-1, initial=0)
        )
        return nxt, gain

    def step(
        self, state: FusionState, token: Array, dtype
    ) -> tuple[FusionState, Array]:
        """``(state after token, δ)`` for one prefix state and one token."""
        lm_state, log_p = state.lm, None
        if self.lm is not None:
            lm_state, log_p = self.lm.score(state.lm, token)
        hot, delta = self._delta(state, token, log_p, dtype)
        return FusionState(lm=lm_state, hot=hot), delta

    def listed_delta(
        self, state: FusionState, token: Array, log_p: Array, dtype
    ) -> Array:
        """``δ`` of one of the LM's listed classes, whose ``log p`` is known."""
        return self._delta(state, token, log_p, dtype)[1]

    def _delta(self, state: FusionState, token: Array, log_p, dtype):
        """``(hotword state after token, δ)`` given the LM's ``log p`` (None
        without an LM)."""
        delta = self.insertion_bonus.astype(dtype)
        if log_p is not None:
            delta = delta + self.lm_weight.astype(dtype) * jnp.asarray(log_p, dtype)
        hot = state.hot
        if self.hot_trans is not None:
            hot, gain = self._hot_step(state.hot, token)
            delta = delta + self.hotword_weight.astype(dtype) * gain.astype(dtype)
        return hot, delta

    @property
    def num_hot(self) -> int:
        """``H``, the number of hotwords (static)."""
        return 0 if self.hot_words is None else self.hot_words.shape[0]

    def hot_next(self, state: FusionState) -> Array:
        """``[H]`` the token each hotword expects next after a prefix.

        Only these can gain: any other token matches at most as many tokens of
        each hotword as before (the automaton falls back to a border of the
        match) and completes none.
        """
        rows = jnp.arange(self.num_hot, dtype=jnp.int32)
        return self.hot_words[rows, state.hot]

    @property
    def num_listed(self) -> int:
        """``M`` of the LM's :meth:`next_tokens` (0 if it has none; static)."""
        return int(getattr(self.lm, "num_next", 0)) if self.lm is not None else 0

    def next_tokens(self, state: FusionState) -> tuple[Array, Array]:
        """``(classes [M], rest)``: the LM's most probable next classes after a
        prefix and an upper bound of its ``log p`` of every other class."""
        return self.lm.next_tokens(state.lm)

    def listed(self, state: FusionState) -> tuple[Array, Array | None]:
        """``(classes [M], log p [M])`` of the LM's listed classes (``log p``
        None when the LM does not give it: :meth:`step` then scores them)."""
        with_log_p = getattr(self.lm, "next_log_probs", None)
        if with_log_p is None:
            return self.lm.next_tokens(state.lm)[0], None
        classes, log_p, _ = with_log_p(state.lm)
        return classes, log_p

    def delta_bound(
        self,
        state: FusionState,
        dtype,
        *,
        pinned_ranked: bool = False,
        listed: bool = False,
        hot_listed: bool = False,
    ) -> Array:
        """An upper bound of ``δ(ℓ, c)`` over every class ``c`` (+inf if unknown).

        With ``pinned_ranked``, over the classes outside :attr:`pinned` (which
        the caller ranks itself): the LM bounds only its unpinned tokens. With
        ``listed``, over the classes outside the LM's :meth:`next_tokens` of
        the prefix too (which the caller ranks for that prefix): their LM
        score is at most ``rest``. With ``hot_listed``, over the classes
        outside :meth:`hot_next` of the prefix (ranked by the caller): their
        hotword gain is at most 0, and ``−max(state)`` (the matches they
        break) for the classes outside every hotword.
        """
        bound = self.insertion_bonus.astype(dtype)
        if self.lm is not None:
            max_score = getattr(self.lm, "max_score", None)
            alpha = self.lm_weight.astype(dtype)
            if max_score is None:
                bound = bound + jnp.asarray(jnp.inf, dtype)
            else:
                # α · log p ≤ α · max_score for α ≥ 0; log p has no lower
                # bound, so a negative α bounds nothing (every class is ranked).
                if listed:
                    top = self.next_tokens(state)[1]
                elif pinned_ranked and getattr(self.lm, "pinned_tokens", ()):
                    top = max_score(state.lm, unpinned=True)
                else:
                    top = max_score(state.lm)
                top = jnp.asarray(top, dtype)
                bound = bound + jnp.where(alpha >= 0, alpha * top, jnp.inf)
        if self.hot_trans is not None:
            # A token outside every hotword resets all matches: gain −max(state).
            # The hotword tokens are few; evaluate them all.
            reset = -jnp.max(state.hot, initial=0)
            tokens = self.hot_tokens
            shape = (tokens.shape[0], *state.hot.shape)
            _, gains = self._hot_step(jnp.broadcast_to(state.hot, shape), tokens)
            if hot_listed:  # the expected tokens are ranked: leave them out
                expected = self.hot_next(state)
                ranked = jnp.any(tokens[:, None] == expected[None, :], axis=-1)
                gains = jnp.where(ranked, reset, gains)
            best = jnp.maximum(jnp.max(gains), reset).astype(dtype)
            gamma = self.hotword_weight.astype(dtype)
            bound = bound + jnp.where(
                gamma >= 0,
                gamma * best,
                # γ < 0: the gain is at least −(longest hotword) per token.
                -gamma * jnp.max(self.hot_lengths).astype(dtype),
            )
        return bound

    def final_score(self, state: FusionState, dtype) -> Array:
        """α times the LM's end-of-sentence log probability (0 without an LM)."""
        if self.lm is None:
            return jnp.zeros((), dtype)
        return self.lm_weight.astype(dtype) * jnp.asarray(
            self.lm.final_score(state.lm), dtype
        )


def is_fused(
    lm: Any, insertion_bonus: ArrayLike, hotwords: Sequence[Sequence[int]] | None
) -> bool:
    """Whether the search needs the fused score (a static decision)."""
    if lm is not None or (hotwords is not None and len(hotwords) > 0):
        return True
    return not (isinstance(insertion_bonus, (int, float)) and insertion_bonus == 0)


def make_fusion(
    *,
    num_classes: int,
    blank_id: int,
    lm: LanguageModel | None,
    lm_weight: ArrayLike,
    insertion_bonus: ArrayLike,
    hotwords: Sequence[Sequence[int]] | None,
    hotword_weight: ArrayLike,
    dtype,
) -> Fusion:
    """Checks the fusion arguments against ``K`` and builds the :class:`Fusion`.

    Raises:
        ValueError: if ``lm`` has a ``num_classes`` other than ``K``, or a
            hotword is empty or holds the blank or a class outside ``[0, K)``.
    """
    lm_classes = getattr(lm, "num_classes", None) if lm is not None else None
    if lm_classes is not None and int(lm_classes) != num_classes:
        raise ValueError(
            f"`lm` models {lm_classes} classes but `logits` have {num_classes}."
        )
    if isinstance(lm, WordNGramLM):
        # A word LM scores words: α and β fold into its fused scorer, so that
        # the insertion bonus counts words (as pyctcdecode's) and not tokens.
        lm = lm.with_weights(lm_weight, insertion_bonus)
        lm_weight, insertion_bonus = 1.0, 0.0
    hot_trans = hot_lengths = hot_tokens = hot_index = hot_words = None
    pinned = set(getattr(lm, "pinned_tokens", ()) if lm is not None else ())
    if hotwords is not None and len(hotwords) > 0:
        trans, lengths = hotword_automaton(hotwords, num_classes, blank_id)
        hot_lengths = jnp.asarray(lengths)
        tokens = sorted({int(x) for word in hotwords for x in word})
        # Only the hotword tokens' columns differ from 0 (a token outside a
        # hotword resets its match): keep those and one column of zeros, so
        # the per-candidate lookup reads a table of a few hundred entries.
        others = np.delete(trans, tokens, axis=2)
        assert not others.any()
        hot_trans = jnp.asarray(
            np.concatenate([trans[:, :, tokens], np.zeros_like(trans[:, :, :1])], 2)
        )
        index = np.full((num_classes,), len(tokens), np.int32)
        index[tokens] = np.arange(len(tokens), dtype=np.int32)
        hot_index = jnp.asarray(index)
        hot_tokens = jnp.asarray(np.array(tokens, np.int32))
        longest = max(len(word) for word in hotwords)
        hot_words = jnp.asarray(
            np.array(
                [list(word) + [-1] * (longest - len(word)) for word in hotwords],
                np.int32,
            )
        )
    pinned.discard(blank_id)
    return Fusion(
        lm=lm,
        lm_weight=jnp.asarray(lm_weight, dtype),
        insertion_bonus=jnp.asarray(insertion_bonus, dtype),
        hot_trans=hot_trans,
        hot_lengths=hot_lengths,
        hot_tokens=hot_tokens,
        hot_index=hot_index,
        hotword_weight=jnp.asarray(hotword_weight, dtype),
        pinned=jnp.asarray(np.array(sorted(pinned), np.int32)) if pinned else None,
        hot_words=hot_words,
    )
