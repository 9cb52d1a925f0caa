"""Masked scans of a recurrent cell over padded batches; stacked, bidirectional."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from seqctc._cells import Cell, _as_params, _weights, cell_of
from seqctc._types import Array, ArrayLike
from seqctc._utils import check_rank, check_same_dim, compute_dtype

StepFn = Callable[[Any, Any, Array], Any]

# How ``scan_rnn`` runs the built-in cells whose record says ``fused`` (GRU,
# LSTM), chosen with ``benchmarks/bench_rnn.py`` on XLA:CPU; the Elman cells
# always run "loop":
#   "fused": batch-major loop with the input projection inside; reverse mode
#            runs the cell's hand backward in a loop that only carries the
#            state gradient and writes the gate gradients over the saved
#            gates, then the weight and input gradients as one matmul over
#            all frames (fastest);
#   "loop":  time-major ``lax.scan`` with the input projection inside, JAX
#            autodiff.
# What decides on XLA:CPU is memory more than arithmetic: autodiff saves about
# nine [T, B, H] arrays per GRU layer (several of them copies of the same
# gate), the fused backward saves five (six for the LSTM) and reuses them for
# its own results. XLA allocates its temporaries as one block per call, and a
# block over glibc's 32 MiB mmap threshold is mapped afresh and page-faulted
# on every call. Hoisting the input projection out of the loop (one matmul
# over all frames) was measured too: the [T, B, G H] array it makes costs more
# than it saves (docs/benchmarks.md lists the LSTM variants tried). See
# docs/concepts/cells.md for how the fused path supports both ``jax.grad``
# (hand backward) and ``jax.jvp``.
_STRATEGY = "fused"


def _loop_weight(w: Array) -> Array:
    """``W^T`` as a real ``[in, out]`` array for ``h @ W`` inside the loop.

    XLA would otherwise fold the transpose into each step's matmul, and the
    transposed-operand matmul is slower on XLA:CPU.
    """
    return lax.optimization_barrier(w.T)


def _mask(m: Array, new, old):
    """``new`` on valid rows (``m [B, 1]`` true), ``old`` elsewhere, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(m, n, o), new, old)


# ----------------------------------------------------------------------------
# The plain core, differentiated by JAX: time-major ``lax.scan``. All cores map
# (params, x [B, T, D], valid [B, T, 1] bool, state0) to (outputs [B, T, H]
# zero on padded frames, last state).


def _loop_core(cell: Cell, params, x, valid, state0, reverse: bool):
    w = _weights(params, _loop_weight)
    xs = jnp.swapaxes(x, 0, 1)  # [T, B, D]
    ms = jnp.swapaxes(valid, 0, 1)  # [T, B, 1]

    def body(state, inp):
        x_t, m = inp  # [B, D], [B, 1]
        new, out, _ = cell.frame(w, state, x_t)
        return _mask(m, new, state), jnp.where(m, out, 0)

    last, ys = lax.scan(body, state0, (xs, ms), reverse=reverse)
    return jnp.swapaxes(ys, 0, 1), last  # [B, T, H]


# ----------------------------------------------------------------------------
# The fused core: batch-major throughout (no transposes of the inputs, outputs
# or saved gates), with the cell's hand backward.


def _at(a: Array, t: Array) -> Array:
    """Frame ``t`` of a batch-major ``[B, T, ...]`` array: ``[B, ...]``."""
    return lax.dynamic_index_in_dim(a, t, axis=1, keepdims=False)


def _put(a: Array, t: Array, v: Array) -> Array:
    """``a`` with frame ``t`` replaced by ``v [B, ...]``."""
    return lax.dynamic_update_index_in_dim(a, v, t, axis=1)


def _frame_index(i, frames: int, reverse: bool):
    """The frame that the forward loop processes at step ``i``."""
    return frames - 1 - i if reverse else i


def _fused_forward(cell: Cell, params, x, valid, state0, reverse, save):
    """The forward loop; with ``save`` it also keeps what the backward needs.

    Returns ``(outputs [B, T, H], last state, saved)``, ``saved`` the cell's
    per-frame values (``cell.saved_widths``) as ``[B, T, k H]`` arrays, empty
    without ``save``.
    """
    batch, frames, _ = x.shape
    hidden = params.w_hh.shape[1]
    w = _weights(params, _loop_weight)
    outputs = jnp.zeros((batch, frames, hidden), x.dtype)
    saved = ()
    if save:
        saved = tuple(
            jnp.zeros((batch, frames, k * hidden), x.dtype) for k in cell.saved_widths
        )

    def body(i, carry):
        state, outputs, saved = carry
        t = _frame_index(i, frames, reverse)
        m = _at(valid, t)  # [B, 1]
        new, out, saved_t = cell.frame(w, state, _at(x, t))
        outputs = _put(outputs, t, jnp.where(m, out, 0))
        if save:
            saved = tuple(_put(s, t, v) for s, v in zip(saved, saved_t, strict=True))
        return _mask(m, new, state), outputs, saved

    last, outputs, saved = lax.fori_loop(0, frames, body, (state0, outputs, saved))
    return outputs, last, saved


def _add_to_h(cell: Cell, dstate, d_out: Array):
    """Adds an output's gradient to the ``h`` part of a state gradient."""
    if cell.state_size == 1:
        return dstate + d_out
    return (dstate[0] + d_out, *dstate[1:])


def _fused_backward(cell: Cell, params, x, valid, saved, cotangents, reverse):
    """The hand backward of :func:`_fused_forward` (reverse-mode AD).

    Returns ``(dparams, dx [B, T, D], dstate0)``.
    """
    d_outputs, dlast = cotangents  # [B, T, H], like the last state
    batch, frames, _ = x.shape
    w = _weights(params, _loop_weight)

    def frame(i):  # the backward visits the frames in the opposite order
        return _frame_index(frames - 1 - i, frames, reverse)

    def body(i, carry):
        dstate, saved, current = carry
        t = frame(i)
        m = _at(valid, t)  # [B, 1]
        # dL/d(state after this frame): zero on padded frames.
        dnew = jax.tree.map(
            lambda d: jnp.where(m, d, 0), _add_to_h(cell, dstate, _at(d_outputs, t))
        )
        dprev, grads = cell.frame_backward(w, current, dnew)
        dstate = _mask(m, dprev, dstate)
        # The gate gradients overwrite this frame's saved gates. The next
        # frame's values are read from the updated buffers, after the write,
        # so that XLA can update them in place instead of copying them every
        # step.
        saved = tuple(
            s if g is None else _put(s, t, g) for s, g in zip(saved, grads, strict=True)
        )
        t_next = frame(jnp.minimum(i + 1, frames - 1))
        return dstate, saved, tuple(_at(s, t_next) for s in saved)

    init = (dlast, saved, tuple(_at(s, frame(0)) for s in saved))
    dstate0, saved, _ = lax.fori_loop(0, frames, body, init)
    # The pre-activation gradients of every frame (zero on padded ones) give
    # the weight and input gradients, one matmul each over all B * T rows.
    rows = batch * frames
    flat = tuple(s.reshape(rows, -1) for s in saved)
    dparams, dx = cell.param_grads(params, x.reshape(rows, -1), flat)
    return dparams, dx.reshape(x.shape), dstate0


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 5))
def _fused_core(cell: Cell, params, x, valid, state0, reverse):
    outputs, last, _ = _fused_forward(cell, params, x, valid, state0, reverse, False)
    return outputs, last


@_fused_core.defjvp
def _fused_core_jvp(cell, reverse, primals, tangents):
    # The tangent is a linear function of (dparams, dx, dstate0) whose
    # transpose is the hand backward, so that jax.grad (which transposes it)
    # runs the hand backward and jax.jvp (which evaluates it) works too.
    params, x, valid, state0 = primals
    dparams, dx, _, dstate0 = tangents
    outputs, last, saved = _fused_forward(cell, params, x, valid, state0, reverse, True)
    res = (params, x, valid, state0, saved)
    return (outputs, last), _bind_linear(cell, reverse, res, (dparams, dx, dstate0))


# ----------------------------------------------------------------------------
# The fused core's tangent map as a primitive: linear in its last arguments,
# evaluated by the forward-mode derivative of the plain core, transposed by
# the hand backward. ``jax.custom_derivatives.linear_call`` does the same but
# has no batching rule (so no ``vmap`` of ``grad``); a primitive of our own
# can have one.


def _linear_fn(cell, reverse, transposed, res, lin):
    params, x, valid, state0, saved = res
    if transposed:  # cotangents of (outputs, last) -> of (params, x, state0)
        return _fused_backward(cell, params, x, valid, saved, lin, reverse)

    def core(p, x, s):
        return _loop_core(cell, p, x, valid, s, reverse)

    return jax.jvp(core, (params, x, state0), lin)[1]


def _linear_impl(*flat, cell, reverse, transposed, trees, vmapped):
    res_tree, out_tree, tan_tree = trees
    num_res = res_tree.num_leaves

    def fn(*flat):
        res = jax.tree.unflatten(res_tree, flat[:num_res])
        lin = jax.tree.unflatten(out_tree if transposed else tan_tree, flat[num_res:])
        return jax.tree.leaves(_linear_fn(cell, reverse, transposed, res, lin))

    for _ in range(vmapped):
        fn = jax.vmap(fn)
    return fn(*flat)


def _linear_abstract_eval(*avals, **params):
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    outs = jax.eval_shape(functools.partial(_linear_impl, **params), *shapes)
    return [jax.core.ShapedArray(o.shape, o.dtype) for o in outs]


def _linear_transpose(cts, *flat, transposed, trees, **params):
    num_res = trees[0].num_leaves
    res, lin = flat[:num_res], flat[num_res:]
    if any(ad.is_undefined_primal(r) for r in res):
        raise NotImplementedError(
            "The fused scan's tangent is linear only in its tangents."
        )
    cts = [ad.instantiate_zeros(ct) for ct in cts]
    outs = _linear_p.bind(*res, *cts, transposed=not transposed, trees=trees, **params)
    kept = [
        o if ad.is_undefined_primal(a) else None for a, o in zip(lin, outs, strict=True)
    ]
    return [None] * num_res + kept


def _linear_jvp(primals, tangents, *, trees, **params):
    num_res = trees[0].num_leaves
    if any(type(t) is not ad.Zero for t in tangents[:num_res]):
        raise NotImplementedError(
            "Second-order derivatives through scan_rnn's fused GRU/LSTM path are "
            "not supported; wrap the step (e.g. `lambda p, s, x: seqctc.lstm_step("
            "p, s, x)`) to scan it as a custom step, differentiated by JAX."
        )
    outs = _linear_p.bind(*primals, trees=trees, **params)
    lin = [ad.instantiate_zeros(t) for t in tangents[num_res:]]
    t_outs = _linear_p.bind(*primals[:num_res], *lin, trees=trees, **params)
    return outs, t_outs


def _linear_batch(args, dims, *, vmapped, **params):
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    args = [batching.bdim_at_front(a, d, size) for a, d in zip(args, dims, strict=True)]
    outs = _linear_p.bind(*args, vmapped=vmapped + 1, **params)
    return outs, [0] * len(outs)


_linear_p = Primitive("seqctc_fused_scan_linear")
_linear_p.multiple_results = True
_linear_p.def_impl(_linear_impl)
_linear_p.def_abstract_eval(_linear_abstract_eval)
mlir.register_lowering(_linear_p, mlir.lower_fun(_linear_impl, multiple_results=True))
ad.primitive_transposes[_linear_p] = _linear_transpose
ad.primitive_jvps[_linear_p] = _linear_jvp
batching.primitive_batchers[_linear_p] = _linear_batch


def _bind_linear(cell, reverse, res, lin):
    params, x, _, state0, _ = res
    trees = (
        jax.tree.structure(res),
        jax.tree.structure((x, state0)),  # (outputs, last state)
        jax.tree.structure((params, x, state0)),  # (dparams, dx, dstate0)
    )
    outs = _linear_p.bind(
        *jax.tree.leaves(res),
        *jax.tree.leaves(lin),
        cell=cell,
        reverse=reverse,
        transposed=False,
        trees=trees,
        vmapped=0,
    )
    return jax.tree.unflatten(trees[1], outs)


# ----------------------------------------------------------------------------
# Public scans.


def _check_scan_args(inputs, paddings):
    check_rank(inputs, 3, "inputs")
    check_rank(paddings, 2, "paddings")
    check_same_dim(inputs, 0, "inputs", paddings, 0, "paddings")
    check_same_dim(inputs, 1, "inputs", paddings, 1, "paddings")


def _check_state(cell: Cell, state, shape: tuple[int, ...], name: str) -> None:
    """Checks that ``state`` is the cell's state (array or pair) of ``shape``."""
    if cell.state_size == 2:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(
                f"`{name}` must be a pair (h, c) for an LSTM, got "
                f"{type(state).__name__}."
            )
        leaves = list(state)
    else:
        leaves = [state]
    for leaf in leaves:
        if tuple(jnp.shape(leaf)) != shape:
            raise ValueError(
                f"`{name}` must have shape {shape}"
                + (" (each of h and c)" if cell.state_size == 2 else "")
                + f", got {jnp.shape(leaf)}."
            )


def scan_rnn(
    step_fn: StepFn,
    params: Any,
    inputs: ArrayLike,
    paddings: ArrayLike,
    *,
    initial_state: Any = None,
    reverse: bool = False,
) -> tuple[Array, Any]:
    r"""Runs a recurrent cell over padded sequences.

    Valid frames update the state, padded frames keep it and give zero outputs:

    .. math::

        s_t = \begin{cases} \mathrm{step}(s_{t-1}, x_t) & t < T_b \\
                            s_{t-1} & t \ge T_b \end{cases}, \qquad
        y_t = [t < T_b]\, h_t,

    where the state :math:`s_t` is :math:`h_t`, or the pair
    :math:`(h_t, c_t)` for :func:`lstm_step`. With ``reverse=True`` each row
    runs backwards over its own valid frames, :math:`s_t = \mathrm{step}(s_{t+1},
    x_t)` from :math:`t = T_b - 1` down to 0, so the output at ``t`` depends on
    frames ``t … T_b − 1`` (right padding is simply skipped). Padded inputs are
    never read: NaN there changes neither outputs nor gradients.

    The built-in cells (:func:`rnn_step`, :func:`rnn_relu_step`,
    :func:`gru_step`, :func:`lstm_step`) are recognised and run on a fast
    path: weights transposed once outside the loop and one fused update per
    frame. The Elman cells are differentiated by JAX. The GRU and the LSTM
    run batch-major (no transposes of the inputs or outputs) and reverse-mode
    differentiation runs their hand backward (:func:`gru_step_backward`,
    :func:`lstm_step_backward`): the backward loop carries only the state
    gradient and overwrites the saved gates with their gradients, and the
    weight and input gradients are one matmul each over all frames. It saves
    five ``[B, T, H]`` arrays (six for the LSTM) where JAX autodiff saves
    about nine, and on XLA:CPU that memory, more than the arithmetic, decides
    the speed (see ``docs/_results/bench_rnn.md``). Forward-mode
    differentiation (``jax.jvp``, ``jax.jacfwd``) works on every path, and
    both modes work under ``jax.vmap``; second-order derivatives of the
    GRU/LSTM path are not supported. Any other ``step_fn(params, state, x)
    -> new_state`` is scanned as is.

    Args:
        step_fn: a cell step ``step_fn(params, state, x[B, D]) -> new_state``,
            e.g. :func:`gru_step` or :func:`lstm_step` (recognised, fast path).
        params: the cell's parameters (a pytree, e.g. :class:`GRUParams`).
        inputs: ``[B, T, D]`` input frames (batch-major). For the built-in
            cells they are cast to the parameters' dtype, or to float32 for
            half-precision parameters (the state then accumulates in float32
            and the outputs are float32).
        paddings: ``[B, T]`` paddings, 1.0 = padded (right padded).
        initial_state: the state before the first processed frame: ``[B, H]``,
            or for :func:`lstm_step` the pair ``(h0, c0)`` of ``[B, H]``;
            zeros if ``None`` (a custom ``step_fn`` then needs ``params.w_hh``
            of shape ``[G H, H]`` to size an ``[B, H]`` state).
        reverse: run each row backwards over its valid frames (static).

    Returns:
        ``(outputs, final_state)``: ``[B, T, H]`` hidden states after each
        frame (zero on padded frames) and the state after the last valid frame
        (after frame 0 when ``reverse``), ``[B, H]`` or the LSTM's pair
        ``(h, c)``; the initial state for empty rows. A custom ``step_fn``'s
        outputs are its whole states.

    Raises:
        ValueError: if ``inputs`` is not rank 3, ``paddings`` not rank 2, their
            ``B``/``T`` differ, ``D`` does not match the parameters, or
            ``initial_state`` is not the cell's state for ``B`` rows.

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
        >>> lstm = seqctc.init_lstm_params(jax.random.key(1), 3, 4)
        >>> outputs, (h, c) = seqctc.scan_rnn(seqctc.lstm_step, lstm, x, paddings)
        >>> outputs.shape, h.shape, c.shape
        ((2, 5, 4), (2, 4), (2, 4))

    See also:
        :func:`bidirectional_rnn`, :func:`stacked_rnn`, :class:`seqctc.nn.RNN`.
    """
    inputs = jnp.asarray(inputs)
    paddings = jnp.asarray(paddings)
    _check_scan_args(inputs, paddings)
    batch = inputs.shape[0]
    if initial_state is not None:
        initial_state = jax.tree.map(jnp.asarray, initial_state)
    cell = cell_of(step_fn)
    if cell is not None:
        params = _as_params(params, cell.params_cls, cell.gates)
        hidden = params.w_hh.shape[1]
        if initial_state is not None:
            _check_state(cell, initial_state, (batch, hidden), "initial_state")
        if inputs.shape[-1] != params.w_ih.shape[1]:
            raise ValueError(
                f"`inputs` must have {params.w_ih.shape[1]} features to match "
                f"`params.w_ih` of shape {params.w_ih.shape}, got {inputs.shape}."
            )
    valid = (paddings == 0)[:, :, None]  # [B, T, 1]
    # Zero the padded frames first, so that NaN there reaches no gradient.
    inputs = jnp.where(valid, inputs, 0)  # [B, T, D]

    if cell is not None:
        # Half-precision parameters run (and accumulate) in float32.
        dtype = compute_dtype(params.w_hh)
        params = type(params)(*(p.astype(dtype) for p in params))
        inputs = inputs.astype(dtype)
        if initial_state is None:
            zeros = jnp.zeros((batch, hidden), dtype)
            state0 = zeros if cell.state_size == 1 else (zeros, zeros)
        else:
            state0 = jax.tree.map(lambda s: s.astype(dtype), initial_state)
            state0 = state0 if cell.state_size == 1 else tuple(state0)
        if cell.fused and _STRATEGY == "fused" and inputs.shape[1] > 0:
            return _fused_core(cell, params, inputs, valid, state0, reverse)
        return _loop_core(cell, params, inputs, valid, state0, reverse)

    if initial_state is not None:
        state0 = initial_state
    elif hasattr(params, "w_hh"):
        state0 = jnp.zeros((batch, params.w_hh.shape[1]), inputs.dtype)
    else:
        raise ValueError(
            "`initial_state` is required for a custom `step_fn` whose "
            "`params` has no `w_hh` to infer the state size from."
        )
    xs = jnp.swapaxes(inputs, 0, 1)  # [T, B, D]
    ms = jnp.swapaxes(valid, 0, 1)  # [T, B, 1]

    def body(state, inp):
        x, m = inp  # [B, D], [B, 1]
        new = _mask(m, step_fn(params, state, x), state)
        return new, jax.tree.map(lambda s: jnp.where(m, s, 0), new)

    last, ys = lax.scan(body, state0, (xs, ms), reverse=reverse)
    return jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), ys), last


def _split_rows(state, start: int, stop: int, name: str, rows: int):
    """Rows ``start:stop`` of each ``[rows, B, H]`` array of a stacked state."""
    for leaf in jax.tree.leaves(state):
        check_rank(leaf, 3, name)
        if leaf.shape[0] != rows:
            raise ValueError(
                f"`{name}` must have {rows} rows (num_layers * directions) on "
                f"its first axis, got shape {leaf.shape}."
            )
    return jax.tree.map(lambda s: s[start:stop], state)


def bidirectional_rnn(
    step_fn: StepFn,
    params_forward: Any,
    params_backward: Any,
    inputs: ArrayLike,
    paddings: ArrayLike,
    *,
    initial_state: Any = None,
) -> tuple[Array, Any]:
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
        initial_state: ``[2, B, H]`` initial states (forward, backward), or
            for the LSTM a pair ``(h0, c0)`` of them; zeros if ``None``.

    Returns:
        ``(outputs, final_state)``: ``[B, T, 2H]`` and ``[2, B, H]`` (forward
        state after the last valid frame, backward state after frame 0), or
        for the LSTM the pair ``(h_n, c_n)`` of ``[2, B, H]``.

    Raises:
        ValueError: as :func:`scan_rnn`, or if ``initial_state`` is not
            ``[2, B, H]``.

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
        initial_state = jax.tree.map(jnp.asarray, initial_state)
        initial_state = _split_rows(initial_state, 0, 2, "initial_state", 2)
        init_f = jax.tree.map(lambda s: s[0], initial_state)
        init_b = jax.tree.map(lambda s: s[1], initial_state)
    out_f, h_f = scan_rnn(
        step_fn, params_forward, inputs, paddings, initial_state=init_f
    )
    out_b, h_b = scan_rnn(
        step_fn, params_backward, inputs, paddings, initial_state=init_b, reverse=True
    )
    final = jax.tree.map(lambda f, b: jnp.stack([f, b]), h_f, h_b)
    return jnp.concatenate([out_f, out_b], axis=-1), final


def stacked_rnn(
    step_fn: StepFn,
    layers: Sequence[Any],
    inputs: ArrayLike,
    paddings: ArrayLike,
    *,
    bidirectional: bool = False,
    initial_state: Any = None,
    between_layers: Callable[[int, Array], Array] | None = None,
) -> tuple[Array, Any]:
    r"""Several recurrent layers on top of each other (torch ``num_layers``).

    Layer ``l`` reads layer ``l − 1``'s outputs (zero on padded frames),
    passed through ``between_layers`` if given (e.g. dropout, as torch's
    ``dropout`` acts between layers):

    .. math::

        y^{(0)} = x, \qquad
        y^{(l)} = \mathrm{layer}_l(\mathrm{between}(l, y^{(l-1)})).

    Args:
        step_fn: a cell step, as in :func:`scan_rnn`.
        layers: per layer, the cell parameters; with ``bidirectional`` a pair
            ``(params_forward, params_backward)`` per layer.
        inputs: ``[B, T, D]`` input frames.
        paddings: ``[B, T]`` paddings, 1.0 = padded.
        bidirectional: whether each layer is bidirectional (static).
        initial_state: ``[L * dirs, B, H]`` initial states in torch's ``h_0``
            order (layer-major, forward before backward), or for the LSTM the
            pair ``(h_0, c_0)`` of them; zeros if ``None``.
        between_layers: ``between_layers(l, outputs) -> outputs``, applied to
            the ``[B, T, dirs * H]`` outputs of layer ``l − 1`` before layer
            ``l ≥ 1`` reads them; identity if ``None``.

    Returns:
        ``(outputs, final_state)``: ``[B, T, dirs * H]`` outputs of the last
        layer and ``[L * dirs, B, H]`` final states in torch's ``h_n`` order
        (the LSTM's pair ``(h_n, c_n)``).

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
        initial_state = jax.tree.map(jnp.asarray, initial_state)
        _split_rows(initial_state, 0, 0, "initial_state", dirs * len(layers))
    outputs = inputs
    finals = []
    for i, layer in enumerate(layers):
        if i > 0 and between_layers is not None:
            outputs = between_layers(i, outputs)
        init = None
        if initial_state is not None:
            init = _split_rows(
                initial_state,
                dirs * i,
                dirs * (i + 1),
                "initial_state",
                dirs * len(layers),
            )
        if bidirectional:
            if not (isinstance(layer, (tuple, list)) and len(layer) == 2):
                raise ValueError(
                    f"`layers[{i}]` must be a pair (params_forward, params_backward) "
                    "for a bidirectional stack."
                )
            outputs, h = bidirectional_rnn(
                step_fn, layer[0], layer[1], outputs, paddings, initial_state=init
            )
        else:
            outputs, h = scan_rnn(
                step_fn,
                layer,
                outputs,
                paddings,
                initial_state=None
                if init is None
                else jax.tree.map(lambda s: s[0], init),
            )
            h = jax.tree.map(lambda s: s[None], h)
        finals.append(h)
    final = jax.tree.map(lambda *hs: jnp.concatenate(hs, axis=0), *finals)
    return outputs, final
