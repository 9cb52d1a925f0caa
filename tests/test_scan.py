"""Masked scans against a plain numpy loop over each row's valid frames."""

import contextlib

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads
from oracles import sigmoid as _sigmoid

import seqctc
from seqctc import _scan

INITS = {
    "rnn": seqctc.init_rnn_params,
    "rnn_relu": seqctc.init_rnn_params,
    "gru": seqctc.init_gru_params,
    "lstm": seqctc.init_lstm_params,
}
STEPS = {
    "rnn": seqctc.rnn_step,
    "rnn_relu": seqctc.rnn_relu_step,
    "gru": seqctc.gru_step,
    "lstm": seqctc.lstm_step,
}


def numpy_step(cell, p, state, x):
    """One cell step in float64 numpy, written from torch's equations."""
    w_ih, w_hh, b_ih, b_hh = [np.asarray(a, np.float64) for a in p]
    if cell == "lstm":
        return oracles.lstm_step(w_ih, w_hh, b_ih, b_hh, *state, x)
    h = state
    if cell == "rnn":
        return np.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    if cell == "rnn_relu":
        return np.maximum(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 0)
    hid = w_hh.shape[1]
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    r = _sigmoid(gi[:hid] + gh[:hid])
    z = _sigmoid(gi[hid : 2 * hid] + gh[hid : 2 * hid])
    n = np.tanh(gi[2 * hid :] + r * gh[2 * hid :])
    return (1 - z) * n + z * h


def numpy_scan(cell, p, inputs, lengths, h0, reverse=False):
    """A Python loop per row over its valid frames (backwards if ``reverse``).

    ``h0`` is ``[B, H]``, or the LSTM's pair of them; the final state likewise.
    """
    batch, frames, _ = inputs.shape
    hidden = np.shape(p[1])[1]
    outputs = np.zeros((batch, frames, hidden))
    lstm = cell == "lstm"
    finals = [np.zeros((batch, hidden)) for _ in range(2 if lstm else 1)]
    for b in range(batch):
        if lstm:
            state = tuple(np.asarray(s[b], np.float64) for s in h0)
        else:
            state = np.asarray(h0[b], np.float64)
        order = range(lengths[b])
        for t in reversed(order) if reverse else order:
            state = numpy_step(cell, p, state, np.asarray(inputs[b, t], np.float64))
            outputs[b, t] = state[0] if lstm else state
        for f, s in zip(finals, state if lstm else (state,), strict=True):
            f[b] = s
    return outputs, tuple(finals) if lstm else finals[0]


def _problem(seed, cell, batch=3, frames=6, features=3, hidden=4, lengths=None):
    rng = np.random.default_rng(seed)
    params = INITS[cell](jax.random.key(seed), features, hidden)
    params = type(params)(*(2.0 * p for p in params))
    inputs = rng.normal(size=(batch, frames, features)).astype(np.float32)
    if lengths is None:
        lengths = rng.integers(0, frames + 1, size=batch)
        lengths[0] = frames
        lengths[-1] = 0
    lengths = np.asarray(lengths)
    paddings = np.asarray(seqctc.lengths_to_paddings(lengths, frames))
    h0 = rng.normal(size=(batch, hidden)).astype(np.float32)
    if cell == "lstm":
        h0 = (h0, rng.normal(size=(batch, hidden)).astype(np.float32))
    return params, inputs, paddings, lengths, h0


@contextlib.contextmanager
def _strategy(name):
    """Traces ``scan_rnn`` with another internal strategy for the built-in cells."""
    old = _scan._STRATEGY
    _scan._STRATEGY = name
    try:
        yield
    finally:
        _scan._STRATEGY = old


CASES = [
    (f"{cell}_{'reverse' if rev else 'forward'}", cell, rev)
    for cell in ("rnn", "gru", "lstm")
    for rev in (False, True)
] + [("rnn_relu_forward", "rnn_relu", False)]


def _sum(fn, tree):
    """``Σ fn(leaf)`` over a state's arrays (one, or the LSTM's two)."""
    return sum(jnp.sum(fn(leaf)) for leaf in jax.tree.leaves(tree))


class ScanTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(CASES)
    def test_matches_python_loop(self, cell, reverse):
        params, inputs, paddings, lengths, h0 = _problem(0, cell)
        scan = self.variant(
            lambda p, x, pad, h0: seqctc.scan_rnn(
                STEPS[cell], p, x, pad, initial_state=h0, reverse=reverse
            )
        )
        outputs, final = scan(params, inputs, paddings, h0)
        expected, expected_final = numpy_scan(
            cell, params, inputs, lengths, h0, reverse
        )
        chex.assert_shape(outputs, inputs.shape[:2] + (4,))
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(final, expected_final, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("rnn", "rnn", False), ("gru_reverse", "gru", True), ("lstm", "lstm", False)
    )
    def test_custom_step_fn_matches_python_loop(self, cell, reverse):
        """A step function that is not recognised takes the generic path."""
        params, inputs, paddings, lengths, _ = _problem(1, cell)
        step = STEPS[cell]
        zeros = np.zeros((inputs.shape[0], 4), np.float32)
        h0 = (zeros, zeros) if cell == "lstm" else None
        outputs, final = self.variant(
            lambda p, x, pad: seqctc.scan_rnn(
                lambda p, h, x: step(p, h, x),
                p,
                x,
                pad,
                initial_state=h0,
                reverse=reverse,
            )
        )(params, inputs, paddings)
        if cell == "lstm":  # a custom step's outputs are its whole states
            outputs = outputs[0]
        expected, expected_final = numpy_scan(
            cell, params, inputs, lengths, (zeros, zeros) if h0 else zeros, reverse
        )
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(final, expected_final, rtol=1e-5, atol=1e-6)

    @parameterized.parameters("rnn", "gru", "lstm")
    def test_reverse_is_forward_on_flipped_valid_part(self, cell):
        params, inputs, paddings, lengths, h0 = _problem(2, cell)
        flipped = inputs.copy()
        for b, n in enumerate(lengths):
            flipped[b, :n] = inputs[b, :n][::-1]
        step = STEPS[cell]
        out_rev, final_rev = seqctc.scan_rnn(
            step, params, inputs, paddings, initial_state=h0, reverse=True
        )
        out_fwd, final_fwd = seqctc.scan_rnn(
            step, params, flipped, paddings, initial_state=h0
        )
        out_fwd = np.asarray(out_fwd).copy()
        for b, n in enumerate(lengths):
            out_fwd[b, :n] = out_fwd[b, :n][::-1]
        np.testing.assert_allclose(out_rev, out_fwd, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(final_rev, final_fwd, rtol=1e-6, atol=1e-6)

    @parameterized.named_parameters(CASES[0], CASES[3], CASES[5])
    def test_nan_padding_changes_nothing(self, cell, reverse):
        params, inputs, paddings, lengths, h0 = _problem(3, cell)
        batch, frames, features = inputs.shape
        # Garbage in the padded frames, plus three more padded frames of NaN.
        garbage = inputs.copy()
        garbage[paddings == 1] = np.nan
        garbage = np.concatenate(
            [garbage, np.full((batch, 3, features), np.nan, np.float32)], axis=1
        )
        more_paddings = np.concatenate([paddings, np.ones((batch, 3))], axis=1)
        weights = np.random.default_rng(4).normal(size=(4,)).astype(np.float32)

        def loss(p, x, pad, h0):
            out, final = seqctc.scan_rnn(
                STEPS[cell], p, x, pad, initial_state=h0, reverse=reverse
            )
            return jnp.sum(out @ weights) + _sum(jnp.square, final), (out, final)

        grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1, 3), has_aux=True))
        grads, (out, final) = grad_fn(params, inputs, paddings, h0)
        grads2, (out2, final2) = grad_fn(params, garbage, more_paddings, h0)
        np.testing.assert_array_equal(out2[:, frames:], 0.0)
        np.testing.assert_allclose(out2[:, :frames], out, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(final2, final, rtol=1e-6, atol=1e-7)
        chex.assert_tree_all_finite(grads2)
        np.testing.assert_array_equal(grads2[1][more_paddings == 1], 0.0)
        grads2 = (grads2[0], grads2[1][:, :frames], grads2[2])
        chex.assert_trees_all_close(grads2, grads, rtol=1e-5, atol=1e-6)

    @parameterized.parameters("gru", "lstm")
    def test_fused_backward_equals_autodiff(self, cell):
        """The fused hand backward agrees with JAX autodiff of the plain scan."""
        params, inputs, paddings, lengths, h0 = _problem(5, cell)
        weights = np.random.default_rng(6).normal(size=(4,)).astype(np.float32)

        def loss(p, x, h0):
            # Both directions, so both orders of the hand backward are used.
            out_f, final_f = seqctc.scan_rnn(
                STEPS[cell], p, x, paddings, initial_state=h0
            )
            out_b, final_b = seqctc.scan_rnn(
                STEPS[cell], p, x, paddings, initial_state=h0, reverse=True
            )
            value = jnp.sum(jnp.tanh(out_f) @ weights) + jnp.sum(out_b**2)
            return value + _sum(lambda f: f**3, final_f) + _sum(jnp.sin, final_b), out_b

        results = {}
        for name in ("fused", "loop"):
            with _strategy(name):
                grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))
                results[name] = grad_fn(params, inputs, h0)
        expected, _ = numpy_scan(cell, params, inputs, lengths, h0, reverse=True)
        for name, (grads, out) in results.items():
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
            chex.assert_tree_all_finite(grads)
            chex.assert_trees_all_close(
                grads, results["loop"][0], rtol=1e-5, atol=1e-5, custom_message=name
            )

    @parameterized.parameters(("gru", False), ("lstm", True))
    def test_jvp_equals_jvp_of_the_plain_scan(self, cell, reverse):
        """Forward mode through the fused path (and the rest) works and agrees."""
        params, inputs, paddings, _, h0 = _problem(12, cell)
        rng = np.random.default_rng(13)
        tangents = jax.tree.map(
            lambda a: rng.normal(size=np.shape(a)).astype(np.float32),
            (params, inputs, h0),
        )

        def scan(p, x, h0, reverse):
            return seqctc.scan_rnn(
                STEPS[cell], p, x, paddings, initial_state=h0, reverse=reverse
            )

        results = {}
        for name in ("fused", "loop"):
            with _strategy(name):
                results[name] = jax.jit(
                    lambda p, x, h0, t: jax.jvp(
                        lambda *a: scan(*a, reverse), (p, x, h0), t
                    )
                )(params, inputs, h0, tangents)
        chex.assert_trees_all_close(
            results["fused"], results["loop"], rtol=1e-5, atol=1e-5
        )
        chex.assert_tree_all_finite(results["fused"])

    def test_fused_path_under_vmap(self):
        """vmap of grad, grad of vmap and vmap of jvp agree with the plain scan."""
        cell = "lstm"  # the GRU runs the same fused loops
        params, inputs, paddings, _, h0 = _problem(14, cell)
        xs = np.stack([inputs, 0.5 * inputs])  # [2, B, T, D]

        def loss(p, x, h0):
            out, final = seqctc.scan_rnn(STEPS[cell], p, x, paddings, initial_state=h0)
            return jnp.sum(jnp.tanh(out)) + _sum(jnp.square, final)

        def per_example_grads(p, xs, h0):
            return jax.vmap(jax.grad(loss, argnums=(0, 1)), (None, 0, None))(p, xs, h0)

        def grad_of_vmap(p, xs, h0):
            def total(p, xs):
                return jnp.sum(jax.vmap(loss, (None, 0, None))(p, xs, h0))

            return jax.grad(total, argnums=(0, 1))(p, xs)

        def vmap_of_jvp(p, xs, h0):
            t = jax.tree.map(jnp.ones_like, p)
            return jax.vmap(lambda x: jax.jvp(lambda p: loss(p, x, h0), (p,), (t,)))(xs)

        for fn in (per_example_grads, grad_of_vmap, vmap_of_jvp):
            results = {}
            for name in ("fused", "loop"):
                with _strategy(name):
                    results[name] = jax.jit(fn)(params, xs, h0)
            chex.assert_trees_all_close(
                results["fused"],
                results["loop"],
                rtol=1e-5,
                atol=1e-5,
                custom_message=fn.__name__,
            )

    @parameterized.parameters("rnn", "gru", "lstm")
    def test_gradient_matches_finite_differences(self, cell):
        with jax.enable_x64(True):
            params, inputs, paddings, _, h0 = _problem(
                7, cell, batch=2, frames=3, hidden=3
            )
            params = type(params)(*(np.asarray(p, np.float64) for p in params))
            inputs = inputs.astype(np.float64)
            h0 = jax.tree.map(lambda s: s.astype(np.float64), h0)

            @jax.jit
            def loss(p, x, h0):
                out, final = seqctc.scan_rnn(
                    STEPS[cell], p, x, paddings, initial_state=h0, reverse=True
                )
                return jnp.sum(out**2) + _sum(jnp.sin, final)

            # Reverse mode runs the hand backward, forward mode the tangent map.
            check_grads(loss, (params, inputs, h0), order=1, modes=["rev", "fwd"])

    def test_stacked_bidirectional_matches_python_loop(self):
        rng = np.random.default_rng(8)
        params, inputs, paddings, lengths, _ = _problem(8, "gru", hidden=4)
        keys = jax.random.split(jax.random.key(9), 3)
        layers = [
            (params, seqctc.init_gru_params(keys[0], 3, 4)),
            tuple(seqctc.init_gru_params(k, 8, 4) for k in keys[1:]),
        ]
        h0 = rng.normal(size=(4, 3, 4)).astype(np.float32)
        outputs, finals = jax.jit(
            lambda layers, x, h0: seqctc.stacked_rnn(
                seqctc.gru_step,
                layers,
                x,
                paddings,
                bidirectional=True,
                initial_state=h0,
            )
        )(layers, inputs, h0)
        x = inputs.astype(np.float64)
        expected_finals = []
        for i, (pf, pb) in enumerate(layers):
            of, hf = numpy_scan("gru", pf, x, lengths, h0[2 * i])
            ob, hb = numpy_scan("gru", pb, x, lengths, h0[2 * i + 1], reverse=True)
            x = np.concatenate([of, ob], axis=-1)
            expected_finals += [hf, hb]
        np.testing.assert_allclose(outputs, x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            finals, np.stack(expected_finals), rtol=1e-5, atol=1e-6
        )

    def test_stacked_bidirectional_lstm_matches_python_loop(self):
        """An LSTM stack takes and returns torch's pairs (h_0, c_0), (h_n, c_n)."""
        rng = np.random.default_rng(15)
        _, inputs, paddings, lengths, _ = _problem(15, "lstm")
        keys = jax.random.split(jax.random.key(16), 4)
        layers = [
            tuple(seqctc.init_lstm_params(k, 3, 4) for k in keys[:2]),
            tuple(seqctc.init_lstm_params(k, 8, 4) for k in keys[2:]),
        ]
        h0, c0 = (rng.normal(size=(4, 3, 4)).astype(np.float32) for _ in range(2))
        outputs, (h_n, c_n) = jax.jit(
            lambda layers, x, state: seqctc.stacked_rnn(
                seqctc.lstm_step,
                layers,
                x,
                paddings,
                bidirectional=True,
                initial_state=state,
            )
        )(layers, inputs, (h0, c0))
        x = inputs.astype(np.float64)
        hs, cs = [], []
        for i, (pf, pb) in enumerate(layers):
            of, (hf, cf) = numpy_scan("lstm", pf, x, lengths, (h0[2 * i], c0[2 * i]))
            ob, (hb, cb) = numpy_scan(
                "lstm", pb, x, lengths, (h0[2 * i + 1], c0[2 * i + 1]), reverse=True
            )
            x = np.concatenate([of, ob], axis=-1)
            hs += [hf, hb]
            cs += [cf, cb]
        np.testing.assert_allclose(outputs, x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(h_n, np.stack(hs), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c_n, np.stack(cs), rtol=1e-5, atol=1e-6)

    def test_between_layers_hook_sees_each_lower_layer(self):
        keys = jax.random.split(jax.random.key(17), 3)
        layers = [seqctc.init_gru_params(keys[0], 3, 4)] + [
            seqctc.init_gru_params(k, 4, 4) for k in keys[1:]
        ]
        _, inputs, paddings, _, _ = _problem(17, "gru")
        seen = []

        def hook(i, outputs):
            seen.append(i)
            return 2.0 * outputs

        outputs, _ = jax.jit(
            lambda layers, x: seqctc.stacked_rnn(
                seqctc.gru_step, layers, x, paddings, between_layers=hook
            )
        )(layers, inputs)
        self.assertEqual(seen, [1, 2])

        @jax.jit
        def by_hand(layers, y):
            for i, p in enumerate(layers):
                y = y if i == 0 else 2.0 * y
                y, _ = seqctc.scan_rnn(seqctc.gru_step, p, y, paddings)
            return y

        y = by_hand(layers, inputs)
        np.testing.assert_allclose(outputs, y, rtol=1e-6, atol=1e-6)

    def test_stacked_unidirectional_matches_python_loop(self):
        keys = jax.random.split(jax.random.key(10), 2)
        layers = [
            seqctc.init_rnn_params(keys[0], 3, 5),
            seqctc.init_rnn_params(keys[1], 5, 5),
        ]
        _, inputs, paddings, lengths, _ = _problem(10, "rnn")
        outputs, finals = seqctc.stacked_rnn(seqctc.rnn_step, layers, inputs, paddings)
        x = inputs.astype(np.float64)
        expected_finals = []
        for p in layers:
            x, h = numpy_scan("rnn", p, x, lengths, np.zeros((3, 5)))
            expected_finals.append(h)
        np.testing.assert_allclose(outputs, x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(finals, np.stack(expected_finals), atol=1e-6)


@hypothesis.settings(max_examples=4, deadline=None)
@hypothesis.given(
    batch=st.integers(1, 3),
    frames=st.integers(1, 5),
    features=st.integers(1, 3),
    hidden=st.integers(1, 3),
    cell=st.sampled_from(["rnn", "gru", "lstm"]),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_python_loop(
    batch, frames, features, hidden, cell, reverse, seed
):
    params, inputs, paddings, lengths, h0 = _problem(
        seed, cell, batch, frames, features, hidden
    )
    outputs, final = jax.jit(
        lambda p, x, pad, h0: seqctc.scan_rnn(
            STEPS[cell], p, x, pad, initial_state=h0, reverse=reverse
        )
    )(params, inputs, paddings, h0)
    expected, expected_final = numpy_scan(cell, params, inputs, lengths, h0, reverse)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(final, expected_final, rtol=1e-5, atol=1e-6)


def test_half_precision_parameters_accumulate_in_float32():
    params, inputs, paddings, lengths, h0 = _problem(11, "gru")
    half = type(params)(*(p.astype(jnp.bfloat16) for p in params))
    outputs, final = seqctc.scan_rnn(
        seqctc.gru_step, half, inputs.astype(jnp.bfloat16), paddings
    )
    assert outputs.dtype == jnp.float32 and final.dtype == jnp.float32
    rounded = type(params)(*(np.asarray(p, np.float32) for p in half))
    x = np.asarray(inputs.astype(jnp.bfloat16), np.float32)
    expected, _ = numpy_scan("gru", rounded, x, lengths, np.zeros((3, 4)))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise_value_error_naming_argument():
    params = seqctc.init_gru_params(jax.random.key(0), 3, 4)
    x, pad = jnp.zeros((2, 5, 3)), jnp.zeros((2, 5))
    scan = seqctc.scan_rnn
    with pytest.raises(ValueError, match="`inputs`"):
        scan(seqctc.gru_step, params, jnp.zeros((5, 3)), pad)
    with pytest.raises(ValueError, match="`paddings`"):
        scan(seqctc.gru_step, params, x, jnp.zeros((2, 5, 1)))
    with pytest.raises(ValueError, match="`paddings`"):
        scan(seqctc.gru_step, params, x, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="`paddings`"):
        scan(seqctc.gru_step, params, x, jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="`inputs`"):
        scan(seqctc.gru_step, params, jnp.zeros((2, 5, 2)), pad)
    with pytest.raises(ValueError, match="`initial_state`"):
        scan(seqctc.gru_step, params, x, pad, initial_state=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="`params.w_hh`"):
        scan(seqctc.gru_step, seqctc.init_rnn_params(jax.random.key(0), 3, 4), x, pad)
    with pytest.raises(ValueError, match="`initial_state`"):
        scan(lambda p, h, x: h, {"w": 1.0}, x, pad)
    with pytest.raises(ValueError, match="`initial_state`"):
        seqctc.bidirectional_rnn(
            seqctc.gru_step, params, params, x, pad, initial_state=jnp.zeros((2, 4))
        )
    with pytest.raises(ValueError, match="`layers`"):
        seqctc.stacked_rnn(seqctc.gru_step, [], x, pad)
    with pytest.raises(ValueError, match=r"`layers\[0\]`"):
        seqctc.stacked_rnn(seqctc.gru_step, [params], x, pad, bidirectional=True)
    with pytest.raises(ValueError, match="`initial_state`"):
        seqctc.stacked_rnn(
            seqctc.gru_step, [params], x, pad, initial_state=jnp.zeros((2, 2, 4))
        )
    lstm = seqctc.init_lstm_params(jax.random.key(0), 3, 4)
    with pytest.raises(ValueError, match="`initial_state`"):
        scan(seqctc.lstm_step, lstm, x, pad, initial_state=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="`initial_state`"):
        scan(seqctc.lstm_step, lstm, x, pad, initial_state=(jnp.zeros((2, 4)),) * 3)
    with pytest.raises(ValueError, match="`initial_state`"):
        seqctc.stacked_rnn(
            seqctc.lstm_step,
            [lstm],
            x,
            pad,
            initial_state=(jnp.zeros((1, 2, 4)), jnp.zeros((2, 2, 4))),
        )


def test_second_order_through_the_fused_path_raises_clearly():
    params, inputs, paddings, _, _ = _problem(18, "lstm")

    def total(p):
        outputs, _ = seqctc.scan_rnn(seqctc.lstm_step, p, inputs, paddings)
        return jnp.sum(outputs**2)

    with pytest.raises(NotImplementedError, match="Second-order"):
        jax.jit(jax.jacfwd(jax.grad(total)))(params)  # raises while tracing
