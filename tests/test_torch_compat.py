"""torch nn.RNN / nn.GRU on packed sequences against seqctc with paddings."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
STEPS = {"rnn": seqctc.rnn_step, "gru": seqctc.gru_step}
TORCH = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU}


# One jitted function per cell, shared by both `batch_first` cases.
_STACKED = {
    cell: jax.jit(
        lambda layers, x, paddings, step=step: seqctc.stacked_rnn(
            step, layers, x, paddings, bidirectional=True
        )
    )
    for cell, step in STEPS.items()
}


def _torch_run(module, x, lengths, batch_first):
    """Runs ``module`` on packed sequences; returns batch-major outputs, h_n."""
    xt = torch.from_numpy(x)
    if not batch_first:
        xt = xt.transpose(0, 1)
    packed = pack_padded_sequence(
        xt, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False
    )
    with torch.no_grad():
        out, h_n = module(packed)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    if not batch_first:
        out = out.transpose(0, 1)
    return out.numpy(), h_n.numpy()


def _inputs(seed):
    x = np.random.default_rng(seed).normal(size=(B, T, D)).astype(np.float32)
    return x, np.asarray(seqctc.lengths_to_paddings(LENGTHS, T))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_stacked_bidirectional_matches_torch_packed(cell, batch_first):
    torch.manual_seed(0)
    module = TORCH[cell](
        D, H, num_layers=2, bidirectional=True, batch_first=batch_first
    )
    x, paddings = _inputs(1)
    # Garbage in padded frames must not matter to either side.
    x[paddings == 1] = 1e3
    expected, expected_h = _torch_run(module, x, LENGTHS, batch_first)
    layers = params_from_torch(module)
    outputs, finals = _STACKED[cell](layers, x, paddings)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(finals, expected_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_nnx_module_matches_torch_packed(cell):
    torch.manual_seed(1)
    module = TORCH[cell](D, H, num_layers=2, bidirectional=True, batch_first=True)
    x, paddings = _inputs(2)
    expected, expected_h = _torch_run(module, x, LENGTHS, True)
    rnn = RNN(D, H, num_layers=2, bidirectional=True, cell_type=cell, rngs=nnx.Rngs(0))
    load_torch_state_dict(rnn, module.state_dict())
    final, outputs = rnn(x, paddings, return_carry=True)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final, expected_h, rtol=1e-5, atol=1e-5)
    if cell == "gru":
        built = rnn_from_torch(module)
        np.testing.assert_allclose(built(x, paddings), expected, rtol=1e-5, atol=1e-5)


def test_unidirectional_single_cell_matches_torch_cells():
    torch.manual_seed(2)
    x, _ = _inputs(3)
    for cell, torch_cell in (("rnn", torch.nn.RNNCell), ("gru", torch.nn.GRUCell)):
        tc = torch_cell(D, H)
        h = np.random.default_rng(4).normal(size=(B, H)).astype(np.float32)
        with torch.no_grad():
            expected = tc(torch.from_numpy(x[:, 0]), torch.from_numpy(h)).numpy()
        params = (seqctc.RNNParams if cell == "rnn" else seqctc.GRUParams)(
            *(jnp.asarray(p.detach().numpy()) for p in tc.parameters())
        )
        got = STEPS[cell](params, h, x[:, 0])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_export_round_trip_and_no_bias():
    torch.manual_seed(3)
    gru = torch.nn.GRU(D, H, num_layers=2, bidirectional=True)
    sd = params_to_torch(params_from_torch(gru))
    assert list(sd) == list(gru.state_dict())
    for key, value in gru.state_dict().items():
        np.testing.assert_array_equal(sd[key].numpy(), value.numpy())
    rnn = torch.nn.RNN(D, H, bias=False)
    (layer,) = params_from_torch(rnn, cell_type="rnn")
    np.testing.assert_array_equal(layer.b_ih, 0.0)
    np.testing.assert_array_equal(layer.w_hh, rnn.weight_hh_l0.detach().numpy())


def test_bad_sources_raise_value_error():
    with pytest.raises(ValueError, match="`state_dict`"):
        params_from_torch(torch.nn.LSTM(D, H))
    with pytest.raises(ValueError, match="`state_dict`"):
        params_from_torch(torch.nn.RNN(D, H, nonlinearity="relu"))
    with pytest.raises(ValueError, match="`cell_type`"):
        params_from_torch(torch.nn.GRU(D, H), cell_type="rnn")
    with pytest.raises(ValueError, match="`state_dict`"):
        params_from_torch({"weight": np.zeros(3)})
    rnn = RNN(D, H, num_layers=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`state_dict`"):
        load_torch_state_dict(rnn, torch.nn.GRU(D, H, num_layers=1))
    with pytest.raises(ValueError, match="`bidirectional`"):
        load_torch_state_dict(rnn, torch.nn.GRU(D, H, num_layers=2, bidirectional=True))
    with pytest.raises(ValueError, match="`state_dict`"):
        load_torch_state_dict(rnn, torch.nn.GRU(D + 1, H, num_layers=2))
