"""Data: digit images, the number grammar, and strips of handwritten digits.

A strip is a digit string rendered with handwritten digits side by side. The
strings come from `draw_strings`; the images from scikit-learn's bundled 8x8
digits (split into disjoint train, validation and test images) or MNIST.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

import seqctc

from .config import Config

BLANK_ID = 0
NUM_CLASSES = 11  # blank, then digit d is class d + 1.


class Digits(NamedTuple):
    """Single digit images to assemble strips from."""

    images: np.ndarray  # [M, H, W] float32 in [0, 1]
    labels: np.ndarray  # [M] int, digits 0-9
    ids: np.ndarray  # [M] int, index of each image in its source file


class Splits(NamedTuple):
    """Disjoint digit images for training, validation and test strips."""

    train: Digits
    valid: Digits
    test: Digits


class Batch(NamedTuple):
    """A padded batch of strips; frames are image columns, top row first."""

    frames: np.ndarray  # [B, T, D] float32, zero on padding
    paddings: np.ndarray  # [B, T] float32, 1.0 = padded column
    labels: np.ndarray  # [B, N] int32 classes 1-10 (digit + 1), 0 on padding
    label_paddings: np.ndarray  # [B, N] float32, 1.0 = padded slot
    segments: np.ndarray  # [B, N, 2] int32 first and one-past-last column, -1 pad


# ---------------------------------------------------------------------------
# Digit images.
# ---------------------------------------------------------------------------


def load_sklearn_digits(
    test_fraction: float, valid_fraction: float, seed: int
) -> Splits:
    """Splits scikit-learn's 1,797 bundled digits into disjoint train,
    validation and test images (the test images come first in a seeded
    permutation, so they do not depend on ``valid_fraction``)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # [1797, 8, 8]
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = int(round(test_fraction * len(images)))
    num_valid = int(round(valid_fraction * len(images)))
    parts = np.split(order, [num_test, num_test + num_valid])
    test, valid, train = (Digits(images[i], bunch.target[i], i) for i in parts)
    return Splits(train, valid, test)


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


def load_mnist(data_dir: str | os.PathLike, valid_fraction: float) -> Splits:
    """Reads the MNIST IDX files from ``data_dir``; the last ``valid_fraction``
    of the training images are the validation images."""

    def find(stem: str) -> pathlib.Path:
        for name in (stem, stem + ".gz"):
            if (path := pathlib.Path(data_dir) / name).exists():
                return path
        raise FileNotFoundError(f"{stem}[.gz] not found in {data_dir}.")

    def read(prefix: str) -> Digits:
        images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        ids = np.arange(len(labels))
        return Digits((images / 255.0).astype(np.float32), labels.astype(np.int64), ids)

    train = read("train")
    cut = len(train.ids) - max(int(round(valid_fraction * len(train.ids))), 1)
    return Splits(
        Digits(*(x[:cut] for x in train)),
        Digits(*(x[cut:] for x in train)),
        read("t10k"),
    )


def load_data(config: Config) -> Splits:
    """The train, validation and test digit images the config asks for."""
    if config.data == "mnist":
        return load_mnist(config.data_dir, config.valid_fraction)
    return load_sklearn_digits(config.test_fraction, config.valid_fraction, config.seed)


# ---------------------------------------------------------------------------
# Digit strings: numbers as people write them.
# ---------------------------------------------------------------------------

_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _date(rng: np.random.Generator, year_digits: int) -> str:
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, _DAYS[month - 1] + 1))
    year = int(rng.integers(1950, 2030)) % 10**year_digits
    return f"{day:02d}{month:02d}{year:0{year_digits}d}"


def _amount(rng: np.random.Generator, length: int) -> str:
    """A round sum: one or two significant digits, then zeros (``2500``)."""
    head = str(int(rng.integers(1, 10)))
    if length > 1 and rng.random() < 0.5:
        head += str(int(rng.integers(0, 10)))
    return head.ljust(length, "0")


def _small(rng: np.random.Generator, length: int) -> str:
    """A count or a house number, 1-99."""
    return str(int(rng.integers(1, 10) if length == 1 else rng.integers(10, 100)))


def _time(rng: np.random.Generator, length: int) -> str:
    """A 24-hour time HHMM; half of the minutes are multiples of 5."""
    minute = int(rng.integers(0, 12)) * 5 if rng.random() < 0.5 else rng.integers(60)
    return f"{int(rng.integers(0, 24)):02d}{int(minute):02d}"


def _book(make: Callable[[np.random.Generator], str], size: int) -> tuple[str, ...]:
    """``size`` distinct strings of ``make``, the same in every run (a fixed
    seed): the postcodes and phone numbers of one address book."""
    rng, book = np.random.default_rng(1234), {}
    while len(book) < size:
        book.setdefault(make(rng), None)
    return tuple(book)


# A département (01-95), a district digit, 0, then mostly 0.
POSTCODES = _book(
    lambda rng: (
        f"{int(rng.integers(1, 96)):02d}{int(rng.integers(10))}0"
        f"{0 if rng.random() < 0.7 else int(rng.integers(10))}"
    ),
    100,
)
# Mobile numbers: 06 or 07 and six digits.
PHONES = _book(
    lambda rng: (
        f"0{int(rng.choice([6, 7]))}"
        + "".join(str(d) for d in rng.integers(0, 10, size=6))
    ),
    100,
)


def _postcode(rng: np.random.Generator, length: int) -> str:
    return POSTCODES[rng.integers(len(POSTCODES))]


def _phone(rng: np.random.Generator, length: int) -> str:
    return PHONES[rng.integers(len(PHONES))]


# (name, weight, lengths it can take or None for any, generator(rng, length)).
FORMATS: tuple[tuple[str, float, Sequence[int] | None, Callable], ...] = (
    ("year", 0.15, (4,), lambda rng, n: str(int(rng.integers(1950, 2030)))),
    ("date DDMMYY", 0.1, (6,), lambda rng, n: _date(rng, 2)),
    ("date DDMMYYYY", 0.1, (8,), lambda rng, n: _date(rng, 4)),
    ("time HHMM", 0.1, (4,), _time),
    ("postcode", 0.1, (5,), _postcode),
    ("phone", 0.15, (8,), _phone),
    ("amount", 0.15, None, _amount),
    ("count", 0.15, (1, 2), _small),
)


def draw_strings(rng: np.random.Generator, num: int, config: Config) -> list[list[int]]:
    """``num`` digit strings (lists of digits 0-9) of ``--min-digits`` to
    ``--max-digits`` digits.

    ``--strings uniform``: a uniform length and uniform digits, which leave a
    language model nothing to learn but the length. ``--strings numbers``: a
    format drawn from `FORMATS` among those that fit the length range (the
    amounts fit any), then a string of that format: years 1950-2029, dates
    (DDMMYY, DDMMYYYY), 24-hour times, round amounts, counts 1-99, and the
    100 postcodes and 100 phone numbers of a fixed address book.
    """
    low, high = config.min_digits, config.max_digits
    if config.strings == "uniform":
        counts = rng.integers(low, high + 1, size=num)
        return [rng.integers(0, 10, size=n).tolist() for n in counts]
    fitting = []
    for _, weight, lengths, make in FORMATS:
        allowed = range(low, high + 1) if lengths is None else lengths
        allowed = [n for n in allowed if low <= n <= high]
        if allowed:
            fitting.append((weight, allowed, make))
    weights = np.array([w for w, _, _ in fitting])
    picks = rng.choice(len(fitting), size=num, p=weights / weights.sum())
    strings = []
    for pick in picks:
        _, allowed, make = fitting[pick]
        length = int(allowed[rng.integers(len(allowed))])
        strings.append([int(c) for c in make(rng, length)])
    return strings


# ---------------------------------------------------------------------------
# Strips and batches.
# ---------------------------------------------------------------------------


def strip_shape(config: Config, digit_shape: tuple[int, int]) -> tuple[int, int]:
    """The padded strip size ``(T columns, D rows)``; T is a multiple of stride."""
    height, width = digit_shape
    n = config.max_digits
    widest = n * width + (n + 1) * config.max_gap
    return -(-widest // config.stride) * config.stride, height + config.jitter


def make_strips(
    source: Digits,
    strings: Sequence[Sequence[int]],
    rng: np.random.Generator,
    config: Config,
) -> Batch:
    """Renders each digit string with random images of its digits, random gaps
    and vertical jitter.

    Digits are separated, preceded and followed by 2 to ``max_gap`` empty
    columns, so with ``stride`` 2 at least one output frame lies in every gap
    (the genie's blank segments are never empty).
    """
    height, width = source.images.shape[1:]
    num_frames, num_rows = strip_shape(config, (height, width))
    num, n = len(strings), config.max_digits
    frames = np.zeros((num, num_frames, num_rows), np.float32)
    paddings = np.ones((num, num_frames), np.float32)
    labels = np.zeros((num, n), np.int32)
    label_paddings = np.ones((num, n), np.float32)
    segments = np.full((num, n, 2), -1, np.int32)
    by_digit = [np.flatnonzero(source.labels == d) for d in range(10)]
    if missing := [d for d in range(10) if not len(by_digit[d])]:
        raise ValueError(f"The source images hold no image of the digits {missing}.")
    for b, string in enumerate(strings):
        count = len(string)
        picks = [by_digit[d][rng.integers(len(by_digit[d]))] for d in string]
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
        labels[b, :count] = np.asarray(string) + 1
        label_paddings[b, :count] = 0.0
    return Batch(frames, paddings, labels, label_paddings, segments)


def train_batch(source: Digits, step: int, config: Config) -> Batch:
    """The global training batch of ``step``: a pure function of seed and step.

    Drawing each batch from its own seeded generator makes the data order
    independent of how the run was interrupted, so ``--resume`` sees exactly
    the batches an uninterrupted run would.
    """
    rng = np.random.default_rng([config.seed, 0, step])
    return make_strips(
        source, draw_strings(rng, config.batch_size, config), rng, config
    )


def training_strings(config: Config) -> list[list[int]]:
    """The label strings of every training batch, as classes 1-10, without
    rendering a strip (each batch draws its strings first; the LM's text)."""
    strings = []
    for step in range(config.steps):
        rng = np.random.default_rng([config.seed, 0, step])
        for string in draw_strings(rng, config.batch_size, config):
            strings.append([d + 1 for d in string])
    return strings


def held_out_strips(source: Digits, num: int, split: int, config: Config) -> Batch:
    """Fixed held-out strips (``split`` 1: test, 2: validation)."""
    rng = np.random.default_rng([config.seed, split])
    return make_strips(source, draw_strings(rng, num, config), rng, config)


def test_strips(source: Digits, config: Config) -> Batch:
    """The fixed test set, drawn from the test images."""
    return held_out_strips(source, config.num_test, 1, config)


def valid_strips(source: Digits, config: Config) -> Batch:
    """The fixed validation set (LM tuning), drawn from the validation images."""
    return held_out_strips(source, config.num_valid, 2, config)


def label_strings(batch: Batch) -> list[list[int]]:
    """The label sequences of a batch as Python lists of classes."""
    lengths = np.sum(batch.label_paddings == 0, axis=1)
    return [row[:n].tolist() for row, n in zip(batch.labels, lengths, strict=True)]


def check_data(batch: Batch, config: Config) -> None:
    """Validates strips once with ``seqctc.check_inputs``: labels in range and
    never blank, and enough output frames for every label string (the model
    emits one frame per ``stride`` columns; uniform logits stand in for it)."""
    logit_paddings = batch.paddings[:, :: config.stride]
    logits = np.zeros((*logit_paddings.shape, NUM_CLASSES), np.float32)
    seqctc.check_inputs(
        logits, logit_paddings, batch.labels, batch.label_paddings, blank_id=BLANK_ID
    )
