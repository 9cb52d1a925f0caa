"""NNX modules: torch-named parameters, packing, and the seed's two models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from oracles import gru_step, lstm_step

import seqctc
from seqctc.nn import (
    RNN,
    GRUCell,
    LSTMCell,
    RNNCell,
    SequenceClassifier,
    SequenceTagger,
)


def _params(cell):
    return [
        np.asarray(getattr(cell, name)[...], np.float64)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


def _batch(seed, batch=3, frames=6, features=4, lengths=(6, 3, 1)):
    x = np.random.default_rng(seed).normal(size=(batch, frames, features))
    paddings = np.asarray(seqctc.lengths_to_paddings(np.array(lengths), frames))
    return x.astype(np.float32), paddings, np.array(lengths)


def test_gru_cell_has_torch_parameters_and_matches_numpy():
    cell = GRUCell(4, 5, rngs=nnx.Rngs(0))
    shapes = {k: v.shape for k, v in nnx.to_flat_state(nnx.state(cell, nnx.Param))}
    assert shapes == {
        ("weight_ih",): (15, 4),
        ("weight_hh",): (15, 5),
        ("bias_ih",): (15,),
        ("bias_hh",): (15,),
    }
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    carry = cell.initialize_carry(x.shape)
    np.testing.assert_array_equal(carry, np.zeros((2, 5)))
    h = np.random.default_rng(1).normal(size=(2, 5)).astype(np.float32)
    new_carry, y = cell(h, x)
    np.testing.assert_array_equal(new_carry, y)
    expected = gru_step(*_params(cell), h, x)
    np.testing.assert_allclose(new_carry, expected, rtol=1e-5, atol=1e-6)
    bound = 1 / np.sqrt(5)
    assert max(np.abs(p).max() for p in _params(cell)) <= bound


def test_rnn_cell_matches_numpy():
    cell = RNNCell(4, 5, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(4,)).astype(np.float32)
    h = np.random.default_rng(1).normal(size=(5,)).astype(np.float32)
    w_ih, w_hh, b_ih, b_hh = _params(cell)
    new_carry, _ = cell(h, x)
    expected = np.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    np.testing.assert_allclose(new_carry, expected, rtol=1e-5, atol=1e-6)


def test_bidirectional_rnn_matches_numpy_loop():
    x, paddings, lengths = _batch(2)
    rnn = RNN(4, 5, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    final, outputs = rnn(x, paddings, return_carry=True)
    assert outputs.shape == (3, 6, 10) and final.shape == (4, 3, 5)
    layer_in = x.astype(np.float64)
    for i in range(2):
        outs, finals = [], []
        for d, cell in enumerate((rnn.forward_cells[i], rnn.backward_cells[i])):
            out = np.zeros((3, 6, 5))
            fin = np.zeros((3, 5))
            for b in range(3):
                h = np.zeros(5)
                order = range(lengths[b])
                for t in reversed(order) if d else order:
                    h = gru_step(*_params(cell), h, layer_in[b, t])
                    out[b, t] = h
                fin[b] = h
            outs.append(out)
            finals.append(fin)
        np.testing.assert_allclose(final[2 * i : 2 * i + 2], finals, atol=1e-5)
        layer_in = np.concatenate(outs, axis=-1)
    np.testing.assert_allclose(outputs, layer_in, rtol=1e-5, atol=1e-5)


def test_rnn_without_paddings_and_initial_state():
    x, _, _ = _batch(3)
    rnn = RNN(4, 5, cell_type="rnn", num_layers=2, rngs=nnx.Rngs(1))
    h0 = np.random.default_rng(4).normal(size=(2, 3, 5)).astype(np.float32)
    outputs = rnn(x, initial_state=h0)
    layers = [c.params for c in rnn.forward_cells]
    expected, _ = seqctc.stacked_rnn(
        seqctc.rnn_step, layers, x, np.zeros((3, 6), np.float32), initial_state=h0
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-6, atol=1e-6)


def test_dropout_acts_between_layers_only_in_training():
    x, paddings, _ = _batch(5)
    rnn = RNN(4, 5, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0, dropout=1))
    call = nnx.jit(lambda m, x, p: m(x, p))
    first = call(rnn, x, paddings)
    assert not np.allclose(first, call(rnn, x, paddings))  # fresh dropout masks
    rnn.eval()
    evaluated = call(rnn, x, paddings)
    np.testing.assert_array_equal(evaluated, call(rnn, x, paddings))
    # In eval mode it is the plain stack.
    layers = [c.params for c in rnn.forward_cells]
    expected, _ = seqctc.stacked_rnn(seqctc.gru_step, layers, x, paddings)
    np.testing.assert_allclose(evaluated, expected, rtol=1e-6, atol=1e-6)


def test_sequence_classifier_reads_last_valid_state():
    x, paddings, lengths = _batch(6)
    model = SequenceClassifier(4, 5, 3, rngs=nnx.Rngs(0))
    logits = model(x, paddings)
    assert logits.shape == (3, 3)
    # The top layer's state after each row's last valid frame, then the linear.
    outputs = model.rnn(x, paddings, return_carry=False)
    last = np.asarray(outputs)[np.arange(3), lengths - 1]
    kernel = np.asarray(model.linear.kernel[...])
    bias = np.asarray(model.linear.bias[...])
    np.testing.assert_allclose(logits, last @ kernel + bias, rtol=1e-5, atol=1e-6)
    # Extra padded frames change nothing.
    x2 = np.concatenate([x, np.full((3, 2, 4), np.nan, np.float32)], axis=1)
    p2 = np.concatenate([paddings, np.ones((3, 2), np.float32)], axis=1)
    np.testing.assert_allclose(model(x2, p2), logits, rtol=1e-6, atol=1e-6)


def test_sequence_tagger_trains_with_nnx_jit():
    x, paddings, _ = _batch(7)
    model = SequenceTagger(4, 5, 3, bidirectional=True, rngs=nnx.Rngs(0))
    logits = model(x, paddings)
    assert logits.shape == (3, 6, 3)
    bias = np.asarray(model.linear.bias[...])
    np.testing.assert_allclose(logits[2, 1:], np.broadcast_to(bias, (5, 3)), atol=1e-6)

    @nnx.jit
    def grads(model, x, paddings):
        return nnx.grad(lambda m: jnp.sum(m(x, paddings) ** 2))(model)

    g = grads(model, x, paddings)
    leaves = jax.tree.leaves(nnx.state(g, nnx.Param))
    assert len(leaves) == 2 * 4 + 2
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert np.any(np.asarray(g.rnn.backward_cells[0].weight_hh[...]) != 0)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="`cell_type`"):
        RNN(4, 5, cell_type="transformer", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`num_layers`"):
        RNN(4, 5, num_layers=0, rngs=nnx.Rngs(0))
    rnn = RNN(4, 5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`inputs`"):
        rnn(np.zeros((3, 6, 2), np.float32))


def test_lstm_cell_has_torch_parameters_and_matches_numpy():
    cell = LSTMCell(4, 5, rngs=nnx.Rngs(0))
    assert cell.weight_ih.shape == (20, 4) and cell.bias_hh.shape == (20,)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    h0, c0 = cell.initialize_carry(x.shape)
    np.testing.assert_array_equal(h0, np.zeros((2, 5)))
    np.testing.assert_array_equal(c0, np.zeros((2, 5)))
    rng = np.random.default_rng(1)
    h, c = (rng.normal(size=(2, 5)).astype(np.float32) for _ in range(2))
    (h_new, c_new), y = cell((h, c), x)
    np.testing.assert_array_equal(y, h_new)
    expected_h, expected_c = lstm_step(*_params(cell), h, c, x)
    np.testing.assert_allclose(h_new, expected_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_new, expected_c, rtol=1e-5, atol=1e-6)


def test_relu_rnn_cell_matches_numpy():
    cell = RNNCell(4, 5, nonlinearity="relu", rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    h = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    w_ih, w_hh, b_ih, b_hh = _params(cell)
    new_carry, _ = cell(h, x)
    expected = np.maximum(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 0)
    np.testing.assert_allclose(new_carry, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`nonlinearity`"):
        RNNCell(4, 5, nonlinearity="gelu", rngs=nnx.Rngs(0))


def test_lstm_stack_and_models_match_numpy_loop():
    x, paddings, lengths = _batch(8)
    rnn = RNN(4, 5, num_layers=2, cell_type="lstm", rngs=nnx.Rngs(2))
    (h_n, c_n), outputs = rnn(x, paddings, return_carry=True)
    assert h_n.shape == c_n.shape == (2, 3, 5)
    layer_in = x.astype(np.float64)
    for i, cell in enumerate(rnn.forward_cells):
        out = np.zeros((3, 6, 5))
        for b in range(3):
            h, c = np.zeros(5), np.zeros(5)
            for t in range(lengths[b]):
                h, c = lstm_step(*_params(cell), h, c, layer_in[b, t])
                out[b, t] = h
            np.testing.assert_allclose(h_n[i, b], h, atol=1e-5)
            np.testing.assert_allclose(c_n[i, b], c, atol=1e-5)
        layer_in = out
    np.testing.assert_allclose(outputs, layer_in, rtol=1e-5, atol=1e-5)
    # The classifier reads the top layer's h (not c) after the last valid frame.
    model = SequenceClassifier(4, 5, 3, cell_type="lstm", rngs=nnx.Rngs(0))
    logits = model(x, paddings)
    outputs = model.rnn(x, paddings, return_carry=False)
    top = np.asarray(outputs)[np.arange(3), lengths - 1]
    kernel = np.asarray(model.linear.kernel[...])
    bias = np.asarray(model.linear.bias[...])
    np.testing.assert_allclose(logits, top @ kernel + bias, rtol=1e-5, atol=1e-6)
    tagger = SequenceTagger(
        4, 5, 3, cell_type="lstm", bidirectional=True, rngs=nnx.Rngs(0)
    )
    assert tagger(x, paddings).shape == (3, 6, 3)
