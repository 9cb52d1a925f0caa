"""RNN and GRU cells: forward against numpy, hand backward against jax.vjp."""

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
    "gru": (seqctc.init_gru_params, seqctc.gru_step, seqctc.gru_step_backward),
}

# (h shape, x shape): no batch dim, one, two, and broadcasting batch dims.
SHAPES = {
    "nobatch": ((5,), (3,)),
    "twobatch": ((2, 3, 5), (2, 3, 3)),
    "broadcast": ((1, 3, 5), (2, 1, 3)),
    "hbroadcast": ((5,), (2, 3)),
}


def numpy_rnn_step(p, h, x):
    p = [np.asarray(a, np.float64) for a in p]
    return np.tanh(x @ p[0].T + p[2] + h @ p[1].T + p[3])


def numpy_gru_step(p, h, x):
    return oracles.gru_step(*[np.asarray(a, np.float64) for a in p], h, x)


NUMPY_STEPS = {"rnn": numpy_rnn_step, "gru": numpy_gru_step}


def _random(seed, cell, shapes):
    init, _, _ = CELLS[cell]
    h_shape, x_shape = shapes
    rng = np.random.default_rng(seed)
    params = init(jax.random.key(seed), x_shape[-1], h_shape[-1])
    # Larger weights than the init, so the nonlinearities saturate somewhat.
    params = type(params)(*(2.0 * p for p in params))
    h = rng.normal(size=h_shape).astype(np.float32)
    x = rng.normal(size=x_shape).astype(np.float32)
    return params, h, x


class CellTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        (f"{cell}_{name}", cell, name)
        for cell in CELLS
        for name in ("twobatch", "hbroadcast")
    )
    def test_forward_matches_numpy(self, cell, shape_name):
        params, h, x = _random(0, cell, SHAPES[shape_name])
        got = self.variant(CELLS[cell][1])(params, h, x)
        expected = NUMPY_STEPS[cell](params, h.astype(np.float64), x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        (f"{cell}_{name}", cell, name)
        for cell in CELLS
        for name in ("nobatch", "twobatch", "broadcast")
    )
    def test_hand_backward_equals_vjp(self, cell, shape_name):
        _, step, backward = CELLS[cell]
        params, h, x = _random(1, cell, SHAPES[shape_name])
        h_new, vjp = jax.vjp(step, params, h, x)
        dh_new = np.random.default_rng(2).normal(size=h_new.shape).astype(np.float32)
        expected = vjp(jnp.asarray(dh_new))
        dparams, dh, dx = self.variant(backward)(params, h, x, dh_new)
        self.assertIsInstance(dparams, type(params))
        chex.assert_trees_all_equal_shapes((dparams, dh, dx), expected)
        chex.assert_trees_all_close((dparams, dh, dx), expected, atol=1e-6, rtol=1e-6)

    @parameterized.parameters("rnn", "gru")
    def test_step_gradient_matches_finite_differences(self, cell):
        params, h, x = _random(3, cell, ((2, 5), (2, 3)))
        step = CELLS[cell][1]
        check_grads(
            lambda p, h, x: step(p, h, x), (params, h, x), order=1, modes=["rev"]
        )

    def test_init_follows_torch_bound(self):
        for cell, gates in (("rnn", 1), ("gru", 3)):
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


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_bad_shapes_raise_value_error_naming_argument(cell):
    init, step, backward = CELLS[cell]
    params = init(jax.random.key(0), 3, 4)
    h, x = jnp.zeros((2, 4)), jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="`h`"):
        step(params, jnp.zeros((2, 5)), x)
    with pytest.raises(ValueError, match="`x`"):
        step(params, h, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="batch dims"):
        step(params, h, jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="`params.w_hh`"):
        step(params._replace(w_hh=jnp.zeros((4, 4, 1))), h, x)
    with pytest.raises(ValueError, match="`params.b_ih`"):
        step(params._replace(b_ih=jnp.zeros(7)), h, x)
    with pytest.raises(ValueError, match="`params`"):
        step(params[:3], h, x)
    with pytest.raises(ValueError, match="`dh_new`"):
        backward(params, h, x, jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="`in_features`"):
        init(jax.random.key(0), 0, 4)
