"""Flax NNX modules over the pure cells and scans (the only module importing flax).

The modules hold ``nnx.Param``s named and shaped like torch's (``weight_ih``,
``weight_hh``, ``bias_ih``, ``bias_hh``; the GRU's ``bias_hh`` keeps the
``b_hn`` block that ``flax.nnx.GRUCell`` lacks), pack them into the
NamedTuples of :mod:`seqctc` and call the pure functions. No math lives here.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from seqctc._cells import CELLS, Cell
from seqctc._scan import stacked_rnn
from seqctc._types import Array, ArrayLike

__all__ = [
    "GRUCell",
    "LSTMCell",
    "RNN",
    "RNNCell",
    "SequenceClassifier",
    "SequenceTagger",
]


class _Cell(nnx.Module):
    """Shared parts of the cells: torch-named parameters, one :class:`Cell` record."""

    cell_name: str

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
        p = self.cell.init(
            rngs.params(), in_features, hidden_features, dtype=param_dtype
        )
        self.weight_ih = nnx.Param(p.w_ih)
        self.weight_hh = nnx.Param(p.w_hh)
        self.bias_ih = nnx.Param(p.b_ih)
        self.bias_hh = nnx.Param(p.b_hh)

    @property
    def cell(self) -> Cell:
        """The cell's record (its step function, parameter type, state size)."""
        return CELLS[self.cell_name]

    @property
    def step_fn(self):
        """The pure step function, e.g. :func:`seqctc.gru_step`."""
        return self.cell.step

    @property
    def params(self):
        """The parameters as the cell's NamedTuple (:class:`seqctc.GRUParams` …)."""
        return self.cell.params_cls(
            self.weight_ih[...],
            self.weight_hh[...],
            self.bias_ih[...],
            self.bias_hh[...],
        )

    def __call__(self, carry: Any, x: ArrayLike) -> tuple[Any, Array]:
        """One step: returns ``(new_carry, output)``, as flax cells do.

        The output is the new hidden state (the carry itself, except for the
        LSTM, whose carry is the pair ``(h, c)``).
        """
        new = self.cell.step(self.params, carry, x)
        return new, new[0] if self.cell.state_size == 2 else new

    def initialize_carry(
        self, input_shape: tuple[int, ...], rngs: nnx.Rngs | None = None
    ) -> Any:
        """Zeros of shape ``input_shape[:-1] + (H,)`` (a pair of them for the LSTM)."""
        del rngs
        zeros = jnp.zeros(
            tuple(input_shape[:-1]) + (self.hidden_features,),
            self.weight_hh[...].dtype,
        )
        return zeros if self.cell.state_size == 1 else (zeros, zeros)

    @property
    def num_feature_axes(self) -> int:
        return 1


class RNNCell(_Cell):
    r"""Elman RNN cell, :func:`seqctc.rnn_step`, with torch-named parameters.

    .. math::

        h' = \tanh(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})

    (or :math:`\max(0, \cdot)`, :func:`seqctc.rnn_relu_step`, with
    ``nonlinearity="relu"``, as torch's ``nn.RNNCell``).

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        param_dtype: parameter dtype.
        rngs: ``nnx.Rngs`` for the torch-style :math:`U(\pm 1/\sqrt H)` init.

    Raises:
        ValueError: for another ``nonlinearity``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import RNNCell
        >>> cell = RNNCell(3, 4, rngs=nnx.Rngs(0))
        >>> h, y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> h.shape, cell.weight_hh.shape
        ((2, 4), (4, 4))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        nonlinearity: str = "tanh",
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        names = {"tanh": "rnn", "relu": "rnn_relu"}
        if nonlinearity not in names:
            raise ValueError(
                f"`nonlinearity` must be 'tanh' or 'relu', got {nonlinearity!r}."
            )
        self.cell_name = names[nonlinearity]
        self.nonlinearity = nonlinearity
        super().__init__(
            in_features, hidden_features, param_dtype=param_dtype, rngs=rngs
        )


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

    cell_name = "gru"


class LSTMCell(_Cell):
    r"""LSTM cell, :func:`seqctc.lstm_step`, with torch-named parameters.

    The carry is the pair ``(h, c)`` in torch's order (``flax.nnx.LSTMCell``
    uses ``(c, h)``); the weights are torch's ``[4H, ·]`` blocks i, f, g, o.

    .. math::

        c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        param_dtype: parameter dtype.
        rngs: ``nnx.Rngs`` for the torch-style :math:`U(\pm 1/\sqrt H)` init.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import LSTMCell
        >>> cell = LSTMCell(3, 4, rngs=nnx.Rngs(0))
        >>> (h, c), y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> h.shape, c.shape, cell.weight_ih.shape
        ((2, 4), (2, 4), (16, 3))
    """

    cell_name = "lstm"


def _cell_module(cell_type: str, in_features: int, hidden: int, **kw) -> _Cell:
    if cell_type in ("rnn", "rnn_relu"):
        nonlinearity = "tanh" if cell_type == "rnn" else "relu"
        return RNNCell(in_features, hidden, nonlinearity=nonlinearity, **kw)
    return {"gru": GRUCell, "lstm": LSTMCell}[cell_type](in_features, hidden, **kw)


class RNN(nnx.Module):
    r"""A multi-layer, optionally bidirectional recurrent layer (torch ``nn.GRU`` …).

    Built on :func:`seqctc.stacked_rnn`: padded frames keep the state and give
    zero outputs, and the backward direction reads each row's own valid frames
    from last to first (torch's packed-sequence semantics). Dropout, if any,
    acts between layers, as in torch. ``forward_cells[l]`` /
    ``backward_cells[l]`` hold torch's ``*_l{l}`` / ``*_l{l}_reverse``
    parameters.

    Unlike ``flax.nnx.RNN``, which wraps one given cell, this takes torch's
    constructor arguments, since it builds one cell per layer and direction.

    Args:
        in_features: ``D``.
        hidden_features: ``H``.
        num_layers: number of stacked layers.
        bidirectional: add a reversed direction per layer; outputs are
            ``[forward; backward]`` on the feature axis.
        cell_type: ``"gru"``, ``"lstm"``, ``"rnn"`` (tanh) or ``"rnn_relu"``.
        dropout: dropout rate between layers (inactive under ``model.eval()``).
        return_carry: if true, calls return ``(final_state, outputs)``.
        param_dtype: parameter dtype.
        rngs: ``nnx.Rngs`` (``params``; ``dropout`` when ``dropout > 0``).

    Raises:
        ValueError: for an unknown ``cell_type`` or ``num_layers < 1``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from seqctc.nn import RNN
        >>> rnn = RNN(3, 4, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
        >>> rnn(jnp.ones((2, 5, 3)), jnp.zeros((2, 5))).shape
        (2, 5, 8)
        >>> lstm = RNN(3, 4, cell_type="lstm", return_carry=True, rngs=nnx.Rngs(0))
        >>> (h_n, c_n), y = lstm(jnp.ones((2, 5, 3)))
        >>> h_n.shape, c_n.shape, y.shape
        ((1, 2, 4), (1, 2, 4), (2, 5, 4))
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
        if cell_type not in CELLS:
            raise ValueError(
                f"`cell_type` must be one of {sorted(CELLS)}, got {cell_type!r}."
            )
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be positive, got {num_layers}.")
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
            [_cell_module(cell_type, d, hidden_features, **kw) for d in sizes]
        )
        self.backward_cells = nnx.List(
            [_cell_module(cell_type, d, hidden_features, **kw) for d in sizes]
            if bidirectional
            else []
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def __call__(
        self,
        x: ArrayLike,
        paddings: ArrayLike | None = None,
        *,
        initial_state: Any = None,
        return_carry: bool | None = None,
    ):
        r"""Runs the stack.

        Args:
            x: ``[B, T, D]`` inputs.
            paddings: ``[B, T]`` paddings, 1.0 = padded; ``None`` = all valid.
            initial_state: ``[L * dirs, B, H]`` (torch's ``h_0``), or for the
                LSTM the pair ``(h_0, c_0)``; zeros if None.
            return_carry: overrides the constructor's ``return_carry``.

        Returns:
            ``[B, T, dirs * H]`` outputs (zero on padded frames), or
            ``(final_state, outputs)`` with ``return_carry``: ``final_state``
            ``[L * dirs, B, H]`` (torch's ``h_n``), the pair ``(h_n, c_n)`` for
            the LSTM.
        """
        x = jnp.asarray(x)
        if paddings is None:
            paddings = jnp.zeros(x.shape[:2], jnp.float32)
        if self.bidirectional:
            layers = [
                (f.params, b.params)
                for f, b in zip(self.forward_cells, self.backward_cells, strict=True)
            ]
        else:
            layers = [f.params for f in self.forward_cells]
        between = None
        if self.dropout is not None:
            dropout = self.dropout

            def between(i, outputs):
                del i
                return dropout(outputs)

        final, outputs = stacked_rnn(
            CELLS[self.cell_type].step,
            layers,
            x,
            paddings,
            bidirectional=self.bidirectional,
            initial_state=initial_state,
            between_layers=between,
        )[::-1]
        return_carry = self.return_carry if return_carry is None else return_carry
        if return_carry:
            return final, outputs
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
        final, _ = self.rnn(x, paddings)  # [L * dirs, B, H] (h_n, c_n for an LSTM)
        if self.rnn.cell_type == "lstm":
            final = final[0]
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
