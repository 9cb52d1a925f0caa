"""Recurrent cells (Elman RNN and GRU): one step forward and its hand backward.

Parameters are laid out exactly like torch's ``nn.RNN`` and ``nn.GRU``
(``weight_ih_l0`` is ``w_ih``, and so on), so torch weights load without
reshaping. Each step is split internally into an input projection, which does
not depend on the state and so can be computed for all frames at once, and a
recurrent part; ``scan_rnn`` uses the split to hoist the input matmul out of
the scan.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank


class RNNParams(NamedTuple):
    """Parameters of an Elman (tanh) RNN cell, laid out as torch's ``nn.RNN``.

    Attributes:
        w_ih: ``[H, D]`` input-to-hidden weights.
        w_hh: ``[H, H]`` hidden-to-hidden weights.
        b_ih: ``[H]`` input bias.
        b_hh: ``[H]`` hidden bias.
    """

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array


class GRUParams(NamedTuple):
    """Parameters of a GRU cell, laid out as torch's ``nn.GRU``.

    Rows come in three blocks of ``H``: reset gate ``r``, update gate ``z`` and
    candidate ``n``, in that (torch's) order. ``b_hh``'s last block is the
    ``b_hn`` that multiplies with the reset gate.

    Attributes:
        w_ih: ``[3H, D]`` input-to-hidden weights (``W_ir; W_iz; W_in``).
        w_hh: ``[3H, H]`` hidden-to-hidden weights (``W_hr; W_hz; W_hn``).
        b_ih: ``[3H]`` input biases.
        b_hh: ``[3H]`` hidden biases.
    """

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array


# ----------------------------------------------------------------------------
# Static checks and broadcasting helpers.


def _as_params(params, cls, gates: int):
    """Converts ``params`` to ``cls`` of arrays and checks their shapes."""
    if not isinstance(params, tuple) or len(params) != 4:
        raise ValueError(
            f"`params` must be a {cls.__name__}(w_ih, w_hh, b_ih, b_hh), "
            f"got {type(params).__name__}."
        )
    params = cls(*(jnp.asarray(p) for p in params))
    check_rank(params.w_ih, 2, "params.w_ih")
    check_rank(params.w_hh, 2, "params.w_hh")
    check_rank(params.b_ih, 1, "params.b_ih")
    check_rank(params.b_hh, 1, "params.b_hh")
    rows, hidden = params.w_hh.shape
    if rows != gates * hidden:
        raise ValueError(
            f"`params.w_hh` must have shape [{gates}H, H], got {params.w_hh.shape}."
        )
    for name in ("w_ih", "b_ih", "b_hh"):
        if getattr(params, name).shape[0] != rows:
            raise ValueError(
                f"`params.{name}` must have {rows} rows to match `params.w_hh` "
                f"of shape {params.w_hh.shape}, got {getattr(params, name).shape}."
            )
    return params


def _check_state_input(params, h: Array, x: Array) -> None:
    """Checks that ``h`` is ``[..., H]`` and ``x`` is ``[..., D]``."""
    hidden = params.w_hh.shape[1]
    features = params.w_ih.shape[1]
    if h.ndim < 1 or h.shape[-1] != hidden:
        raise ValueError(
            f"`h` must have shape [..., {hidden}] for hidden size {hidden}, "
            f"got {h.shape}."
        )
    if x.ndim < 1 or x.shape[-1] != features:
        raise ValueError(
            f"`x` must have shape [..., {features}] for input size {features}, "
            f"got {x.shape}."
        )
    try:
        np.broadcast_shapes(h.shape[:-1], x.shape[:-1])
    except ValueError:
        raise ValueError(
            f"The batch dims of `h` {h.shape[:-1]} and `x` {x.shape[:-1]} do not "
            "broadcast."
        ) from None


def _broadcast_batch(h: Array, x: Array) -> tuple[Array, Array]:
    """Broadcasts the leading (batch) dims of ``h`` and ``x`` explicitly."""
    batch = np.broadcast_shapes(h.shape[:-1], x.shape[:-1])
    return (
        jnp.broadcast_to(h, batch + h.shape[-1:]),
        jnp.broadcast_to(x, batch + x.shape[-1:]),
    )


def _unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sums ``g`` over the dims that broadcasting added to an array of ``shape``."""
    lead = g.ndim - len(shape)
    g = jnp.sum(g, axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def _outer_sum(g: Array, a: Array) -> Array:
    """``Σ_batch g[..., i] a[..., j]``: a weight gradient, ``[G, A]``."""
    g2 = g.reshape(-1, g.shape[-1])
    a2 = a.reshape(-1, a.shape[-1])
    return g2.T @ a2


def _add_bias(a: Array, b: Array) -> Array:
    """``a[..., G] + b[G]`` with the broadcast spelled out (rank promotion off)."""
    return a + b.reshape((1,) * (a.ndim - 1) + b.shape)


def _batch_sum(g: Array) -> Array:
    """``Σ_batch g[..., i]``: a bias gradient."""
    return jnp.sum(g.reshape(-1, g.shape[-1]), axis=0)


# ----------------------------------------------------------------------------
# Elman RNN.


def _rnn_project(params: RNNParams, x: Array) -> Array:
    """The input half of the pre-activation, ``x W_ih^T + b_ih``: ``[..., H]``."""
    return _add_bias(x @ params.w_ih.T, params.b_ih)


def _rnn_recur(params: RNNParams, h: Array, xp: Array) -> Array:
    """The recurrent half: ``tanh(xp + h W_hh^T + b_hh)``."""
    return jnp.tanh(xp + _add_bias(h @ params.w_hh.T, params.b_hh))


def _rnn_preact_grad(h_new: Array, dh_new: Array) -> Array:
    """``dL/da = dL/dh' ⊙ (1 − h'^2)`` for ``h' = tanh(a)``."""
    return dh_new * (1 - h_new * h_new)


def rnn_step(params: RNNParams, h: ArrayLike, x: ArrayLike) -> Array:
    r"""One step of an Elman RNN cell with a tanh nonlinearity (torch ``nn.RNN``).

    .. math::

        h' = \tanh(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})

    Args:
        params: an :class:`RNNParams` with ``w_ih [H, D]``, ``w_hh [H, H]``,
            ``b_ih [H]``, ``b_hh [H]``.
        h: ``[..., H]`` previous state.
        x: ``[..., D]`` input; its leading (batch) dims broadcast against ``h``'s.

    Returns:
        ``[..., H]`` new state, with the broadcast batch dims.

    Raises:
        ValueError: if the parameter shapes disagree, or ``h``/``x`` do not end in
            ``H``/``D`` or their batch dims do not broadcast.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_rnn_params(jax.random.key(0), 3, 4)
        >>> seqctc.rnn_step(params, jnp.zeros((2, 4)), jnp.ones((2, 3))).shape
        (2, 4)

    See also:
        :func:`rnn_step_backward`, :func:`scan_rnn`.
    """
    params = _as_params(params, RNNParams, 1)
    h, x = jnp.asarray(h), jnp.asarray(x)
    _check_state_input(params, h, x)
    h, x = _broadcast_batch(h, x)
    return _rnn_recur(params, h, _rnn_project(params, x))


def rnn_step_backward(
    params: RNNParams, h: ArrayLike, x: ArrayLike, dh_new: ArrayLike
) -> tuple[RNNParams, Array, Array]:
    r"""The hand-derived backward of :func:`rnn_step` (the seed's RNN cell backward).

    With the pre-activation :math:`a = x W_{ih}^\top + b_{ih} + h W_{hh}^\top +
    b_{hh}` and :math:`h' = \tanh(a)`, the chain rule through ``tanh`` and the
    two matrix products gives (sums run over the batch dims)

    .. math::

        \delta &= \frac{\partial L}{\partial h'} \odot (1 - h'^2) \\
        \frac{\partial L}{\partial W_{ih}} &= \textstyle\sum_b \delta_b^\top x_b,
        \quad
        \frac{\partial L}{\partial W_{hh}} = \textstyle\sum_b \delta_b^\top h_b,
        \quad
        \frac{\partial L}{\partial b_{ih}} = \frac{\partial L}{\partial b_{hh}}
            = \textstyle\sum_b \delta_b \\
        \frac{\partial L}{\partial h} &= \delta W_{hh}, \quad
        \frac{\partial L}{\partial x} = \delta W_{ih}.

    Args:
        params: an :class:`RNNParams` (see :func:`rnn_step`).
        h: ``[..., H]`` previous state.
        x: ``[..., D]`` input.
        dh_new: ``[..., H]`` gradient of the loss w.r.t. the new state, with the
            broadcast batch dims of ``h`` and ``x``.

    Returns:
        ``(dparams, dh, dx)``: an :class:`RNNParams` of gradients shaped like
        ``params``, and gradients shaped like ``h`` and ``x`` (summed over the
        dims that broadcasting added). Equal to ``jax.vjp`` of :func:`rnn_step`.

    Raises:
        ValueError: as :func:`rnn_step`, or if ``dh_new``'s shape differs from
            the new state's.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_rnn_params(jax.random.key(0), 3, 4)
        >>> h, x = jnp.zeros((2, 4)), jnp.ones((2, 3))
        >>> dparams, dh, dx = seqctc.rnn_step_backward(params, h, x, jnp.ones((2, 4)))
        >>> dparams.w_ih.shape, dh.shape, dx.shape
        ((4, 3), (2, 4), (2, 3))

    See also:
        :func:`rnn_step`, :func:`gru_step_backward`.
    """
    params = _as_params(params, RNNParams, 1)
    h0, x0 = jnp.asarray(h), jnp.asarray(x)
    _check_state_input(params, h0, x0)
    h, x = _broadcast_batch(h0, x0)
    dh_new = jnp.asarray(dh_new)
    if dh_new.shape != h.shape:
        raise ValueError(f"`dh_new` must have shape {h.shape}, got {dh_new.shape}.")
    # Forward, keeping the output that the tanh derivative needs.
    h_new = _rnn_recur(params, h, _rnn_project(params, x))  # [..., H]
    # Through the tanh.
    delta = _rnn_preact_grad(h_new, dh_new)  # [..., H]
    # Through the two affine maps.
    dparams = RNNParams(
        w_ih=_outer_sum(delta, x),
        w_hh=_outer_sum(delta, h),
        b_ih=_batch_sum(delta),
        b_hh=_batch_sum(delta),
    )
    dh = delta @ params.w_hh  # [..., H]
    dx = delta @ params.w_ih  # [..., D]
    return dparams, _unbroadcast(dh, h0.shape), _unbroadcast(dx, x0.shape)


# ----------------------------------------------------------------------------
# GRU.


def _gru_project(params: GRUParams, x: Array) -> Array:
    """The input half ``x W_ih^T + b_ih``: ``[..., 3H]`` (blocks r, z, n)."""
    return _add_bias(x @ params.w_ih.T, params.b_ih)


def _gru_gates_split(
    params: GRUParams, h: Array, xr: Array, xz: Array, xn: Array
) -> tuple[Array, Array, Array, Array]:
    """Gates ``(r, z, n, hn)`` of one step from the three input projections."""
    hp = _add_bias(h @ params.w_hh.T, params.b_hh)  # [..., 3H]
    return _gru_gates_hp(hp, xr, xz, xn)


def _gru_gates_hp(
    hp: Array, xr: Array, xz: Array, xn: Array
) -> tuple[Array, Array, Array, Array]:
    """Gates ``(r, z, n, hn)`` from the hidden projection ``hp = h W_hh^T + b_hh``."""
    hr, hz, hn = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return r, z, n, hn


def _gru_gates(
    params: GRUParams, h: Array, xp: Array
) -> tuple[Array, Array, Array, Array]:
    """Gates ``(r, z, n, hn)`` of one step, ``hn = h W_hn^T + b_hn``."""
    return _gru_gates_split(params, h, *jnp.split(xp, 3, axis=-1))


def _gru_combine(h: Array, z: Array, n: Array) -> Array:
    """``h' = (1 − z) ⊙ n + z ⊙ h``."""
    return (1 - z) * n + z * h


def _gru_recur(params: GRUParams, h: Array, xp: Array) -> Array:
    """The recurrent half of a GRU step, given the input projection ``xp``."""
    _, z, n, _ = _gru_gates(params, h, xp)
    return _gru_combine(h, z, n)


def _gru_preact_grads_split(
    dh_new: Array, h: Array, r: Array, z: Array, n: Array, hn: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Gradients w.r.t. the gate pre-activations of one GRU step.

    Returns ``(da_r, da_z, da_n, dhn, dh_direct)``: the gradients w.r.t. the
    pre-activations of ``r``, ``z``, ``n``, w.r.t. ``hn = h W_hn^T + b_hn``,
    and the part of ``dL/dh`` that flows through ``z ⊙ h`` (not through
    ``W_hh``).
    """
    # h' = (1 - z) n + z h.
    dn = dh_new * (1 - z)
    dz = dh_new * (h - n)
    dh_direct = dh_new * z
    # n = tanh(a_n), a_n = xn + r hn.
    da_n = dn * (1 - n * n)
    dr = da_n * hn
    dhn = da_n * r
    # r = σ(a_r), z = σ(a_z), σ' = σ (1 − σ).
    da_r = dr * r * (1 - r)
    da_z = dz * z * (1 - z)
    return da_r, da_z, da_n, dhn, dh_direct


def _gru_preact_grads(
    dh_new: Array, h: Array, r: Array, z: Array, n: Array, hn: Array
) -> tuple[Array, Array, Array]:
    """Gradients w.r.t. the input and hidden projections of one GRU step.

    Returns ``(dxp, dhp, dh_direct)``: ``dxp [..., 3H]`` w.r.t. ``x W_ih^T +
    b_ih``, ``dhp [..., 3H]`` w.r.t. ``h W_hh^T + b_hh`` and ``dh_direct``.
    """
    da_r, da_z, da_n, dhn, dh_direct = _gru_preact_grads_split(dh_new, h, r, z, n, hn)
    dxp = jnp.concatenate([da_r, da_z, da_n], axis=-1)
    dhp = jnp.concatenate([da_r, da_z, dhn], axis=-1)
    return dxp, dhp, dh_direct


def gru_step(params: GRUParams, h: ArrayLike, x: ArrayLike) -> Array:
    r"""One step of a GRU cell (torch ``nn.GRU``'s equations).

    .. math::

        r &= \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}) \\
        z &= \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}) \\
        n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
        h' &= (1 - z) \odot n + z \odot h

    Args:
        params: a :class:`GRUParams` with ``w_ih [3H, D]``, ``w_hh [3H, H]``,
            ``b_ih [3H]``, ``b_hh [3H]`` (row blocks r, z, n).
        h: ``[..., H]`` previous state.
        x: ``[..., D]`` input; its leading (batch) dims broadcast against ``h``'s.

    Returns:
        ``[..., H]`` new state, with the broadcast batch dims.

    Raises:
        ValueError: if the parameter shapes disagree, or ``h``/``x`` do not end in
            ``H``/``D`` or their batch dims do not broadcast.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_gru_params(jax.random.key(0), 3, 4)
        >>> params.w_ih.shape
        (12, 3)
        >>> seqctc.gru_step(params, jnp.zeros(4), jnp.ones(3)).shape
        (4,)

    References:
        Cho et al., `Learning Phrase Representations using RNN Encoder-Decoder
        <https://arxiv.org/abs/1406.1078>`_, EMNLP 2014.

    See also:
        :func:`gru_step_backward`, :func:`scan_rnn`.
    """
    params = _as_params(params, GRUParams, 3)
    h, x = jnp.asarray(h), jnp.asarray(x)
    _check_state_input(params, h, x)
    h, x = _broadcast_batch(h, x)
    return _gru_recur(params, h, _gru_project(params, x))


def gru_step_backward(
    params: GRUParams, h: ArrayLike, x: ArrayLike, dh_new: ArrayLike
) -> tuple[GRUParams, Array, Array]:
    r"""The hand-derived backward of :func:`gru_step` (the seed's GRU backward).

    Break the step into unary and binary operations and apply the chain rule
    to each, from the output back (``⊙`` products pass the gradient times the
    other factor; ``σ' = σ(1-σ)``, ``\tanh' = 1 - \tanh^2``). With
    :math:`\bar h = \partial L/\partial h'`,
    :math:`a_r, a_z, a_n` the gate pre-activations and
    :math:`g_n = W_{hn} h + b_{hn}`:

    .. math::

        \bar n &= \bar h \odot (1 - z), \quad
        \bar z = \bar h \odot (h - n), \quad
        \bar h_{\text{direct}} = \bar h \odot z \\
        \bar a_n &= \bar n \odot (1 - n^2), \quad
        \bar r = \bar a_n \odot g_n, \quad
        \bar g_n = \bar a_n \odot r \\
        \bar a_r &= \bar r \odot r (1 - r), \quad
        \bar a_z = \bar z \odot z (1 - z) \\
        \bar p_x &= [\bar a_r; \bar a_z; \bar a_n], \quad
        \bar p_h = [\bar a_r; \bar a_z; \bar g_n] \\
        \frac{\partial L}{\partial W_{ih}} &= \textstyle\sum_b \bar p_{x,b}^\top x_b,
        \quad
        \frac{\partial L}{\partial b_{ih}} = \textstyle\sum_b \bar p_{x,b}, \quad
        \frac{\partial L}{\partial W_{hh}} = \textstyle\sum_b \bar p_{h,b}^\top h_b,
        \quad
        \frac{\partial L}{\partial b_{hh}} = \textstyle\sum_b \bar p_{h,b} \\
        \frac{\partial L}{\partial x} &= \bar p_x W_{ih}, \quad
        \frac{\partial L}{\partial h} = \bar h_{\text{direct}} + \bar p_h W_{hh}.

    Here :math:`p_x = x W_{ih}^\top + b_{ih}` and :math:`p_h = h W_{hh}^\top +
    b_{hh}` are the two ``[..., 3H]`` projections (blocks r, z, n).

    Args:
        params: a :class:`GRUParams` (see :func:`gru_step`).
        h: ``[..., H]`` previous state.
        x: ``[..., D]`` input.
        dh_new: ``[..., H]`` gradient of the loss w.r.t. the new state, with the
            broadcast batch dims of ``h`` and ``x``.

    Returns:
        ``(dparams, dh, dx)``: a :class:`GRUParams` of gradients shaped like
        ``params``, and gradients shaped like ``h`` and ``x`` (summed over the
        dims that broadcasting added). Equal to ``jax.vjp`` of :func:`gru_step`.

    Raises:
        ValueError: as :func:`gru_step`, or if ``dh_new``'s shape differs from
            the new state's.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_gru_params(jax.random.key(0), 3, 4)
        >>> h, x = jnp.zeros((2, 4)), jnp.ones((2, 3))
        >>> dparams, dh, dx = seqctc.gru_step_backward(params, h, x, jnp.ones((2, 4)))
        >>> dparams.w_hh.shape, dh.shape, dx.shape
        ((12, 4), (2, 4), (2, 3))

    See also:
        :func:`gru_step`, :func:`rnn_step_backward`.
    """
    params = _as_params(params, GRUParams, 3)
    h0, x0 = jnp.asarray(h), jnp.asarray(x)
    _check_state_input(params, h0, x0)
    h, x = _broadcast_batch(h0, x0)
    dh_new = jnp.asarray(dh_new)
    if dh_new.shape != h.shape:
        raise ValueError(f"`dh_new` must have shape {h.shape}, got {dh_new.shape}.")
    # Forward, keeping the gates.
    r, z, n, hn = _gru_gates(params, h, _gru_project(params, x))
    # Back through the gates to the two projections.
    dxp, dhp, dh_direct = _gru_preact_grads(dh_new, h, r, z, n, hn)
    # Back through the two affine maps.
    dparams = GRUParams(
        w_ih=_outer_sum(dxp, x),
        w_hh=_outer_sum(dhp, h),
        b_ih=_batch_sum(dxp),
        b_hh=_batch_sum(dhp),
    )
    dh = dh_direct + dhp @ params.w_hh  # [..., H]
    dx = dxp @ params.w_ih  # [..., D]
    return dparams, _unbroadcast(dh, h0.shape), _unbroadcast(dx, x0.shape)


# ----------------------------------------------------------------------------
# Initialisers.


def _uniform_params(key, cls, gates: int, in_features: int, hidden: int, dtype):
    if in_features < 1 or hidden < 1:
        raise ValueError(
            f"`in_features` and `hidden` must be positive, got {in_features} and "
            f"{hidden}."
        )
    bound = 1.0 / np.sqrt(hidden)
    shapes = [
        (gates * hidden, in_features),
        (gates * hidden, hidden),
        (gates * hidden,),
        (gates * hidden,),
    ]
    keys = jax.random.split(key, 4)
    return cls(
        *(
            jax.random.uniform(k, s, dtype, minval=-bound, maxval=bound)
            for k, s in zip(keys, shapes, strict=True)
        )
    )


def init_rnn_params(
    key: Array, in_features: int, hidden: int, *, dtype=jnp.float32
) -> RNNParams:
    r"""Draws :class:`RNNParams` as torch does, from :math:`U(-1/\sqrt H, 1/\sqrt H)`.

    Args:
        key: a ``jax.random`` key.
        in_features: ``D`` (static).
        hidden: ``H`` (static).
        dtype: the parameter dtype.

    Returns:
        :class:`RNNParams` with ``w_ih [H, D]``, ``w_hh [H, H]``, ``b_ih [H]``,
        ``b_hh [H]``.

    Raises:
        ValueError: if ``in_features`` or ``hidden`` is not positive.

    Examples:
        >>> import jax, seqctc
        >>> [p.shape for p in seqctc.init_rnn_params(jax.random.key(0), 3, 4)]
        [(4, 3), (4, 4), (4,), (4,)]
    """
    return _uniform_params(key, RNNParams, 1, in_features, hidden, dtype)


def init_gru_params(
    key: Array, in_features: int, hidden: int, *, dtype=jnp.float32
) -> GRUParams:
    r"""Draws :class:`GRUParams` as torch does, from :math:`U(-1/\sqrt H, 1/\sqrt H)`.

    Args:
        key: a ``jax.random`` key.
        in_features: ``D`` (static).
        hidden: ``H`` (static).
        dtype: the parameter dtype.

    Returns:
        :class:`GRUParams` with ``w_ih [3H, D]``, ``w_hh [3H, H]``, ``b_ih [3H]``,
        ``b_hh [3H]``.

    Raises:
        ValueError: if ``in_features`` or ``hidden`` is not positive.

    Examples:
        >>> import jax, seqctc
        >>> [p.shape for p in seqctc.init_gru_params(jax.random.key(0), 3, 4)]
        [(12, 3), (12, 4), (12,), (12,)]
    """
    return _uniform_params(key, GRUParams, 3, in_features, hidden, dtype)
