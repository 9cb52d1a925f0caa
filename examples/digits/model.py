"""The recogniser and the three ways of training it on unsegmented labels."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

import seqctc
import seqctc.nn

from .config import Config
from .data import BLANK_ID, NUM_CLASSES, Batch


class Recognizer(nnx.Module):
    """Conv frame encoder, bidirectional GRU, linear read-out to 11 classes.

    The encoder sees the strip as an image: two 3x3 convolutions (the second
    one strided by ``stride`` along columns and by 2 along rows), flattened
    per output frame and projected to ``features``.
    """

    def __init__(self, num_rows: int, config: Config, *, rngs: nnx.Rngs):
        self.stride = config.stride
        c = config.channels
        self.conv1 = nnx.Conv(1, c, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(
            c, c, kernel_size=(3, 3), strides=(config.stride, 2), rngs=rngs
        )
        self.proj = nnx.Linear(c * -(-num_rows // 2), config.features, rngs=rngs)
        self.rnn = seqctc.nn.RNN(
            config.features,
            config.hidden,
            num_layers=config.num_layers,
            bidirectional=True,
            rngs=rngs,
        )
        self.head = nnx.Linear(2 * config.hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, frames: jax.Array, paddings: jax.Array):
        """Maps ``[B, T, D]`` columns to ``[B, T/stride, 11]`` logits and paddings."""
        x = frames * (1.0 - paddings)[:, :, None]
        x = nnx.gelu(self.conv1(x[..., None]))  # [B, T, D, C]
        x = nnx.gelu(self.conv2(x))  # [B, T/stride, D/2, C]
        x = nnx.gelu(self.proj(x.reshape(*x.shape[:2], -1)))  # [B, T/stride, F]
        paddings = paddings[:, :: self.stride]  # [B, T/stride]
        x = self.rnn(x, paddings)  # [B, T/stride, 2H]
        return self.head(x), paddings


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_params(config: Config, num_rows: int):
    """The initial parameters as a nested dict, drawn in one compiled call
    (eagerly, every initialiser would compile on its own)."""
    model = Recognizer(num_rows, config, rngs=nnx.Rngs(config.seed))
    return nnx.to_pure_dict(nnx.state(model))


def init_model(config: Config, num_rows: int):
    """Builds the model; returns its graph definition and parameter dict."""
    model = nnx.eval_shape(
        lambda: Recognizer(num_rows, config, rngs=nnx.Rngs(config.seed))
    )
    graphdef, _ = nnx.split(model)
    return graphdef, init_params(config, num_rows)


def frame_labels(batch: Batch, num_frames: int, stride: int) -> jax.Array:
    """The genie's frame labels ``[B, T']`` (-1 on padding), from the true boxes.

    The genie splits each strip into ``blank, d1, blank, d2, ..., dN, blank``
    segments (the blank-extended label sequence of CTC); output frame ``t``
    covers column ``t * stride``, so a segment of columns ``[a, b)`` ends at
    frame ``ceil(b / stride) - 1``. Margins and gaps of at least two columns
    make every segment non-empty for ``stride <= 2``.
    """
    extended = seqctc.extend_with_blanks(
        batch.labels, batch.label_paddings, blank_id=BLANK_ID
    )  # states [B, 2N+1]
    logit_paddings = batch.paddings[:, ::stride][:, :num_frames]  # [B, T']
    start, end = batch.segments[..., 0], batch.segments[..., 1]  # [B, N]
    last_frame = -(-start // stride) - 1, -(-end // stride) - 1  # blank, digit
    ends = jnp.stack(last_frame, axis=-1).reshape(start.shape[0], -1)  # [B, 2N]
    num_valid = jnp.sum(logit_paddings == 0, axis=1, dtype=jnp.int32)  # [B]
    num_labels = jnp.sum(batch.label_paddings == 0, axis=1, dtype=jnp.int32)
    ends = jnp.concatenate([ends, jnp.zeros_like(ends[:, :1])], axis=1)  # [B, 2N+1]
    final = jnp.arange(ends.shape[1])[None, :] == 2 * num_labels[:, None]
    ends = jnp.where(final, num_valid[:, None] - 1, ends)  # the closing blank
    return seqctc.segments_to_frame_labels(
        extended.states, extended.paddings, ends, logit_paddings
    )


def sequence_losses(
    logits: jax.Array, logit_paddings: jax.Array, batch: Batch, loss: str, stride: int
) -> jax.Array:
    """Per-strip loss ``[B]`` of the chosen kind.

    ``ctc``: the expected loss over all segmentations (Graves et al., 2006).
    ``viterbi``: maximum likelihood over segmentations; the gradient is the
    framewise cross-entropy on the current best alignment. ``framewise``: the
    genie's loss (Setting III with known segments): the strips are synthetic,
    so the box of every digit is known (`frame_labels`).
    """
    if loss == "ctc":
        return seqctc.ctc_loss(
            logits, logit_paddings, batch.labels, batch.label_paddings
        )
    if loss == "viterbi":
        return seqctc.viterbi_loss(
            logits, logit_paddings, batch.labels, batch.label_paddings
        )
    targets = frame_labels(batch, logits.shape[1], stride)
    return seqctc.framewise_loss(logits, targets, logit_paddings)


def loss_fn(params, graphdef, batch: Batch, loss: str, stride: int):
    """Mean over strips of loss / number of digits (torch's "mean" reduction)."""
    model = nnx.merge(graphdef, params)
    logits, logit_paddings = model(batch.frames, batch.paddings)
    per_strip = sequence_losses(logits, logit_paddings, batch, loss, stride)
    num_labels = jnp.sum(1.0 - batch.label_paddings, axis=1)
    return jnp.mean(per_strip / jnp.maximum(num_labels, 1.0))
