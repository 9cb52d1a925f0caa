"""Elman (tanh, relu), GRU and LSTM cells: forward vs numpy, hand backward vs vjp."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

import seqctc

CELLS = {
    "rnn": (seqctc.init_rnn_params, seqctc.rnn_step, seqctc.rnn_step_backward),
    "rnn_relu": (
        seqctc.init_rnn_params,
        seqctc.rnn_relu_step,
        seqctc.rnn_relu_step_backward,
    ),
    "gru": (seqctc.init_gru_params, seqctc.gru_step, seqctc.gru_step_backward),
    "lstm": (seqctc.init_lstm_params, seqctc.lstm_step, seqctc.lstm_step_backward),
}
GATES = {"rnn": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}

# (h shape, x shape): no batch dim, one, two, and broadcasting batch dims. The
# LSTM's cell state c has h's shape.
SHAPES = {
    "nobatch": ((5,), (3,)),
    "twobatch": ((2, 3, 5), (2, 3, 3)),
    "broadcast": ((1, 3, 5), (2, 1, 3)),
    "hbroadcast": ((5,), (2, 3)),
}


def numpy_step(cell, p, state, x):
    """One step in float64 numpy, from torch's equations."""
    p = [np.asarray(a, np.float64) for a in p]
    if cell == "lstm":
        return oracles.lstm_step(*p, *state, x)
    a = x @ p[0].T + p[2] + state @ p[1].T + p[3]
    if cell == "rnn":
        return np.tanh(a)
    if cell == "rnn_relu":
        return np.maximum(a, 0)
    return oracles.gru_step(*p, state, x)


def _random(seed, cell, shapes):
    init, _, _ = CELLS[cell]
    h_shape, x_shape = shapes
    rng = np.random.default_rng(seed)
    params = init(jax.random.key(seed), x_shape[-1], h_shape[-1])
    # Larger weights than the init, so the nonlinearities saturate somewhat.
    params = type(params)(*(2.0 * p for p in params))
    h = rng.normal(size=h_shape).astype(np.float32)
    x = rng.normal(size=x_shape).astype(np.float32)
    if cell == "lstm":
        return params, (h, rng.normal(size=h_shape).astype(np.float32)), x
    return params, h, x


class CellTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        (f"{cell}_{name}", cell, name)
        for cell in CELLS
        for name in ("twobatch", "hbroadcast")
    )
    def test_forward_matches_numpy(self, cell, shape_name):
        params, state, x = _random(0, cell, SHAPES[shape_name])
        got = self.variant(CELLS[cell][1])(params, state, x)
        state64 = jax.tree.map(lambda s: s.astype(np.float64), state)
        expected = numpy_step(cell, params, state64, x)
        chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        (f"{cell}_{name}", cell, name)
        for cell in CELLS
        for name in ("nobatch", "twobatch", "broadcast")
    )
    def test_hand_backward_equals_vjp(self, cell, shape_name):
        _, step, backward = CELLS[cell]
        params, state, x = _random(1, cell, SHAPES[shape_name])
        new_state, vjp = jax.vjp(step, params, state, x)
        rng = np.random.default_rng(2)
        dnew = jax.tree.map(
            lambda s: jnp.asarray(rng.normal(size=s.shape).astype(np.float32)),
            new_state,
        )
        expected = vjp(dnew)
        dparams, dstate, dx = self.variant(backward)(params, state, x, dnew)
        self.assertIsInstance(dparams, type(params))
        chex.assert_trees_all_equal_shapes((dparams, dstate, dx), expected)
        chex.assert_trees_all_close(
            (dparams, dstate, dx), expected, atol=1e-6, rtol=1e-6
        )

    @parameterized.parameters(*CELLS)
    def test_step_gradient_matches_finite_differences(self, cell):
        params, state, x = _random(3, cell, ((2, 5), (2, 3)))
        step = CELLS[cell][1]
        check_grads(
            lambda p, s, x: step(p, s, x), (params, state, x), order=1, modes=["rev"]
        )

    def test_init_follows_torch_bound(self):
        for cell, gates in GATES.items():
            init = jax.jit(CELLS[cell][0], static_argnums=(1, 2))
            params = init(jax.random.key(0), 7, 16)
            self.assertEqual(
                [p.shape for p in params],
                [(gates * 16, 7), (gates * 16, 16), (gates * 16,), (gates * 16,)],
            )
            values = np.concatenate([np.ravel(p) for p in params])
            self.assertLessEqual(np.max(np.abs(values)), 0.25)
            self.assertGreater(np.max(np.abs(values)), 0.2)  # fills the range
            self.assertEqual(params.w_ih.dtype, jnp.float32)


def test_lstm_step_matches_torch_lstm_cell():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(3, 5)
    rng = np.random.default_rng(4)
    x, h, c = (rng.normal(size=(2, n)).astype(np.float32) for n in (3, 5, 5))
    with torch.no_grad():
        h_t, c_t = cell(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    params = seqctc.LSTMParams(
        *(jnp.asarray(p.detach().numpy()) for p in cell.parameters())
    )
    h_new, c_new = seqctc.lstm_step(params, (h, c), x)
    np.testing.assert_allclose(h_new, h_t.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_new, c_t.numpy(), rtol=1e-5, atol=1e-6)


def test_relu_backward_is_zero_where_the_preactivation_is_negative():
    params, h, x = _random(5, "rnn_relu", ((4, 5), (4, 3)))
    h_new = seqctc.rnn_relu_step(params, h, x)
    _, dh, _ = seqctc.rnn_relu_step_backward(params, h, x, np.ones((4, 5), np.float32))
    active = np.asarray(h_new) > 0
    expected = active.astype(np.float64) @ np.asarray(params.w_hh, np.float64)
    np.testing.assert_allclose(dh, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", list(CELLS))
def test_bad_shapes_raise_value_error_naming_argument(cell):
    init, step, backward = CELLS[cell]
    params = init(jax.random.key(0), 3, 4)
    lstm = cell == "lstm"
    h, x = jnp.zeros((2, 4)), jnp.zeros((2, 3))
    state = (h, h) if lstm else h
    d_state = (jnp.zeros((3, 4)), h) if lstm else jnp.zeros((3, 4))
    with pytest.raises(ValueError, match=r"`state\[0\]`" if lstm else "`h`"):
        step(params, (jnp.zeros((2, 5)), h) if lstm else jnp.zeros((2, 5)), x)
    with pytest.raises(ValueError, match="`x`"):
        step(params, state, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="batch dims"):
        step(params, state, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="`params.w_hh`"):
        step(params._replace(w_hh=jnp.zeros((4, 4, 1))), state, x)
    with pytest.raises(ValueError, match="`params.b_ih`"):
        step(params._replace(b_ih=jnp.zeros(7)), state, x)
    with pytest.raises(ValueError, match="`params`"):
        step(params[:3], state, x)
    with pytest.raises(ValueError, match=r"`dstate_new\[0\]`" if lstm else "`dh_new`"):
        backward(params, state, x, d_state)
    with pytest.raises(ValueError, match="`in_features`"):
        init(jax.random.key(0), 0, 4)
    if lstm:
        with pytest.raises(ValueError, match="`state`"):
            step(params, h, x)
        with pytest.raises(ValueError, match="`dstate_new`"):
            backward(params, state, x, h)
