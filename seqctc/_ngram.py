"""Sparse back-off n-gram tables: ARPA files, modified Kneser–Ney, jittable lookup.

One :class:`NGramTable` serves every n-gram model in seqctc that is too large
for a dense ``[V ** (n − 1), V]`` table: the word LM
(:class:`seqctc.WordNGramLM`) and the token-level LM
(:class:`seqctc.TokenNGramLM`, K ≈ 6,600 classes at order ≥ 3).

Layout. The unigram index is the word id; a ``k``-gram is stored as (index of
its first ``k − 1`` words in the ``(k − 1)``-gram table, last word), sorted by
that pair (KenLM's trie order). Finding ``w`` after a context node is a lookup
of the pair in an open-addressing hash table per order (linear probing, load
≤ 1/2): the longest probe sequence ``P`` is known when the table is built, so a
lookup is one gather of ``P`` slots and a compare, jittable, with no
data-dependent shapes and no sequential search.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import NEG_INF, Array, ArrayLike

LN10 = math.log(10.0)
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# kenlm's log10 probability for <unk> when an ARPA file has none, and the
# log10 probability lmplz writes for <s> (never predicted).
_KENLM_UNK_LOG10 = -100.0
_BOS_LOG10 = -99.0


class _Host:
    """Host-side data of a table (vocabulary, float64 values), hashed by identity.

    It is the static part of the pytree: two tables compare equal only when
    they share it, so ``jit`` retraces once per model and never hashes a
    vocabulary.
    """

    def __init__(self, vocab: Sequence[Hashable], grams: list[dict]):
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        # grams[k - 1]: {tuple of k word ids: (ln p, ln backoff)}, in table order.
        self.grams = grams

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


@dataclasses.dataclass(frozen=True)
class NGramTable:
    r"""A back-off n-gram model in sorted arrays (a pytree, jittable lookups).

    .. math::

        \log p(w \mid h) =
        \begin{cases} \log p^*(h w) & h w \text{ listed} \\
        \log b(h) + \log p(w \mid h') & \text{otherwise,} \end{cases}

    with :math:`h'` the history without its oldest word and :math:`b(h) = 1`
    for a history that is not listed (the ARPA convention; natural logs here).

    Attributes:
        words: per order ``k = 1 … n``, ``[N_k + 1]`` int32 last word of each
            ``k``-gram (a sentinel ``V`` at the end).
        log_probs: per order, ``[N_k + 1]`` float32 :math:`\log p^*`.
        backoffs: per order, ``[N_k + 1]`` float32 :math:`\log b` (0 at order n).
        parents: per order ``k ≥ 2``, ``[N_k + 1]`` int32 index of each
            ``k``-gram's first ``k − 1`` words in the ``(k − 1)``-gram table.
        slots: per order ``k ≥ 2``, ``[C_k]`` int32 hash slots (``C_k`` a power
            of two ≥ ``2 N_k``) holding ``k``-gram indices, −1 when empty.
        max_next: per context length ``k = 0 … n − 1``, ``[N_k + 1]`` float32
            (``[1]`` for the empty context) upper bound of
            :math:`\log p(w \mid h)` over ``w`` for a history whose longest
            listed suffix is that ``k``-gram.
        order: ``n`` (static).
        probes: per order ``k ≥ 2``, the longest probe sequence (static).
        host: vocabulary and float64 values (static, compared by identity).
    """

    words: tuple[Array, ...]
    log_probs: tuple[Array, ...]
    backoffs: tuple[Array, ...]
    parents: tuple[Array, ...]
    slots: tuple[Array, ...]
    max_next: tuple[Array, ...]
    order: int
    probes: tuple[int, ...]
    host: _Host

    @property
    def vocab(self) -> list:
        return self.host.vocab

    @property
    def vocab_size(self) -> int:
        return len(self.host.vocab)

    def word_id(self, word: Hashable) -> int:
        """The id of ``word``, or of ``<unk>`` when it is not in the vocabulary."""
        return self.host.index.get(word, self.host.index[UNK])

    def initial_context(self, bos: bool = True) -> Array:
        """``[n − 1]`` int32 context nodes after ``<s>`` (or of an empty history)."""
        ctx = np.full((max(self.order - 1, 1),), -1, np.int32)
        if bos and self.order > 1:
            ctx[0] = self.host.index[BOS]
        return jnp.asarray(ctx)

    def score_word(self, context: ArrayLike, word: ArrayLike) -> tuple[Array, Array]:
        r"""``(ln p(word | context), new context)`` for one int32 word id.

        Args:
            context: ``[n − 1]`` int32, entry ``k − 1`` the index in the
                ``k``-gram table of the history's last ``k`` words, −1 when
                that ``k``-gram is not listed.
            word: int32 scalar in ``[0, V)``.

        Returns:
            A float32 scalar log probability and the ``[n − 1]`` context of the
            history extended by ``word``.
        """
        context = jnp.asarray(context, jnp.int32)
        word = jnp.asarray(word, jnp.int32)
        n = self.order
        score = self.log_probs[0][word]
        nodes = [word]
        for k in range(1, n):  # history suffix of length k -> (k + 1)-gram
            node = context[k - 1]
            has = node >= 0
            safe = jnp.maximum(node, 0)
            child, found = _find(
                self.slots[k - 1],
                self.parents[k - 1],
                self.words[k],
                node,
                word,
                self.probes[k - 1],
            )
            found = found & has
            backoff = jnp.where(has, self.backoffs[k - 1][safe], 0.0)
            score = jnp.where(found, self.log_probs[k][child], score + backoff)
            nodes.append(jnp.where(found, child, -1))
        new_context = jnp.stack(nodes[: max(n - 1, 1)]).astype(jnp.int32)
        if n == 1:
            new_context = jnp.full((1,), -1, jnp.int32)
        return score, new_context

    def max_log_prob(self, context: ArrayLike) -> Array:
        """An upper bound of ``ln p(w | context)`` over every word ``w``."""
        context = jnp.asarray(context, jnp.int32)
        bound = self.max_next[0][0]
        for k in range(1, self.order):
            node = context[k - 1]
            bound = jnp.where(node >= 0, self.max_next[k][jnp.maximum(node, 0)], bound)
        return bound

    # ------------------------------------------------------------------ host

    @classmethod
    def from_grams(
        cls, vocab: Sequence[Hashable], grams: list[dict[tuple, tuple[float, float]]]
    ) -> NGramTable:
        """Builds the arrays from ``grams[k − 1] = {k word ids: (ln p, ln b)}``.

        Every context of a listed n-gram must be listed (call
        :func:`_close_contexts` first); the unigram table must list every word.
        """
        order = len(grams)
        vocab = list(vocab)
        num_words = len(vocab)
        uni = grams[0]
        if len(uni) != num_words:
            raise ValueError("every vocabulary word needs a unigram entry.")
        ordered = [sorted(uni)]  # unigram i is word i
        index = [{g: i for i, g in enumerate(ordered[0])}]
        for k in range(2, order + 1):
            table = grams[k - 1]
            keys = list(table)
            parent = np.array([index[-1][g[:-1]] for g in keys], np.int64)
            last = np.array([g[-1] for g in keys], np.int64)
            perm = np.lexsort((last, parent)) if keys else np.zeros(0, np.int64)
            ordered.append([keys[i] for i in perm])
            index.append({g: i for i, g in enumerate(ordered[-1])})
        words, log_probs, backoffs, host_grams = [], [], [], []
        parents_out, slots_out, probes = [], [], []
        for k in range(1, order + 1):
            keys = ordered[k - 1]
            table = grams[k - 1]
            w = np.array([g[-1] for g in keys] + [num_words], np.int32)
            lp = np.array([table[g][0] for g in keys] + [NEG_INF], np.float64)
            bo = np.array([table[g][1] for g in keys] + [0.0], np.float64)
            words.append(jnp.asarray(w))
            log_probs.append(jnp.asarray(np.maximum(lp, NEG_INF), jnp.float32))
            backoffs.append(jnp.asarray(bo, jnp.float32))
            host_grams.append({g: table[g] for g in keys})
            if k >= 2:
                parents = np.array(
                    [index[k - 2][g[:-1]] for g in keys] + [-2], np.int64
                )
                slots, probe = _hash_slots(parents[:-1], w[:-1].astype(np.int64))
                parents_out.append(jnp.asarray(parents, jnp.int32))
                slots_out.append(jnp.asarray(slots))
                probes.append(probe)
        max_next = _max_next(host_grams, order)
        return cls(
            words=tuple(words),
            log_probs=tuple(log_probs),
            backoffs=tuple(backoffs),
            parents=tuple(parents_out),
            slots=tuple(slots_out),
            max_next=tuple(max_next),
            order=order,
            probes=tuple(probes),
            host=_Host(vocab, host_grams),
        )

    def host_log_prob(self, history: Sequence[int], word: int) -> float:
        """``ln p(word | history)`` in float64 on the host (ARPA back-off)."""
        grams = self.host.grams
        history = tuple(history)[max(0, len(history) - (self.order - 1)) :]
        if self.order == 1:
            history = ()
        backoff = 0.0
        for start in range(len(history) + 1):
            ctx = history[start:]
            gram = ctx + (word,)
            if gram in grams[len(gram) - 1]:
                return grams[len(gram) - 1][gram][0] + backoff
            if ctx:
                backoff += grams[len(ctx) - 1].get(ctx, (0.0, 0.0))[1]
        raise AssertionError("unreachable: every word has a unigram")

    def write_arpa(self, path: Any) -> None:
        """Writes the model as an ARPA text file (log10 values)."""
        vocab = self.host.vocab
        with open(path, "w", encoding="utf-8") as f:
            f.write("\\data\\\n")
            for k, table in enumerate(self.host.grams, start=1):
                f.write(f"ngram {k}={len(table)}\n")
            for k, table in enumerate(self.host.grams, start=1):
                f.write(f"\n\\{k}-grams:\n")
                for gram, (lp, bo) in table.items():
                    text = " ".join(str(vocab[i]) for i in gram)
                    lp10 = lp / LN10
                    if k < self.order:
                        f.write(f"{lp10:.7g}\t{text}\t{bo / LN10:.7g}\n")
                    else:
                        f.write(f"{lp10:.7g}\t{text}\n")
            f.write("\n\\end\\\n")


jax.tree_util.register_dataclass(
    NGramTable,
    data_fields=["words", "log_probs", "backoffs", "parents", "slots", "max_next"],
    meta_fields=["order", "probes", "host"],
)


def _max_next(grams: list[dict], order: int) -> list[Array]:
    """Per context, the largest next-word log probability the back-off allows.

    ``M(h) = max(max_w ln p*(h w), ln b(h) + M(h'))`` with ``M(()) = max_w
    ln p*(w)``, so ``ln p(w | h) ≤ M(h)`` for every ``w``.
    """
    best: list[dict] = [{(): max(v[0] for v in grams[0].values())}]
    for k in range(1, order):
        child_max: dict[tuple, float] = {}
        for gram, (lp, _) in grams[k].items():
            ctx = gram[:-1]
            child_max[ctx] = max(child_max.get(ctx, -np.inf), lp)
        level = {}
        for gram, (_, bo) in grams[k - 1].items():
            suffix = gram[1:]
            while suffix not in best[len(suffix)]:
                suffix = suffix[1:]
            level[gram] = max(
                child_max.get(gram, -np.inf), bo + best[len(suffix)][suffix]
            )
        best.append(level)
    out = [jnp.asarray(np.array([best[0][()]]), jnp.float32)]
    for k in range(1, order):
        values = list(best[k].values()) + [0.0]
        out.append(jnp.asarray(np.maximum(np.array(values), NEG_INF), jnp.float32))
    return out


def _hash(parent, word, xp=jnp):
    """32-bit hash of a (context index, word) pair; the same on host and device."""
    u32 = xp.uint32
    h = (parent.astype(u32) * u32(0x9E3779B1)) ^ (word.astype(u32) * u32(0x85EBCA6B))
    h = h ^ (h >> u32(15))
    h = h * u32(0x2C1B3C6D)
    return h ^ (h >> u32(12))


def _hash_slots(parents: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, int]:
    """Linear-probing slots for the pairs, and the longest probe sequence."""
    capacity = 1 << max(1, int(2 * len(parents) - 1).bit_length())
    slots = np.full(capacity, -1, np.int32)
    with np.errstate(over="ignore"):
        start = _hash(parents, words, np) & np.uint32(capacity - 1)
    longest = 1
    for i, h in enumerate(start.tolist()):
        j = 0
        while slots[(h + j) & (capacity - 1)] >= 0:
            j += 1
        slots[(h + j) & (capacity - 1)] = i
        longest = max(longest, j + 1)
    return slots, longest


def _find(
    slots: Array, parents: Array, words: Array, parent: Array, word: Array, probes: int
) -> tuple[Array, Array]:
    """(index, found) of the pair (``parent``, ``word``): ``probes`` slots at once."""
    mask = slots.shape[0] - 1
    start = _hash(parent, word) & jnp.uint32(mask)
    offsets = jnp.arange(probes, dtype=jnp.uint32)
    entry = slots[((start + offsets) & jnp.uint32(mask)).astype(jnp.int32)]  # [P]
    safe = jnp.maximum(entry, 0)
    match = (entry >= 0) & (parents[safe] == parent) & (words[safe] == word)
    return jnp.max(jnp.where(match, entry, -1)), jnp.any(match)


# ---------------------------------------------------------------------- ARPA


def read_arpa(
    path: Any,
) -> tuple[int, list[dict[tuple[str, ...], tuple[float, float]]]]:
    """Parses an ARPA file into ``(order, [{words: (log10 p, log10 b)}])``.

    Raises:
        ValueError: if the file has no ``\\data\\`` header, or a section's
            entries disagree with its declared count.
    """
    declared: dict[int, int] = {}
    grams: list[dict] = []
    section = 0
    seen_data = False
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            if line == "\\data\\":
                seen_data = True
                continue
            if line == "\\end\\":
                break
            if not seen_data:
                continue
            if line.startswith("ngram ") and section == 0:
                k, count = line[6:].split("=")
                declared[int(k)] = int(count)
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1 : line.index("-")])
                while len(grams) < section:
                    grams.append({})
                continue
            if section == 0:
                continue
            fields = line.split()
            lp = float(fields[0])
            if len(fields) == section + 2:
                words, bo = tuple(fields[1:-1]), float(fields[-1])
            elif len(fields) == section + 1:
                words, bo = tuple(fields[1:]), 0.0
            else:
                raise ValueError(f"ARPA file {path}: bad {section}-gram line {line!r}")
            grams[section - 1][words] = (lp, bo)
    if not seen_data:
        raise ValueError(f"ARPA file {path} has no \\data\\ header.")
    for k, count in declared.items():
        got = len(grams[k - 1]) if k <= len(grams) else 0
        if got != count:
            raise ValueError(
                f"ARPA file {path} declares {count} {k}-grams but lists {got}."
            )
    return len(grams), grams


def table_from_arpa_grams(
    grams: list[dict[tuple[str, ...], tuple[float, float]]],
    *,
    unk_log_prob: float | None = None,
    extra_words: Iterable[Hashable] = (),
) -> NGramTable:
    """An :class:`NGramTable` from parsed ARPA grams (log10 → natural log).

    ``<s>``, ``</s>`` and ``<unk>`` are added when missing (``<unk>`` with
    kenlm's log10 probability −100 unless ``unk_log_prob``, a natural log,
    overrides it), as are ``extra_words`` (with the ``<unk>`` probability, so
    they score like unknown words but are distinct), and every context of a
    listed n-gram (with the probability its back-off gives and back-off 1).
    """
    uni_words = [g[0] for g in grams[0]]
    vocab = list(uni_words)
    for w in (BOS, EOS, UNK, *extra_words):
        if w not in grams[0] and w not in vocab:
            vocab.append(w)
    index = {w: i for i, w in enumerate(vocab)}
    nat: list[dict] = []
    for table in grams:
        nat.append(
            {
                tuple(index[w] for w in g): (lp * LN10, bo * LN10)
                for g, (lp, bo) in table.items()
            }
        )
    unk = index[UNK]
    unk_lp = _KENLM_UNK_LOG10 * LN10 if (UNK,) not in grams[0] else nat[0][(unk,)][0]
    if unk_log_prob is not None:
        unk_lp = float(unk_log_prob)
    for w, i in index.items():
        if (i,) not in nat[0]:
            nat[0][(i,)] = (_BOS_LOG10 * LN10 if w == BOS else unk_lp, 0.0)
    nat[0][(unk,)] = (unk_lp, nat[0][(unk,)][1])
    return _table_with_closed_contexts(vocab, nat)


def _table_with_closed_contexts(vocab, nat: list[dict]) -> NGramTable:
    """Adds the missing contexts of listed n-grams, then builds the table."""
    order = len(nat)
    for k in range(order, 1, -1):
        for gram in list(nat[k - 1]):
            ctx = gram[:-1]
            if ctx not in nat[k - 2]:
                # Listed with the probability the back-off gives it, back-off 1.
                nat[k - 2][ctx] = (_backoff_log_prob(nat, ctx[:-1], ctx[-1]), 0.0)
    return NGramTable.from_grams(vocab, nat)


def _backoff_log_prob(nat: list[dict], history: tuple, word: int) -> float:
    backoff = 0.0
    for start in range(len(history) + 1):
        ctx = history[start:]
        gram = ctx + (word,)
        if gram in nat[len(gram) - 1]:
            return nat[len(gram) - 1][gram][0] + backoff
        if ctx:
            backoff += nat[len(ctx) - 1].get(ctx, (0.0, 0.0))[1]
    return nat[0][(word,)][0] + backoff


# ------------------------------------------------------ modified Kneser–Ney


class KNDiscounts(NamedTuple):
    """Modified Kneser–Ney discounts of one order: for counts 1, 2 and ≥ 3."""

    d1: float
    d2: float
    d3: float


def kn_discounts(
    count_of_counts: Sequence[int], fallback: Sequence[float] = (0.5, 1.0, 1.5)
) -> KNDiscounts:
    r"""Chen & Goodman's discounts from the numbers ``t_1 … t_4`` of n-grams
    seen exactly 1 … 4 times:

    .. math::

        Y = \frac{t_1}{t_1 + 2 t_2}, \quad
        D_c = c - (c + 1)\, Y \frac{t_{c+1}}{t_c} \quad (c = 1, 2, 3).

    When a ``t_c`` is zero or a discount falls outside ``(0, c]``, ``fallback``
    is used (lmplz's ``--discount_fallback``).
    """
    t1, t2, t3, t4 = (float(x) for x in count_of_counts[:4])
    try:
        y = t1 / (t1 + 2 * t2)
        d = [1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3]
    except ZeroDivisionError:
        return KNDiscounts(*map(float, fallback))
    if not all(0 < dc <= c for c, dc in enumerate(d, start=1)):
        return KNDiscounts(*map(float, fallback))
    return KNDiscounts(*d)


def kneser_ney_grams(
    sentences: Iterable[Sequence[Hashable]],
    *,
    order: int,
    vocab: Sequence[Hashable] = (),
    discounts: Sequence[Sequence[float]] | None = None,
    bos: Hashable = BOS,
    eos: Hashable = EOS,
    unk: Hashable = UNK,
) -> tuple[list, list[dict], list[KNDiscounts]]:
    r"""Interpolated modified Kneser–Ney estimates, in back-off form.

    Each sentence is wrapped in ``<s> … </s>``; every window of at most ``n``
    words is counted (``<s>`` is never predicted). The adjusted count
    :math:`a(g)` is the raw count for ``n``-grams and for those starting with
    ``<s>``, and the number of distinct words seen before ``g`` otherwise. For
    a ``k``-gram :math:`h w` with discounts :math:`D_k(\cdot)`:

    .. math::

        p(w \mid h) = \frac{a(h w) - D_k(a(h w))}{\sum_x a(h x)}
            + \gamma(h)\, p(w \mid h'), \qquad
        \gamma(h) = \frac{\sum_{c=1}^{3} D_k(c)\, N_c(h \bullet)}{\sum_x a(h x)},

    with :math:`N_3` counting words seen ≥ 3 times after :math:`h`; the
    unigrams interpolate with the uniform distribution over the vocabulary
    without ``<s>`` (``<unk>`` and ``</s>`` included). In back-off form
    :math:`b(h) = \gamma(h)` exactly, since an unseen ``h w`` has
    :math:`a(h w) = 0`.

    Returns:
        ``(vocab, grams, discounts)`` with ``grams[k − 1] = {k word ids:
        (ln p, ln b)}`` over ``vocab`` (``<s>``, ``</s>``, ``<unk>``, then the
        words in order of first appearance and the extra ``vocab`` words), and
        the discounts used per order.
    """
    words_seen: dict[Hashable, int] = {}
    for w in (bos, eos, unk):
        words_seen.setdefault(w, len(words_seen))
    counts = [collections.Counter() for _ in range(order)]
    for sentence in sentences:
        ids = [words_seen.setdefault(w, len(words_seen)) for w in sentence]
        padded = [0, *ids, 1]
        for i in range(1, len(padded)):  # predicted word padded[i]
            for k in range(1, order + 1):
                if i - k + 1 < 0:
                    break
                counts[k - 1][tuple(padded[i - k + 1 : i + 1])] += 1
    for w in vocab:
        words_seen.setdefault(w, len(words_seen))
    vocab_list = list(words_seen)
    num_words = len(vocab_list)
    bos_id = 0

    # Adjusted counts: raw for the top order and for grams starting with <s>.
    adjusted = [collections.Counter() for _ in range(order)]
    adjusted[order - 1] = collections.Counter(counts[order - 1])
    for k in range(order - 1, 0, -1):
        table = adjusted[k - 1]
        for gram, c in counts[k - 1].items():
            if gram[0] == bos_id:
                table[gram] = c
        for gram in counts[k]:  # one left extension per distinct (k+1)-gram
            if gram[1] != bos_id:
                table[gram[1:]] += 1
    # The unigram <s> is never predicted; drop it from the unigram counts.
    adjusted[0].pop((bos_id,), None)

    used = []
    for k in range(order):
        if discounts is not None:
            used.append(KNDiscounts(*map(float, discounts[k])))
        else:
            coc = collections.Counter(c for c in adjusted[k].values() if c <= 4)
            used.append(kn_discounts([coc[1], coc[2], coc[3], coc[4]]))

    def discount(k: int, c: float) -> float:
        d = used[k - 1]
        return 0.0 if c == 0 else d.d1 if c == 1 else d.d2 if c == 2 else d.d3

    # Context statistics of order k: total adjusted count and gamma.
    def context_stats(k: int) -> dict[tuple, tuple[float, float]]:
        totals: dict[tuple, float] = collections.defaultdict(float)
        mass: dict[tuple, float] = collections.defaultdict(float)
        for gram, c in adjusted[k - 1].items():
            totals[gram[:-1]] += c
            mass[gram[:-1]] += discount(k, c)
        return {h: (totals[h], mass[h] / totals[h]) for h in totals}

    probs: list[dict[tuple, float]] = []
    # Unigrams.
    stats = context_stats(1)
    total, gamma = stats.get((), (0.0, 1.0))
    uniform = 1.0 / (num_words - 1)
    uni = {}
    for i in range(num_words):
        if i == bos_id:
            continue
        c = adjusted[0].get((i,), 0)
        p = (c - discount(1, c)) / total if total > 0 else 0.0
        uni[(i,)] = p + gamma * uniform
    probs.append(uni)
    gammas: list[dict[tuple, float]] = [{(): gamma}]
    for k in range(2, order + 1):
        stats = context_stats(k)
        table = {}
        for gram, c in adjusted[k - 1].items():
            h_total, h_gamma = stats[gram[:-1]]
            p_low = _interp(gram[1:], probs, gammas)
            table[gram] = (c - discount(k, c)) / h_total + h_gamma * p_low
        probs.append(table)
        gammas.append({h: g for h, (_, g) in stats.items()})

    grams: list[dict] = []
    for k in range(1, order + 1):
        table = {}
        backs = gammas[k] if k < order else {}
        for gram, p in probs[k - 1].items():
            table[gram] = (math.log(p), math.log(backs[gram]) if gram in backs else 0.0)
        if k == 1:
            b = backs.get((bos_id,), 1.0)
            table[(bos_id,)] = (_BOS_LOG10 * LN10, math.log(b))
        grams.append(table)
    return vocab_list, grams, used


def _interp(gram: tuple, probs: list[dict], gammas: list[dict]) -> float:
    """Interpolated p(gram[-1] | gram[:-1]) from the tables of lower orders."""
    k = len(gram)
    table = probs[k - 1]
    if gram in table:
        return table[gram]
    # Unseen: gamma of the context (1 if unseen) times the lower order.
    g = gammas[k - 1].get(gram[:-1], 1.0) if k > 1 else 1.0
    return g * _interp(gram[1:], probs, gammas)


def kneser_ney_table(
    sentences: Iterable[Sequence[Hashable]],
    *,
    order: int,
    vocab: Sequence[Hashable] = (),
    discounts: Sequence[Sequence[float]] | None = None,
) -> NGramTable:
    """:func:`kneser_ney_grams` as an :class:`NGramTable`."""
    vocab_list, grams, _ = kneser_ney_grams(
        sentences, order=order, vocab=vocab, discounts=discounts
    )
    return NGramTable.from_grams(vocab_list, grams)


def check_order(order: Any) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise ValueError(f"`order` must be a Python int, got {order!r}.")
    if order < 1:
        raise ValueError(f"`order` must be at least 1, got {order}.")
    return int(order)


# ------------------------------------------------------------ token-level LM


@dataclasses.dataclass(frozen=True)
class TokenNGramLM:
    r"""A sparse token-level (character) n-gram LM for any number of classes.

    The sparse counterpart of :class:`seqctc.CharNGramLM`: the same protocol
    (:class:`seqctc.LanguageModel`, scores every token as it is emitted), but a
    back-off :class:`NGramTable` holding only the n-grams seen, so order 3 or
    more works at K ≈ 6,600 classes. The state is the ``[n − 1]`` int32 context
    of :meth:`NGramTable.score_word`.

    Attributes:
        table: the :class:`NGramTable` over classes (plus ``<s>``, ``</s>``,
            ``<unk>``).
        class_word: ``[K]`` int32 table word of each class (the blank's is
            ``<unk>``).
        num_classes: ``K`` (static).
        sentence_end: whether :meth:`final_score` scores ``</s>`` (static).
    """

    table: NGramTable
    class_word: Array
    num_classes: int
    sentence_end: bool = True

    @property
    def order(self) -> int:
        return self.table.order

    def initial_state(self) -> Array:
        return self.table.initial_context(bos=True)

    def score(self, state: ArrayLike, token: ArrayLike) -> tuple[Array, Array]:
        """``(next context, ln p(token | context))`` for one int32 token."""
        log_prob, context = self.table.score_word(state, self.class_word[token])
        return context, log_prob

    def final_score(self, state: ArrayLike) -> Array:
        if not self.sentence_end:
            return jnp.zeros((), jnp.float32)
        return self.table.score_word(state, self.table.host.index[EOS])[0]

    def max_score(self, state: ArrayLike) -> Array:
        """An upper bound of :meth:`score` over every token."""
        return self.table.max_log_prob(state)

    def sequence_log_prob(self, tokens: Sequence[int], *, eos: bool = True) -> float:
        """Natural-log probability of a token sequence after ``<s>`` (host, float64)."""
        class_word = np.asarray(self.class_word)
        ids = [int(class_word[int(t)]) for t in tokens]
        if eos:
            ids.append(self.table.host.index[EOS])
        history, total = [self.table.host.index[BOS]], 0.0
        for i in ids:
            total += self.table.host_log_prob(history, i)
            history.append(i)
        return total

    def to_arpa(self, path: Any) -> None:
        """Writes the model as an ARPA file (words are the class ids or texts)."""
        self.table.write_arpa(path)

    @classmethod
    def fit(
        cls,
        sequences: Iterable[Sequence[int]],
        *,
        order: int,
        num_classes: int,
        blank_id: int = 0,
        discounts: Sequence[Sequence[float]] | None = None,
        sentence_end: bool = True,
    ) -> TokenNGramLM:
        """Modified Kneser–Ney estimate from token sequences (see
        :func:`kneser_ney_grams`); every class but the blank is in the
        vocabulary.

        Raises:
            ValueError: for a bad ``order``, ``num_classes`` or ``blank_id``, or
                a token outside ``[0, K)`` or equal to the blank.

        Examples:
            >>> import seqctc
            >>> lm = seqctc.TokenNGramLM.fit([[1, 2], [1, 1]], order=3, num_classes=3)
            >>> state, log_p = lm.score(lm.initial_state(), 1)
            >>> round(float(log_p), 4)
            -0.4117
        """
        order = check_order(order)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(
                f"`num_classes` must be a positive int, got {num_classes}."
            )
        if not 0 <= blank_id < num_classes:
            raise ValueError(
                f"`blank_id` must lie in [0, {num_classes}), got {blank_id}."
            )
        seqs = []
        for seq in sequences:
            seq = [int(x) for x in seq]
            for x in seq:
                if not 0 <= x < num_classes or x == blank_id:
                    raise ValueError(
                        f"`sequences` holds token {x}, outside [0, {num_classes})"
                        " or equal to the blank."
                    )
            seqs.append(seq)
        classes = [k for k in range(num_classes) if k != blank_id]
        vocab, grams, _ = kneser_ney_grams(
            seqs, order=order, vocab=classes, discounts=discounts
        )
        table = NGramTable.from_grams(vocab, grams)
        return cls._with_classes(
            table, list(range(num_classes)), blank_id, sentence_end
        )

    @classmethod
    def from_arpa(
        cls,
        path: Any,
        tokens: Sequence[str],
        *,
        blank_id: int = 0,
        unk_log_prob: float | None = None,
        sentence_end: bool = True,
    ) -> TokenNGramLM:
        """Loads a token-level ARPA file whose words are the texts ``tokens[k]``."""
        _, grams = read_arpa(path)
        tokens = [str(t) for t in tokens]
        table = table_from_arpa_grams(grams, unk_log_prob=unk_log_prob)
        return cls._with_classes(table, tokens, blank_id, sentence_end)

    @classmethod
    def _with_classes(cls, table, words, blank_id, sentence_end) -> TokenNGramLM:
        class_word = np.array([table.word_id(w) for w in words], np.int32)
        class_word[blank_id] = table.host.index[UNK]
        return cls(
            table=table,
            class_word=jnp.asarray(class_word),
            num_classes=len(words),
            sentence_end=bool(sentence_end),
        )


jax.tree_util.register_dataclass(
    TokenNGramLM,
    data_fields=["table", "class_word"],
    meta_fields=["num_classes", "sentence_end"],
)
