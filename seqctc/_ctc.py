"""Connectionist temporal classification: blank-extended labels, α, β, γ, loss."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc import _ctc_loss, _ctc_tables
from seqctc._graph import label_graph
from seqctc._inputs import positions_valid
from seqctc._types import Array, ArrayLike
from seqctc._utils import (
    check_rank,
    check_same_dim,
    check_sequence_args,
)


class ExtendedLabels(NamedTuple):
    """Labels interleaved with blanks: the states of the CTC graph.

    Attributes:
        states: ``[B, S]`` int32 class of each state, ``S = 2N + 1``; even states
            are blanks, state ``2n + 1`` is label ``n``. Padded states hold the
            blank.
        skip: ``[B, S]`` bool, ``True`` where state ``s`` may be entered from
            ``s - 2`` (a label state whose label differs from the previous one).
        paddings: ``[B, S]`` float, 1.0 for states ``s >= 2 N_b + 1``.
    """

    states: Array
    skip: Array
    paddings: Array


def extend_with_blanks(
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> ExtendedLabels:
    r"""Interleaves labels with blanks, as the CTC graph needs.

    A label sequence :math:`l_1 \dots l_N` becomes the state sequence
    :math:`\epsilon, l_1, \epsilon, l_2, \dots, l_N, \epsilon` of length
    :math:`S = 2N + 1`. A path may stay in a state, move to the next one, or skip
    a blank between two different labels:

    .. math::

        \mathrm{skip}[s] = (s \text{ odd}) \wedge (s \ge 3)
            \wedge (\mathrm{states}[s] \ne \mathrm{states}[s - 2]).

    Args:
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded.
        blank_id: the blank class (a Python int, static).

    Returns:
        An :class:`ExtendedLabels` with ``states``, ``skip`` and ``paddings`` of
        shape ``[B, 2N + 1]``.

    Raises:
        ValueError: if ``labels`` or ``label_paddings`` is not rank 2 or their
            shapes differ.

    Examples:
        >>> import seqctc
        >>> ext = seqctc.extend_with_blanks([[1, 1, 2]], [[0., 0., 0.]])
        >>> ext.states
        Array([[0, 1, 0, 1, 0, 2, 0]], dtype=int32)
        >>> ext.skip
        Array([[False, False, False, False, False,  True, False]], dtype=bool)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.
    """
    labels = jnp.asarray(labels)
    label_paddings = jnp.asarray(label_paddings)
    check_rank(labels, 2, "labels")
    check_rank(label_paddings, 2, "label_paddings")
    check_same_dim(labels, 0, "labels", label_paddings, 0, "label_paddings")
    check_same_dim(labels, 1, "labels", label_paddings, 1, "label_paddings")
    # Labels are not range-checked here: no class count is known.
    graph = label_graph(labels, label_paddings, np.iinfo(np.int32).max, blank_id)
    positions = jnp.arange(graph.states.shape[1], dtype=jnp.int32)
    paddings = positions[None, :] >= graph.num_states[:, None]
    states, skip = graph.states, graph.skip
    paddings = paddings.astype(jnp.float32)
    return ExtendedLabels(states=states, skip=skip, paddings=paddings)


# --------------------------------------------------------------------------
# The loss: a custom JVP, so that forward mode works and reverse mode gets the
# analytic gradient (the tangent is linear in the logits' tangent).


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _ctc_nll(logits, logit_paddings, labels, label_paddings, blank_id):
    return _ctc_loss.nll(logits, logit_paddings, labels, label_paddings, blank_id)


@_ctc_nll.defjvp
def _ctc_nll_jvp(blank_id, primals, tangents):
    loss, grad = _ctc_loss.nll_and_gradient(*primals, blank_id)
    tangent = tangents[0].astype(grad.dtype)
    return loss, jnp.sum(grad * tangent, axis=(1, 2))


# --------------------------------------------------------------------------
# Public functions.


def _nan_rows(x: Array, prep: _ctc_loss.Prepared) -> Array:
    """``[B, T, S]`` ``x`` with the graph entries of the frozen rows set to NaN."""
    on_graph = _ctc_tables.on_graph(prep)  # [T, B, S]
    rows = prep.frozen[None, :, None] & on_graph
    return jnp.where(jnp.transpose(rows, (1, 0, 2)), jnp.nan, x)


def ctc_log_alpha(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Array:
    r"""Log forward variables α of CTC, emission at frame ``t`` included.

    ``α[b, t, s]`` is the log of the total probability of the path prefixes
    :math:`\pi_0 \dots \pi_t` through the blank-extended states (see
    :func:`extend_with_blanks`) that end in state ``s`` at frame ``t``:

    .. math::

        \alpha_0(s) = \log y_0(\ell'_s) \text{ for } s \in \{0, 1\}, \qquad
        \alpha_t(s) = \log y_t(\ell'_s) + \log\!\big(e^{\alpha_{t-1}(s)}
            + e^{\alpha_{t-1}(s-1)}
            + \mathrm{skip}_s\, e^{\alpha_{t-1}(s-2)}\big).

    ``log p(labels | logits) = logaddexp(α[T_b−1, S_b−1], α[T_b−1, S_b−2])``.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (log-probabilities work too);
            ``log_softmax`` is applied inside. Half precision accumulates in
            float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read);
            a frame counts only where its padding is 0, in any position.
        labels: ``[B, N]`` integer labels.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read);
            a label counts only where its padding is 0, in any position.
        blank_id: the blank class, a static Python int in ``[0, K)``.

    Returns:
        ``[B, T, 2N + 1]`` log α in the compute dtype. Padded frames and padded
        states hold ``NEG_INF`` (``-1e30``); unreachable states in valid frames
        hold ``NEG_INF`` or less (finite). Rows with a label that is the blank or
        outside ``[0, K)`` are NaN on their valid entries.

    Raises:
        ValueError: on a wrong rank, mismatched shapes or ``blank_id`` outside
            ``[0, K)``, naming the argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.zeros((1, 2, 2))  # two frames, classes {blank, a}
        >>> alpha = seqctc.ctc_log_alpha(logits, jnp.zeros((1, 2)),
        ...                              jnp.array([[1]]), jnp.zeros((1, 1)))
        >>> jnp.exp(alpha[0])  # rows: frames; columns: states (ε, a, ε)
        Array([[0.5 , 0.5 , 0.  ],
               [0.25, 0.5 , 0.25]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`ctc_log_beta`, :func:`ctc_posteriors`, :func:`ctc_loss`.
    """
    prep = _ctc_loss.prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    log_alpha = _ctc_tables.public(prep, _ctc_tables.log_alpha(prep))
    return _nan_rows(log_alpha, prep)


def ctc_log_beta(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Array:
    r"""Log backward variables β of CTC, emission at frame ``t`` excluded.

    ``β[b, t, s]`` is the log of the total probability of the path suffixes
    :math:`\pi_{t+1} \dots \pi_{T_b-1}` that continue from state ``s`` at frame
    ``t`` and finish in one of the two final states (the seed's convention):

    .. math::

        \beta_{T_b-1}(S_b-1) = \beta_{T_b-1}(S_b-2) = 0, \qquad
        \beta_t(s) = \log\!\big(e^{\beta_{t+1}(s) + \log y_{t+1}(\ell'_s)}
            + e^{\beta_{t+1}(s+1) + \log y_{t+1}(\ell'_{s+1})}
            + \mathrm{skip}_{s+2}\, e^{\beta_{t+1}(s+2)
            + \log y_{t+1}(\ell'_{s+2})}\big).

    Hence ``logsumexp_s(α[t] + β[t]) = log p(labels | logits)`` on every valid
    frame ``t``.

    Args:
        logits: ``[B, T, K]`` unnormalised logits; ``log_softmax`` is applied
            inside.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read);
            a frame counts only where its padding is 0, in any position.
        labels: ``[B, N]`` integer labels.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read);
            a label counts only where its padding is 0, in any position.
        blank_id: the blank class, a static Python int in ``[0, K)``.

    Returns:
        ``[B, T, 2N + 1]`` log β in the compute dtype; ``NEG_INF`` on padded
        frames and states, NaN on the valid entries of rows with bad labels.

    Raises:
        ValueError: on a wrong rank, mismatched shapes or ``blank_id`` outside
            ``[0, K)``, naming the argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> beta = seqctc.ctc_log_beta(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
        ...                            jnp.array([[1]]), jnp.zeros((1, 1)))
        >>> jnp.exp(beta[0])
        Array([[0.5, 1. , 0.5],
               [0. , 1. , 1. ]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`ctc_log_alpha`, :func:`ctc_posteriors`.
    """
    prep = _ctc_loss.prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    log_beta = _ctc_tables.public(prep, _ctc_tables.log_beta(prep))
    return _nan_rows(log_beta, prep)


def ctc_posteriors(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> Array:
    r"""State posteriors γ of CTC: the probability of each state at each frame.

    .. math::

        \gamma_t(s) = P(\pi_t = s \mid \text{labels}, \text{logits})
            = \exp\big(\alpha_t(s) + \beta_t(s) - \log p(\text{labels} \mid
            \text{logits})\big),

    so ``γ[b, t]`` sums to 1 over the states on every valid frame of a feasible
    row.

    Args:
        logits: ``[B, T, K]`` unnormalised logits; ``log_softmax`` is applied
            inside.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read);
            a frame counts only where its padding is 0, in any position.
        labels: ``[B, N]`` integer labels.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read);
            a label counts only where its padding is 0, in any position.
        blank_id: the blank class, a static Python int in ``[0, K)``.

    Returns:
        ``[B, T, 2N + 1]`` probabilities in the compute dtype; 0 on padded frames
        and states and on rows that cannot emit their labels (too few frames or
        probability 0); NaN on the valid entries of rows with bad labels.

    Raises:
        ValueError: on a wrong rank, mismatched shapes or ``blank_id`` outside
            ``[0, K)``, naming the argument.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> gamma = seqctc.ctc_posteriors(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)),
        ...                               jnp.array([[1]]), jnp.zeros((1, 1)))
        >>> gamma[0].round(4)  # paths: (ε a), (a a), (a ε)
        Array([[0.3333, 0.6667, 0.    ],
               [0.    , 0.6667, 0.3333]], dtype=float32)

    See also:
        :func:`ctc_log_alpha`, :func:`ctc_log_beta`, :func:`ctc_loss`.
    """
    prep = _ctc_loss.prepare(logits, logit_paddings, labels, label_paddings, blank_id)
    return _nan_rows(_ctc_tables.posteriors(prep), prep)


def ctc_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
    zero_infinity: bool = False,
    reduction: str = "none",
    log_epsilon: float | None = None,
) -> Array:
    r"""Exact CTC loss, −log p(labels | logits), with an analytic gradient.

    A positional drop-in for ``optax.ctc_loss``: the same arguments in the same
    order and the same values on feasible pairs, but exact at the edges. The loss
    is never negative; a pair that no path can emit (``T_b < N_b`` + the number
    of adjacent repeated labels, decided from the lengths, or a probability of 0
    from ``-inf`` logits) gives ``+inf`` and an all-zero gradient, where optax
    returns a large finite number.

    .. math::

        \mathcal{L} = -\log \sum_s \exp \alpha_{T_b-1}(s) \, [s \ge S_b - 2],
        \qquad
        \frac{\partial \mathcal{L}}{\partial z_t(k)} = \mathrm{softmax}(z_t)_k
            - \sum_{s:\, \ell'_s = k} \gamma_t(s).

    The gradient (the seed's derivation, in logit space) is analytic: the
    forward pass runs α forward, keeping the share of each predecessor in every
    state's logsumexp, then runs γ backward as the adjoint of α in probability
    space (multiply-adds, no β). It enters JAX as a ``jax.custom_jvp`` whose
    tangent is linear in the logits' tangent (``Σ grad · dlogits``), so reverse
    mode (``jax.grad``) transposes it into the analytic gradient and forward
    mode (``jax.jvp``, ``jax.hessian``) works too, differentiating through the
    recursions. The gradient is zero on padded frames. Labels and paddings get
    no gradient.

    Padded frames may sit anywhere (left padding, holes of dropped frames):
    each is skipped exactly, as if removed, so the loss equals the loss of the
    valid frames alone, as in ``optax.ctc_loss``. Padded label slots are
    skipped likewise.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (log-probabilities work too);
            ``log_softmax`` is applied inside. Half precision accumulates in
            float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read);
            a frame counts only where its padding is 0, in any position.
        labels: ``[B, N]`` integer labels.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read);
            a label counts only where its padding is 0, in any position.
        blank_id: the blank class, a static Python int in ``[0, K)``.
        zero_infinity: replace infinite losses (and their gradients) by 0, as
            ``torch.nn.functional.ctc_loss`` does.
        reduction: ``"none"`` (per sequence), ``"sum"``, or ``"mean"`` (torch
            semantics: the mean over the batch of ``loss / max(N_b, 1)``).
        log_epsilon: accepted so that code written for ``optax.ctc_loss`` runs
            unchanged, and ignored: optax uses it as a finite stand-in for
            log 0, while seqctc is exact (log 0 stays out of the recursions
            without a stand-in, and a row that no path can emit gives
            ``+inf``, or 0 with ``zero_infinity``).

    Returns:
        ``[B]`` losses in the compute dtype (float32 for half inputs), or a scalar
        when ``reduction`` is ``"sum"`` or ``"mean"``. A row with NaN logits in a
        valid frame, or a valid label equal to the blank or outside ``[0, K)``,
        gives NaN for that row only.

    Raises:
        ValueError: on a wrong rank, mismatched shapes, ``blank_id`` outside
            ``[0, K)`` or an unknown ``reduction``, naming the argument.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.zeros((2, 2, 2))
        >>> labels = jnp.array([[1, 1], [1, 0]])
        >>> label_paddings = jnp.array([[0., 0.], [0., 1.]])
        >>> seqctc.ctc_loss(logits, jnp.zeros((2, 2)), labels, label_paddings)
        Array([     inf, 0.28768...], dtype=float32)
        >>> grad = jax.grad(lambda x: seqctc.ctc_loss(
        ...     x, jnp.zeros((2, 2)), labels, label_paddings, reduction="sum"))
        >>> grad(logits)[0]  # the infeasible row: zero, finite
        Array([[0., 0.],
               [0., 0.]], dtype=float32)

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006.

    See also:
        :func:`ctc_log_alpha`, :func:`ctc_posteriors`, :func:`check_inputs`,
        ``optax.ctc_loss``, ``torch.nn.functional.ctc_loss``.
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(
            f"`reduction` must be 'none', 'sum' or 'mean', got {reduction!r}."
        )
    del log_epsilon  # exact: see the docstring
    loss = _ctc_nll(logits, logit_paddings, labels, label_paddings, blank_id)
    if zero_infinity:
        loss = jnp.where(jnp.isinf(loss), jnp.zeros_like(loss), loss)
    if reduction == "sum":
        return jnp.sum(loss)
    if reduction == "mean":
        num_labels = jnp.sum(positions_valid(label_paddings), axis=1)
        denominator = jnp.maximum(num_labels, 1).astype(loss.dtype)
        return jnp.mean(loss / denominator)
    return loss


def check_inputs(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int = 0,
) -> None:
    r"""Checks the values of CTC inputs eagerly; not jittable.

    The CTC functions check only static facts (ranks, shapes, ``blank_id``) and
    turn bad values into NaN rows. Call this once on your data to get a readable
    error instead.

    Args:
        logits: ``[B, T, K]`` logits.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame.
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label.
        blank_id: the blank class, a Python int in ``[0, K)``.

    Raises:
        ValueError: on static misuse (naming the argument), or when a row has
            NaN logits in a valid frame, a valid label equal to ``blank_id`` or
            outside ``[0, K)``, or too few frames for its labels. The message
            names each bad row and the reason.

    Examples:
        >>> import numpy as np
        >>> import seqctc
        >>> seqctc.check_inputs(np.zeros((1, 3, 4)), np.zeros((1, 3)),
        ...                     np.array([[1, 2]]), np.zeros((1, 2)))
        >>> seqctc.check_inputs(np.zeros((2, 3, 4)), np.zeros((2, 3)),
        ...                     np.array([[1, 2], [1, 7]]), np.zeros((2, 2)))
        Traceback (most recent call last):
          ...
        ValueError: row 1: label 7 at position 1 is outside [0, 4).

    See also:
        :func:`ctc_loss`.
    """
    logits, logit_paddings, labels, label_paddings = check_sequence_args(
        logits, logit_paddings, labels, label_paddings, blank_id
    )
    problems = []
    for name, paddings in (
        ("logit_paddings", logit_paddings),
        ("label_paddings", label_paddings),
    ):
        odd = np.asarray((paddings != 0) & (paddings != 1))
        for b in np.nonzero(odd.any(axis=1))[0]:
            t = int(np.argmax(odd[b]))
            problems.append(
                f"row {b}: `{name}` holds {float(paddings[b, t])} at position {t}; "
                "paddings must be 0 (counted) or 1 (padded)."
            )
    graph = label_graph(labels, label_paddings, logits.shape[2], blank_id)
    frame_valid = np.asarray(positions_valid(logit_paddings))
    label_valid = np.asarray(positions_valid(label_paddings))
    nan_frames = np.asarray(jnp.any(jnp.isnan(logits), axis=2)) & frame_valid
    labels = np.asarray(labels)
    out_of_range = (labels < 0) | (labels >= logits.shape[2])
    frame_lengths = frame_valid.sum(axis=1)
    num_labels, min_frames = (
        np.asarray(graph.num_labels),
        np.asarray(graph.min_frames()),
    )
    bad_rows = np.asarray(graph.bad_labels)
    for b in range(logits.shape[0]):
        if nan_frames[b].any():
            t = int(np.argmax(nan_frames[b]))
            problems.append(f"row {b}: NaN logits in valid frame {t}.")
        for n in np.nonzero(label_valid[b])[0] if bad_rows[b] else ():
            label = int(labels[b, n])
            if out_of_range[b, n]:
                problems.append(
                    f"row {b}: label {label} at position {n} is outside "
                    f"[0, {logits.shape[2]})."
                )
            elif label == blank_id:
                problems.append(
                    f"row {b}: label at position {n} equals blank_id={blank_id}."
                )
        if frame_lengths[b] < min_frames[b]:
            repeats = int(min_frames[b] - num_labels[b])
            problems.append(
                f"row {b}: infeasible: {frame_lengths[b]} frames cannot emit "
                f"{num_labels[b]} labels with {repeats} adjacent repeats (needs "
                f"{min_frames[b]})."
            )
    if problems:
        raise ValueError(" ".join(problems))
