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
    gru_step,
    rnn_step,
)
from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim, compute_dtype

StepFn = Callable[[Any, Array, Array], Array]

# How ``scan_rnn`` runs the GRU, chosen with ``benchmarks/bench_rnn.py`` on
# XLA:CPU (the Elman cell always runs "loop"):
#   "fused": batch-major loop with the input projection inside, differentiated
#            by a ``jax.custom_vjp`` whose backward loop only carries dL/dh and
#            writes the gate gradients over the saved gates; the weight and
#            input gradients are then one matmul over all frames (fastest);
#   "loop":  time-major ``lax.scan`` with the input projection inside, JAX
#            autodiff.
# What decides on XLA:CPU is memory more than arithmetic: autodiff saves about
# nine [T, B, H] arrays per layer (several of them copies of the same gate),
# the fused backward saves five and reuses them for its own results. XLA
# allocates its temporaries as one block per call, and a block over glibc's
# 32 MiB mmap threshold is mapped afresh and page-faulted on every call.
# Hoisting the input projection out of the loop (one matmul over all frames)
# was measured too: the [T, B, 3H] array it makes costs more than it saves.
_STRATEGY = "fused"


# ----------------------------------------------------------------------------
# Recurrent cores, time-major, differentiated by JAX: each maps (params,
# xs [T, B, D], valid [T, B, 1] bool, h0 [B, H]) to (hs [T, B, H], h_last
# [B, H]), where hs[t] is the state after frame t (frozen on padded frames,
# not zeroed).


def _loop_weight(w: Array) -> Array:
    """``W^T`` as a real ``[in, out]`` array for ``h @ W`` inside the loop.

    XLA would otherwise fold the transpose into each step's matmul, and the
    transposed-operand matmul is slower on XLA:CPU.
    """
    return lax.optimization_barrier(w.T)


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


# ----------------------------------------------------------------------------
# The fused GRU core: batch-major throughout (no transposes of the inputs,
# outputs or saved gates), with a hand backward.


def _at(a: Array, t: Array) -> Array:
    """Frame ``t`` of a batch-major ``[B, T, ...]`` array: ``[B, ...]``."""
    return lax.dynamic_index_in_dim(a, t, axis=1, keepdims=False)


def _put(a: Array, t: Array, v: Array) -> Array:
    """``a`` with frame ``t`` replaced by ``v [B, ...]``."""
    return lax.dynamic_update_index_in_dim(a, v, t, axis=1)


def _frame(i, frames: int, reverse: bool):
    """The frame that the forward loop processes at step ``i``."""
    return frames - 1 - i if reverse else i


def _gru_fused_forward(params, x, valid, h0, reverse, save):
    """The forward loop; with ``save`` it also keeps what the backward needs.

    Returns ``(outputs [B, T, H], h_last [B, H], saved)`` with ``saved`` the
    state before each frame ``[B, T, H]``, the gates ``r, z`` and ``hn = h
    W_hn^T + b_hn`` as ``[B, T, 3H]``, and the candidate ``n`` ``[B, T, H]``
    (empty without ``save``).
    """
    batch, frames, _ = x.shape
    hidden = h0.shape[-1]
    w_i = _loop_weight(params.w_ih)  # [D, 3H]
    w_h = _loop_weight(params.w_hh)  # [H, 3H]
    b_i = params.b_ih[None, :]  # [1, 3H]
    b_h = params.b_hh[None, :]  # [1, 3H]
    outputs = jnp.zeros((batch, frames, hidden), x.dtype)
    saved = ()
    if save:
        saved = (
            jnp.zeros((batch, frames, hidden), x.dtype),  # h before the frame
            jnp.zeros((batch, frames, 3 * hidden), x.dtype),  # r, z, hn
            jnp.zeros((batch, frames, hidden), x.dtype),  # n
        )

    def body(i, carry):
        h, outputs, saved = carry
        t = _frame(i, frames, reverse)
        m = _at(valid, t)  # [B, 1]
        xr, xz, xn = jnp.split(_at(x, t) @ w_i + b_i, 3, axis=-1)  # 3 x [B, H]
        r, z, n, hn = _gru_gates_hp(h @ w_h + b_h, xr, xz, xn)
        h_new = _gru_combine(h, z, n)  # [B, H]
        outputs = _put(outputs, t, jnp.where(m, h_new, 0))
        if save:
            h_prev, rzh, n_all = saved
            saved = (
                _put(h_prev, t, h),
                _put(rzh, t, jnp.concatenate([r, z, hn], axis=-1)),
                _put(n_all, t, n),
            )
        return jnp.where(m, h_new, h), outputs, saved

    h_last, outputs, saved = lax.fori_loop(0, frames, body, (h0, outputs, saved))
    return outputs, h_last, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gru_core_fused(params, x, valid, h0, reverse):
    """Batch-major GRU scan: ``x [B, T, D]``, ``valid [B, T, 1]`` bool, ``h0 [B, H]``
    to ``(outputs [B, T, H] zero on padded frames, h_last [B, H])``."""
    outputs, h_last, _ = _gru_fused_forward(params, x, valid, h0, reverse, False)
    return outputs, h_last


def _gru_core_fused_fwd(params, x, valid, h0, reverse):
    outputs, h_last, saved = _gru_fused_forward(params, x, valid, h0, reverse, True)
    return (outputs, h_last), (params, x, valid, saved)


def _gru_core_fused_bwd(reverse, res, cotangents):
    params, x, valid, (h_prev, rzh, n_all) = res
    d_outputs, dh_last = cotangents  # [B, T, H], [B, H]
    batch, frames, hidden = h_prev.shape

    def frame(i):  # the backward visits the frames in the opposite order
        return _frame(frames - 1 - i, frames, reverse)

    def body(i, carry):
        g, rzh, n_all, (p, n) = carry
        t = frame(i)
        m = _at(valid, t)  # [B, 1]
        h = _at(h_prev, t)  # [B, H]
        r, z, hn = jnp.split(p, 3, axis=-1)
        g_new = jnp.where(m, g + _at(d_outputs, t), 0)  # dL/dh' at this frame
        da_r, da_z, da_n, dhn, dh_direct = _gru_preact_grads_split(
            g_new, h, r, z, n, hn
        )
        dhp = jnp.concatenate([da_r, da_z, dhn], axis=-1)  # [B, 3H]
        g = jnp.where(m, dh_direct + dhp @ params.w_hh, g)  # dL/dh, [B, H]
        # The gate gradients overwrite this frame's saved gates. The next
        # frame's gates are read from the updated buffers, after the write, so
        # that XLA can update them in place instead of copying them every step.
        rzh = _put(rzh, t, dhp)
        n_all = _put(n_all, t, da_n)
        t_next = frame(jnp.minimum(i + 1, frames - 1))
        return g, rzh, n_all, (_at(rzh, t_next), _at(n_all, t_next))

    init = (dh_last, rzh, n_all, (_at(rzh, frame(0)), _at(n_all, frame(0))))
    dh0, dhp, da_n, _ = lax.fori_loop(0, frames, body, init)
    # Gradients w.r.t. the hidden projection, (da_r, da_z, dhn), and the n
    # block of the input projection, da_n, for every frame (zero on padded
    # ones); the weight and input gradients are one matmul each over all
    # B * T rows (contracting the long axis with the thin operand first).
    rows = batch * frames
    dhp = dhp.reshape(rows, 3 * hidden)
    da_n = da_n.reshape(rows, hidden)
    x2 = x.reshape(rows, x.shape[-1])  # [B T, D]
    dw_hh = (h_prev.reshape(rows, hidden).T @ dhp).T  # [3H, H]
    db_hh = jnp.sum(dhp, axis=0)  # [3H]
    x_dhp = x2.T @ dhp  # [D, 3H]; its n block is not needed
    dw_ih = jnp.concatenate([x_dhp[:, : 2 * hidden], x2.T @ da_n], axis=1).T
    db_ih = jnp.concatenate([db_hh[: 2 * hidden], jnp.sum(da_n, axis=0)])
    w_rz = params.w_ih.at[2 * hidden :].set(0)  # [3H, D], the n rows zeroed
    dx = dhp @ w_rz + da_n @ params.w_ih[2 * hidden :]  # [B T, D]
    dparams = GRUParams(dw_ih, dw_hh, db_ih, db_hh)
    return dparams, dx.reshape(x.shape), None, dh0


_gru_core_fused.defvjp(_gru_core_fused_fwd, _gru_core_fused_bwd)


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


def _known_cell(step_fn):
    if step_fn is rnn_step:
        return RNNParams, 1, _rnn_core_loop
    if step_fn is gru_step:
        return GRUParams, 3, _gru_core_loop
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
    fused update per frame. :func:`rnn_step` is differentiated by JAX.
    :func:`gru_step` runs batch-major (no transposes of the inputs or outputs)
    and is differentiated through the hand backward of
    :func:`gru_step_backward` as a ``jax.custom_vjp``: the backward loop
    carries only :math:`\partial L / \partial h` and overwrites the saved
    gates with their gradients, and the weight and input gradients are one
    matmul each over all frames. It saves five ``[B, T, H]`` arrays where JAX
    autodiff saves about nine, and on XLA:CPU that memory, more than the
    arithmetic, decides the speed (see ``docs/_results/bench_rnn.md``; the
    autodiff scan is kept as an alternative there). Forward-mode
    differentiation (``jax.jvp``) of the built-in GRU is therefore not
    supported. Any other ``step_fn(params, h, x) -> h_new`` is scanned as is.

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
        cls, gates, core_loop = known
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
        if gates == 3 and _STRATEGY == "fused" and inputs.shape[1] > 0:
            return _gru_core_fused(params, inputs, valid[:, :, None], h0, reverse)
        xs = jnp.swapaxes(inputs, 0, 1)  # [T, B, D]
        hs, h_last = core_loop(params, xs, valid_tm, h0, reverse)
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
