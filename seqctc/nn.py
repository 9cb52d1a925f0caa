"""Flax NNX modules over the pure cells and scans (the only module importing flax).

The modules hold ``nnx.Param``s named and shaped like torch's (``weight_ih``,
``weight_hh``, ``bias_ih``, ``bias_hh``; the GRU's ``bias_hh`` keeps the
``b_hn`` block that ``flax.nnx.GRUCell`` lacks), pack them into the
NamedTuples of :mod:`seqctc` and call the pure functions. No math lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import nnx

from seqctc._cells import (
    GRUParams,
    RNNParams,
    gru_step,
    init_gru_params,
    init_rnn_params,
    rnn_step,
)
from seqctc._scan import bidirectional_rnn, scan_rnn
from seqctc._types import Array, ArrayLike

__all__ = ["GRUCell", "RNN", "RNNCell", "SequenceClassifier", "SequenceTagger"]


class _Cell(nnx.Module):
    """Shared parts of :class:`RNNCell` and :class:`GRUCell`."""

    step_fn: Callable[[Any, Array, Array], Array]
    params_cls: type
    _init: Callable[..., Any]

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.hidden_features = hidden_features
        p = type(self)._init(
            rngs.params(), in_features, hidden_features, dtype=param_dtype
        )
        self.weight_ih = nnx.Param(p.w_ih)
        self.weight_hh = nnx.Param(p.w_hh)
        self.bias_ih = nnx.Param(p.b_ih)
        self.bias_hh = nnx.Param(p.b_hh)

    @property
    def params(self):
        """The parameters as the cell's NamedTuple (:class:`seqctc.GRUParams` …)."""
        return self.params_cls(
            self.weight_ih[...],
            self.weight_hh[...],
            self.bias_ih[...],
            self.bias_hh[...],
        )

    def __call__(self, carry: ArrayLike, x: ArrayLike) -> tuple[Array, Array]:
        """One step: returns ``(new_carry, new_carry)``, as flax cells do."""
        h = type(self).step_fn(self.params, carry, x)
        return h, h

    def initialize_carry(
        self, input_shape: tuple[int, ...], rngs: nnx.Rngs | None = None
    ) -> Array:
        """Zeros of shape ``input_shape[:-1] + (H,)``."""
        del rngs
        return jnp.zeros(
            tuple(input_shape[:-1]) + (self.hidden_features,),
            self.weight_hh[...].dtype,
        )

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNNCell(_Cell):
    r"""Elman RNN cell, :func:`seqctc.rnn_step`, with torch-named parameters.

    .. math::

        h' = \tanh(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        param_dtype: parameter dtype.
        rngs: ``nnx.Rngs`` for the torch-style :math:`U(\pm 1/\sqrt H)` init.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import RNNCell
        >>> cell = RNNCell(3, 4, rngs=nnx.Rngs(0))
        >>> h, y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> h.shape, cell.weight_hh.shape
        ((2, 4), (4, 4))
    """

    step_fn = staticmethod(rnn_step)
    params_cls = RNNParams
    _init = staticmethod(init_rnn_params)


class GRUCell(_Cell):
    r"""GRU cell, :func:`seqctc.gru_step`, with torch-named parameters.

    Unlike ``flax.nnx.GRUCell`` it keeps the candidate's hidden bias ``b_hn``
    inside the reset gate product, as torch does, so torch weights load as
    they are.

    .. math::

        n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn}))

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        param_dtype: parameter dtype.
        rngs: ``nnx.Rngs`` for the torch-style :math:`U(\pm 1/\sqrt H)` init.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import GRUCell
        >>> cell = GRUCell(3, 4, rngs=nnx.Rngs(0))
        >>> h, y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> h.shape, cell.weight_ih.shape, cell.bias_hh.shape
        ((2, 4), (12, 3), (12,))
    """

    step_fn = staticmethod(gru_step)
    params_cls = GRUParams
    _init = staticmethod(init_gru_params)


_CELLS = {"rnn": RNNCell, "gru": GRUCell}


class RNN(nnx.Module):
    r"""A multi-layer, optionally bidirectional recurrent layer (torch ``nn.GRU``).

    Built on :func:`seqctc.scan_rnn` and :func:`seqctc.bidirectional_rnn`:
    padded frames keep the state and give zero outputs, and the backward
    direction reads each row's own valid frames from last to first (torch's
    packed-sequence semantics). Dropout, if any, acts between layers, as in
    torch. ``forward_cells[l]`` / ``backward_cells[l]`` hold torch's
    ``*_l{l}`` / ``*_l{l}_reverse`` parameters.

    Unlike ``flax.nnx.RNN``, which wraps one given cell, this takes torch's
    constructor arguments, since it builds one cell per layer and direction.

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        num_layers: number of stacked layers.
        bidirectional: add a reversed direction per layer; outputs are
            ``[forward; backward]`` on the feature axis.
        cell_type: ``"gru"`` or ``"rnn"`` (tanh).
        dropout: dropout rate between layers (inactive under ``model.eval()``).
        return_carry: if true, calls return ``(final_state, outputs)``.
        param_dtype: parameter dtype.
        rngs: ``nnx.Rngs`` (``params``; ``dropout`` when ``dropout > 0``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import RNN
        >>> rnn = RNN(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
        >>> rnn(jnp.ones((2, 5, 3)), jnp.zeros((2, 5))).shape
        (2, 5, 8)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        cell_type: str = "gru",
        dropout: float = 0.0,
        return_carry: bool = False,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if cell_type not in _CELLS:
            raise ValueError(f"`cell_type` must be 'gru' or 'rnn', got {cell_type!r}.")
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be positive, got {num_layers}.")
        cell_cls = _CELLS[cell_type]
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.cell_type = cell_type
        self.return_carry = return_carry
        dirs = 2 if bidirectional else 1
        sizes = [in_features] + [dirs * hidden_features] * (num_layers - 1)
        kw = dict(param_dtype=param_dtype, rngs=rngs)
        self.forward_cells = nnx.List(
            [cell_cls(d, hidden_features, **kw) for d in sizes]
        )
        self.backward_cells = nnx.List(
            [cell_cls(d, hidden_features, **kw) for d in sizes] if bidirectional else []
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def __call__(
        self,
        x: ArrayLike,
        paddings: ArrayLike | None = None,
        *,
        initial_state: ArrayLike | None = None,
        return_carry: bool | None = None,
    ):
        r"""Runs the stack.

        Args:
            x: ``[B, T, D]`` inputs.
            paddings: ``[B, T]`` paddings, 1.0 = padded; ``None`` = all valid.
            initial_state: ``[L * dirs, B, H]`` (torch's ``h_0``); zeros if None.
            return_carry: overrides the constructor's ``return_carry``.

        Returns:
            ``[B, T, dirs * H]`` outputs (zero on padded frames), or
            ``(final_state [L * dirs, B, H], outputs)`` with ``return_carry``.
        """
        x = jnp.asarray(x)
        if paddings is None:
            paddings = jnp.zeros(x.shape[:2], jnp.float32)
        dirs = 2 if self.bidirectional else 1
        finals = []
        outputs = x
        for i, fwd in enumerate(self.forward_cells):
            if i > 0 and self.dropout is not None:
                outputs = self.dropout(outputs)
            init = None
            if initial_state is not None:
                init = jnp.asarray(initial_state)[dirs * i : dirs * (i + 1)]
            if self.bidirectional:
                bwd = self.backward_cells[i]
                outputs, h = bidirectional_rnn(
                    fwd.step_fn,
                    fwd.params,
                    bwd.params,
                    outputs,
                    paddings,
                    initial_state=init,
                )
            else:
                outputs, h = scan_rnn(
                    fwd.step_fn,
                    fwd.params,
                    outputs,
                    paddings,
                    initial_state=None if init is None else init[0],
                )
                h = h[None]
            finals.append(h)
        return_carry = self.return_carry if return_carry is None else return_carry
        if return_carry:
            return jnp.concatenate(finals, axis=0), outputs
        return outputs


class SequenceClassifier(nnx.Module):
    r"""Many-to-one: a stacked RNN and a linear layer on the last valid state.

    The seed's phoneme classifier: the final state of the top layer (for a
    bidirectional stack, the forward state after the last valid frame
    concatenated with the backward state after frame 0) goes through a linear
    layer to class logits.

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        num_classes: ``K``.
        num_layers, bidirectional, cell_type, dropout: as in :class:`RNN`
            (default: two tanh RNN layers, as in the seed).
        rngs: ``nnx.Rngs``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import SequenceClassifier
        >>> model = SequenceClassifier(3, 4, 5, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 6, 3)), jnp.zeros((2, 6))).shape
        (2, 5)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        num_classes: int,
        *,
        num_layers: int = 2,
        bidirectional: bool = False,
        cell_type: str = "rnn",
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.rnn = RNN(
            in_features,
            hidden_features,
            num_layers=num_layers,
            bidirectional=bidirectional,
            cell_type=cell_type,
            dropout=dropout,
            return_carry=True,
            rngs=rngs,
        )
        dirs = 2 if bidirectional else 1
        self.dirs = dirs
        self.linear = nnx.Linear(dirs * hidden_features, num_classes, rngs=rngs)

    def __call__(self, x: ArrayLike, paddings: ArrayLike | None = None) -> Array:
        """``[B, T, D]`` inputs (and ``[B, T]`` paddings) to ``[B, K]`` logits."""
        final, _ = self.rnn(x, paddings)  # [L * dirs, B, H]
        top = final[-self.dirs :]  # [dirs, B, H]
        last = jnp.concatenate(list(top), axis=-1)  # [B, dirs * H]
        return self.linear(last)


class SequenceTagger(nnx.Module):
    r"""Many-to-many: a recurrent stack and a linear layer on every frame.

    The seed's character predictor (a GRU and a per-frame linear layer); its
    logits feed :func:`seqctc.ctc_loss` or a frame-wise loss.

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        num_classes: ``K``.
        num_layers, bidirectional, cell_type, dropout: as in :class:`RNN`
            (default: one GRU layer, as in the seed).
        rngs: ``nnx.Rngs``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import SequenceTagger
        >>> model = SequenceTagger(3, 4, 5, rngs=nnx.Rngs(0))
        >>> model(jnp.ones((2, 6, 3)), jnp.zeros((2, 6))).shape
        (2, 6, 5)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        num_classes: int,
        *,
        num_layers: int = 1,
        bidirectional: bool = False,
        cell_type: str = "gru",
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.rnn = RNN(
            in_features,
            hidden_features,
            num_layers=num_layers,
            bidirectional=bidirectional,
            cell_type=cell_type,
            dropout=dropout,
            rngs=rngs,
        )
        dirs = 2 if bidirectional else 1
        self.linear = nnx.Linear(dirs * hidden_features, num_classes, rngs=rngs)

    def __call__(self, x: ArrayLike, paddings: ArrayLike | None = None) -> Array:
        """``[B, T, D]`` inputs (and ``[B, T]`` paddings) to ``[B, T, K]`` logits."""
        return self.linear(self.rnn(x, paddings))
