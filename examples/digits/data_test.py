"""Tests of the digits example's data: images, number grammar, strips.

Strips are checked pixel by pixel against scikit-learn's own images, the
grammar's strings against independent parsers of each format (calendar dates
through `datetime`), and the MNIST reader against IDX files written here.
"""

import datetime
import gzip
import pathlib
import struct

import numpy as np
import pytest
from sklearn.datasets import load_digits

import seqctc
from examples.digits import data, main

TINY_FLAGS = ["--max-digits=3", "--max-gap=3", "--batch-size=8", "--num-test=16"]


def tiny_config(tmp_path: pathlib.Path, *flags: str):
    return main.parse_args([*TINY_FLAGS, f"--out={tmp_path}", *flags])


def test_split_is_disjoint_and_covers_the_bundled_digits():
    splits = data.load_sklearn_digits(0.2, 0.1, seed=3)
    reference = load_digits()
    ids = [part.ids.tolist() for part in splits]
    assert sum(map(len, ids)) == len(reference.images) == 1797
    assert len(set().union(*ids)) == 1797
    assert len(splits.test.ids) == round(0.2 * 1797)
    assert len(splits.valid.ids) == round(0.1 * 1797)
    for part in splits:
        np.testing.assert_array_equal(part.images * 16, reference.images[part.ids])
        np.testing.assert_array_equal(part.labels, reference.target[part.ids])
    again = data.load_sklearn_digits(0.2, 0.1, seed=3)
    np.testing.assert_array_equal(again.train.ids, splits.train.ids)
    # The test images do not depend on the size of the validation split.
    other = data.load_sklearn_digits(0.2, 0.05, seed=3)
    np.testing.assert_array_equal(other.test.ids, splits.test.ids)


def parses(text: str) -> bool:
    """Whether ``text`` is one of the grammar's formats, checked directly."""
    n = len(text)

    def date(fmt: str) -> bool:
        try:
            datetime.datetime.strptime(text, fmt)
        except ValueError:
            return False
        return not text.startswith("2902")  # the grammar has no 29 February

    year = n == 4 and 1950 <= int(text) <= 2029
    clock = n == 4 and int(text[:2]) < 24 and int(text[2:]) < 60
    postcode = n == 5 and 1 <= int(text[:2]) <= 95 and text[3] == "0"
    phone = n == 8 and text[:2] in ("06", "07")
    amount = text[0] != "0" and set(text[2:]) <= {"0"}
    count = n <= 2 and text[0] != "0"
    long_date = n == 8 and date("%d%m%Y") and 1950 <= int(text[4:]) <= 2029
    return any(
        [year, clock, postcode, phone, amount, count, n == 6 and date("%d%m%y")]
        + [long_date]
    )


def test_number_strings_follow_the_grammar(tmp_path):
    config = main.parse_args([f"--out={tmp_path}"])
    rng = np.random.default_rng(0)
    strings = data.draw_strings(rng, 3000, config)
    texts = ["".join(map(str, s)) for s in strings]
    assert all(1 <= len(t) <= 8 for t in texts)
    assert [t for t in texts if not parses(t)] == []
    # Every format turns up; the lengths range over 1-8.
    assert {len(t) for t in texts} == set(range(1, 9))
    assert any(t.startswith("19") and len(t) == 4 for t in texts)
    # Structure: an n-gram model of the strings predicts fresh ones far better
    # than a uniform guess (log 10 nats per digit), unlike for uniform digits.
    uniform = main.parse_args([f"--out={tmp_path}", "--strings=uniform"])
    assert cross_entropy(config, rng) < 0.85 * np.log(10)
    assert cross_entropy(uniform, rng) > 0.95 * np.log(10)


def cross_entropy(config, rng, order: int = 5) -> float:
    """Nats per token (string end included) of 500 fresh strings under a
    Kneser-Ney ``order``-gram fit on 5,000 others, read through ``score``."""
    fit = [[d + 1 for d in s] for s in data.draw_strings(rng, 5000, config)]
    held = [[d + 1 for d in s] for s in data.draw_strings(rng, 500, config)]
    lm = seqctc.CharNGramLM.fit(fit, order=order, num_classes=data.NUM_CLASSES)
    lengths = np.array([len(s) for s in held])
    tokens = np.ones((len(held), lengths.max()), np.int32)
    for row, string in zip(tokens, held, strict=True):
        row[: len(string)] = string
    state = np.broadcast_to(lm.initial_state(), (len(held), order - 1))
    total = 0.0
    for j in range(tokens.shape[1]):
        valid = j < lengths
        new_state, log_p = lm.score(state, tokens[:, j])
        total -= float(np.sum(np.where(valid, np.asarray(log_p), 0.0)))
        state = np.where(valid[:, None], np.asarray(new_state), state)
    total -= float(np.sum(np.asarray(lm.final_score(state))))
    return total / (lengths.sum() + len(held))


def test_strings_respect_the_length_range(tmp_path):
    config = tiny_config(tmp_path, "--min-digits=2")
    for source in ("numbers", "uniform"):
        config = tiny_config(tmp_path, "--min-digits=2", f"--strings={source}")
        strings = data.draw_strings(np.random.default_rng(1), 500, config)
        assert {len(s) for s in strings} == {2, 3}
        assert all(0 <= d <= 9 for s in strings for d in s)


def test_strips_hold_their_digits_at_their_segments(tmp_path):
    config = tiny_config(tmp_path, "--max-digits=4", "--jitter=2")
    train = data.load_sklearn_digits(0.2, 0.1, seed=0).train
    batch = data.train_batch(train, step=5, config=config)
    num_frames, num_rows = data.strip_shape(config, (8, 8))
    b, n = config.batch_size, config.max_digits
    assert batch.frames.shape == (b, num_frames, num_rows)
    assert num_frames % config.stride == 0 and num_rows == 8 + 2
    assert batch.paddings.shape == (b, num_frames)
    assert batch.labels.shape == batch.label_paddings.shape == (b, n)
    assert batch.segments.shape == (b, n, 2)
    for row in range(b):
        length = int(np.sum(batch.paddings[row] == 0))
        count = int(np.sum(batch.label_paddings[row] == 0))
        # Right padded, zero beyond the length, 1-4 digits.
        np.testing.assert_array_equal(batch.paddings[row, length:], 1.0)
        np.testing.assert_array_equal(batch.frames[row, length:], 0.0)
        assert 1 <= count <= n
        np.testing.assert_array_equal(batch.labels[row, count:], 0)
        np.testing.assert_array_equal(batch.segments[row, count:], -1)
        segments = batch.segments[row, :count]
        assert np.all(segments[:, 1] - segments[:, 0] == 8)
        # Margins and gaps of 2 to max_gap empty columns.
        gaps = np.diff(np.concatenate([[0], segments.ravel(), [length]]))[::2]
        assert np.all((2 <= gaps) & (gaps <= config.max_gap))
        for (start, end), label in zip(
            segments, batch.labels[row, :count], strict=True
        ):
            # The columns of each box are one training image of that digit,
            # shifted down by at most `jitter` rows.
            box = batch.frames[row, start:end].T  # [rows, 8]
            matches = [
                np.array_equal(box[shift : shift + 8], image)
                and np.all(np.delete(box, np.s_[shift : shift + 8], axis=0) == 0)
                for shift in range(3)
                for image in train.images[train.labels == label - 1]
            ]
            assert any(matches)
        # Nothing is drawn outside the boxes.
        outside = np.ones(num_frames, bool)
        for start, end in segments:
            outside[start:end] = False
        np.testing.assert_array_equal(batch.frames[row, outside], 0.0)


def test_batches_are_reproducible_and_vary_with_step(tmp_path):
    config = tiny_config(tmp_path)
    splits = data.load_data(config)
    first = data.train_batch(splits.train, 7, config)
    again = data.train_batch(splits.train, 7, config)
    other = data.train_batch(splits.train, 8, config)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first.frames, other.frames)
    # The LM's text is exactly the label strings of the training batches.
    strings = data.training_strings(config)
    assert len(strings) == config.steps * config.batch_size
    assert strings[7 * 8 : 8 * 8] == data.label_strings(first)
    # The held-out strips are drawn from their own images.
    for split, strips in [
        (splits.test, data.test_strips(splits.test, config)),
        (splits.valid, data.valid_strips(splits.valid, config)),
    ]:
        for row in range(4):
            start, end = strips.segments[row, 0]
            box = strips.frames[row, start:end].T
            assert any(
                np.array_equal(box[shift : shift + 8], image)
                for shift in range(3)
                for image in split.images
            )


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_reader_on_tiny_files(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        p: rng.integers(0, 256, (n, 28, 28)) for p, n in [("train", 20), ("t10k", 10)]
    }
    labels = {p: np.arange(len(images[p])) % 10 for p in images}
    # Plain files for the training split, gzipped ones for the test split.
    write_idx(tmp_path / "train-images-idx3-ubyte", images["train"])
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels["train"])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images["t10k"])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels["t10k"])
    config = tiny_config(tmp_path, "--data=mnist", f"--data-dir={tmp_path}")
    splits = data.load_data(config)
    train = np.concatenate([splits.train.images, splits.valid.images])
    np.testing.assert_allclose(train * 255, images["train"], atol=1e-4)
    assert len(splits.valid.ids) == 2  # 10 % of 20
    np.testing.assert_allclose(splits.test.images * 255, images["t10k"], atol=1e-4)
    np.testing.assert_array_equal(splits.test.labels, labels["t10k"])
    num_frames, num_rows = data.strip_shape(config, (28, 28))
    strips = data.test_strips(splits.test, config)
    assert strips.frames.shape == (16, num_frames, num_rows)
    with pytest.raises(ValueError, match="IDX"):
        (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
        data.read_idx(tmp_path / "bad")
    with pytest.raises(ValueError, match="no image of the digits"):
        data.make_strips(splits.valid, [[5]], rng, config)


def test_check_data_rejects_strips_too_short_for_their_labels(tmp_path):
    config = tiny_config(tmp_path)
    batch = data.train_batch(data.load_data(config).train, 0, config)
    data.check_data(batch, config)
    # Three labels but only two frames in row 1.
    paddings = batch.paddings.copy()
    paddings[1, 4:] = 1.0
    labels = batch.labels.copy()
    labels[1], label_paddings = [1, 2, 3], batch.label_paddings.copy()
    label_paddings[1] = 0.0
    bad = batch._replace(
        paddings=paddings, labels=labels, label_paddings=label_paddings
    )
    with pytest.raises(ValueError, match="1"):
        data.check_data(bad, config)
