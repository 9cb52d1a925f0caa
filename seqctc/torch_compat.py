"""Loading torch ``nn.RNN`` / ``nn.GRU`` weights (torch is imported lazily).

The parameter layout of :class:`seqctc.RNNParams` and :class:`seqctc.GRUParams`
is torch's, so a state dict maps over without reshaping: ``weight_ih_l{k}``
becomes ``layers[k].w_ih`` (``layers[k][0].w_ih`` for a bidirectional stack),
``weight_ih_l{k}_reverse`` becomes ``layers[k][1].w_ih``, and so on. The
``layers`` list is what :func:`seqctc.stacked_rnn` takes.

Padded batches give torch's packed-sequence results: ``pack_padded_sequence``
on torch's side equals ``paddings`` on ours, including the reverse direction,
which starts at each row's last valid frame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from seqctc._cells import GRUParams, RNNParams

__all__ = [
    "load_torch_state_dict",
    "params_from_torch",
    "params_to_torch",
    "rnn_from_torch",
]

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
_GATES = {1: ("rnn", RNNParams), 3: ("gru", GRUParams)}


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _state_dict(source) -> Mapping[str, Any]:
    if hasattr(source, "state_dict") and callable(source.state_dict):
        _check_module(source)
        return source.state_dict()
    if not isinstance(source, Mapping):
        raise ValueError(
            "`state_dict` must be a torch nn.RNN/nn.GRU or its state dict, got "
            f"{type(source).__name__}."
        )
    return source


def _check_module(module) -> None:
    name = type(module).__name__
    if name not in ("RNN", "GRU"):
        raise ValueError(
            f"`state_dict` must come from torch nn.RNN or nn.GRU, got nn.{name}."
        )
    if getattr(module, "nonlinearity", "tanh") != "tanh":
        raise ValueError(
            "`state_dict`: only tanh RNNs are supported, got nonlinearity="
            f"{module.nonlinearity!r}."
        )


def params_from_torch(
    state_dict, *, cell_type: str | None = None, dtype: Any = jnp.float32
) -> list:
    r"""Converts a torch ``nn.RNN`` / ``nn.GRU`` state dict to seqctc parameters.

    Args:
        state_dict: a torch ``nn.RNN`` or ``nn.GRU`` module, or its
            ``state_dict()`` (tensors or arrays), any ``num_layers``,
            uni- or bidirectional, with or without biases (missing biases
            become zeros). ``batch_first`` does not change the weights.
        cell_type: ``"rnn"`` or ``"gru"``; inferred from the weight shapes
            (``H`` or ``3H`` rows) when ``None``.
        dtype: dtype of the returned arrays.

    Returns:
        A list with one entry per layer: an :class:`~seqctc.RNNParams` or
        :class:`~seqctc.GRUParams`, or for a bidirectional stack a pair
        ``(forward, backward)`` of them, as :func:`seqctc.stacked_rnn` takes.

    Raises:
        ValueError: for an LSTM or a relu RNN, unknown keys, missing layers,
            or a ``cell_type`` that does not match the shapes.

    Examples:
        >>> import torch, jax.numpy as jnp, seqctc
        >>> from seqctc.torch_compat import params_from_torch
        >>> gru = torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)
        >>> layers = params_from_torch(gru)
        >>> len(layers), layers[1][0].w_ih.shape
        (2, (12, 8))
        >>> y, h = seqctc.stacked_rnn(seqctc.gru_step, layers, jnp.ones((1, 5, 3)),
        ...                           jnp.zeros((1, 5)), bidirectional=True)
        >>> y.shape, h.shape
        ((1, 5, 8), (4, 1, 4))

    See also:
        :func:`params_to_torch`, :func:`load_torch_state_dict`.
    """
    sd = _state_dict(state_dict)
    entries: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        match = _KEY.match(key)
        if match is None:
            raise ValueError(f"`state_dict` has an unexpected key {key!r}.")
        name, layer, reverse = match.group(1), int(match.group(2)), match.group(3)
        entries.setdefault((layer, 1 if reverse else 0), {})[name] = _to_numpy(value)
    if not entries:
        raise ValueError("`state_dict` holds no recurrent weights.")
    num_layers = 1 + max(layer for layer, _ in entries)
    bidirectional = any(direction == 1 for _, direction in entries)
    dirs = 2 if bidirectional else 1
    layers = []
    for layer in range(num_layers):
        pair = []
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            tensors = entries.get((layer, direction))
            if (
                tensors is None
                or "weight_ih" not in tensors
                or "weight_hh" not in tensors
            ):
                raise ValueError(
                    f"`state_dict` lacks weight_ih{suffix}/weight_hh{suffix}."
                )
            rows, hidden = tensors["weight_hh"].shape
            gates = rows // hidden if rows % hidden == 0 else 0
            if gates not in _GATES:
                raise ValueError(
                    f"`state_dict`: weight_hh{suffix} has shape {(rows, hidden)}; "
                    "only RNN (H rows) and GRU (3H rows) weights are supported."
                )
            inferred, cls = _GATES[gates]
            if cell_type is not None and cell_type != inferred:
                raise ValueError(
                    f"`cell_type` is {cell_type!r} but the weights are {inferred!r}."
                )
            zeros = np.zeros((rows,), np.float32)
            pair.append(
                cls(
                    w_ih=jnp.asarray(tensors["weight_ih"], dtype),
                    w_hh=jnp.asarray(tensors["weight_hh"], dtype),
                    b_ih=jnp.asarray(tensors.get("bias_ih", zeros), dtype),
                    b_hh=jnp.asarray(tensors.get("bias_hh", zeros), dtype),
                )
            )
        layers.append(tuple(pair) if bidirectional else pair[0])
    return layers


def params_to_torch(layers) -> dict:
    r"""Converts seqctc layer parameters to a torch ``nn.RNN``/``nn.GRU`` state dict.

    The inverse of :func:`params_from_torch`.

    Args:
        layers: a list of per-layer parameters (pairs for a bidirectional
            stack), as :func:`params_from_torch` returns.

    Returns:
        An ordered ``dict`` of ``torch.Tensor`` with torch's key names, for
        ``module.load_state_dict``.

    Examples:
        >>> import torch
        >>> from seqctc.torch_compat import params_from_torch, params_to_torch
        >>> rnn = torch.nn.RNN(3, 4)
        >>> sd = params_to_torch(params_from_torch(rnn))
        >>> rnn.load_state_dict(sd)
        <All keys matched successfully>
    """
    import torch

    out = {}
    for i, layer in enumerate(layers):
        bidirectional = isinstance(layer, tuple) and not hasattr(layer, "w_ih")
        directions = layer if bidirectional else (layer,)
        for direction, params in enumerate(directions):
            suffix = f"_l{i}" + ("_reverse" if direction else "")
            for name, value in zip(
                ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), params, strict=True
            ):
                out[name + suffix] = torch.from_numpy(np.array(value, np.float32))
    return out


def load_torch_state_dict(module, state_dict) -> None:
    r"""Copies torch ``nn.RNN``/``nn.GRU`` weights into a :class:`seqctc.nn.RNN`.

    Args:
        module: a :class:`seqctc.nn.RNN` whose ``cell_type``, ``num_layers``,
            ``bidirectional`` and sizes match the torch module.
        state_dict: the torch module or its ``state_dict()``.

    Raises:
        ValueError: if the structure or any shape differs.

    Examples:
        >>> import torch, jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import RNN
        >>> from seqctc.torch_compat import load_torch_state_dict
        >>> gru = torch.nn.GRU(3, 4, batch_first=True)
        >>> rnn = RNN(3, 4, rngs=nnx.Rngs(0))
        >>> load_torch_state_dict(rnn, gru)
        >>> expected = gru(torch.ones(1, 5, 3))[0].detach().numpy()
        >>> bool(abs(rnn(jnp.ones((1, 5, 3))) - expected).max() < 1e-5)
        True
    """
    layers = params_from_torch(state_dict, cell_type=module.cell_type)
    if len(layers) != module.num_layers:
        raise ValueError(
            f"`state_dict` has {len(layers)} layers, the module {module.num_layers}."
        )
    has_pairs = isinstance(layers[0], tuple) and not hasattr(layers[0], "w_ih")
    if has_pairs != module.bidirectional:
        raise ValueError(
            "`state_dict` and the module disagree on `bidirectional` "
            f"(module: {module.bidirectional})."
        )
    for i, layer in enumerate(layers):
        cells = [module.forward_cells[i]]
        if module.bidirectional:
            cells.append(module.backward_cells[i])
        for cell, params in zip(cells, layer if has_pairs else (layer,), strict=True):
            for attr, value in zip(
                ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), params, strict=True
            ):
                variable = getattr(cell, attr)
                if variable[...].shape != value.shape:
                    raise ValueError(
                        f"`state_dict`: layer {i} {attr} has shape {value.shape}, "
                        f"the module expects {variable[...].shape}."
                    )
                variable[...] = value.astype(variable[...].dtype)


def rnn_from_torch(torch_module, *, rngs=None):
    r"""Builds a :class:`seqctc.nn.RNN` equal to a torch ``nn.RNN``/``nn.GRU``.

    Copies the sizes, ``num_layers``, ``bidirectional`` and ``dropout`` and then
    the weights. ``batch_first`` is not copied: seqctc modules are batch-major.

    Args:
        torch_module: a torch ``nn.RNN`` (tanh) or ``nn.GRU``.
        rngs: ``nnx.Rngs`` for the module (the initial values are overwritten);
            ``nnx.Rngs(0)`` if ``None``.

    Returns:
        A :class:`seqctc.nn.RNN` with the torch weights.

    Raises:
        ValueError: for other torch modules or a relu RNN.

    Examples:
        >>> import torch
        >>> from seqctc.torch_compat import rnn_from_torch
        >>> rnn = rnn_from_torch(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True))
        >>> rnn.cell_type, rnn.num_layers, rnn.bidirectional
        ('gru', 2, True)
    """
    from flax import nnx

    from seqctc.nn import RNN

    _check_module(torch_module)
    module = RNN(
        torch_module.input_size,
        torch_module.hidden_size,
        num_layers=torch_module.num_layers,
        bidirectional=torch_module.bidirectional,
        cell_type="gru" if type(torch_module).__name__ == "GRU" else "rnn",
        dropout=float(torch_module.dropout),
        rngs=nnx.Rngs(0) if rngs is None else rngs,
    )
    load_torch_state_dict(module, torch_module)
    return module
