r"""Train a CTC recogniser of handwritten digit sequences with seqctc.

Every training example is a strip of 1-8 handwritten digits written side by
side, and its only label is the digit string: nobody says where one digit ends
and the next begins (the lecture's Setting III). A convolutional frame encoder
reads the strip column by column, a bidirectional GRU (``seqctc.nn``) gives
per-frame class scores over ``{blank, 0, ..., 9}``, and ``seqctc.ctc_loss``
sums over every segmentation. Decoding is greedy, prefix beam search, and beam
search with a character n-gram language model fit on the training strings.

The data needs no download: strips are assembled from scikit-learn's bundled
8x8 digits, with disjoint source images for training and test. ``--data mnist
--data-dir DIR`` uses the MNIST IDX files in ``DIR`` instead.

``--loss`` compares three ways of learning from unsegmented labels:

* ``ctc``: the expected loss over all segmentations (Graves et al., 2006).
* ``viterbi``: maximum likelihood over segmentations; the gradient is the
  framewise cross-entropy on the current best alignment (``seqctc.viterbi_loss``).
* ``framewise``: the genie's loss (Setting III with known segments). The
  strips are synthetic, so the box of every digit is known; frames inside a
  box are labelled with its digit and frames between boxes with blank
  (``seqctc.segments_to_frame_labels``), then ``seqctc.framewise_loss``.

Training is data parallel over every local device (and every host, with
``--coordinator-address``): the batch is sharded over a 1-D mesh, parameters
are replicated, and the same code runs on one CPU, eight GPUs or a TPU slice.
Checkpoints are written with orbax; ``--resume`` (or Ctrl-C and ``--resume``)
continues exactly where the run stopped.

Usage::

    python examples/digits_ctc.py       # defaults: ~1.1% LER, ~90 s of CPU time
    python examples/digits_ctc.py --loss viterbi --out runs/viterbi
    python examples/digits_ctc.py --steps 4000 --resume   # extend a finished run
    python examples/digits_ctc.py --help

Outputs in ``--out``: ``checkpoints/``, ``loss.png``, ``alignment.png``,
``predictions.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gzip
import json
import math
import os
import pathlib
import signal
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from rapidfuzz.distance import Levenshtein
from tqdm.auto import tqdm

import seqctc
import seqctc.nn

BLANK_ID = 0
NUM_CLASSES = 11  # blank, then digit d is class d + 1.
LOSSES = ("ctc", "viterbi", "framewise")


# ---------------------------------------------------------------------------
# 1. Configuration.
# ---------------------------------------------------------------------------


def _option(default: Any, help: str, *, compare: bool = True, **kwargs: Any) -> Any:
    """A dataclass field that also carries its command-line help.

    ``compare=False`` marks bookkeeping that leaves the computation unchanged:
    a `Config` is a static argument of the jitted steps, and those fields take
    no part in its hash, so changing them never triggers a recompilation.
    """
    return dataclasses.field(
        default=default, compare=compare, metadata={"help": help, **kwargs}
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of a run; each field is a command-line flag."""

    # Data.
    data: str = _option(
        "digits",
        "`digits`: scikit-learn's bundled 8x8 digits (offline); `mnist`: MNIST "
        "IDX files from --data-dir.",
        choices=("digits", "mnist"),
    )
    data_dir: str | None = _option(
        None,
        "Folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz).",
        type=str,
    )
    min_digits: int = _option(1, "Fewest digits in a strip.")
    max_digits: int = _option(8, "Most digits in a strip (the label length N).")
    max_gap: int = _option(
        4, "Widest gap between two digits, in columns (the narrowest is 2)."
    )
    jitter: int = _option(2, "Vertical jitter of each digit, in pixel rows.")
    test_fraction: float = _option(
        0.2, "Share of the scikit-learn images kept for the test strips."
    )
    num_test: int = _option(1024, "Number of test strips.")
    # Model.
    channels: int = _option(32, "Channels of the two 3x3 convolutions.")
    features: int = _option(64, "Features per frame fed to the GRU.")
    stride: int = _option(2, "Columns per output frame (time downsampling).")
    hidden: int = _option(64, "GRU units per direction.")
    num_layers: int = _option(1, "Bidirectional GRU layers.")
    # Optimisation.
    loss: str = _option("ctc", "Training loss.", choices=LOSSES)
    steps: int = _option(1200, "Training steps.")
    batch_size: int = _option(
        32, "Global batch size (a multiple of the number of devices)."
    )
    learning_rate: float = _option(3e-3, "Peak learning rate of adamw.")
    warmup_steps: int = _option(100, "Linear warm-up steps before cosine decay.")
    weight_decay: float = _option(0.05, "adamw weight decay.")
    clip_norm: float = _option(1.0, "Global gradient-norm clipping threshold.")
    # Evaluation.
    eval_every: int = _option(
        200, "Greedy test LER every this many steps.", compare=False
    )
    eval_batch_size: int = _option(256, "Test strips per evaluation batch.")
    beam_width: int = _option(8, "Beam width of the prefix beam search.")
    lm_order: int = _option(3, "Order of the character n-gram language model.")
    lm_weight: float = _option(0.5, "Weight of the language model in beam search.")
    # Bookkeeping.
    seed: int = _option(0, "Seed of the data split, the strips and the init.")
    out: str = _option(
        "digits_out", "Output folder: checkpoints, plots, summary.", compare=False
    )
    checkpoint_every: int = _option(
        400, "Save a checkpoint every this many steps.", compare=False
    )
    resume: bool = _option(
        False, "Continue from the latest checkpoint in --out.", compare=False
    )
    plots: bool = _option(True, "Write PNG plots at the end.", compare=False)
    progress: bool = _option(True, "Show a progress bar.", compare=False)
    # Several hosts.
    coordinator_address: str | None = _option(
        None,
        "host:port of process 0; set it (and the next two) to train on several "
        "hosts through jax.distributed.initialize.",
        type=str,
        compare=False,
    )
    num_processes: int | None = _option(
        None, "Number of processes.", type=int, compare=False
    )
    process_id: int | None = _option(
        None, "Index of this process.", type=int, compare=False
    )


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Builds a `Config` from command-line flags (one flag per field)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        meta = dict(field.metadata)
        if isinstance(field.default, bool):
            parser.add_argument(
                flag,
                default=field.default,
                action=argparse.BooleanOptionalAction,
                help=meta.pop("help"),
            )
        else:
            kind = meta.pop("type", type(field.default))
            parser.add_argument(flag, default=field.default, type=kind, **meta)
    config = Config(**vars(parser.parse_args(argv)))
    validate(config)
    return config


def validate(config: Config) -> None:
    """Raises ``ValueError`` naming the flag that makes no sense."""
    if not 1 <= config.min_digits <= config.max_digits:
        raise ValueError("--min-digits must lie in [1, --max-digits].")
    if config.max_gap < 2:
        raise ValueError("--max-gap must be at least 2.")
    if config.data == "mnist" and not config.data_dir:
        raise ValueError("--data mnist needs --data-dir.")
    if config.stride < 1:
        raise ValueError("--stride must be positive.")
    if config.loss == "framewise" and config.stride > 2:
        raise ValueError("--loss framewise needs --stride 1 or 2 (non-empty gaps).")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError("--steps and --batch-size must be positive.")
    if config.beam_width < 1:
        raise ValueError("--beam-width must be positive.")


# ---------------------------------------------------------------------------
# 2. Data: strips of handwritten digits.
# ---------------------------------------------------------------------------


class Digits(NamedTuple):
    """Single digit images to assemble strips from."""

    images: np.ndarray  # [M, H, W] float32 in [0, 1]
    labels: np.ndarray  # [M] int, digits 0-9
    ids: np.ndarray  # [M] int, index of each image in its source file


class Batch(NamedTuple):
    """A padded batch of strips; frames are image columns, top row first."""

    frames: np.ndarray  # [B, T, D] float32, zero on padding
    paddings: np.ndarray  # [B, T] float32, 1.0 = padded column
    labels: np.ndarray  # [B, N] int32 classes 1-10 (digit + 1), 0 on padding
    label_paddings: np.ndarray  # [B, N] float32, 1.0 = padded slot
    segments: np.ndarray  # [B, N, 2] int32 first and one-past-last column, -1 pad


def load_sklearn_digits(test_fraction: float, seed: int) -> tuple[Digits, Digits]:
    """Splits scikit-learn's 1,797 bundled digits into disjoint train and test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # [1797, 8, 8]
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = int(round(test_fraction * len(images)))
    test, train = order[:num_test], order[num_test:]
    return (
        Digits(images[train], bunch.target[train], train),
        Digits(images[test], bunch.target[test], test),
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped if its name ends in .gz."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return array.reshape(shape)


def load_mnist(data_dir: str | os.PathLike) -> tuple[Digits, Digits]:
    """Reads the MNIST training and test IDX files from ``data_dir``."""

    def find(stem: str) -> pathlib.Path:
        for name in (stem, stem + ".gz"):
            if (path := pathlib.Path(data_dir) / name).exists():
                return path
        raise FileNotFoundError(f"{stem}[.gz] not found in {data_dir}.")

    def split(prefix: str) -> Digits:
        images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        ids = np.arange(len(labels))
        return Digits((images / 255.0).astype(np.float32), labels.astype(np.int64), ids)

    return split("train"), split("t10k")


def load_data(config: Config) -> tuple[Digits, Digits]:
    """The train and test digit images the config asks for."""
    if config.data == "mnist":
        return load_mnist(config.data_dir)
    return load_sklearn_digits(config.test_fraction, config.seed)


def strip_shape(config: Config, digit_shape: tuple[int, int]) -> tuple[int, int]:
    """The padded strip size ``(T columns, D rows)``; T is a multiple of stride."""
    height, width = digit_shape
    n = config.max_digits
    widest = n * width + (n + 1) * config.max_gap
    return -(-widest // config.stride) * config.stride, height + config.jitter


def make_strips(
    source: Digits, num: int, rng: np.random.Generator, config: Config
) -> Batch:
    """Draws ``num`` strips of random digits with random gaps and jitter.

    Digits are separated, preceded and followed by 2 to ``max_gap`` empty
    columns, so with ``stride`` 2 at least one output frame lies in every gap
    (the genie's blank segments are never empty).
    """
    height, width = source.images.shape[1:]
    num_frames, num_rows = strip_shape(config, (height, width))
    n = config.max_digits
    frames = np.zeros((num, num_frames, num_rows), np.float32)
    paddings = np.ones((num, num_frames), np.float32)
    labels = np.zeros((num, n), np.int32)
    label_paddings = np.ones((num, n), np.float32)
    segments = np.full((num, n, 2), -1, np.int32)
    counts = rng.integers(config.min_digits, n + 1, size=num)
    for b, count in enumerate(counts):
        picks = rng.integers(len(source.images), size=count)
        gaps = rng.integers(2, config.max_gap + 1, size=count)
        shifts = rng.integers(0, config.jitter + 1, size=count)
        column = 0
        for k in range(count):
            column += int(gaps[k])
            rows = slice(shifts[k], shifts[k] + height)
            frames[b, column : column + width, rows] = source.images[picks[k]].T
            segments[b, k] = column, column + width
            column += width
        length = column + int(rng.integers(2, config.max_gap + 1))
        paddings[b, :length] = 0.0
        labels[b, :count] = source.labels[picks] + 1
        label_paddings[b, :count] = 0.0
    return Batch(frames, paddings, labels, label_paddings, segments)


def train_batch(source: Digits, step: int, config: Config) -> Batch:
    """The global training batch of ``step``: a pure function of seed and step.

    Drawing each batch from its own seeded generator makes the data order
    independent of how the run was interrupted, so ``--resume`` sees exactly
    the batches an uninterrupted run would.
    """
    rng = np.random.default_rng([config.seed, 0, step])
    return make_strips(source, config.batch_size, rng, config)


def test_strips(source: Digits, config: Config) -> Batch:
    """The fixed test set, drawn from the held-out digit images."""
    rng = np.random.default_rng([config.seed, 1])
    return make_strips(source, config.num_test, rng, config)


def label_strings(batch: Batch) -> list[list[int]]:
    """The label sequences of a batch as Python lists of classes."""
    lengths = np.sum(batch.label_paddings == 0, axis=1)
    return [row[:n].tolist() for row, n in zip(batch.labels, lengths, strict=True)]


# ---------------------------------------------------------------------------
# 3. Model and losses.
# ---------------------------------------------------------------------------


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
    """Per-strip loss ``[B]`` of the chosen kind."""
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


# ---------------------------------------------------------------------------
# 4. Training and evaluation steps.
# ---------------------------------------------------------------------------


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """adamw on a warm-up + cosine schedule, after global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_steps, config.steps // 2),
        decay_steps=config.steps,
        end_value=config.learning_rate * 0.01,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


@functools.partial(
    jax.jit, static_argnames=("graphdef", "config"), donate_argnums=(0, 1)
)
def train_step(params, opt_state, batch: Batch, *, graphdef, config: Config):
    """One optimisation step: ``(params, opt_state, metrics)``.

    Compiled once per model and config: every batch has the same padded shape.
    """
    tx = make_optimizer(config)
    value, grads = jax.value_and_grad(loss_fn)(
        params, graphdef, batch, config.loss, config.stride
    )
    # optax's bias correction mixes its int32 step count with floats, which
    # the tests' strict dtype promotion would reject.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": value, "grad_norm": optax.tree.norm(grads)}
    return params, opt_state, metrics


@functools.partial(jax.jit, static_argnames="graphdef")
def forward(params, frames, paddings, *, graphdef):
    """``[B, T, D]`` strips to ``[B, T/stride, 11]`` logits and their paddings."""
    return nnx.merge(graphdef, params)(frames, paddings)


@jax.jit
def greedy_search(logits, logit_paddings):
    """Best-path decoding: ``(tokens [B, T'], lengths [B])``."""
    out = seqctc.greedy_decode(logits, logit_paddings, blank_id=BLANK_ID)
    return out.tokens, out.lengths


@functools.partial(jax.jit, static_argnames="beam_width")
def beam_search(logits, logit_paddings, lm, lm_weight, *, beam_width: int):
    """Prefix beam search with an n-gram LM: ``(tokens [B, T'], lengths [B])``.

    ``lm_weight=0`` switches the LM off, so one compiled search serves both.
    """
    out = seqctc.beam_decode(
        logits,
        logit_paddings,
        beam_width=beam_width,
        blank_id=BLANK_ID,
        lm=lm,
        lm_weight=lm_weight,
    )
    return out.tokens[:, 0], out.lengths[:, 0]


def make_decoders(config: Config, lm: Any) -> dict[str, Callable]:
    """The decoders compared at the end, from logits to tokens and lengths."""
    beam = functools.partial(beam_search, lm=lm, beam_width=config.beam_width)
    return {
        "greedy": greedy_search,
        "beam": functools.partial(beam, lm_weight=0.0),
        "beam+lm": functools.partial(beam, lm_weight=config.lm_weight),
    }


@jax.jit
def align(logits, logit_paddings, labels, label_paddings):
    """The Viterbi alignment of the labels (for the plots)."""
    return seqctc.viterbi_align(
        logits, logit_paddings, labels, label_paddings, blank_id=BLANK_ID
    )


def label_error_rate(
    hypotheses: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> float:
    """Total edit distance over total reference length."""
    errors = sum(
        Levenshtein.distance(h, r) for h, r in zip(hypotheses, references, strict=True)
    )
    return errors / max(sum(len(r) for r in references), 1)


def to_lists(tokens: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Decoded ``tokens[B, L]`` and ``lengths[B]`` as Python lists."""
    return [row[:n].tolist() for row, n in zip(tokens, lengths, strict=True)]


# ---------------------------------------------------------------------------
# 5. Devices: a 1-D data-parallel mesh.
# ---------------------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all of them)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Places a global numpy batch on the mesh, split along the batch axis.

    Every process builds the same global batch (it is cheap) and hands over
    only the rows its own devices hold, so one code path serves one device,
    many devices and many hosts.
    """
    sharding = NamedSharding(mesh, P("data"))

    def put(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

    return Batch(*(put(x) for x in batch))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies every leaf of ``tree`` to every device of the mesh."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), sharding, lambda i: np.asarray(x)[i]
        ),
        tree,
    )


def gather(x: jax.Array) -> np.ndarray:
    """A sharded array as one numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ---------------------------------------------------------------------------
# 6. Checkpoints (orbax).
# ---------------------------------------------------------------------------


def checkpoint_manager(config: Config) -> ocp.CheckpointManager:
    """Keeps the two latest checkpoints under ``--out/checkpoints``; orbax
    writes each one to a temporary folder and renames it when complete."""
    path = pathlib.Path(config.out).absolute() / "checkpoints"
    return ocp.CheckpointManager(
        path, options=ocp.CheckpointManagerOptions(max_to_keep=2)
    )


def save_checkpoint(manager, step: int, params, opt_state, history) -> None:
    """Saves parameters, optimizer state and the metric history at ``step``."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
            history=ocp.args.JsonSave(history),
        ),
        force=True,
    )


def restore_checkpoint(manager, step: int, params, opt_state):
    """Restores the checkpoint at ``step`` into the shapes and shardings of
    ``params`` and ``opt_state``; returns ``(params, opt_state, history)``."""
    target = jax.tree.map(
        ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state}
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            history=ocp.args.JsonRestore(),
        ),
    )
    state = restored["state"]
    return state["params"], state["opt_state"], restored["history"]


# ---------------------------------------------------------------------------
# 7. Evaluation.
# ---------------------------------------------------------------------------


def batches_of(data: Batch, size: int) -> list[tuple[Batch, int]]:
    """Cuts ``data`` into batches of exactly ``size`` rows (the last one padded
    with repeats, so one compiled shape serves all); pairs each with its number
    of real rows."""
    total = len(data.frames)
    chunks = []
    for start in range(0, total, size):
        rows = np.arange(start, start + size) % total
        chunks.append((Batch(*(x[rows] for x in data)), min(size, total - start)))
    return chunks


def evaluate(
    graphdef,
    decoders: dict[str, Callable],
    params,
    data: Batch,
    mesh: Mesh,
    config: Config,
) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    """Label error rate of each decoder on ``data``, and its hypotheses."""
    size = eval_batch_size(config, mesh)
    hypotheses: dict[str, list[list[int]]] = {name: [] for name in decoders}
    for chunk, real in batches_of(data, size):
        frames, paddings = shard_batch(chunk, mesh)[:2]
        logits, logit_paddings = forward(params, frames, paddings, graphdef=graphdef)
        for name, decode in decoders.items():
            tokens, lengths = decode(logits, logit_paddings)
            rows = to_lists(gather(tokens), gather(lengths))[:real]
            hypotheses[name].extend(rows)
    references = label_strings(data)
    rates = {name: label_error_rate(h, references) for name, h in hypotheses.items()}
    return rates, hypotheses


def eval_batch_size(config: Config, mesh: Mesh) -> int:
    """``--eval-batch-size`` capped by the test set, rounded to the mesh."""
    size = min(config.eval_batch_size, config.num_test)
    return -(-size // mesh.size) * mesh.size


def fit_language_model(source: Digits, config: Config):
    """A character n-gram LM over the label strings of the first training
    batches (the strings the model trains on)."""
    strings = []
    for step in range(min(config.steps, 100)):
        strings.extend(label_strings(train_batch(source, step, config)))
    return seqctc.CharNGramLM.fit(
        strings, order=config.lm_order, num_classes=NUM_CLASSES
    )


def check_data(batch: Batch, config: Config) -> None:
    """Validates strips once with ``seqctc.check_inputs``: labels in range and
    never blank, and enough output frames for every label string (the model
    emits one frame per ``stride`` columns; uniform logits stand in for it)."""
    logit_paddings = batch.paddings[:, :: config.stride]
    logits = np.zeros((*logit_paddings.shape, NUM_CLASSES), np.float32)
    seqctc.check_inputs(
        logits, logit_paddings, batch.labels, batch.label_paddings, blank_id=BLANK_ID
    )


# ---------------------------------------------------------------------------
# 8. The training loop.
# ---------------------------------------------------------------------------


class Result(NamedTuple):
    """What `train` returns."""

    params: Any  # the final parameters (a nested dict of arrays)
    graphdef: Any  # the model's nnx graph definition
    step: int  # steps completed
    history: dict[str, list]  # "train": [[step, loss]], "eval": [[step, LER]]


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


def train(
    config: Config,
    *,
    mesh: Mesh | None = None,
    stop_at: int | None = None,
) -> Result:
    """Trains (or resumes) a recogniser; stops after ``stop_at`` steps if set.

    Saves a checkpoint every ``--checkpoint-every`` steps, at the end and on
    Ctrl-C, so an interrupted run loses no work.
    """
    mesh = make_mesh() if mesh is None else mesh
    if config.batch_size % mesh.size:
        raise ValueError(
            f"--batch-size {config.batch_size} must be a multiple of the "
            f"{mesh.size} devices."
        )
    train_digits, test_digits = load_data(config)
    test = test_strips(test_digits, config)
    num_rows = strip_shape(config, train_digits.images.shape[1:])[1]
    graphdef, params = init_model(config, num_rows)
    tx = make_optimizer(config)
    params = replicate(params, mesh)
    opt_state = replicate(tx.init(params), mesh)
    check_data(train_batch(train_digits, 0, config), config)
    check_data(test, config)

    manager = checkpoint_manager(config)
    step, history = 0, {"train": [], "eval": []}
    if config.resume and manager.latest_step() is not None:
        step = manager.latest_step()
        params, opt_state, history = restore_checkpoint(
            manager, step, params, opt_state
        )

    greedy = {"greedy": greedy_search}
    stop = config.steps if stop_at is None else min(stop_at, config.steps)
    main_process = jax.process_index() == 0
    bar = tqdm(
        total=config.steps,
        initial=step,
        disable=not (config.progress and main_process),
        dynamic_ncols=True,
        desc=f"{config.loss} on {mesh.size} {jax.default_backend()}",
    )
    pending = []  # device scalars, fetched in groups so the host never waits
    postfix = {}
    # Ctrl-C only raises a flag: the step in flight completes, and the loop
    # saves a checkpoint and returns, so `--resume` loses nothing.
    interrupted = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # Python only lets the main thread set handlers.
        previous_handler = signal.signal(
            signal.SIGINT, lambda *_: interrupted.append(True)
        )
    try:
        while step < stop and not interrupted:
            batch = shard_batch(train_batch(train_digits, step, config), mesh)
            params, opt_state, metrics = train_step(
                params, opt_state, batch, graphdef=graphdef, config=config
            )
            step += 1
            pending.append((step, metrics["loss"]))
            bar.update(1)
            if len(pending) == 25 or step == stop or interrupted:
                history["train"].extend([s, float(v)] for s, v in pending)
                pending = []
                postfix["loss"] = f"{history['train'][-1][1]:.4f}"
                bar.set_postfix(postfix, refresh=False)
            if step % config.eval_every == 0 or step == config.steps:
                rates, _ = evaluate(graphdef, greedy, params, test, mesh, config)
                history["eval"].append([step, rates["greedy"]])
                postfix["test_ler"] = f"{100 * rates['greedy']:.2f}%"
                bar.set_postfix(postfix)
            if step % config.checkpoint_every == 0 or step == stop or interrupted:
                save_checkpoint(manager, step, params, opt_state, history)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
        manager.wait_until_finished()
        bar.close()
    return Result(params, graphdef, step, history)


# ---------------------------------------------------------------------------
# 9. Plots and summary.
# ---------------------------------------------------------------------------


def digits_text(classes: Sequence[int]) -> str:
    """Classes 1-10 as the digit string they stand for."""
    return "".join(str(c - 1) for c in classes) or "∅"


def plot_loss(history: dict[str, list], path: pathlib.Path, config: Config) -> None:
    """Training loss and greedy test LER against steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps, losses = np.asarray(history["train"]).T
    ax.plot(steps, losses, lw=0.8, color="tab:blue", alpha=0.4)
    window = min(25, len(losses))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"{config.loss} loss")
    ax.set(xlabel="step", ylabel="training loss per digit", yscale="log")
    if history["eval"]:
        twin = ax.twinx()
        eval_steps, rates = np.asarray(history["eval"]).T
        twin.plot(eval_steps, 100 * rates, "o-", color="tab:red", label="test LER")
        twin.set_ylabel("greedy test LER (%)", color="tab:red")
        twin.set_ylim(bottom=0)
    ax.set_title(f"Digit strips, {config.loss} loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_alignment(
    strip: Batch, logits: np.ndarray, logit_paddings: np.ndarray, path, config
) -> None:
    """One strip, its per-frame class posteriors and the Viterbi alignment."""
    import matplotlib.pyplot as plt

    length = int(np.sum(strip.paddings[0] == 0))
    frames = int(np.sum(logit_paddings[0] == 0))
    alignment = align(logits, logit_paddings, strip.labels, strip.label_paddings)
    tokens, lengths = greedy_search(logits, logit_paddings)
    posteriors = np.asarray(jax.nn.softmax(logits[0, :frames], axis=-1)).T
    path_labels = np.asarray(alignment.frame_labels[0, :frames])
    truth = label_strings(strip)[0]
    guess = to_lists(np.asarray(tokens), np.asarray(lengths))[0]

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 4.5), sharex=True, height_ratios=(1, 1.4)
    )
    top.imshow(
        strip.frames[0, :length].T,
        cmap="gray_r",
        aspect="auto",
        extent=(0, length, strip.frames.shape[2], 0),
    )
    for start, end in strip.segments[0][: len(truth)]:
        top.axvspan(start, end, color="tab:green", alpha=0.08)
    top.set(
        yticks=[],
        title=f"truth {digits_text(truth)} · greedy "
        f"{digits_text(guess)}  (shaded: true digit boxes)",
    )
    stride = config.stride
    bottom.imshow(
        posteriors,
        aspect="auto",
        cmap="magma",
        origin="lower",
        extent=(0, frames * stride, -0.5, NUM_CLASSES - 0.5),
    )
    centres = (np.arange(frames) + 0.5) * stride
    bottom.plot(
        centres,
        path_labels,
        "o",
        ms=3.5,
        mfc="none",
        color="cyan",
        label="Viterbi alignment",
    )
    bottom.set(
        yticks=range(NUM_CLASSES),
        yticklabels=["∅"] + list("0123456789"),
        xlabel="image column",
        ylabel="class",
    )
    bottom.legend(loc="upper right", fontsize=8)
    bottom.set_title("CTC posteriors per frame (∅ = blank)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_predictions(
    test: Batch, hypotheses: dict[str, list[list[int]]], path, num: int = 8
) -> None:
    """Test strips with truth and decodings; mistakes first, in red."""
    import matplotlib.pyplot as plt

    truth = label_strings(test)
    best = hypotheses["beam+lm"] if "beam+lm" in hypotheses else hypotheses["greedy"]
    wrong = [i for i, t in enumerate(truth) if hypotheses["greedy"][i] != t]
    right = [i for i in range(len(truth)) if i not in set(wrong)]
    rows = (wrong[: num // 2] + right)[:num]
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 1.05 * len(rows)))
    for ax, i in zip(np.atleast_1d(axes), rows, strict=True):
        length = int(np.sum(test.paddings[i] == 0))
        ax.imshow(test.frames[i, :length].T, cmap="gray_r", aspect="equal")
        ax.set_xlim(0, test.frames.shape[1])
        ax.set(xticks=[], yticks=[])
        ok = hypotheses["greedy"][i] == truth[i]
        ax.set_title(
            f"truth {digits_text(truth[i])}   greedy "
            f"{digits_text(hypotheses['greedy'][i])}   beam+LM {digits_text(best[i])}",
            fontsize=8,
            color="black" if ok else "tab:red",
            loc="left",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_table(summary: dict[str, Any]) -> str:
    """The final results as a markdown table."""
    lines = [
        "| loss | train loss | greedy LER | beam LER | beam+LM LER | steps "
        "| wall time | CPU time |",
        "|---|---|---|---|---|---|---|---|",
        "| {loss} | {train_loss:.4f} | {greedy:.2%} | {beam:.2%} | {beam_lm:.2%} "
        "| {steps} | {wall_time:.0f} s | {cpu_time:.0f} s |".format(
            loss=summary["config"]["loss"],
            train_loss=summary["train_loss"],
            greedy=summary["ler"]["greedy"],
            beam=summary["ler"]["beam"],
            beam_lm=summary["ler"]["beam+lm"],
            steps=summary["steps"],
            wall_time=summary["wall_time"],
            cpu_time=summary["cpu_time"],
        ),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# 10. main.
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parses flags, trains, evaluates every decoder, writes plots and summary."""
    start = time.perf_counter()
    config = parse_args(argv)
    if config.coordinator_address:
        jax.distributed.initialize(
            config.coordinator_address, config.num_processes, config.process_id
        )
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh()
    result = train(config, mesh=mesh)
    if result.step < config.steps:
        print(
            f"Interrupted: checkpoint saved at step {result.step}; rerun with --resume."
        )
        raise SystemExit(130)

    train_digits, test_digits = load_data(config)
    test = test_strips(test_digits, config)
    lm = fit_language_model(train_digits, config)
    rates, hypotheses = evaluate(
        result.graphdef, make_decoders(config, lm), result.params, test, mesh, config
    )
    tail = [loss for _, loss in result.history["train"][-50:]]
    summary = {
        "config": dataclasses.asdict(config),
        "steps": result.step,
        "train_loss": float(np.mean(tail)) if tail else math.nan,
        "ler": rates,
        "wall_time": time.perf_counter() - start,
        "cpu_time": time.process_time(),
        "devices": f"{mesh.size} x {jax.devices()[0].device_kind}",
    }
    # The first test strip of five digits or more and its logits, from a batch
    # of the (already compiled) evaluation shape; every process takes part.
    chunk, _ = batches_of(test, eval_batch_size(config, mesh))[0]
    pick = next((i for i, n in enumerate(label_strings(chunk)) if len(n) >= 5), 0)
    frames, paddings = shard_batch(chunk, mesh)[:2]
    logits, logit_paddings = forward(
        result.params, frames, paddings, graphdef=result.graphdef
    )
    logits = gather(logits)[pick : pick + 1]
    logit_paddings = gather(logit_paddings)[pick : pick + 1]
    if jax.process_index() == 0:
        if config.plots:
            import matplotlib

            matplotlib.use("Agg")
            plot_loss(result.history, out / "loss.png", config)
            strip = Batch(*(x[pick : pick + 1] for x in chunk))
            plot_alignment(strip, logits, logit_paddings, out / "alignment.png", config)
            plot_predictions(test, hypotheses, out / "predictions.png")
        summary["wall_time"] = time.perf_counter() - start
        summary["cpu_time"] = time.process_time()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(summary_table(summary))
    return summary


if __name__ == "__main__":
    main()
