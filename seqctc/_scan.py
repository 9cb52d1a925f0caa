"""Masked scans of a recurrent cell over padded batches; stacked, bidirectional."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from seqctc._cells import (
    GRUParams,
    RNNParams,
    _as_params,
    _gru_combine,
    _gru_gates_hp,
    _gru_preact_grads_split,
    _gru_project,
    _rnn_preact_grad,
    _rnn_project,
    gru_step,
    rnn_step,
)
from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim, compute_dtype

StepFn = Callable[[Any, Array, Array], Array]

# How ``scan_rnn`` runs the two built-in cells, chosen with
# ``benchmarks/bench_rnn.py`` on XLA:CPU:
#   "loop":   input projection inside the loop body, JAX autodiff (fastest);
#   "hoisted": input projection as one matmul over all frames before the loop,
#              JAX autodiff;
#   "hand":   hoisted, and differentiated through the hand backward (a
#              ``custom_vjp``; weight gradients one matmul over all frames).
# Hoisting makes [T, B, 3H] intermediates whose passes (split, transposes,
# thin matmuls) cost more on CPU than the per-step input matmul they save.
_STRATEGY = "loop"


# ----------------------------------------------------------------------------
# Recurrent cores: time-major, input projection already applied.
#
# Each core maps (w_hh, b_hh, xs [T, B, G], valid [T, B, 1] bool, h0 [B, H])
# to (hs [T, B, H], h_last [B, H]), where hs[t] is the state after frame t
# (frozen on padded frames, not zeroed).


def _shifted_prev(hs: Array, h0: Array, reverse: bool) -> Array:
    """The state before each frame: ``[T, B, H]``."""
    if reverse:
        return jnp.concatenate([hs[1:], h0[None]], axis=0)
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _loop_weight(w_hh: Array) -> Array:
    """``W_hh^T`` as a real ``[H, G H]`` array for ``h @ W`` inside the loop.

    XLA would otherwise fold the transpose into each step's matmul, and the
    transposed-operand matmul is slower on XLA:CPU.
    """
    return lax.optimization_barrier(w_hh.T)


def _rnn_core_plain(w_hh, b_hh, xs, valid, h0, reverse):
    w_t = _loop_weight(w_hh)  # [H, H]
    b = b_hh[None, :]

    def body(h, inp):
        xp, m = inp  # [B, H], [B, 1]
        h_new = jnp.where(m, jnp.tanh(xp + h @ w_t + b), h)
        return h_new, h_new

    h_last, hs = lax.scan(body, h0, (xs, valid), reverse=reverse)
    return hs, h_last


def _gru_core_plain(w_hh, b_hh, xs, valid, h0, reverse):
    w_t = _loop_weight(w_hh)  # [H, 3H]
    b = b_hh[None, :]

    def body(h, inp):
        xr, xz, xn, m = inp  # [B, H] x 3, [B, 1]
        _, z, n, _ = _gru_gates_hp(h @ w_t + b, xr, xz, xn)
        h_new = jnp.where(m, _gru_combine(h, z, n), h)
        return h_new, h_new

    h_last, hs = lax.scan(body, h0, (*xs, valid), reverse=reverse)
    return hs, h_last


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _rnn_core_hand(w_hh, b_hh, xs, valid, h0, reverse):
    return _rnn_core_plain(w_hh, b_hh, xs, valid, h0, reverse)


def _rnn_core_hand_fwd(w_hh, b_hh, xs, valid, h0, reverse):
    hs, h_last = _rnn_core_plain(w_hh, b_hh, xs, valid, h0, reverse)
    return (hs, h_last), (w_hh, hs, valid, h0)


def _rnn_core_hand_bwd(reverse, res, cotangents):
    w_hh, hs, valid, h0 = res
    dhs, dh_last = cotangents  # [T, B, H], [B, H]

    def body(g, inp):
        dh_out, h_new, m = inp
        g = g + dh_out  # dL/dh' at this frame
        delta = jnp.where(m, _rnn_preact_grad(h_new, g), 0)  # [B, H]
        g_prev = jnp.where(m, delta @ w_hh, g)
        return g_prev, delta

    # The backward runs against the forward's direction.
    dh0, deltas = lax.scan(body, dh_last, (dhs, hs, valid), reverse=not reverse)
    h_prev = _shifted_prev(hs, h0, reverse)  # [T, B, H]
    dw_hh = jnp.einsum("tbg,tbh->gh", deltas, h_prev)
    db_hh = jnp.sum(deltas, axis=(0, 1))
    return dw_hh, db_hh, deltas, None, dh0


_rnn_core_hand.defvjp(_rnn_core_hand_fwd, _rnn_core_hand_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru_core_hand(w_hh, b_hh, xs, valid, h0, reverse):
    return _gru_core_plain(w_hh, b_hh, xs, valid, h0, reverse)


def _gru_core_hand_fwd(w_hh, b_hh, xs, valid, h0, reverse):
    w_t = _loop_weight(w_hh)  # [H, 3H]
    b = b_hh[None, :]

    def body(h, inp):
        xr, xz, xn, m = inp  # [B, H] x 3, [B, 1]
        hp = h @ w_t + b  # [B, 3H]
        _, z, n, _ = _gru_gates_hp(hp, xr, xz, xn)
        h_new = jnp.where(m, _gru_combine(h, z, n), h)
        return h_new, (h_new, hp)

    h_last, (hs, hps) = lax.scan(body, h0, (*xs, valid), reverse=reverse)
    return (hs, h_last), (w_hh, xs, hs, hps, valid, h0)


def _gru_core_hand_bwd(reverse, res, cotangents):
    # XLA:CPU pays per operation inside a loop, so the loop carries only what
    # is sequential (dL/dh) and emits one array; the gates and the weight
    # gradients are computed batched over all frames before and after it.
    w_hh, xs, hs, hps, valid, h0 = res
    dhs, dh_last = cotangents
    h_prev = _shifted_prev(hs, h0, reverse)  # [T, B, H]
    gates = _gru_gates_hp(hps, *xs)  # (r, z, n, hn), 4 x [T, B, H]

    def body(g, inp):
        dh_out, h, r, z, n, hn, m = inp
        g = g + dh_out  # dL/dh' at this frame, [B, H]
        da_r, da_z, _, dhn, dh_direct = _gru_preact_grads_split(g, h, r, z, n, hn)
        dhp = jnp.concatenate([da_r, da_z, dhn], axis=-1)  # [B, 3H]
        g_prev = jnp.where(m, dh_direct + dhp @ w_hh, g)
        return g_prev, g

    dh0, g = lax.scan(
        body, dh_last, (dhs, h_prev, *gates, valid), reverse=not reverse
    )  # g: [T, B, H]
    g = jnp.where(valid, g, 0)
    da_r, da_z, da_n, dhn, _ = _gru_preact_grads_split(g, h_prev, *gates)
    dhp = (da_r, da_z, dhn)  # gradients w.r.t. the three blocks of hp
    dw_hh = jnp.concatenate(
        [jnp.einsum("tbg,tbh->gh", d, h_prev) for d in dhp], axis=0
    )  # [3H, H]
    db_hh = jnp.concatenate([jnp.sum(d, axis=(0, 1)) for d in dhp])  # [3H]
    return dw_hh, db_hh, (da_r, da_z, da_n), None, dh0


_gru_core_hand.defvjp(_gru_core_hand_fwd, _gru_core_hand_bwd)


# ----------------------------------------------------------------------------
# Public scans.


def _check_scan_args(inputs, paddings, initial_state, hidden):
    check_rank(inputs, 3, "inputs")
    check_rank(paddings, 2, "paddings")
    check_same_dim(inputs, 0, "inputs", paddings, 0, "paddings")
    check_same_dim(inputs, 1, "inputs", paddings, 1, "paddings")
    if initial_state is not None and hidden is not None:
        expected = (inputs.shape[0], hidden)
        if tuple(initial_state.shape) != expected:
            raise ValueError(
                f"`initial_state` must have shape {expected}, got "
                f"{initial_state.shape}."
            )


def _rnn_core_loop(params, xs, valid, h0, reverse):
    """Time-major scan with the input projection in the loop body."""
    w_i = _loop_weight(params.w_ih)  # [D, H]
    w_h = _loop_weight(params.w_hh)  # [H, H]
    b = (params.b_ih + params.b_hh)[None, :]  # [1, H]

    def body(h, inp):
        x, m = inp  # [B, D], [B, 1]
        h_new = jnp.where(m, jnp.tanh(x @ w_i + h @ w_h + b), h)
        return h_new, h_new

    h_last, hs = lax.scan(body, h0, (xs, valid), reverse=reverse)
    return hs, h_last


def _gru_core_loop(params, xs, valid, h0, reverse):
    """Time-major scan with the input projection in the loop body."""
    w_i = _loop_weight(params.w_ih)  # [D, 3H]
    w_h = _loop_weight(params.w_hh)  # [H, 3H]
    b_i = params.b_ih[None, :]  # [1, 3H]
    b_h = params.b_hh[None, :]  # [1, 3H]

    def body(h, inp):
        x, m = inp  # [B, D], [B, 1]
        xr, xz, xn = jnp.split(x @ w_i + b_i, 3, axis=-1)
        _, z, n, _ = _gru_gates_hp(h @ w_h + b_h, xr, xz, xn)
        h_new = jnp.where(m, _gru_combine(h, z, n), h)
        return h_new, h_new

    h_last, hs = lax.scan(body, h0, (xs, valid), reverse=reverse)
    return hs, h_last


def _known_cell(step_fn):
    if step_fn is rnn_step:
        cores = (_rnn_core_loop, _rnn_core_plain, _rnn_core_hand)
        return RNNParams, 1, _rnn_project, cores
    if step_fn is gru_step:
        cores = (_gru_core_loop, _gru_core_plain, _gru_core_hand)
        return GRUParams, 3, _gru_project, cores
    return None


def scan_rnn(
    step_fn: StepFn,
    params: Any,
    inputs: ArrayLike,
    paddings: ArrayLike,
    *,
    initial_state: ArrayLike | None = None,
    reverse: bool = False,
) -> tuple[Array, Array]:
    r"""Runs a recurrent cell over padded sequences.

    Valid frames update the state, padded frames keep it and give zero outputs:

    .. math::

        h_t = \begin{cases} \mathrm{step}(h_{t-1}, x_t) & t < T_b \\
                            h_{t-1} & t \ge T_b \end{cases}, \qquad
        y_t = [t < T_b]\, h_t.

    With ``reverse=True`` each row runs backwards over its own valid frames,
    :math:`h_t = \mathrm{step}(h_{t+1}, x_t)` from :math:`t = T_b - 1` down to 0,
    so the output at ``t`` depends on frames ``t … T_b − 1`` (right padding is
    simply skipped). Padded inputs are never read: NaN there changes neither
    outputs nor gradients.

    The two built-in cells (:func:`rnn_step`, :func:`gru_step`) are recognised
    and run on a fast path: weights transposed once outside the loop and one
    fused update per frame, differentiated by JAX. ``benchmarks/bench_rnn.py``
    also measures two alternatives kept in this module: hoisting the input
    projection :math:`x W_{ih}^\top + b_{ih}` out of the loop as one matmul
    over all frames, and, on top of that, differentiating through the hand
    backward of :func:`gru_step_backward` as a ``jax.custom_vjp`` (a reverse
    scan that carries only :math:`\partial L / \partial h`, with the weight
    gradients as one matmul over all frames). On XLA:CPU both were slower: the
    ``[T, B, 3H]`` intermediates they create cost more memory traffic than the
    per-frame matmul they save (see ``docs/_results/bench_rnn.md``). Any other
    ``step_fn(params, h, x) -> h_new`` is scanned as is.

    Args:
        step_fn: a cell step ``step_fn(params, h[B, H], x[B, D]) -> [B, H]``,
            e.g. :func:`rnn_step` or :func:`gru_step` (recognised, fast path).
        params: the cell's parameters (a pytree, e.g. :class:`GRUParams`).
        inputs: ``[B, T, D]`` input frames (batch-major). For the built-in
            cells they are cast to the parameters' dtype, or to float32 for
            half-precision parameters (the state then accumulates in float32
            and the outputs are float32).
        paddings: ``[B, T]`` paddings, 1.0 = padded (right padded).
        initial_state: ``[B, H]`` state before the first processed frame;
            zeros if ``None`` (a custom ``step_fn`` then needs ``params.w_hh``
            of shape ``[G H, H]`` to size the state).
        reverse: run each row backwards over its valid frames (static).

    Returns:
        ``(outputs, final_state)``: ``[B, T, H]`` states after each frame (zero
        on padded frames) and ``[B, H]`` the state after the last valid frame
        (after frame 0 when ``reverse``); the initial state for empty rows.

    Raises:
        ValueError: if ``inputs`` is not rank 3, ``paddings`` not rank 2, their
            ``B``/``T`` differ, ``D`` does not match the parameters, or
            ``initial_state`` is not ``[B, H]``.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> params = seqctc.init_gru_params(jax.random.key(0), 3, 4)
        >>> x = jnp.ones((2, 5, 3))
        >>> paddings = seqctc.lengths_to_paddings(jnp.array([5, 2]), 5)
        >>> outputs, final = seqctc.scan_rnn(seqctc.gru_step, params, x, paddings)
        >>> outputs.shape, final.shape
        ((2, 5, 4), (2, 4))
        >>> bool(jnp.all(outputs[1, 2:] == 0)), bool(jnp.all(final[1] == outputs[1, 1]))
        (True, True)

    See also:
        :func:`bidirectional_rnn`, :func:`stacked_rnn`, :class:`seqctc.nn.RNN`.
    """
    inputs = jnp.asarray(inputs)
    paddings = jnp.asarray(paddings)
    if initial_state is not None:
        initial_state = jnp.asarray(initial_state)
    known = _known_cell(step_fn)
    if known is not None:
        cls, gates, project, (core_loop, core_plain, core_hand) = known
        params = _as_params(params, cls, gates)
        hidden = params.w_hh.shape[1]
        _check_scan_args(inputs, paddings, initial_state, hidden)
        if inputs.shape[-1] != params.w_ih.shape[1]:
            raise ValueError(
                f"`inputs` must have {params.w_ih.shape[1]} features to match "
                f"`params.w_ih` of shape {params.w_ih.shape}, got {inputs.shape}."
            )
    else:
        _check_scan_args(inputs, paddings, initial_state, None)
    batch = inputs.shape[0]
    valid = paddings == 0  # [B, T]
    # Zero the padded frames first, so that NaN there reaches no gradient.
    inputs = jnp.where(valid[:, :, None], inputs, 0)  # [B, T, D]
    valid_tm = jnp.swapaxes(valid, 0, 1)[:, :, None]  # [T, B, 1]

    if known is not None:
        # Half-precision parameters run (and accumulate) in float32.
        dtype = compute_dtype(params.w_hh)
        params = type(params)(*(p.astype(dtype) for p in params))
        inputs = inputs.astype(dtype)
        if initial_state is None:
            h0 = jnp.zeros((batch, hidden), dtype)
        else:
            h0 = initial_state.astype(dtype)
        if _STRATEGY == "loop":
            xs = jnp.swapaxes(inputs, 0, 1)  # [T, B, D]
            hs, h_last = core_loop(params, xs, valid_tm, h0, reverse)
        else:
            xp = project(params, inputs)  # [B, T, G H]
            xs = jnp.swapaxes(xp, 0, 1)  # [T, B, G H]
            if gates == 3:
                # Split before the scan: slicing the gates out of a scanned
                # [B, 3H] frame inside the loop body is slow on XLA:CPU.
                xs = tuple(jnp.split(xs, 3, axis=-1))  # 3 x [T, B, H]
            core = core_hand if _STRATEGY == "hand" else core_plain
            hs, h_last = core(params.w_hh, params.b_hh, xs, valid_tm, h0, reverse)
    else:
        if initial_state is not None:
            h0 = initial_state
        elif hasattr(params, "w_hh"):
            h0 = jnp.zeros((batch, params.w_hh.shape[1]), inputs.dtype)
        else:
            raise ValueError(
                "`initial_state` is required for a custom `step_fn` whose "
                "`params` has no `w_hh` to infer the state size from."
            )
        xs = jnp.swapaxes(inputs, 0, 1)  # [T, B, D]

        def body(h, inp):
            x, m = inp  # [B, D], [B, 1]
            h_new = jnp.where(m, step_fn(params, h, x), h)
            return h_new, h_new

        h_last, hs = lax.scan(body, h0, (xs, valid_tm), reverse=reverse)
    outputs = jnp.where(valid_tm, hs, 0)  # [T, B, H]
    return jnp.swapaxes(outputs, 0, 1), h_last


def bidirectional_rnn(
    step_fn: StepFn,
    params_forward: Any,
    params_backward: Any,
    inputs: ArrayLike,
    paddings: ArrayLike,
    *,
    initial_state: ArrayLike | None = None,
) -> tuple[Array, Array]:
    r"""One bidirectional layer: a forward and a reversed :func:`scan_rnn`.

    .. math::

        y_t = [\overrightarrow{h}_t ; \overleftarrow{h}_t]

    The backward direction reads each row's valid frames from last to first,
    as torch's packed sequences do; outputs are concatenated on the feature
    axis in torch's order (forward first).

    Args:
        step_fn: a cell step, as in :func:`scan_rnn`.
        params_forward: parameters of the forward cell.
        params_backward: parameters of the backward cell.
        inputs: ``[B, T, D]`` input frames.
        paddings: ``[B, T]`` paddings, 1.0 = padded.
        initial_state: ``[2, B, H]`` initial states (forward, backward); zeros
            if ``None``.

    Returns:
        ``(outputs, final_state)``: ``[B, T, 2H]`` and ``[2, B, H]`` (forward
        state after the last valid frame, backward state after frame 0).

    Raises:
        ValueError: as :func:`scan_rnn`, or if ``initial_state`` is not rank 3.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> kf, kb = jax.random.split(jax.random.key(0))
        >>> pf = seqctc.init_gru_params(kf, 3, 4)
        >>> pb = seqctc.init_gru_params(kb, 3, 4)
        >>> y, h = seqctc.bidirectional_rnn(
        ...     seqctc.gru_step, pf, pb, jnp.ones((2, 5, 3)), jnp.zeros((2, 5)))
        >>> y.shape, h.shape
        ((2, 5, 8), (2, 2, 4))

    See also:
        :func:`scan_rnn`, :func:`stacked_rnn`.
    """
    init_f = init_b = None
    if initial_state is not None:
        initial_state = jnp.asarray(initial_state)
        check_rank(initial_state, 3, "initial_state")
        if initial_state.shape[0] != 2:
            raise ValueError(
                f"`initial_state` must have shape [2, B, H], got {initial_state.shape}."
            )
        init_f, init_b = initial_state[0], initial_state[1]
    out_f, h_f = scan_rnn(
        step_fn, params_forward, inputs, paddings, initial_state=init_f
    )
    out_b, h_b = scan_rnn(
        step_fn, params_backward, inputs, paddings, initial_state=init_b, reverse=True
    )
    return jnp.concatenate([out_f, out_b], axis=-1), jnp.stack([h_f, h_b])


def stacked_rnn(
    step_fn: StepFn,
    layers: Sequence[Any],
    inputs: ArrayLike,
    paddings: ArrayLike,
    *,
    bidirectional: bool = False,
    initial_state: ArrayLike | None = None,
) -> tuple[Array, Array]:
    r"""Several recurrent layers on top of each other (torch ``num_layers``).

    Layer ``l`` reads layer ``l − 1``'s outputs (zero on padded frames):

    .. math::

        y^{(0)} = x, \qquad y^{(l)} = \mathrm{layer}_l(y^{(l-1)}).

    Args:
        step_fn: a cell step, as in :func:`scan_rnn`.
        layers: per layer, the cell parameters; with ``bidirectional`` a pair
            ``(params_forward, params_backward)`` per layer.
        inputs: ``[B, T, D]`` input frames.
        paddings: ``[B, T]`` paddings, 1.0 = padded.
        bidirectional: whether each layer is bidirectional (static).
        initial_state: ``[L * dirs, B, H]`` initial states in torch's ``h_0``
            order (layer-major, forward before backward); zeros if ``None``.

    Returns:
        ``(outputs, final_state)``: ``[B, T, dirs * H]`` outputs of the last
        layer and ``[L * dirs, B, H]`` final states in torch's ``h_n`` order.

    Raises:
        ValueError: if ``layers`` is empty, a bidirectional layer is not a pair,
            ``initial_state`` has the wrong shape, or as :func:`scan_rnn`.

    Examples:
        >>> import jax, jax.numpy as jnp, seqctc
        >>> k1, k2 = jax.random.split(jax.random.key(0))
        >>> layers = [seqctc.init_rnn_params(k1, 3, 4),
        ...           seqctc.init_rnn_params(k2, 4, 4)]
        >>> y, h = seqctc.stacked_rnn(
        ...     seqctc.rnn_step, layers, jnp.ones((2, 5, 3)), jnp.zeros((2, 5)))
        >>> y.shape, h.shape
        ((2, 5, 4), (2, 2, 4))

    See also:
        :func:`scan_rnn`, :func:`bidirectional_rnn`.
    """
    if len(layers) == 0:
        raise ValueError("`layers` must hold at least one layer.")
    dirs = 2 if bidirectional else 1
    if initial_state is not None:
        initial_state = jnp.asarray(initial_state)
        check_rank(initial_state, 3, "initial_state")
        if initial_state.shape[0] != dirs * len(layers):
            raise ValueError(
                f"`initial_state` must have {dirs * len(layers)} rows "
                f"(num_layers * directions), got shape {initial_state.shape}."
            )
    outputs = inputs
    finals = []
    for i, layer in enumerate(layers):
        init = None
        if initial_state is not None:
            init = initial_state[dirs * i : dirs * (i + 1)]
        if bidirectional:
            if not (isinstance(layer, (tuple, list)) and len(layer) == 2):
                raise ValueError(
                    f"`layers[{i}]` must be a pair (params_forward, params_backward) "
                    "for a bidirectional stack."
                )
            outputs, h = bidirectional_rnn(
                step_fn, layer[0], layer[1], outputs, paddings, initial_state=init
            )
            finals.append(h)
        else:
            outputs, h = scan_rnn(
                step_fn,
                layer,
                outputs,
                paddings,
                initial_state=None if init is None else init[0],
            )
            finals.append(h[None])
    return outputs, jnp.concatenate(finals, axis=0)
