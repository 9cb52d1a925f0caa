"""Loading torch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` weights (torch imported lazily).

The parameter layout of :class:`seqctc.RNNParams`, :class:`seqctc.GRUParams`
and :class:`seqctc.LSTMParams` is torch's, so a state dict maps over without
reshaping: ``weight_ih_l{k}``
becomes ``layers[k].w_ih`` (``layers[k][0].w_ih`` for a bidirectional stack),
``weight_ih_l{k}_reverse`` becomes ``layers[k][1].w_ih``, and so on. The
``layers`` list is what :func:`seqctc.stacked_rnn` takes.

Padded batches give torch's packed-sequence results: ``pack_padded_sequence``
on torch's side equals ``paddings`` on ours, including the reverse direction,
which starts at each row's last valid frame. An LSTM's ``(h_0, c_0)`` and
``(h_n, c_n)`` are the pairs that :func:`seqctc.stacked_rnn` takes and returns.
LSTMs with projections (``proj_size > 0``) are not supported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from seqctc._cells import CELLS

__all__ = [
    "load_torch_state_dict",
    "params_from_torch",
    "params_to_torch",
    "rnn_from_torch",
]

_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
_PROJECTION = re.compile(r"^weight_hr_l\d+(_reverse)?$")
_GATES = {1: "rnn", 3: "gru", 4: "lstm"}
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _state_dict(source) -> tuple[Mapping[str, Any], str | None]:
    """The state dict of ``source`` and its cell type if ``source`` is a module."""
    if hasattr(source, "state_dict") and callable(source.state_dict):
        return source.state_dict(), _module_cell_type(source)
    if not isinstance(source, Mapping):
        raise ValueError(
            "`state_dict` must be a torch nn.RNN/nn.GRU/nn.LSTM or its state dict, "
            f"got {type(source).__name__}."
        )
    return source, None


def _module_cell_type(module) -> str:
    """``"rnn"``, ``"rnn_relu"``, ``"gru"`` or ``"lstm"`` for a torch module."""
    name = type(module).__name__
    if name not in ("RNN", "GRU", "LSTM"):
        raise ValueError(
            "`state_dict` must come from torch nn.RNN, nn.GRU or nn.LSTM, got "
            f"nn.{name}."
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"`state_dict`: LSTMs with projections are not supported (proj_size="
            f"{module.proj_size}); seqctc's LSTM state is [B, H]."
        )
    if name == "RNN":
        nonlinearity = getattr(module, "nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"`state_dict`: unknown RNN nonlinearity {nonlinearity!r}."
            )
        return "rnn" if nonlinearity == "tanh" else "rnn_relu"
    return name.lower()


def params_from_torch(
    state_dict, *, cell_type: str | None = None, dtype: Any = jnp.float32
) -> list:
    r"""Converts a torch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` state dict to parameters.

    Args:
        state_dict: a torch ``nn.RNN`` (tanh or relu), ``nn.GRU`` or ``nn.LSTM``
            module, or its ``state_dict()`` (tensors or arrays), any
            ``num_layers``, uni- or bidirectional, with or without biases
            (missing biases become zeros). ``batch_first`` does not change the
            weights.
        cell_type: ``"rnn"``, ``"rnn_relu"``, ``"gru"`` or ``"lstm"``; when
            ``None``, taken from the module, or inferred from the weight shapes
            (``H``, ``3H`` or ``4H`` rows; ``H`` rows read as tanh, since a
            state dict does not record the nonlinearity).
        dtype: dtype of the returned arrays.

    Returns:
        A list with one entry per layer: an :class:`~seqctc.RNNParams`,
        :class:`~seqctc.GRUParams` or :class:`~seqctc.LSTMParams`, or for a
        bidirectional stack a pair ``(forward, backward)`` of them, as
        :func:`seqctc.stacked_rnn` takes.

    Raises:
        ValueError: for an LSTM with ``proj_size > 0``, unknown keys, missing
            layers, or a ``cell_type`` that does not match the module or the
            shapes.

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
        >>> (layer,) = params_from_torch(torch.nn.LSTM(3, 4))
        >>> type(layer).__name__, layer.w_hh.shape
        ('LSTMParams', (16, 4))

    See also:
        :func:`params_to_torch`, :func:`load_torch_state_dict`.
    """
    sd, module_type = _state_dict(state_dict)
    if cell_type is not None and cell_type not in CELLS:
        raise ValueError(
            f"`cell_type` must be one of {sorted(CELLS)}, got {cell_type!r}."
        )
    if cell_type is not None and module_type is not None and cell_type != module_type:
        raise ValueError(
            f"`cell_type` is {cell_type!r} but the module is {module_type!r}."
        )
    cell_type = cell_type or module_type
    entries: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        if _PROJECTION.match(key):
            raise ValueError(
                f"`state_dict` has {key!r}: LSTMs with projections (proj_size > 0) "
                "are not supported."
            )
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
                    "only RNN (H rows), GRU (3H rows) and LSTM (4H rows) weights "
                    "are supported."
                )
            inferred = _GATES[gates]
            if cell_type is not None and CELLS[cell_type].gates != gates:
                raise ValueError(
                    f"`cell_type` is {cell_type!r} but the weights are {inferred!r}."
                )
            cls = CELLS[cell_type or inferred].params_cls
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


def _directions(layer) -> tuple:
    """A layer's parameters per direction (one, or the bidirectional pair)."""
    bidirectional = isinstance(layer, tuple) and not hasattr(layer, "w_ih")
    return tuple(layer) if bidirectional else (layer,)


def params_to_torch(layers, *, bias: bool = True) -> dict:
    r"""Converts seqctc layers to a torch ``nn.RNN``/``GRU``/``LSTM`` state dict.

    The inverse of :func:`params_from_torch`. A torch module built with
    ``bias=False`` has no bias entries; pass ``bias=False`` for it (its
    parameters, as :func:`params_from_torch` returns them, have zero biases).

    Args:
        layers: a list of per-layer parameters (pairs for a bidirectional
            stack), as :func:`params_from_torch` returns.
        bias: whether to emit the ``bias_ih_l*`` / ``bias_hh_l*`` entries
            (torch's ``bias`` argument).

    Returns:
        An ordered ``dict`` of ``torch.Tensor`` with torch's key names, for
        ``module.load_state_dict``.

    Raises:
        ValueError: with ``bias=False`` if some bias is not zero (it would be
            lost).

    Examples:
        >>> import torch
        >>> from seqctc.torch_compat import params_from_torch, params_to_torch
        >>> rnn = torch.nn.RNN(3, 4)
        >>> sd = params_to_torch(params_from_torch(rnn))
        >>> rnn.load_state_dict(sd)
        <All keys matched successfully>
        >>> lstm = torch.nn.LSTM(3, 4, bias=False)
        >>> lstm.load_state_dict(params_to_torch(params_from_torch(lstm), bias=False))
        <All keys matched successfully>
    """
    import torch

    out = {}
    for i, layer in enumerate(layers):
        for direction, params in enumerate(_directions(layer)):
            suffix = f"_l{i}" + ("_reverse" if direction else "")
            for name, value in zip(_NAMES, params, strict=True):
                value = np.array(value, np.float32)
                if name.startswith("bias") and not bias:
                    if np.any(value != 0):
                        raise ValueError(
                            f"`bias` is False but {name}{suffix} is not zero."
                        )
                    continue
                out[name + suffix] = torch.from_numpy(value)
    return out


def load_torch_state_dict(module, state_dict) -> None:
    r"""Copies torch ``nn.RNN``/``GRU``/``LSTM`` weights into a :class:`seqctc.nn.RNN`.

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
    has_pairs = len(_directions(layers[0])) == 2
    if has_pairs != module.bidirectional:
        raise ValueError(
            "`state_dict` and the module disagree on `bidirectional` "
            f"(module: {module.bidirectional})."
        )
    for i, layer in enumerate(layers):
        cells = [module.forward_cells[i]]
        if module.bidirectional:
            cells.append(module.backward_cells[i])
        for cell, params in zip(cells, _directions(layer), strict=True):
            for attr, value in zip(_NAMES, params, strict=True):
                variable = getattr(cell, attr)
                if variable[...].shape != value.shape:
                    raise ValueError(
                        f"`state_dict`: layer {i} {attr} has shape {value.shape}, "
                        f"the module expects {variable[...].shape}."
                    )
                variable[...] = value.astype(variable[...].dtype)


def rnn_from_torch(torch_module, *, rngs=None):
    r"""Builds a :class:`seqctc.nn.RNN` equal to a torch ``nn.RNN``/``GRU``/``LSTM``.

    Copies the sizes, the cell type (a relu ``nn.RNN`` becomes
    ``cell_type="rnn_relu"``), ``num_layers``, ``bidirectional`` and
    ``dropout`` and then the weights (zeros for a ``bias=False`` module).
    ``batch_first`` is not copied: seqctc modules are batch-major.

    Args:
        torch_module: a torch ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM``.
        rngs: ``nnx.Rngs`` for the module (the initial values are overwritten);
            ``nnx.Rngs(0)`` if ``None``.

    Returns:
        A :class:`seqctc.nn.RNN` with the torch weights.

    Raises:
        ValueError: for other torch modules or an LSTM with ``proj_size > 0``.

    Examples:
        >>> import torch
        >>> from seqctc.torch_compat import rnn_from_torch
        >>> rnn = rnn_from_torch(torch.nn.GRU(3, 4, num_layers=2, bidirectional=True))
        >>> rnn.cell_type, rnn.num_layers, rnn.bidirectional
        ('gru', 2, True)
        >>> rnn_from_torch(torch.nn.LSTM(3, 4)).cell_type
        'lstm'
    """
    from flax import nnx

    from seqctc.nn import RNN

    module = RNN(
        torch_module.input_size,
        torch_module.hidden_size,
        num_layers=torch_module.num_layers,
        bidirectional=torch_module.bidirectional,
        cell_type=_module_cell_type(torch_module),
        dropout=float(torch_module.dropout),
        rngs=nnx.Rngs(0) if rngs is None else rngs,
    )
    load_torch_state_dict(module, torch_module)
    return module
