"""The lecture's losses for labels with and without segmentation (Settings I–III)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._align import viterbi_align
from seqctc._inputs import masked_log_softmax
from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim, compute_dtype

_SCHEDULES = ("last", "uniform", "linear")


def _check_logits(logits: Array, paddings: Array, paddings_name: str) -> None:
    check_rank(logits, 3, "logits")
    check_rank(paddings, 2, paddings_name)
    check_same_dim(logits, 0, "logits", paddings, 0, paddings_name)
    check_same_dim(logits, 1, "logits", paddings, 1, paddings_name)


def framewise_loss(
    logits: ArrayLike, frame_labels: ArrayLike, paddings: ArrayLike
) -> Array:
    r"""Setting I: cross-entropy summed over the frames of a segmented sequence.

    When every frame has its own label (the lecture's perfectly segmented
    setting, :math:`K = T`), the loss is the aggregate of per-frame losses, and
    the gradient with respect to :math:`y[t]` involves frame :math:`t` only:

    .. math::

        \hat R = \sum_{t < T_b,\; v[t] \ne -1} -\log y_{v[t]}[t].

    A frame label of ``-1`` (what :func:`seqctc.viterbi_align` puts on padding)
    marks an unlabelled frame and contributes nothing.

    Args:
        logits: ``[B, T, K]`` unnormalised logits (``log_softmax`` is applied),
            any float dtype; half precision is computed in float32.
        frame_labels: ``[B, T]`` integer class of each frame in ``[0, K)``, or
            ``-1`` to ignore the frame.
        paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).

    Returns:
        ``[B]`` loss per sequence. A row with a frame label below ``-1`` or at
        least ``K`` in a valid frame gives NaN.

    Raises:
        ValueError: if a rank or shape is wrong or ``frame_labels`` is not
            integer.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.zeros((1, 3, 4))  # uniform: log 4 per frame
        >>> seqctc.framewise_loss(logits, jnp.array([[2, -1, 0]]), jnp.zeros((1, 3)))
        Array([2.7725887], dtype=float32)

    See also:
        :func:`framewise_predict`, :func:`viterbi_loss`.
    """
    logits = jnp.asarray(logits)
    frame_labels = jnp.asarray(frame_labels)
    paddings = jnp.asarray(paddings)
    _check_logits(logits, paddings, "paddings")
    check_rank(frame_labels, 2, "frame_labels")
    check_same_dim(logits, 0, "logits", frame_labels, 0, "frame_labels")
    check_same_dim(logits, 1, "logits", frame_labels, 1, "frame_labels")
    if not jnp.issubdtype(frame_labels.dtype, jnp.integer):
        raise ValueError(
            f"`frame_labels` must be integers, got dtype {frame_labels.dtype}."
        )
    num_classes = logits.shape[-1]
    valid = paddings == 0  # [B, T]
    log_probs = masked_log_softmax(logits, valid)  # [B, T, K]
    safe = jnp.clip(frame_labels, 0, num_classes - 1).astype(jnp.int32)
    nll = -jnp.take_along_axis(log_probs, safe[:, :, None], axis=2)[:, :, 0]
    labelled = valid & (frame_labels >= 0)
    loss = jnp.sum(jnp.where(labelled, nll, 0), axis=1)  # [B]
    bad = jnp.any(valid & ((frame_labels < -1) | (frame_labels >= num_classes)), 1)
    return jnp.where(bad, jnp.nan, loss)


def framewise_predict(logits: ArrayLike, paddings: ArrayLike) -> Array:
    r"""Setting I inference: the most likely class of each frame.

    .. math::

        \hat v[t] = \operatorname*{argmax}_k y_k[t].

    Ties go to the lowest class index.

    Args:
        logits: ``[B, T, K]`` logits or log probabilities.
        paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).

    Returns:
        ``[B, T]`` int32 predicted class per frame, ``-1`` on padded frames.

    Raises:
        ValueError: if a rank or shape is wrong.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.log(jnp.array([[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]]))
        >>> seqctc.framewise_predict(logits, jnp.array([[0., 1.]]))
        Array([[ 1, -1]], dtype=int32)

    See also:
        :func:`framewise_loss`, :func:`seqctc.greedy_decode`.
    """
    logits = jnp.asarray(logits)
    paddings = jnp.asarray(paddings)
    _check_logits(logits, paddings, "paddings")
    valid = paddings == 0
    best = jnp.argmax(jnp.where(valid[:, :, None], logits, 0), axis=-1)
    return jnp.where(valid, best, -1).astype(jnp.int32)


def sequence_weights(logit_paddings: ArrayLike, *, schedule: str = "uniform") -> Array:
    r"""Setting II: per-frame weights :math:`w_t` that respect each row's length.

    With :math:`T_b` the valid length of row :math:`b` and :math:`t` the index of
    a frame among the valid ones (padded frames are skipped wherever they are):

    * ``"last"``: the naive loss on the last output only,
      :math:`w_t = [t = T_b - 1]`.
    * ``"uniform"``: the "smarter" loss on every output, :math:`w_t = 1`.
    * ``"linear"``: the realistic ramp, small at first and growing to its
      maximum at the end, :math:`w_t = (t + 1) / T_b`.

    Padded frames get weight 0.

    Args:
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame.
        schedule: one of ``"last"``, ``"uniform"``, ``"linear"`` (static).

    Returns:
        ``[B, T]`` float32 weights (float64 for float64 paddings).

    Raises:
        ValueError: if ``logit_paddings`` is not rank 2 or ``schedule`` is
            unknown.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> pad = jnp.array([[0., 0., 0., 0.], [0., 0., 1., 1.]])
        >>> seqctc.sequence_weights(pad, schedule="last")
        Array([[0., 0., 0., 1.],
               [0., 1., 0., 0.]], dtype=float32)
        >>> seqctc.sequence_weights(pad, schedule="linear")
        Array([[0.25, 0.5 , 0.75, 1.  ],
               [0.5 , 1.  , 0.  , 0.  ]], dtype=float32)

    See also:
        :func:`weighted_sequence_loss`, :func:`weighted_vote`.
    """
    logit_paddings = jnp.asarray(logit_paddings)
    check_rank(logit_paddings, 2, "logit_paddings")
    if schedule not in _SCHEDULES:
        raise ValueError(f"`schedule` must be one of {_SCHEDULES}, got {schedule!r}.")
    dtype = jnp.float64 if logit_paddings.dtype == jnp.float64 else jnp.float32
    valid = logit_paddings == 0  # [B, T]
    lengths = jnp.sum(valid, axis=1, dtype=jnp.int32)  # [B]
    # The index of each frame among the valid ones of its row.
    frames = jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1  # [B, T]
    if schedule == "last":
        weights = frames == (lengths - 1)[:, None]
    elif schedule == "uniform":
        weights = valid
    else:
        ramp = (frames + 1).astype(dtype)
        weights = ramp / jnp.maximum(lengths, 1)[:, None].astype(dtype)
    return jnp.where(valid, weights.astype(dtype), 0)


def _frame_weights(weights, logits, valid, dtype) -> Array:
    """``[B, T]`` per-frame weights, zero on padded frames; ``None`` = 1 on valid."""
    if weights is None:
        return valid.astype(dtype)
    weights = jnp.asarray(weights)
    check_rank(weights, 2, "weights")
    check_same_dim(logits, 0, "logits", weights, 0, "weights")
    check_same_dim(logits, 1, "logits", weights, 1, "weights")
    return jnp.where(valid, weights.astype(dtype), 0)


def weighted_sequence_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    label: ArrayLike,
    weights: ArrayLike | None = None,
) -> Array:
    r"""Setting II: weighted cross-entropy of every frame against one label.

    One label :math:`v` for the whole sequence (many-to-one). The lecture's
    weighted loss, whose gradient at frame :math:`t` is :math:`w_t` times the
    frame's cross-entropy gradient:

    .. math::

        \hat R = \sum_{t < T_b} w_t \bigl(-\log y_v[t]\bigr).

    Use :func:`sequence_weights` for the lecture's schedules (``"last"`` is the
    naive last-output loss, ``"uniform"`` the all-frames one, ``"linear"`` a ramp).

    Args:
        logits: ``[B, T, K]`` unnormalised logits (``log_softmax`` is applied),
            any float dtype; half precision is computed in float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        label: ``[B]`` integer class of each sequence, in ``[0, K)``.
        weights: ``[B, T]`` frame weights (padded frames are not read), or
            ``None`` for 1 on every valid frame.

    Returns:
        ``[B]`` loss per sequence; NaN for a row whose label is outside
        ``[0, K)``.

    Raises:
        ValueError: if a rank or shape is wrong or ``label`` is not integer.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.zeros((2, 3, 4))
        >>> pad = jnp.array([[0., 0., 0.], [0., 0., 1.]])
        >>> seqctc.weighted_sequence_loss(logits, pad, jnp.array([1, 3]))  # T_b log 4
        Array([4.158883 , 2.7725887], dtype=float32)
        >>> w = seqctc.sequence_weights(pad, schedule="last")
        >>> seqctc.weighted_sequence_loss(logits, pad, jnp.array([1, 3]), w)
        Array([1.3862944, 1.3862944], dtype=float32)

    See also:
        :func:`sequence_weights`, :func:`weighted_vote`, :func:`framewise_loss`.
    """
    logits = jnp.asarray(logits)
    logit_paddings = jnp.asarray(logit_paddings)
    label = jnp.asarray(label)
    _check_logits(logits, logit_paddings, "logit_paddings")
    check_rank(label, 1, "label")
    check_same_dim(logits, 0, "logits", label, 0, "label")
    if not jnp.issubdtype(label.dtype, jnp.integer):
        raise ValueError(f"`label` must be integers, got dtype {label.dtype}.")
    num_classes = logits.shape[-1]
    valid = logit_paddings == 0  # [B, T]
    log_probs = masked_log_softmax(logits, valid)  # [B, T, K]
    dtype = log_probs.dtype
    weights = _frame_weights(weights, logits, valid, dtype)  # [B, T]
    safe = jnp.clip(label, 0, num_classes - 1).astype(jnp.int32)  # [B]
    index = jnp.broadcast_to(safe[:, None, None], (*valid.shape, 1))
    nll = -jnp.take_along_axis(log_probs, index, axis=2)[:, :, 0]  # [B, T]
    loss = jnp.sum(jnp.where(valid, weights * nll, 0), axis=1)
    return jnp.where((label < 0) | (label >= num_classes), jnp.nan, loss)


def weighted_vote(
    logits: ArrayLike, logit_paddings: ArrayLike, weights: ArrayLike | None = None
) -> Array:
    r"""Setting II inference: a weighted majority vote of the per-frame argmaxes.

    Each valid frame votes for its most likely class
    :math:`\tilde v[t] = \operatorname{argmax}_k y_k[t]` with weight :math:`w_t`:

    .. math::

        \hat v = \operatorname*{argmax}_k \sum_{t < T_b} w_t\,[\tilde v[t] = k].

    Ties (per frame and in the vote) go to the lowest class index.

    Args:
        logits: ``[B, T, K]`` logits or log probabilities.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        weights: ``[B, T]`` vote weights (padded frames are not read), or
            ``None`` for a plain majority vote.

    Returns:
        ``[B]`` int32 voted class; ``-1`` for a row without valid frames.

    Raises:
        ValueError: if a rank or shape is wrong.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.log(jnp.array([[[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]]))
        >>> seqctc.weighted_vote(logits, jnp.zeros((1, 3)))
        Array([1], dtype=int32)
        >>> seqctc.weighted_vote(logits, jnp.zeros((1, 3)), jnp.array([[3., 1., 1.]]))
        Array([0], dtype=int32)

    See also:
        :func:`weighted_sequence_loss`, :func:`framewise_predict`.
    """
    logits = jnp.asarray(logits)
    logit_paddings = jnp.asarray(logit_paddings)
    _check_logits(logits, logit_paddings, "logit_paddings")
    num_classes = logits.shape[-1]
    valid = logit_paddings == 0  # [B, T]
    dtype = compute_dtype(logits)
    weights = _frame_weights(weights, logits, valid, dtype)  # [B, T]
    best = jnp.argmax(jnp.where(valid[:, :, None], logits, 0), axis=-1)  # [B, T]
    one_hot = best[:, :, None] == jnp.arange(num_classes)[None, None, :]
    votes = jnp.sum(jnp.where(one_hot, weights[:, :, None], 0), axis=1)  # [B, K]
    winner = jnp.argmax(votes, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.any(valid, axis=1), winner, -1)


def segments_to_frame_labels(
    labels: ArrayLike,
    label_paddings: ArrayLike,
    ends: ArrayLike,
    logit_paddings: ArrayLike,
) -> Array:
    r"""Setting III with a genie: expands known segment ends into frame labels.

    If a genie tells where each label ends, filling the unlabelled frames by
    repetition turns the problem back into Setting I. Segment :math:`k` covers
    frames :math:`i_{k-1} < t \le i_k` (0-based, :math:`i_{-1} = -1`), so that

    .. math::

        \hat R = \sum_{k} \sum_{t = i_{k-1} + 1}^{i_k} -\log y_{v[k]}[t]
            = \texttt{framewise\_loss}(\text{logits},
              \texttt{segments\_to\_frame\_labels}(\dots), \text{paddings}).

    A segmentation is valid when the ends strictly increase and the last one is
    the last valid frame, :math:`i_{N_b - 1} = T_b - 1` (an empty label sequence
    needs :math:`T_b = 0`). Called eagerly on concrete arrays, an invalid row
    raises ``ValueError``; under ``jit`` it cannot be checked, so the row's frame
    labels are all ``-2``, which makes :func:`framewise_loss` NaN for that row.

    Args:
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        ends: ``[B, N]`` integer last frame (0-based, inclusive) of each
            segment; padded slots are not read.
        logit_paddings: ``[B, T]`` frame paddings, 1.0 = padded frame.

    Returns:
        ``[B, T]`` int32 frame labels, ``-1`` on padded frames.

    Raises:
        ValueError: if a rank or shape is wrong, or (eagerly) if a row's ends do
            not form a segmentation of its valid frames; the message names the
            row.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> seqctc.segments_to_frame_labels(jnp.array([[1, 2, 1]]), jnp.zeros((1, 3)),
        ...                                 jnp.array([[1, 2, 4]]), jnp.zeros((1, 5)))
        Array([[1, 1, 2, 1, 1]], dtype=int32)

    See also:
        :func:`framewise_loss`, :func:`viterbi_loss`.
    """
    labels = jnp.asarray(labels)
    label_paddings = jnp.asarray(label_paddings)
    ends = jnp.asarray(ends)
    logit_paddings = jnp.asarray(logit_paddings)
    for x, name in ((labels, "labels"), (label_paddings, "label_paddings")):
        check_rank(x, 2, name)
    check_rank(ends, 2, "ends")
    check_rank(logit_paddings, 2, "logit_paddings")
    check_same_dim(labels, 0, "labels", label_paddings, 0, "label_paddings")
    check_same_dim(labels, 1, "labels", label_paddings, 1, "label_paddings")
    check_same_dim(labels, 0, "labels", ends, 0, "ends")
    check_same_dim(labels, 1, "labels", ends, 1, "ends")
    check_same_dim(labels, 0, "labels", logit_paddings, 0, "logit_paddings")
    for x, name in ((labels, "labels"), (ends, "ends")):
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"`{name}` must be integers, got dtype {x.dtype}.")
    max_labels = labels.shape[1]
    label_valid = label_paddings == 0  # [B, N]
    frame_valid = logit_paddings == 0  # [B, T]
    num_labels = jnp.sum(label_valid, axis=1, dtype=jnp.int32)  # [B]
    num_frames = jnp.sum(frame_valid, axis=1, dtype=jnp.int32)  # [B]
    ends = ends.astype(jnp.int32)
    # Ends of padded slots count as "after every frame".
    big = jnp.int32(logit_paddings.shape[1] + 1)
    ends = jnp.where(label_valid, ends, big)
    increasing = jnp.all(
        ~label_valid[:, 1:] | (ends[:, 1:] > ends[:, :-1]), axis=1
    ) & jnp.where(num_labels > 0, ends[:, 0] >= 0, True)
    last = jnp.take_along_axis(ends, jnp.maximum(num_labels - 1, 0)[:, None], 1)
    covers = jnp.where(num_labels > 0, last[:, 0] == num_frames - 1, num_frames == 0)
    ok = increasing & covers  # [B]
    if not isinstance(ok, jax.core.Tracer):
        bad_rows = np.flatnonzero(~np.asarray(ok))
        if bad_rows.size:
            row = int(bad_rows[0])
            raise ValueError(
                f"`ends` row {row} is not a segmentation of its "
                f"{int(num_frames[row])} valid frames: ends must strictly increase "
                f"and the last one must be {int(num_frames[row]) - 1}, got "
                f"{np.asarray(ends[row, : int(num_labels[row])]).tolist()}."
            )
    frames = jnp.arange(logit_paddings.shape[1], dtype=jnp.int32)  # [T]
    # Segment of frame t = number of segments that end before t.
    segment = jnp.sum(ends[:, None, :] < frames[None, :, None], axis=2)  # [B, T]
    segment = jnp.minimum(segment, max_labels - 1) if max_labels else segment
    if max_labels:
        frame_labels = jnp.take_along_axis(labels.astype(jnp.int32), segment, 1)
    else:
        frame_labels = jnp.zeros_like(segment)
    frame_labels = jnp.where(ok[:, None], frame_labels, -2)
    return jnp.where(frame_valid, frame_labels, -1).astype(jnp.int32)


def viterbi_loss(
    logits: ArrayLike,
    logit_paddings: ArrayLike,
    labels: ArrayLike,
    label_paddings: ArrayLike,
    *,
    blank_id: int | None = 0,
) -> Array:
    r"""Setting III by maximum likelihood: the loss of the most likely path.

    The lecture's ``MaxLikelihoodTraining``: find the path :math:`\ell^*` through
    the segmentation graph that maximises :math:`p(\tilde v_\ell \mid \ell)`
    (:func:`seqctc.viterbi_align`, under ``stop_gradient``), then take the
    framewise cross-entropy on its expanded labels. Its value is
    :math:`-\log` of the Viterbi path probability and its gradient is exactly the
    framewise cross-entropy gradient on the aligned labels:

    .. math::

        \hat R_{\ell^*} = -\sum_{t < T_b} \log y_{\tilde v_{\ell^*}[t]}[t],
        \qquad \ell^* = \operatorname*{argmax}_\ell \prod_t y_{\tilde v_\ell[t]}[t].

    Since the best path is one term of the CTC sum,
    ``viterbi_loss >= ctc_loss`` for the CTC graph. Unlike CTC, training on the
    single best path can lock onto a poor segmentation early (the lecture's bad
    local minima).

    Args:
        logits: ``[B, T, K]`` unnormalised logits (``log_softmax`` is applied),
            any float dtype; half precision is computed in float32.
        logit_paddings: ``[B, T]`` paddings, 1.0 = padded frame (never read).
        labels: ``[B, N]`` integer labels, right padded.
        label_paddings: ``[B, N]`` paddings, 1.0 = padded label (never read).
        blank_id: the blank class (static int) for the CTC graph, or ``None``
            for the blank-free segmentation graph.

    Returns:
        ``[B]`` loss per sequence. Rows whose best path has probability 0
        (infeasible: too few frames) give ``+inf`` with a zero, finite gradient.
        Rows with an invalid label or NaN logits give NaN.

    Raises:
        ValueError: as :func:`seqctc.viterbi_align`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import seqctc
        >>> logits = jnp.log(jnp.array([[[0.6, 0.3, 0.1], [0.7, 0.2, 0.1],
        ...                              [0.2, 0.2, 0.6]]]))
        >>> loss = seqctc.viterbi_loss(logits, jnp.zeros((1, 3)), jnp.array([[1, 2]]),
        ...                            jnp.zeros((1, 2)))
        >>> round(float(jnp.exp(-loss[0])), 3)  # 0.3 * 0.7 * 0.6
        0.126

    References:
        Graves et al., `Connectionist Temporal Classification
        <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, ICML 2006
        (section 3.1 contrasts the best path with the CTC sum).

    See also:
        :func:`seqctc.viterbi_align`, :func:`framewise_loss`,
        :func:`seqctc.ctc_loss`.
    """
    logits = jnp.asarray(logits)
    alignment = viterbi_align(
        jax.lax.stop_gradient(logits),
        logit_paddings,
        labels,
        label_paddings,
        blank_id=blank_id,
    )
    loss = framewise_loss(logits, alignment.frame_labels, logit_paddings)
    log_prob = alignment.log_prob
    loss = jnp.where(log_prob == -jnp.inf, jnp.inf, loss)
    return jnp.where(jnp.isnan(log_prob), jnp.nan, loss)


def _check_count_args(num_frames, num_labels, num_repeats, blank_id):
    for value, name in (
        (num_frames, "num_frames"),
        (num_labels, "num_labels"),
        (num_repeats, "num_repeats"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"`{name}` must be an int, got {value!r}.")
        if value < 0:
            raise ValueError(f"`{name}` must be non-negative, got {value}.")
    if num_repeats > max(num_labels - 1, 0):
        raise ValueError(
            f"`num_repeats` must be at most num_labels - 1 = "
            f"{max(num_labels - 1, 0)}, got {num_repeats}."
        )
    if blank_id is not None and (
        isinstance(blank_id, bool) or not isinstance(blank_id, (int, np.integer))
    ):
        raise ValueError(f"`blank_id` must be an int or None, got {blank_id!r}.")


def count_segmentations(
    num_frames: int,
    num_labels: int,
    *,
    num_repeats: int = 0,
    blank_id: int | None = None,
) -> int:
    r"""The number of paths through a segmentation graph, exactly.

    The lecture's argument for why trying every segmentation is hopeless: the
    count grows exponentially with :math:`T`.

    * ``blank_id=None`` (the lecture's blank-free graph): each of the :math:`N`
      labels occupies at least one frame, in order, so a segmentation is a
      composition of :math:`T` into :math:`N` positive parts:
      :math:`\binom{T - 1}{N - 1}` (and 1 for :math:`T = N = 0`).
    * ``blank_id`` an int (the CTC graph): a path gives each label
      :math:`\ge 1` frame and each of the :math:`N + 1` blank runs :math:`\ge 0`
      frames, except the :math:`R` blank runs between repeated labels, which
      need :math:`\ge 1`. Distributing the :math:`T - N - R` free frames over
      :math:`2N + 1` runs gives

    .. math::

        \#\text{paths} = \binom{T + N - R}{2N}, \qquad 0 \text{ if } T < N + R.

    Only the number of adjacent repeats matters, not where they are.

    Args:
        num_frames: :math:`T`, a non-negative Python int.
        num_labels: :math:`N`, a non-negative Python int.
        num_repeats: :math:`R`, the number of adjacent equal label pairs (CTC
            graph only; the blank-free graph keeps repeats as separate
            segments), in ``[0, max(N - 1, 0)]``.
        blank_id: an int selects the CTC graph (its value is irrelevant here),
            ``None`` the blank-free graph.

    Returns:
        The count as an exact Python int.

    Raises:
        ValueError: if an argument is not a non-negative int or
            ``num_repeats`` exceeds ``N - 1``.

    Examples:
        >>> import seqctc
        >>> seqctc.count_segmentations(5, 3)  # the lecture's 121 over 5 frames
        6
        >>> seqctc.count_segmentations(5, 3, num_repeats=0, blank_id=0)
        28
        >>> seqctc.count_segmentations(1000, 100)  # far too many to try
        ... # doctest: +ELLIPSIS
        63...

    See also:
        :func:`log_count_segmentations`, :func:`seqctc.viterbi_align`.
    """
    _check_count_args(num_frames, num_labels, num_repeats, blank_id)
    t, n, r = int(num_frames), int(num_labels), int(num_repeats)
    if blank_id is None:
        if n == 0:
            return int(t == 0)
        return math.comb(t - 1, n - 1) if t >= n else 0
    if t < n + r:
        return 0
    return math.comb(t + n - r, 2 * n)


def log_count_segmentations(
    num_frames: ArrayLike,
    num_labels: ArrayLike,
    *,
    num_repeats: ArrayLike = 0,
    blank_id: int | None = None,
) -> Array:
    r"""The natural log of :func:`count_segmentations`, for large or batched sizes.

    Uses :math:`\log\binom{n}{k} = \log\Gamma(n+1) - \log\Gamma(k+1) -
    \log\Gamma(n-k+1)`; broadcasts over arrays of sizes and is jittable.

    Args:
        num_frames: :math:`T`, integer array or int.
        num_labels: :math:`N`, integer array or int (same shape or broadcastable
            explicitly to the same shape).
        num_repeats: :math:`R` (CTC graph only).
        blank_id: an int for the CTC graph, ``None`` for the blank-free graph.

    Returns:
        float32 array (float64 with x64) of the broadcast shape: the log of the
        number of paths, ``-inf`` where there is none.

    Examples:
        >>> import seqctc
        >>> round(float(seqctc.log_count_segmentations(1000, 100)), 1)  # log C(999, 99)
        319.6
        >>> float(seqctc.log_count_segmentations(2, 3, blank_id=0))
        -inf

    See also:
        :func:`count_segmentations`.
    """
    float_dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    t = jnp.asarray(num_frames).astype(float_dtype)
    n = jnp.asarray(num_labels).astype(float_dtype)
    r = jnp.asarray(num_repeats).astype(float_dtype)
    gammaln = jax.scipy.special.gammaln
    if blank_id is None:
        top, bottom = t - 1, n - 1
        feasible = (t >= n) & (n > 0)
        empty = (t == 0) & (n == 0)
    else:
        top, bottom = t + n - r, 2 * n
        feasible = t >= n + r
        empty = jnp.zeros_like(feasible)
    safe_top = jnp.where(feasible, top, 0)
    safe_bottom = jnp.where(feasible, bottom, 0)
    log_comb = (
        gammaln(safe_top + 1)
        - gammaln(safe_bottom + 1)
        - gammaln(safe_top - safe_bottom + 1)
    )
    log_count = jnp.where(feasible, log_comb, -jnp.inf)
    return jnp.where(empty, 0, log_count)
