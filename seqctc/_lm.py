"""Language models for shallow fusion in beam search, and hotword automata."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import NEG_INF, Array, ArrayLike

# Largest n-gram table CharNGramLM builds (entries of [V**(n-1), V]).
_MAX_TABLE = 2**26


class LanguageModel(Protocol):
    """What :func:`seqctc.beam_decode` needs from a language model.

    A language model is a pytree (a NamedTuple or registered dataclass of
    arrays) whose methods are pure and jittable. The state is any pytree of
    arrays describing a prefix; the beam search batches it with ``vmap``.
    """

    def initial_state(self) -> Any:
        """The state of the empty prefix."""

    def score(self, state: Any, token: Array) -> tuple[Any, Array]:
        """``(new_state, log p(token | prefix))`` for one int32 ``token``."""

    def final_score(self, state: Any) -> Array:
        """``log p(end of sentence | prefix)``; return 0.0 if not modelled."""


@dataclasses.dataclass(frozen=True)
class CharNGramLM:
    r"""A character (token) n-gram language model stored as a dense table.

    The state of a prefix is its last ``order − 1`` tokens encoded as one int
    (base ``V = num_classes + 1``, the most recent token in the lowest digit;
    digit ``num_classes`` is the sentence boundary, so the empty prefix is all
    boundaries). ``log_probs[state, token]`` is the log probability of the next
    token, column ``num_classes`` the end of sentence. Build one with
    :meth:`fit`. It is a pytree, so it can be passed through ``jit``.

    Attributes:
        log_probs: ``[V ** (order − 1), V]`` float32 conditional log
            probabilities; tokens outside the support hold ``NEG_INF``.
        order: ``n`` (static).
        num_classes: ``K``, the classes of the acoustic model (static).
        sentence_end: whether :meth:`final_score` scores the sentence end.
    """

    log_probs: Array
    order: int
    num_classes: int
    sentence_end: bool = True

    @property
    def num_states(self) -> int:
        return (self.num_classes + 1) ** (self.order - 1)

    def initial_state(self) -> Array:
        """The all-boundary context of the empty prefix (an int32 scalar)."""
        return jnp.asarray(self.num_states - 1, jnp.int32)

    def score(self, state: ArrayLike, token: ArrayLike) -> tuple[Array, Array]:
        """``(next state, log p(token | state))``; broadcasts over arrays."""
        state = jnp.asarray(state, jnp.int32)
        token = jnp.asarray(token, jnp.int32)
        log_p = self.log_probs[state, token]
        new_state = (state * (self.num_classes + 1) + token) % self.num_states
        return new_state, log_p

    def final_score(self, state: ArrayLike) -> Array:
        """Log probability of the sentence end (0 when ``sentence_end=False``)."""
        state = jnp.asarray(state, jnp.int32)
        if not self.sentence_end:
            return jnp.zeros(state.shape, self.log_probs.dtype)
        return self.log_probs[state, self.num_classes]

    @classmethod
    def fit(
        cls,
        sequences: Iterable[Sequence[int]],
        *,
        order: int,
        num_classes: int,
        blank_id: int | None = 0,
        smoothing: str = "kneser_ney",
        add_k: float = 1.0,
        discount: float = 0.75,
        sentence_end: bool = True,
    ) -> CharNGramLM:
        r"""Estimates an n-gram model from token sequences (numpy, not jittable).

        Each sequence is padded with ``order − 1`` sentence starts (and one
        sentence end when ``sentence_end``). The next token ranges over the
        support :math:`S`: the ``num_classes`` classes except ``blank_id``, plus
        the sentence end when ``sentence_end``.

        ``smoothing="add_k"``:

        .. math::

            p(w \mid h) = \frac{c(h w) + k}{c(h) + k |S|}.

        ``smoothing="kneser_ney"`` (interpolated, one discount ``d``;
        lower orders use continuation counts
        :math:`N_{1+}(\bullet h w)`, the bottom is uniform over :math:`S`):

        .. math::

            p(w \mid h) = \frac{\max(c(h w) - d, 0)}{c(h)}
                + \frac{d\, N_{1+}(h \bullet)}{c(h)}\, p(w \mid h'),

        with :math:`h'` the context without its oldest token, and
        :math:`p(w \mid h) = p(w \mid h')` for unseen contexts.

        Args:
            sequences: token sequences, ints in ``[0, num_classes)``.
            order: ``n ≥ 1``.
            num_classes: ``K`` of the acoustic model, blank included.
            blank_id: the blank class, excluded from the support; None keeps
                every class.
            smoothing: ``"kneser_ney"`` or ``"add_k"``.
            add_k: ``k > 0`` for add-k smoothing.
            discount: ``d`` in ``(0, 1]`` for Kneser–Ney.
            sentence_end: model the end of sentence.

        Returns:
            A :class:`CharNGramLM`.

        Raises:
            ValueError: for a bad ``order``, ``num_classes``, ``blank_id``,
                ``smoothing``, ``add_k`` or ``discount``, a table larger than
                2**26 entries, or a token outside ``[0, num_classes)`` or equal
                to the blank in ``sequences``.

        Examples:
            >>> import seqctc
            >>> lm = seqctc.CharNGramLM.fit([[1, 2], [1, 1]], order=2,
            ...                             num_classes=3, smoothing="add_k")
            >>> state, log_p = lm.score(lm.initial_state(), 1)
            >>> float(jnp.exp(log_p))  # (2 + 1) / (2 + 3): tokens 1, 2 and end
            0.6
        """
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
            raise ValueError(f"`order` must be a Python int, got {order!r}.")
        if order < 1:
            raise ValueError(f"`order` must be at least 1, got {order}.")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int, got {num_classes}."
            )
        if blank_id is not None and not 0 <= blank_id < num_classes:
            raise ValueError(
                f"`blank_id` must lie in [0, {num_classes}) or be None, got {blank_id}."
            )
        if smoothing not in ("kneser_ney", "add_k"):
            raise ValueError(
                f"`smoothing` must be 'kneser_ney' or 'add_k', got {smoothing!r}."
            )
        if smoothing == "add_k" and not add_k > 0:
            raise ValueError(f"`add_k` must be positive, got {add_k}.")
        if smoothing == "kneser_ney" and not 0 < discount <= 1:
            raise ValueError(f"`discount` must lie in (0, 1], got {discount}.")
        vocab = num_classes + 1
        boundary = num_classes
        if vocab ** (order - 1) * vocab > _MAX_TABLE:
            raise ValueError(
                f"`order`={order} with {num_classes} classes needs a table of "
                f"{vocab**order} entries, more than {_MAX_TABLE}."
            )
        support = np.ones(vocab, bool)
        if blank_id is not None:
            support[blank_id] = False
        support[boundary] = sentence_end

        # Raw counts of the highest order, contexts encoded like the state.
        num_states = vocab ** (order - 1)
        counts = np.zeros((num_states, vocab), np.float64)
        for sequence in sequences:
            tokens = [int(x) for x in sequence]
            for x in tokens:
                if not 0 <= x < num_classes or x == blank_id:
                    raise ValueError(
                        f"`sequences` holds token {x}, outside [0, {num_classes})"
                        " or equal to the blank."
                    )
            state = num_states - 1
            targets = tokens + ([boundary] if sentence_end else [])
            for x in targets:
                counts[state, x] += 1
                state = (state * vocab + x) % num_states

        uniform = np.where(support, 1.0 / support.sum(), 0.0)  # [V]
        if smoothing == "add_k":
            totals = counts.sum(axis=1, keepdims=True)
            probs = (counts + add_k) / (totals + add_k * support.sum())
            probs = np.where(support[None, :], probs, 0.0)
        else:
            # Count tables per order j = n, n-1, ..., 1; shape [V**(j-1), V].
            tables = [counts]
            for j in range(order - 1, 0, -1):
                higher = tables[-1].reshape(vocab, vocab ** (j - 1), vocab)
                tables.append((higher > 0).sum(axis=0).astype(np.float64))
            probs = uniform[None, :]  # order 0: [1, V]
            for j, table in zip(range(1, order + 1), reversed(tables), strict=True):
                ctx = np.arange(vocab ** (j - 1)) % max(vocab ** (j - 2), 1)
                lower = probs[ctx] if j > 1 else np.broadcast_to(probs, table.shape)
                totals = table.sum(axis=1, keepdims=True)
                types = (table > 0).sum(axis=1, keepdims=True)
                safe = np.maximum(totals, 1.0)
                mixed = (
                    np.maximum(table - discount, 0.0) / safe
                    + discount * types / safe * lower
                )
                probs = np.where(totals > 0, mixed, lower)
        with np.errstate(divide="ignore"):
            log_probs = np.where(probs > 0, np.log(probs), NEG_INF)
        return cls(
            log_probs=jnp.asarray(log_probs, jnp.float32),
            order=int(order),
            num_classes=int(num_classes),
            sentence_end=bool(sentence_end),
        )


jax.tree_util.register_dataclass(
    CharNGramLM,
    data_fields=["log_probs"],
    meta_fields=["order", "num_classes", "sentence_end"],
)


def hotword_automaton(
    hotwords: Sequence[Sequence[int]], num_classes: int, blank_id: int
) -> tuple[Array, Array]:
    """Knuth–Morris–Pratt automata matching each hotword at a prefix's end.

    Args:
        hotwords: ``H`` non-empty token sequences.
        num_classes: ``K``.
        blank_id: the blank, which no hotword may hold.

    Returns:
        ``(transitions [H, L + 1, K] int32, lengths [H] int32)``:
        ``transitions[h, m, c]`` is the number of tokens of hotword ``h`` matched
        after appending ``c`` to a prefix that matched ``m``.

    Raises:
        ValueError: if a hotword is empty or holds the blank or a class outside
            ``[0, K)``.
    """
    words = []
    for word in hotwords:
        word = [int(x) for x in word]
        if not word:
            raise ValueError("`hotwords` must not contain an empty sequence.")
        for x in word:
            if not 0 <= x < num_classes or x == blank_id:
                raise ValueError(
                    f"`hotwords` holds token {x}, outside [0, {num_classes}) or "
                    "equal to the blank."
                )
        words.append(word)
    max_len = max(len(w) for w in words)
    trans = np.zeros((len(words), max_len + 1, num_classes), np.int32)
    for h, word in enumerate(words):
        fail = 0  # state reached by the longest proper border of word[:m]
        for m in range(len(word) + 1):
            if m > 0:
                trans[h, m] = trans[h, fail]
            if m < len(word):
                trans[h, m, word[m]] = m + 1
                if m > 0:
                    fail = trans[h, fail, word[m]]
    lengths = np.array([len(w) for w in words], np.int32)
    return jnp.asarray(trans), jnp.asarray(lengths)
