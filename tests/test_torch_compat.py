"""torch nn.RNN / nn.GRU / nn.LSTM on packed sequences against seqctc with paddings."""

import functools
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import seqctc  # noqa: E402
from seqctc.nn import RNN  # noqa: E402
from seqctc.torch_compat import (  # noqa: E402
    load_torch_state_dict,
    params_from_torch,
    params_to_torch,
    rnn_from_torch,
)

torch.set_num_threads(1)

B, T, D, H = 4, 7, 3, 5
LENGTHS = np.array([7, 2, 5, 1])
STEPS = {
    "rnn": seqctc.rnn_step,
    "rnn_relu": seqctc.rnn_relu_step,
    "gru": seqctc.gru_step,
    "lstm": seqctc.lstm_step,
}


def _torch_module(cell, *args, **kwargs):
    if cell == "rnn_relu":
        return torch.nn.RNN(*args, nonlinearity="relu", **kwargs)
    return {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](
        *args, **kwargs
    )


# One jitted function per cell, shared by both `batch_first` cases.
_STACKED = {
    cell: jax.jit(
        lambda layers, x, paddings, step=step: seqctc.stacked_rnn(
            step, layers, x, paddings, bidirectional=True
        )
    )
    for cell, step in STEPS.items()
}


def _torch_run(module, x, lengths, batch_first, initial_state=None):
    """Runs ``module`` on packed sequences; returns batch-major outputs, h_n.

    For an LSTM ``h_n`` is the pair ``(h_n, c_n)``.
    """
    xt = torch.from_numpy(x)
    if not batch_first:
        xt = xt.transpose(0, 1)
    packed = pack_padded_sequence(
        xt, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False
    )
    if initial_state is not None:
        initial_state = jax.tree.map(torch.from_numpy, initial_state)
    with torch.no_grad():
        out, h_n = module(packed, initial_state)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    if not batch_first:
        out = out.transpose(0, 1)
    return out.numpy(), jax.tree.map(lambda t: t.numpy(), h_n)


def _inputs(seed):
    x = np.random.default_rng(seed).normal(size=(B, T, D)).astype(np.float32)
    return x, np.asarray(seqctc.lengths_to_paddings(LENGTHS, T))


@pytest.mark.parametrize(
    ("cell", "batch_first"),
    [
        ("rnn", True),
        ("rnn_relu", False),
        ("gru", True),
        ("gru", False),
        ("lstm", True),
        ("lstm", False),
    ],
)
def test_stacked_bidirectional_matches_torch_packed(cell, batch_first):
    torch.manual_seed(0)
    module = _torch_module(
        cell, D, H, num_layers=2, bidirectional=True, batch_first=batch_first
    )
    x, paddings = _inputs(1)
    # Garbage in padded frames must not matter to either side.
    x[paddings == 1] = 1e3
    expected, expected_h = _torch_run(module, x, LENGTHS, batch_first)
    layers = params_from_torch(module)
    outputs, finals = _STACKED[cell](layers, x, paddings)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(finals, expected_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_initial_state_and_gradients_match_torch(cell):
    """torch's h_0 (and c_0) and its autograd on a ragged, unidirectional stack."""
    torch.manual_seed(5)
    module = _torch_module(cell, D, H, num_layers=2, batch_first=True)
    x, paddings = _inputs(6)
    rng = np.random.default_rng(7)
    h0 = rng.normal(size=(2, B, H)).astype(np.float32)
    state0 = (
        (h0, rng.normal(size=(2, B, H)).astype(np.float32)) if cell == "lstm" else h0
    )
    weights = rng.normal(size=(H,)).astype(np.float32)
    # torch: outputs, final states and the gradient w.r.t. the weights.
    xt = torch.from_numpy(x)
    packed = pack_padded_sequence(
        xt, torch.from_numpy(LENGTHS), batch_first=True, enforce_sorted=False
    )
    out, h_n = module(packed, jax.tree.map(torch.from_numpy, state0))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    h_last = h_n[0] if cell == "lstm" else h_n
    loss = (out @ torch.from_numpy(weights)).sum() + (h_last**2).sum()
    loss.backward()
    expected_grads = {k: v.grad.numpy() for k, v in module.named_parameters()}

    def ours(layers, x, state0):
        outputs, finals = seqctc.stacked_rnn(
            STEPS[cell], layers, x, paddings, initial_state=state0
        )
        h_last = finals[0] if cell == "lstm" else finals
        return jnp.sum(outputs @ weights) + jnp.sum(h_last**2), (outputs, finals)

    layers = params_from_torch(module)
    grads, (outputs, finals) = jax.jit(jax.grad(ours, has_aux=True))(layers, x, state0)
    np.testing.assert_allclose(outputs, out.detach().numpy(), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(
        finals, jax.tree.map(lambda t: t.detach().numpy(), h_n), rtol=1e-5, atol=1e-5
    )
    got = params_to_torch(grads)
    for key, value in expected_grads.items():
        np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "rnn_relu", "gru", "lstm"])
def test_nnx_module_matches_torch_packed(cell):
    torch.manual_seed(1)
    module = _torch_module(
        cell, D, H, num_layers=2, bidirectional=True, batch_first=True
    )
    x, paddings = _inputs(2)
    expected, expected_h = _torch_run(module, x, LENGTHS, True)
    rnn = RNN(D, H, num_layers=2, bidirectional=True, cell_type=cell, rngs=nnx.Rngs(0))
    load_torch_state_dict(rnn, module.state_dict())
    run = nnx.jit(lambda m, x, paddings: m(x, paddings, return_carry=True))
    final, outputs = run(rnn, x, paddings)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(final, expected_h, rtol=1e-5, atol=1e-5)
    built = rnn_from_torch(module)
    assert built.cell_type == cell
    _, outputs = run(built, x, paddings)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_unidirectional_single_cell_matches_torch_cells():
    torch.manual_seed(2)
    x, _ = _inputs(3)
    relu_cell = functools.partial(torch.nn.RNNCell, nonlinearity="relu")
    for cell, torch_cell in (
        ("rnn", torch.nn.RNNCell),
        ("rnn_relu", relu_cell),
        ("gru", torch.nn.GRUCell),
    ):
        tc = torch_cell(D, H)
        h = np.random.default_rng(4).normal(size=(B, H)).astype(np.float32)
        with torch.no_grad():
            expected = tc(torch.from_numpy(x[:, 0]), torch.from_numpy(h)).numpy()
        params = (seqctc.GRUParams if cell == "gru" else seqctc.RNNParams)(
            *(jnp.asarray(p.detach().numpy()) for p in tc.parameters())
        )
        got = STEPS[cell](params, h, x[:, 0])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_export_round_trip_and_no_bias(cell):
    torch.manual_seed(3)
    module = _torch_module(cell, D, H, num_layers=2, bidirectional=True)
    sd = params_to_torch(params_from_torch(module))
    assert list(sd) == list(module.state_dict())
    for key, value in module.state_dict().items():
        np.testing.assert_array_equal(sd[key].numpy(), value.numpy())
    # A module without biases: zero biases on our side, no bias keys on torch's.
    no_bias = _torch_module(cell, D, H, num_layers=2, bias=False)
    layers = params_from_torch(no_bias, cell_type=cell)
    np.testing.assert_array_equal(layers[1].b_ih, 0.0)
    np.testing.assert_array_equal(layers[0].w_hh, no_bias.weight_hh_l0.detach().numpy())
    sd = params_to_torch(layers, bias=False)
    assert list(sd) == list(no_bias.state_dict())
    fresh = _torch_module(cell, D, H, num_layers=2, bias=False)
    fresh.load_state_dict(sd)  # strict: every key matches
    for key, value in no_bias.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key].numpy(), value.numpy())
    with pytest.raises(ValueError, match="`bias`"):
        params_to_torch(params_from_torch(module), bias=False)


def test_bad_sources_raise_value_error():
    with pytest.raises(ValueError, match="proj_size"):
        params_from_torch(torch.nn.LSTM(D, H, proj_size=2))
    with pytest.raises(ValueError, match="proj_size"):
        params_from_torch(torch.nn.LSTM(D, H, proj_size=2).state_dict())
    with pytest.raises(ValueError, match="proj_size"):
        rnn_from_torch(torch.nn.LSTM(D, H, proj_size=2))
    with pytest.raises(ValueError, match="`state_dict`"):
        params_from_torch(torch.nn.Linear(D, H))
    with pytest.raises(ValueError, match="`cell_type`"):
        params_from_torch(torch.nn.GRU(D, H), cell_type="rnn")
    with pytest.raises(ValueError, match="`cell_type`"):
        params_from_torch(torch.nn.RNN(D, H, nonlinearity="relu"), cell_type="rnn")
    with pytest.raises(ValueError, match="`cell_type`"):
        params_from_torch(torch.nn.LSTM(D, H).state_dict(), cell_type="gru")
    with pytest.raises(ValueError, match="`state_dict`"):
        params_from_torch({"weight": np.zeros(3)})
    rnn = RNN(D, H, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`state_dict`"):
        load_torch_state_dict(rnn, torch.nn.GRU(D, H, num_layers=1))
    with pytest.raises(ValueError, match="`bidirectional`"):
        load_torch_state_dict(rnn, torch.nn.GRU(D, H, num_layers=2, bidirectional=True))
    with pytest.raises(ValueError, match="`state_dict`"):
        load_torch_state_dict(rnn, torch.nn.GRU(D + 1, H, num_layers=2))
    with pytest.raises(ValueError, match="`cell_type`"):
        load_torch_state_dict(rnn, torch.nn.LSTM(D, H, num_layers=2))
