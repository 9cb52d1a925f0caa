"""Language models for shallow fusion in beam search, and hotword automata."""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import NEG_INF, Array, ArrayLike


class LanguageModel(Protocol):
    """What :func:`seqctc.beam_decode` needs from a language model.

    A language model is a pytree (a NamedTuple or registered dataclass of
    arrays) whose methods are pure and jittable. The state is any pytree of
    arrays describing a prefix; the beam search batches it with ``vmap``.

    Optional: ``max_score(state) -> Array``, an upper bound of
    ``log p(c | prefix)`` over every token ``c``. With it a fused search ranks
    only a few classes per frame and stays exact (see
    :func:`seqctc.beam_decode`); without it, every class is ranked. Also
    optional: a static ``num_next = M`` and ``next_tokens(state) -> (classes
    [M], rest)``, the ``M`` most probable next classes and an upper bound of
    ``log p`` of every other class; each prefix then ranks its ``M`` classes
    and the bound on the others uses ``rest`` (see :class:`CharNGramLM`).
    With ``next_log_probs(state) -> (classes [M], log_p [M], rest)`` too
    (``log_p`` equal to what :meth:`score` gives), the listed classes are
    scored without calling :meth:`score`. An attribute ``num_classes`` is
    checked against the logits.
    """

    def initial_state(self) -> Any:
        """The state of the empty prefix."""

    def score(self, state: Any, token: Array) -> tuple[Any, Array]:
        """``(new_state, log p(token | prefix))`` for one int32 ``token``."""

    def final_score(self, state: Any) -> Array:
        """``log p(end of sentence | prefix)``; return 0.0 if not modelled."""


def _hash_tokens(tokens, xp):
    """uint32 hash of int tokens along the last axis (numpy or jax.numpy)."""
    tokens = tokens.astype(xp.uint32)
    h = xp.full(tokens.shape[:-1], 0x811C9DC5, xp.uint32)
    for i in range(tokens.shape[-1]):
        h = (h ^ (tokens[..., i] + xp.uint32(1))) * xp.uint32(0x9E3779B1)
        h = h ^ (h >> xp.uint32(15))
        h = h * xp.uint32(0x85EBCA6B)
        h = h ^ (h >> xp.uint32(13))
    return h


class _Table(NamedTuple):
    """Open-addressing hash table from token tuples ``[j]`` to two floats."""

    keys: Array  # [S, j] int32, −1 in empty slots
    values: Array  # [S, 2] float32


def _build_table(entries: dict, width: int) -> tuple[_Table, int]:
    """``(table, probes)``: linear probing, ``probes`` = max reach.

    The load is 1/4, or 1/8 or 1/16 where that shortens the longest probe
    sequence to at most 4 slots (every lookup reads ``probes`` slots).
    """
    best = None
    for load in (4, 8, 16):
        size = 1
        while size < load * max(len(entries), 1):
            size *= 2
        built = _fill_table(entries, width, size)
        if best is None or built[2] < best[2]:
            best = built
        if best[2] <= 4:
            break
    keys, values, probes = best
    return _Table(jnp.asarray(keys), jnp.asarray(values)), probes


def _fill_table(entries: dict, width: int, size: int):
    keys = np.full((size, width), -1, np.int32)
    values = np.zeros((size, 2), np.float32)
    probes = 1
    if entries:
        tuples = np.array(list(entries), np.int64).reshape(len(entries), width)
        hashes = _hash_tokens(tuples.astype(np.uint32), np) & np.uint32(size - 1)
        for key, h, value in zip(tuples, hashes, entries.values(), strict=True):
            slot, step = int(h), 0
            while keys[slot, 0] != -1:
                slot, step = (slot + 1) & (size - 1), step + 1
            keys[slot] = key
            values[slot] = value
            probes = max(probes, step + 1)
    return keys, values, probes


def _lookup(table: _Table, probes: int, key: Array) -> tuple[Array, Array]:
    """``(found [...], values [..., 2])`` of int32 ``key [..., j]``."""
    slot = _find(table, probes, key)
    found = slot >= 0
    values = table.values[jnp.maximum(slot, 0)]
    return found, jnp.where(found[..., None], values, jnp.zeros((), values.dtype))


def _find(table: _Table, probes: int, key: Array) -> Array:
    """int32 slot ``[...]`` of ``key [..., j]`` in ``table``, −1 if absent.

    The ``probes`` slots a key may occupy are read in one gather (keys are
    unique, so at most one matches): a few ops whatever the probe length,
    where a loop over probes costs a gather, a compare and a select each.
    The slots are distinct (``probes`` never exceeds the table's size), so
    the match is a sum of products, not a select inside a reduction (the
    PP-OCRv4 search with an order-3 LM 1.03-1.04x faster).
    """
    mask = jnp.uint32(table.keys.shape[0] - 1)
    start = _hash_tokens(key, jnp) & mask
    offsets = jnp.arange(probes, dtype=jnp.uint32).reshape((1,) * start.ndim + (-1,))
    slots = ((start[..., None] + offsets) & mask).astype(jnp.int32)  # [..., P]
    hit = jnp.all(table.keys[slots] == key[..., None, :], axis=-1)  # [..., P]
    return jnp.sum(hit.astype(jnp.int32) * (slots + 1), axis=-1) - 1


@dataclasses.dataclass(frozen=True)
class CharNGramLM:
    r"""A character (token) n-gram language model in sparse backoff form.

    Only the n-grams seen in training are stored (hash tables per order), so
    the model fits any vocabulary (``K`` in the thousands, orders 3 and more).
    The probability of a token after a context ``h`` is the stored value when
    ``(h, w)`` was seen at the longest order that holds it, else the context's
    backoff weight times the probability after ``h`` without its oldest token:

    .. math::

        p(w \mid h) = \begin{cases} p^*(w \mid h) & (h, w) \text{ stored} \\
            \gamma(h)\, p(w \mid h') & \text{otherwise,} \end{cases}

    down to a dense unigram row. Interpolated Kneser–Ney and add-k models are
    exactly of this form (see :meth:`fit`). The state of a prefix is its last
    ``order − 1`` tokens (an int32 vector, oldest first; token ``num_classes``
    is the sentence boundary, so the empty prefix is all boundaries). It is a
    pytree, so it can be passed through ``jit``.

    Attributes:
        unigram: ``[V]`` float32 log probabilities after the empty context
            (``V = num_classes + 1``, column ``num_classes`` the sentence end);
            ``NEG_INF`` outside the support.
        entries: per order ``j = 2 … n``, a table from ``(h, w)`` (``j``
            tokens) to ``(log p*(w | h), 0)``.
        contexts: per order ``j = 2 … n``, a table from ``h`` (``j − 1``
            tokens) to ``(log γ(h), log max_w p(w | h))``.
        order: ``n`` (static).
        num_classes: ``K``, the classes of the acoustic model (static).
        sentence_end: whether :meth:`final_score` scores the sentence end.
        probes: per table, the longest probe sequence (static).
        next_best: per order ``j = n … 2``, ``[S_j, M]`` int32 the ``M`` most
            probable next classes after each stored context (aligned with the
            slots of ``contexts``), then ``[1, M]`` after the empty context.
        next_rest: the same layout, ``[S_j]`` float32 upper bounds of
            ``log p`` of every other class (see :meth:`next_tokens`).
        next_log_p: the same layout, ``[S_j, M]`` float32 ``log p`` of the
            listed classes, computed by :meth:`score`'s own arithmetic (see
            :meth:`next_log_probs`).
        num_next: ``M`` (static; 0 when ``next_best`` is empty).
    """

    unigram: Array
    entries: tuple
    contexts: tuple
    order: int
    num_classes: int
    sentence_end: bool = True
    probes: tuple = ()
    next_best: tuple = ()
    next_rest: tuple = ()
    num_next: int = 0
    next_log_p: tuple = ()

    def initial_state(self) -> Array:
        """The all-boundary context of the empty prefix (``[order − 1]`` int32)."""
        return jnp.full((self.order - 1,), self.num_classes, jnp.int32)

    def _score(
        self,
        state: Array,
        token: Array,
        *,
        with_p: bool = True,
        longest: int | None = None,
    ) -> tuple[Array, Array]:
        """``(log p(token | state), log max_w p(w | state))`` (broadcasting).

        ``with_p=False`` skips the n-gram look-ups (``log p`` is then 0).
        ``longest`` starts at that order (the longer contexts of ``state``
        taken as unseen, which add 0 to the backoff: the same float sums).
        """
        log_p = jnp.zeros(token.shape, jnp.float32)
        top = jnp.zeros(token.shape, jnp.float32)
        backoff = jnp.zeros(token.shape, jnp.float32)
        found = jnp.zeros(token.shape, bool)
        found_ctx = jnp.zeros(token.shape, bool)
        n_probes = iter(self.probes)
        for j in range(self.order, 1, -1):  # longest context first
            ctx = state[..., self.order - j :]  # the last j − 1 tokens
            entry_probes = next(n_probes)
            if longest is not None and j > longest:
                next(n_probes)
                continue
            if with_p:
                key = jnp.concatenate([ctx, token[..., None]], axis=-1)
                hit, value = _lookup(self.entries[self.order - j], entry_probes, key)
                new = hit & ~found
                log_p = jnp.where(new, backoff + value[..., 0], log_p)
                found = found | hit
            seen, ctx_value = _lookup(
                self.contexts[self.order - j], next(n_probes), ctx
            )
            new_ctx = seen & ~found_ctx
            top = jnp.where(new_ctx, backoff + ctx_value[..., 1], top)
            found_ctx = found_ctx | seen
            backoff = backoff + jnp.where(seen, ctx_value[..., 0], 0.0)
        uni = self.unigram[token]
        log_p = jnp.where(found, log_p, backoff + uni)
        top = jnp.where(found_ctx, top, backoff + jnp.max(self.unigram))
        return jnp.maximum(log_p, NEG_INF), top

    def score(self, state: ArrayLike, token: ArrayLike) -> tuple[Array, Array]:
        """``(next state, log p(token | state))``; broadcasts over arrays."""
        state = jnp.asarray(state, jnp.int32)
        token = jnp.asarray(token, jnp.int32)
        state, token = (
            jnp.broadcast_to(
                state,
                (*jnp.broadcast_shapes(state.shape[:-1], token.shape), state.shape[-1]),
            ),
            jnp.broadcast_to(
                token, jnp.broadcast_shapes(state.shape[:-1], token.shape)
            ),
        )
        log_p, _ = self._score(state, token)
        new_state = jnp.concatenate([state[..., 1:], token[..., None]], axis=-1)
        return new_state, log_p

    def max_score(self, state: ArrayLike) -> Array:
        """An upper bound of ``log p(w | state)`` over every token ``w``."""
        state = jnp.asarray(state, jnp.int32)
        token = jnp.zeros(state.shape[:-1], jnp.int32)
        return self._score(state, token, with_p=False)[1]

    def next_tokens(self, state: ArrayLike) -> tuple[Array, Array]:
        """``(classes [..., M], rest [...])``: the ``M`` most probable next
        classes after ``state`` (distinct; the sentence end is not a class)
        and an upper bound of ``log p(w | state)`` over every other class.

        A state's distribution is that of its longest stored context (an
        unseen context adds no backoff weight), whose list :meth:`fit` keeps.
        The beam search ranks these classes for each prefix, so the classes
        it leaves out are bounded by ``rest`` rather than :meth:`max_score`.
        """
        tokens, _, rest = self.next_log_probs(state)
        return tokens, rest

    def next_log_probs(self, state: ArrayLike) -> tuple[Array, Array, Array]:
        """``(classes [..., M], log_p [..., M], rest [...])``: as
        :meth:`next_tokens`, with ``log p`` of each listed class, equal to
        :meth:`score`'s (stored per context, found by the same look-ups)."""
        state = jnp.asarray(state, jnp.int32)
        batch = state.shape[:-1]
        tokens = jnp.broadcast_to(self.next_best[-1][0], (*batch, self.num_next))
        log_p = jnp.broadcast_to(self.next_log_p[-1][0], (*batch, self.num_next))
        rest = jnp.broadcast_to(self.next_rest[-1][0], batch)
        found = jnp.zeros(batch, bool)
        n_probes = iter(self.probes[1::2])
        for j in range(self.order, 1, -1):  # longest context first
            i = self.order - j
            slot = _find(self.contexts[i], next(n_probes), state[..., i:])
            new = (slot >= 0) & ~found
            at = jnp.maximum(slot, 0)
            tokens = jnp.where(new[..., None], self.next_best[i][at], tokens)
            log_p = jnp.where(new[..., None], self.next_log_p[i][at], log_p)
            rest = jnp.where(new, self.next_rest[i][at], rest)
            found = found | new
        return tokens, log_p, rest

    def final_score(self, state: ArrayLike) -> Array:
        """Log probability of the sentence end (0 when ``sentence_end=False``)."""
        state = jnp.asarray(state, jnp.int32)
        if not self.sentence_end:
            return jnp.zeros(state.shape[:-1], jnp.float32)
        end = jnp.full(state.shape[:-1], self.num_classes, jnp.int32)
        return self._score(state, end)[0]

    def state_of(self, context: Sequence[int]) -> Array:
        """The state after the tokens ``context`` (sentence start before them)."""
        tokens = [self.num_classes] * (self.order - 1) + [int(x) for x in context]
        return jnp.asarray(tokens[len(tokens) - (self.order - 1) :], jnp.int32)

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
        num_next: int = 8,
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
            num_next: ``M``, the most probable next classes kept per stored
                context (:meth:`next_tokens`; at most ``num_classes``).

        Returns:
            A :class:`CharNGramLM`.

        Raises:
            ValueError: for a bad ``order``, ``num_classes``, ``blank_id``,
                ``smoothing``, ``add_k`` or ``discount``, or a token outside
                ``[0, num_classes)`` or equal to the blank in ``sequences``.

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
        support = np.ones(vocab, bool)
        if blank_id is not None:
            support[blank_id] = False
        support[boundary] = sentence_end
        size = int(support.sum())

        # counts[j][(h, w)] for contexts h of j − 1 tokens, j = 1 … n.
        counts = [None] + [Counter() for _ in range(order)]
        for sequence in sequences:
            tokens = [int(x) for x in sequence]
            for x in tokens:
                if not 0 <= x < num_classes or x == blank_id:
                    raise ValueError(
                        f"`sequences` holds token {x}, outside [0, {num_classes})"
                        " or equal to the blank."
                    )
            padded = [boundary] * (order - 1) + tokens
            padded += [boundary] if sentence_end else []
            for i in range(order - 1, len(padded)):
                counts[order][(tuple(padded[i - order + 1 : i]), padded[i])] += 1
        if smoothing == "kneser_ney":
            # Lower orders count distinct left extensions (continuation counts).
            for j in range(order - 1, 0, -1):
                for (h, w), c in counts[j + 1].items():
                    if c > 0:
                        counts[j][(h[1:], w)] += 1

        uniform = np.where(support, 1.0 / size, 0.0)  # [V]
        with np.errstate(divide="ignore"):
            log_uniform = np.log(uniform)
        # Per order: entries {(h + (w,)): log p*}, contexts {h: (log γ, log max)}.
        entries = [dict() for _ in range(order + 1)]
        contexts = [dict() for _ in range(order + 1)]

        def rows(j):
            by_ctx = defaultdict(dict)
            for (h, w), c in counts[j].items():
                by_ctx[h][w] = c
            return by_ctx

        if smoothing == "add_k":
            if True:  # one order: add-k at n, the uniform below
                top_j, lower = order, log_uniform
                by_ctx = rows(order)
                if order == 1:
                    row = np.zeros(vocab)
                    for w, c in by_ctx.get((), {}).items():
                        row[w] = c
                    probs = np.where(
                        support, (row + add_k) / (row.sum() + add_k * size), 0
                    )
                    with np.errstate(divide="ignore"):
                        unigram = np.log(probs)
                else:
                    unigram = log_uniform
                    for h, row in by_ctx.items():
                        total = sum(row.values()) + add_k * size
                        for w, c in row.items():
                            entries[top_j][h + (w,)] = np.log((c + add_k) / total)
                        gamma = np.log(add_k * size / total)
                        best = max(
                            max(entries[top_j][h + (w,)] for w in row),
                            gamma + np.max(lower),
                        )
                        contexts[top_j][h] = (gamma, best)
        if smoothing == "kneser_ney":
            # Order 1 from continuation counts, interpolated with the uniform.
            row = np.zeros(vocab)
            for ((), w), c in counts[1].items():
                row[w] = c
            total, types = row.sum(), (row > 0).sum()
            if total > 0:
                probs = (
                    np.maximum(row - discount, 0) / total
                    + discount * types / total * uniform
                )
            else:
                probs = uniform
            with np.errstate(divide="ignore"):
                unigram = np.where(probs > 0, np.log(probs), NEG_INF)
            uni_max = float(np.max(unigram))

            def _chain(h, w):
                acc = 0.0
                while h:
                    value = entries[len(h) + 1].get(h + (w,))
                    if value is not None:
                        return acc + value
                    ctx = contexts[len(h) + 1].get(h)
                    if ctx is not None:
                        acc += ctx[0]
                    h = h[1:]
                return acc + float(unigram[w])

            def max_log_p(h):
                while h:
                    ctx = contexts[len(h) + 1].get(h)
                    if ctx is not None:
                        return ctx[1]
                    h = h[1:]
                return uni_max

            for j in range(2, order + 1):
                for h, row in rows(j).items():
                    total, types = sum(row.values()), len(row)
                    gamma = discount * types / total
                    best = -np.inf
                    for w, c in row.items():
                        lower = np.exp(_chain(h[1:], w))
                        value = np.log(max(c - discount, 0) / total + gamma * lower)
                        entries[j][h + (w,)] = value
                        best = max(best, value)
                    log_gamma = np.log(gamma)
                    contexts[j][h] = (
                        log_gamma,
                        max(best, log_gamma + max_log_p(h[1:])),
                    )
        entry_tables, context_tables, probes = [], [], []
        for j in range(order, 1, -1):
            table, n = _build_table({k: (v, 0.0) for k, v in entries[j].items()}, j)
            entry_tables.append(table)
            probes.append(n)
            table, n = _build_table(contexts[j], j - 1)
            context_tables.append(table)
            probes.append(n)
        unigram = np.maximum(np.where(np.isfinite(unigram), unigram, NEG_INF), NEG_INF)
        num_next = int(min(max(num_next, 0), num_classes))
        next_best, next_rest = _next_lists(
            unigram[:num_classes],
            entries,
            contexts,
            context_tables,
            order=order,
            num_next=num_next,
        )
        lm = cls(
            unigram=jnp.asarray(unigram, jnp.float32),
            entries=tuple(entry_tables),
            contexts=tuple(context_tables),
            order=int(order),
            num_classes=int(num_classes),
            sentence_end=bool(sentence_end),
            probes=tuple(probes),
            next_best=next_best,
            next_rest=next_rest,
            num_next=num_next if next_best else 0,
        )
        return dataclasses.replace(lm, next_log_p=lm._listed_log_probs())

    def _listed_log_probs(self) -> tuple:
        """:attr:`next_log_p`: :meth:`score` of each stored context's listed
        classes, starting at the context's order (a state whose longest stored
        context it is adds 0 for every longer order, so the sums are equal)."""
        out = []
        # next_best is empty when no classes are listed: nothing to score.
        pairs = zip(self.contexts, self.next_best, strict=False)
        for i, (table, best) in enumerate(pairs):
            j = self.order - i  # the table of contexts of j − 1 tokens
            pad = jnp.full((table.keys.shape[0], i), self.num_classes, jnp.int32)
            state = jnp.concatenate([pad, jnp.maximum(table.keys, 0)], axis=1)
            state = jnp.broadcast_to(state[:, None, :], (*best.shape, self.order - 1))
            log_p = _listed_score(self, state, best, j)
            out.append(jnp.where(table.keys[:, :1] >= 0, log_p, NEG_INF))
        if self.next_best:
            state = jnp.full((*self.next_best[-1].shape, self.order - 1), 0, jnp.int32)
            out.append(_listed_score(self, state, self.next_best[-1], 1))
        return tuple(out)


@functools.partial(jax.jit, static_argnums=3)
def _listed_score(lm: CharNGramLM, state: Array, token: Array, longest: int) -> Array:
    return lm._score(state, token, longest=longest)[0]


def _next_lists(unigram, entries, contexts, context_tables, *, order, num_next):
    """``(next_best, next_rest)`` of :class:`CharNGramLM` (numpy, float64).

    The best ``n`` classes after a stored context ``h`` are the best of its
    stored entries and of the others in the order of ``h'`` (``h`` without its
    oldest token; ``p(w | h) = γ(h) p(w | h')`` for them): the best
    ``n + |entries of h|`` classes after ``h'`` hold them. ``rest`` is the
    ``(n + 1)``-th value plus a margin for the float32 sums of :meth:`score`.
    """
    if num_next == 0:
        return (), ()
    num_classes = unigram.shape[0]
    uni_order = np.argsort(-unigram, kind="stable")
    children = [defaultdict(dict) for _ in range(order + 1)]
    for j in range(2, order + 1):
        for key, value in entries[j].items():
            if key[-1] < num_classes:  # the sentence end is not a class
                children[j][key[:-1]][key[-1]] = value

    def best(h, n):
        """The best ``min(n, K)`` ``(class, log p)`` after ``h``, descending."""
        if not h:
            return [(int(w), float(unigram[w])) for w in uni_order[:n]]
        if h not in contexts[len(h) + 1]:
            return best(h[1:], n)
        own = children[len(h) + 1][h]
        gamma = contexts[len(h) + 1][h][0]
        lower = best(h[1:], n + len(own))
        merged = list(own.items()) + [(w, gamma + v) for w, v in lower if w not in own]
        merged.sort(key=lambda x: -x[1])
        return merged[:n]

    def lists(h):
        top = best(h, num_next + 1)
        tokens = [w for w, _ in top[:num_next]]
        rest = top[num_next][1] if len(top) > num_next else NEG_INF
        return tokens, max(rest + 1e-4 * (1.0 + abs(rest)), NEG_INF)

    next_best, next_rest = [], []
    for table in context_tables:
        keys = np.asarray(table.keys)
        tokens = np.zeros((keys.shape[0], num_next), np.int32)
        rest = np.full((keys.shape[0],), NEG_INF, np.float32)
        for slot in np.flatnonzero(keys[:, 0] >= 0):
            t, r = lists(tuple(int(x) for x in keys[slot]))
            tokens[slot], rest[slot] = t, r
        next_best.append(jnp.asarray(tokens))
        next_rest.append(jnp.asarray(rest))
    t, r = lists(())
    next_best.append(jnp.asarray(np.array([t], np.int32)))
    next_rest.append(jnp.asarray(np.array([r], np.float32)))
    return tuple(next_best), tuple(next_rest)


jax.tree_util.register_dataclass(
    CharNGramLM,
    data_fields=[
        "unigram",
        "entries",
        "contexts",
        "next_best",
        "next_rest",
        "next_log_p",
    ],
    meta_fields=["order", "num_classes", "sentence_end", "probes", "num_next"],
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
    return trans, lengths
