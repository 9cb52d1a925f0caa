"""Recurrent cells (Elman RNN, GRU, LSTM): one step forward and its hand backward.

Parameters are laid out exactly like torch's ``nn.RNN``, ``nn.GRU`` and
``nn.LSTM`` (``weight_ih_l0`` is ``w_ih``, and so on), so torch weights load
without reshaping.

Each cell's maths is written once, as two per-frame functions on a batch of
rows: ``frame`` (the forward step, which also returns what its backward needs)
and ``frame_backward`` (the hand-derived backward from those saved values to
the state gradient and the gate pre-activation gradients), plus
``param_grads``, which turns the pre-activation gradients of any number of
rows into weight and input gradients. The public ``*_step`` and
``*_step_backward`` functions call them on one step; ``scan_rnn``'s fused
path calls the same functions inside its loops. A :class:`Cell` record
collects them per cell, so the scans and modules look a cell up once instead
of testing which step function they were given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank


class RNNParams(NamedTuple):
    """Parameters of an Elman RNN cell (tanh or relu), laid out as torch's ``nn.RNN``.

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


class LSTMParams(NamedTuple):
    """Parameters of an LSTM cell, laid out as torch's ``nn.LSTM``.

    Rows come in four blocks of ``H``: input gate ``i``, forget gate ``f``,
    cell candidate ``g`` and output gate ``o``, in that (torch's) order.

    Attributes:
        w_ih: ``[4H, D]`` input-to-hidden weights (``W_ii; W_if; W_ig; W_io``).
        w_hh: ``[4H, H]`` hidden-to-hidden weights (``W_hi; W_hf; W_hg; W_ho``).
        b_ih: ``[4H]`` input biases.
        b_hh: ``[4H]`` hidden biases.
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


def _check_state_input(params, states: dict[str, Array], x: Array) -> None:
    """Checks that each named state is ``[..., H]``, ``x`` is ``[..., D]``."""
    hidden = params.w_hh.shape[1]
    features = params.w_ih.shape[1]
    for name, s in states.items():
        if s.ndim < 1 or s.shape[-1] != hidden:
            raise ValueError(
                f"`{name}` must have shape [..., {hidden}] for hidden size "
                f"{hidden}, got {s.shape}."
            )
    if x.ndim < 1 or x.shape[-1] != features:
        raise ValueError(
            f"`x` must have shape [..., {features}] for input size {features}, "
            f"got {x.shape}."
        )
    try:
        np.broadcast_shapes(*(s.shape[:-1] for s in states.values()), x.shape[:-1])
    except ValueError:
        shapes = ", ".join(f"`{n}` {s.shape[:-1]}" for n, s in states.items())
        raise ValueError(
            f"The batch dims of {shapes} and `x` {x.shape[:-1]} do not broadcast."
        ) from None


def _broadcast_batch(*arrays: Array) -> tuple[Array, ...]:
    """Broadcasts the leading (batch) dims of ``arrays`` explicitly."""
    batch = np.broadcast_shapes(*(a.shape[:-1] for a in arrays))
    return tuple(jnp.broadcast_to(a, batch + a.shape[-1:]) for a in arrays)


def _unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sums ``g`` over the dims that broadcasting added to an array of ``shape``."""
    lead = g.ndim - len(shape)
    g = jnp.sum(g, axis=tuple(range(lead))) if lead else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True) if axes else g


def _add_bias(a: Array, b: Array) -> Array:
    """``a[..., G] + b[G]`` with the broadcast spelled out (rank promotion off)."""
    return a + b.reshape((1,) * (a.ndim - 1) + b.shape)


# ----------------------------------------------------------------------------
# The per-frame functions. ``w`` is a ``_Weights``: the weights transposed for
# ``x @ w_ih_t`` (the scans transpose them once, outside their loops), the
# biases, and ``w_hh`` as stored, for the backward's ``da @ w_hh``. Arrays are
# ``[..., X]`` with any leading (batch) dims, already broadcast.


class _Weights(NamedTuple):
    w_ih_t: Array  # [D, G]
    w_hh_t: Array  # [H, G]
    b_ih: Array  # [G]
    b_hh: Array  # [G]
    w_hh: Array  # [G, H]


def _weights(params, transpose: Callable[[Array], Array] = jnp.transpose):
    """A ``_Weights`` of ``params``; ``transpose`` makes the ``[in, G]`` copies."""
    return _Weights(
        transpose(params.w_ih),
        transpose(params.w_hh),
        params.b_ih,
        params.b_hh,
        params.w_hh,
    )


def _preact(w: _Weights, h: Array, x: Array) -> Array:
    """``x W_ih^T + b_ih + h W_hh^T + b_hh``: ``[..., G]``, as one matmul.

    ``[x, h] [W_ih, W_hh]^T`` is one matmul per frame instead of two, which on
    XLA:CPU made the LSTM's forward and backward 3-18 % faster on the benchmark
    shapes (the GRU needs its hidden projection apart).
    """
    xh = jnp.concatenate([x, h], axis=-1)  # [..., D + H]
    # Stacked here rather than once outside the scans' loops: measured faster
    # on XLA:CPU (XLA hoists the loop-invariant concatenation itself).
    w_cat = jnp.concatenate([w.w_ih_t, w.w_hh_t], axis=0)  # [D + H, G]
    return _add_bias(xh @ w_cat, w.b_ih + w.b_hh)


def _transposed(a: Array) -> Array:
    """``a.T`` as a copy made after ``a`` is computed.

    For a weight gradient ``x^T da``, XLA would otherwise fold the transpose
    into the matmul, and on XLA:CPU the matmul that contracts the long axis
    of both operands into a ``[G, in]`` result ran 1.5-2x slower than the
    ``[in, G]`` one plus a transpose (LSTM layer gradient 1.1-1.2x faster on
    the benchmark shapes).
    """
    return jax.lax.optimization_barrier(a).T


def _shared_param_grads(params, x: Array, saved: tuple[Array, ...]):
    """Weight and input gradients when both projections share ``da``.

    That is the Elman and LSTM cells: ``saved`` is ``(h, ..., da)`` over ``N``
    rows, ``h [N, H]`` the states before the frames and ``da [N, G]`` the
    gradients of the pre-activations; ``x`` is ``[N, D]``.
    """
    h, da = saved[0], saved[-1]
    db = jnp.sum(da, axis=0)  # [G]
    dparams = type(params)(
        w_ih=_transposed(x.T @ da), w_hh=_transposed(h.T @ da), b_ih=db, b_hh=db
    )
    return dparams, da @ params.w_ih  # [N, D]


# Elman RNN: h' = act(a), with act tanh or relu.


def _elman_frame(act: Callable[[Array], Array]):
    def frame(w: _Weights, h: Array, x: Array):
        h_new = act(_preact(w, h, x))
        return h_new, h_new, (h, h_new)

    return frame


def _elman_frame_backward(act_grad: Callable[[Array], Array]):
    def frame_backward(w: _Weights, saved, dh_new: Array):
        _, h_new = saved
        da = dh_new * act_grad(h_new)  # [..., H]
        return da @ w.w_hh, (None, da)

    return frame_backward


def _tanh_grad(y: Array) -> Array:
    """``tanh'(a)`` from ``y = tanh(a)``."""
    return 1 - y * y


def _relu_grad(y: Array) -> Array:
    """``relu'(a)`` from ``y = relu(a)`` (0 at ``a = 0``, as in jax and torch)."""
    return (y > 0).astype(y.dtype)


# GRU.


def _gru_frame(w: _Weights, h: Array, x: Array):
    xr, xz, xn = jnp.split(_add_bias(x @ w.w_ih_t, w.b_ih), 3, axis=-1)
    hp = _add_bias(h @ w.w_hh_t, w.b_hh)  # [..., 3H]
    hr, hz, hn = jnp.split(hp, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = (1 - z) * n + z * h
    return h_new, h_new, (h, jnp.concatenate([r, z, hn], axis=-1), n)


def _gru_frame_backward(w: _Weights, saved, dh_new: Array):
    h, rzh, n = saved
    r, z, hn = jnp.split(rzh, 3, axis=-1)
    # h' = (1 - z) n + z h.
    dn = dh_new * (1 - z)
    dz = dh_new * (h - n)
    # n = tanh(a_n), a_n = xn + r hn.
    da_n = dn * (1 - n * n)
    dr = da_n * hn
    dhn = da_n * r
    # r = σ(a_r), z = σ(a_z), σ' = σ (1 − σ).
    da_r = dr * r * (1 - r)
    da_z = dz * z * (1 - z)
    dhp = jnp.concatenate([da_r, da_z, dhn], axis=-1)  # w.r.t. h W_hh^T + b_hh
    dh = dh_new * z + dhp @ w.w_hh
    return dh, (None, dhp, da_n)


def _gru_param_grads(params: GRUParams, x: Array, saved):
    """``saved = (h [N, H], dhp [N, 3H], da_n [N, H])``, ``x [N, D]``.

    The input projection's gradient is ``dhp`` with its n block replaced by
    ``da_n``; it is never built, the n block is handled apart.
    """
    h, dhp, da_n = saved
    hidden = h.shape[-1]
    dw_hh = _transposed(h.T @ dhp)  # [3H, H]
    db_hh = jnp.sum(dhp, axis=0)  # [3H]
    x_dhp = x.T @ dhp  # [D, 3H]; its n block is not needed
    dw_ih = _transposed(jnp.concatenate([x_dhp[:, : 2 * hidden], x.T @ da_n], axis=1))
    db_ih = jnp.concatenate([db_hh[: 2 * hidden], jnp.sum(da_n, axis=0)])
    w_rz = params.w_ih.at[2 * hidden :].set(0)  # [3H, D], the n rows zeroed
    dx = dhp @ w_rz + da_n @ params.w_ih[2 * hidden :]  # [N, D]
    return GRUParams(dw_ih, dw_hh, db_ih, db_hh), dx


# LSTM.


def _lstm_frame(w: _Weights, state: tuple[Array, Array], x: Array):
    h, c = state
    a_i, a_f, a_g, a_o = jnp.split(_preact(w, h, x), 4, axis=-1)
    i = jax.nn.sigmoid(a_i)
    f = jax.nn.sigmoid(a_f)
    g = jnp.tanh(a_g)
    o = jax.nn.sigmoid(a_o)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (h_new, c_new), h_new, (h, c, jnp.concatenate([i, f, g, o], axis=-1))


def _lstm_frame_backward(w: _Weights, saved, dstate_new: tuple[Array, Array]):
    dh_new, dc_new = dstate_new
    _, c, ifgo = saved
    i, f, g, o = jnp.split(ifgo, 4, axis=-1)
    tc = jnp.tanh(f * c + i * g)  # tanh(c'), recomputed rather than saved
    # h' = o tanh(c'): the cell state's total gradient adds the direct one.
    do = dh_new * tc
    dc = dc_new + dh_new * o * (1 - tc * tc)
    # c' = f c + i g, then through σ (i, f, o) and tanh (g).
    da = jnp.concatenate(
        [
            dc * g * i * (1 - i),
            dc * c * f * (1 - f),
            dc * i * (1 - g * g),
            do * o * (1 - o),
        ],
        axis=-1,
    )  # [..., 4H], w.r.t. both projections
    return (da @ w.w_hh, dc * f), (None, None, da)


# ----------------------------------------------------------------------------
# One step forward and backward, for any cell, with the static checks.


def _step(cell: Cell, params, state, x):
    params = _as_params(params, cell.params_cls, cell.gates)
    x = jnp.asarray(x)
    states = _named_states(cell, state)
    _check_state_input(params, states, x)
    *leaves, x = _broadcast_batch(*states.values(), x)
    new_state, _, _ = cell.frame(_weights(params), _pack(cell, leaves), x)
    return new_state


def _step_backward(cell: Cell, params, state, x, dstate_new):
    params = _as_params(params, cell.params_cls, cell.gates)
    x0 = jnp.asarray(x)
    states0 = _named_states(cell, state)
    _check_state_input(params, states0, x0)
    *leaves, x = _broadcast_batch(*states0.values(), x0)
    dnew = _named_states(cell, dstate_new, gradient=True)
    for (name, d), s in zip(dnew.items(), leaves, strict=True):
        if d.shape != s.shape:
            raise ValueError(f"`{name}` must have shape {s.shape}, got {d.shape}.")
    w = _weights(params)
    # Forward, keeping what the backward reads.
    _, _, saved = cell.frame(w, _pack(cell, leaves), x)
    # Back to the previous state and the pre-activations ...
    dstate, grads = cell.frame_backward(w, saved, _pack(cell, list(dnew.values())))
    # ... and through the affine maps, over all rows at once.
    rows = x.reshape(-1, x.shape[-1]).shape[0]
    flat = tuple(
        (s if d is None else d).reshape(rows, -1)
        for s, d in zip(saved, grads, strict=True)
    )
    dparams, dx = cell.param_grads(params, x.reshape(rows, -1), flat)
    dstate = jax.tree.map(
        lambda d, s: _unbroadcast(d, s.shape),
        _unpack(cell, dstate),
        list(states0.values()),
    )
    return dparams, _pack(cell, dstate), _unbroadcast(dx.reshape(x.shape), x0.shape)


def _named_states(cell: Cell, state, *, gradient: bool = False) -> dict[str, Array]:
    """The state's arrays by their argument names, for checks and messages."""
    if cell.state_size == 1:
        return {"dh_new" if gradient else "h": jnp.asarray(state)}
    name = "dstate_new" if gradient else "state"
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ValueError(
            f"`{name}` must be a pair (h, c) of [..., H] arrays, got "
            f"{type(state).__name__}."
        )
    return {f"{name}[0]": jnp.asarray(state[0]), f"{name}[1]": jnp.asarray(state[1])}


def _pack(cell: Cell, leaves):
    return leaves[0] if cell.state_size == 1 else tuple(leaves)


def _unpack(cell: Cell, state) -> list[Array]:
    return [state] if cell.state_size == 1 else list(state)


# ----------------------------------------------------------------------------
# Elman RNN.


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
    return _step(RNN_CELL, params, h, x)


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
    return _step_backward(RNN_CELL, params, h, x, dh_new)


def rnn_relu_step(params: RNNParams, h: ArrayLike, x: ArrayLike) -> Array:
    r"""One step of an Elman RNN cell with a relu (torch ``nonlinearity="relu"``).

    .. math::

        h' = \max(0,\ x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})

    Args:
        params: an :class:`RNNParams` with ``w_ih [H, D]``, ``w_hh [H, H]``,
            ``b_ih [H]``, ``b_hh [H]``.
        h: ``[..., H]`` previous state.
        x: ``[..., D]`` input; its leading (batch) dims broadcast against ``h``'s.

    Returns:
        ``[..., H]`` new state, with the broadcast batch dims.

    Raises:
        ValueError: as :func:`rnn_step`.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_rnn_params(jax.random.key(0), 3, 4)
        >>> h = seqctc.rnn_relu_step(params, jnp.zeros((2, 4)), jnp.ones((2, 3)))
        >>> h.shape, bool(jnp.all(h >= 0))
        ((2, 4), True)

    See also:
        :func:`rnn_relu_step_backward`, :func:`rnn_step`, :func:`scan_rnn`.
    """
    return _step(RNN_RELU_CELL, params, h, x)


def rnn_relu_step_backward(
    params: RNNParams, h: ArrayLike, x: ArrayLike, dh_new: ArrayLike
) -> tuple[RNNParams, Array, Array]:
    r"""The hand-derived backward of :func:`rnn_relu_step`.

    As :func:`rnn_step_backward` with the relu's derivative in place of the
    tanh's: :math:`\delta = \partial L/\partial h' \odot [h' > 0]` (0 where
    the pre-activation is exactly 0, as in jax and torch).

    Args:
        params: an :class:`RNNParams`.
        h: ``[..., H]`` previous state.
        x: ``[..., D]`` input.
        dh_new: ``[..., H]`` gradient w.r.t. the new state (broadcast batch dims).

    Returns:
        ``(dparams, dh, dx)`` as :func:`rnn_step_backward`; equal to ``jax.vjp``
        of :func:`rnn_relu_step`.

    Raises:
        ValueError: as :func:`rnn_step_backward`.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_rnn_params(jax.random.key(0), 3, 4)
        >>> h, x = jnp.zeros((2, 4)), jnp.ones((2, 3))
        >>> dp, dh, dx = seqctc.rnn_relu_step_backward(params, h, x, jnp.ones((2, 4)))
        >>> dp.w_hh.shape, dh.shape, dx.shape
        ((4, 4), (2, 4), (2, 3))
    """
    return _step_backward(RNN_RELU_CELL, params, h, x, dh_new)


# ----------------------------------------------------------------------------
# GRU.


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
    return _step(GRU_CELL, params, h, x)


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
    return _step_backward(GRU_CELL, params, h, x, dh_new)


# ----------------------------------------------------------------------------
# LSTM.


def lstm_step(
    params: LSTMParams, state: tuple[ArrayLike, ArrayLike], x: ArrayLike
) -> tuple[Array, Array]:
    r"""One step of an LSTM cell (torch ``nn.LSTM``'s equations, no projection).

    .. math::

        i &= \sigma(W_{ii} x + b_{ii} + W_{hi} h + b_{hi}), \quad
        f = \sigma(W_{if} x + b_{if} + W_{hf} h + b_{hf}) \\
        g &= \tanh(W_{ig} x + b_{ig} + W_{hg} h + b_{hg}), \quad
        o = \sigma(W_{io} x + b_{io} + W_{ho} h + b_{ho}) \\
        c' &= f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')

    Args:
        params: an :class:`LSTMParams` with ``w_ih [4H, D]``, ``w_hh [4H, H]``,
            ``b_ih [4H]``, ``b_hh [4H]`` (row blocks i, f, g, o).
        state: the pair ``(h, c)`` of ``[..., H]`` previous hidden and cell
            states.
        x: ``[..., D]`` input; the leading (batch) dims of ``h``, ``c`` and
            ``x`` broadcast.

    Returns:
        ``(h_new, c_new)``, each ``[..., H]`` with the broadcast batch dims.

    Raises:
        ValueError: if the parameter shapes disagree, ``state`` is not a pair,
            ``h``/``c``/``x`` do not end in ``H``/``H``/``D`` or their batch
            dims do not broadcast.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_lstm_params(jax.random.key(0), 3, 4)
        >>> params.w_ih.shape
        (16, 3)
        >>> h, c = seqctc.lstm_step(params, (jnp.zeros(4), jnp.zeros(4)), jnp.ones(3))
        >>> h.shape, c.shape
        ((4,), (4,))

    References:
        Hochreiter and Schmidhuber, `Long Short-Term Memory
        <https://doi.org/10.1162/neco.1997.9.8.1735>`_, Neural Computation 1997;
        Gers et al., `Learning to Forget
        <https://doi.org/10.1162/089976600300015015>`_, 2000 (the forget gate).

    See also:
        :func:`lstm_step_backward`, :func:`scan_rnn`.
    """
    return _step(LSTM_CELL, params, state, x)


def lstm_step_backward(
    params: LSTMParams,
    state: tuple[ArrayLike, ArrayLike],
    x: ArrayLike,
    dstate_new: tuple[ArrayLike, ArrayLike],
) -> tuple[LSTMParams, tuple[Array, Array], Array]:
    r"""The hand-derived backward of :func:`lstm_step`.

    With :math:`\bar h = \partial L/\partial h'`, :math:`\bar c = \partial
    L/\partial c'` (the gradient reaching the new cell state from later
    steps), the pre-activations :math:`a_i, a_f, a_g, a_o` and
    :math:`\tau = \tanh(c')`:

    .. math::

        \bar o &= \bar h \odot \tau, \qquad
        \hat c = \bar c + \bar h \odot o \odot (1 - \tau^2) \\
        \bar a_i &= \hat c \odot g \odot i (1 - i), \quad
        \bar a_f = \hat c \odot c \odot f (1 - f), \quad
        \bar a_g = \hat c \odot i \odot (1 - g^2), \quad
        \bar a_o = \bar o \odot o (1 - o) \\
        \bar A &= [\bar a_i; \bar a_f; \bar a_g; \bar a_o], \qquad
        \frac{\partial L}{\partial c} = \hat c \odot f, \qquad
        \frac{\partial L}{\partial h} = \bar A W_{hh}, \qquad
        \frac{\partial L}{\partial x} = \bar A W_{ih} \\
        \frac{\partial L}{\partial W_{ih}} &= \textstyle\sum_b \bar A_b^\top x_b,
        \quad
        \frac{\partial L}{\partial W_{hh}} = \textstyle\sum_b \bar A_b^\top h_b,
        \quad
        \frac{\partial L}{\partial b_{ih}} = \frac{\partial L}{\partial b_{hh}}
            = \textstyle\sum_b \bar A_b.

    Args:
        params: an :class:`LSTMParams` (see :func:`lstm_step`).
        state: the pair ``(h, c)`` of ``[..., H]`` previous states.
        x: ``[..., D]`` input.
        dstate_new: the pair ``(dh_new, dc_new)``: gradients of the loss w.r.t.
            the new states, with the broadcast batch dims.

    Returns:
        ``(dparams, (dh, dc), dx)``: an :class:`LSTMParams` of gradients shaped
        like ``params`` and gradients shaped like ``h``, ``c`` and ``x``
        (summed over the dims that broadcasting added). Equal to ``jax.vjp`` of
        :func:`lstm_step`.

    Raises:
        ValueError: as :func:`lstm_step`, or if ``dstate_new`` is not a pair of
            arrays shaped like the new states.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_lstm_params(jax.random.key(0), 3, 4)
        >>> state, x = (jnp.zeros((2, 4)), jnp.zeros((2, 4))), jnp.ones((2, 3))
        >>> ones = (jnp.ones((2, 4)), jnp.ones((2, 4)))
        >>> dparams, (dh, dc), dx = seqctc.lstm_step_backward(params, state, x, ones)
        >>> dparams.w_hh.shape, dh.shape, dc.shape, dx.shape
        ((16, 4), (2, 4), (2, 4), (2, 3))

    See also:
        :func:`lstm_step`, :func:`gru_step_backward`.
    """
    return _step_backward(LSTM_CELL, params, state, x, dstate_new)


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


def init_lstm_params(
    key: Array, in_features: int, hidden: int, *, dtype=jnp.float32
) -> LSTMParams:
    r"""Draws :class:`LSTMParams` as torch does, from :math:`U(-1/\sqrt H, 1/\sqrt H)`.

    Args:
        key: a ``jax.random`` key.
        in_features: ``D`` (static).
        hidden: ``H`` (static).
        dtype: the parameter dtype.

    Returns:
        :class:`LSTMParams` with ``w_ih [4H, D]``, ``w_hh [4H, H]``,
        ``b_ih [4H]``, ``b_hh [4H]``.

    Raises:
        ValueError: if ``in_features`` or ``hidden`` is not positive.

    Examples:
        >>> import jax, seqctc
        >>> [p.shape for p in seqctc.init_lstm_params(jax.random.key(0), 3, 4)]
        [(16, 3), (16, 4), (16,), (16,)]
    """
    return _uniform_params(key, LSTMParams, 4, in_features, hidden, dtype)


# ----------------------------------------------------------------------------
# The cell records.


class Cell(NamedTuple):
    """Everything the scans and modules need to know about one built-in cell.

    Attributes:
        name: ``"rnn"`` (tanh), ``"rnn_relu"``, ``"gru"`` or ``"lstm"``.
        params_cls: the parameters' NamedTuple.
        gates: row blocks of ``H`` in the weights (1, 3 or 4).
        step: the public step function.
        init: the torch-style initialiser.
        state_size: arrays in the state: 1 (``h``) or 2 (``(h, c)``).
        frame: ``(weights, state, x) -> (state_new, output, saved)``.
        frame_backward: ``(weights, saved, dstate_new) -> (dstate, grads)``,
            ``grads`` aligned with ``saved`` (``None`` where ``saved`` is kept).
        param_grads: ``(params, x [N, D], saved [N, ...]) -> (dparams, dx)``,
            ``saved`` with ``grads`` written over it.
        saved_widths: widths of ``saved``'s arrays in units of ``H``.
        fused: whether :func:`scan_rnn` runs it on its fused path (measured).
    """

    name: str
    params_cls: type
    gates: int
    step: Callable[..., Any]
    init: Callable[..., Any]
    state_size: int
    frame: Callable[..., Any]
    frame_backward: Callable[..., Any]
    param_grads: Callable[..., Any]
    saved_widths: tuple[int, ...]
    fused: bool


RNN_CELL = Cell(
    "rnn",
    RNNParams,
    1,
    rnn_step,
    init_rnn_params,
    1,
    _elman_frame(jnp.tanh),
    _elman_frame_backward(_tanh_grad),
    _shared_param_grads,
    (1, 1),
    False,
)
RNN_RELU_CELL = Cell(
    "rnn_relu",
    RNNParams,
    1,
    rnn_relu_step,
    init_rnn_params,
    1,
    _elman_frame(jax.nn.relu),
    _elman_frame_backward(_relu_grad),
    _shared_param_grads,
    (1, 1),
    False,
)
GRU_CELL = Cell(
    "gru",
    GRUParams,
    3,
    gru_step,
    init_gru_params,
    1,
    _gru_frame,
    _gru_frame_backward,
    _gru_param_grads,
    (1, 3, 1),
    True,
)
LSTM_CELL = Cell(
    "lstm",
    LSTMParams,
    4,
    lstm_step,
    init_lstm_params,
    2,
    _lstm_frame,
    _lstm_frame_backward,
    _shared_param_grads,
    (1, 1, 4),
    True,
)
CELLS: dict[str, Cell] = {
    c.name: c for c in (RNN_CELL, RNN_RELU_CELL, GRU_CELL, LSTM_CELL)
}
_BY_STEP = {c.step: c for c in CELLS.values()}


def cell_of(step_fn) -> Cell | None:
    """The record of a built-in step function, ``None`` for any other callable."""
    try:
        return _BY_STEP.get(step_fn)
    except TypeError:  # an unhashable callable
        return None
