"""Tests of the flagship example, examples/digits_ctc.py.

The data pipeline is checked against scikit-learn's images and hand-written IDX
files, training end to end on a tiny config (plots, checkpoints, resume), the
resumed run against an uninterrupted one, and the data-parallel step on four
virtual CPU devices against the same step on one device.
"""

import dataclasses
import gzip
import json
import os
import pathlib
import struct
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import digits_ctc  # noqa: E402

# A config small enough to compile and run in seconds.
TINY_FLAGS = [
    "--max-digits=3",
    "--max-gap=3",
    "--num-test=16",
    "--eval-batch-size=16",
    "--features=8",
    "--hidden=8",
    "--batch-size=8",
    "--beam-width=2",
    "--warmup-steps=1",
    "--learning-rate=0.01",
    "--no-progress",
]


def tiny_config(tmp_path: pathlib.Path, *flags: str) -> digits_ctc.Config:
    return digits_ctc.parse_args([*TINY_FLAGS, f"--out={tmp_path}", *flags])


def leaves_close(a, b, atol: float) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------


def test_split_is_disjoint_and_covers_the_bundled_digits():
    train, test = digits_ctc.load_sklearn_digits(test_fraction=0.2, seed=3)
    reference = load_digits()
    assert len(train.ids) + len(test.ids) == len(reference.images) == 1797
    assert not set(train.ids.tolist()) & set(test.ids.tolist())
    assert len(test.ids) == round(0.2 * 1797)
    for part in (train, test):
        np.testing.assert_array_equal(part.images * 16, reference.images[part.ids])
        np.testing.assert_array_equal(part.labels, reference.target[part.ids])
    again, _ = digits_ctc.load_sklearn_digits(test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.ids, train.ids)


def test_strips_hold_their_digits_at_their_segments(tmp_path):
    config = tiny_config(tmp_path, "--max-digits=4", "--jitter=2")
    train, _ = digits_ctc.load_sklearn_digits(0.2, seed=0)
    batch = digits_ctc.train_batch(train, step=5, config=config)
    num_frames, num_rows = digits_ctc.strip_shape(config, (8, 8))
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
    train, test = digits_ctc.load_data(config)
    first = digits_ctc.train_batch(train, 7, config)
    again = digits_ctc.train_batch(train, 7, config)
    other = digits_ctc.train_batch(train, 8, config)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first.frames, other.frames)
    # The test strips are drawn from the held-out images.
    strips = digits_ctc.test_strips(test, config)
    for row in range(4):
        start, end = strips.segments[row, 0]
        box = strips.frames[row, start:end].T
        assert any(
            np.array_equal(box[shift : shift + 8], image)
            for shift in range(3)
            for image in test.images
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
        p: rng.integers(0, 256, (n, 28, 28)) for p, n in [("train", 5), ("t10k", 3)]
    }
    labels = {p: rng.integers(0, 10, len(images[p])) for p in images}
    # Plain files for the training split, gzipped ones for the test split.
    write_idx(tmp_path / "train-images-idx3-ubyte", images["train"])
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels["train"])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images["t10k"])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels["t10k"])
    config = tiny_config(tmp_path, "--data=mnist", f"--data-dir={tmp_path}")
    train, test = digits_ctc.load_data(config)
    for part, name in [(train, "train"), (test, "t10k")]:
        np.testing.assert_allclose(part.images * 255, images[name], atol=1e-4)
        np.testing.assert_array_equal(part.labels, labels[name])
    num_frames, num_rows = digits_ctc.strip_shape(config, (28, 28))
    strips = digits_ctc.test_strips(test, config)
    assert strips.frames.shape == (16, num_frames, num_rows)
    with pytest.raises(ValueError, match="IDX"):
        (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
        digits_ctc.read_idx(tmp_path / "bad")


def test_check_data_rejects_strips_too_short_for_their_labels(tmp_path):
    config = tiny_config(tmp_path)
    train, _ = digits_ctc.load_data(config)
    batch = digits_ctc.train_batch(train, 0, config)
    digits_ctc.check_data(batch, config)
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
        digits_ctc.check_data(bad, config)


def test_label_error_rate_is_edit_distance_over_reference_length():
    # One substitution, one deletion, one insertion over 3 + 2 + 1 labels.
    hypotheses = [[1, 2, 4], [5], [7, 8]]
    references = [[1, 2, 3], [5, 6], [7]]
    assert digits_ctc.label_error_rate(hypotheses, references) == 3 / 6


def test_flags_are_documented_and_checked(capsys):
    with pytest.raises(SystemExit):
        digits_ctc.parse_args(["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(digits_ctc.Config):
        assert "--" + field.name.replace("_", "-") in text
    with pytest.raises(ValueError, match="--max-gap"):
        digits_ctc.parse_args(["--max-gap=1"])
    with pytest.raises(SystemExit):
        digits_ctc.parse_args(["--loss=bogus"])


# ---------------------------------------------------------------------------
# Training end to end.
# ---------------------------------------------------------------------------


def test_smoke_two_steps_then_resume(tmp_path):
    summary = digits_ctc.main([*TINY_FLAGS, f"--out={tmp_path}", "--steps=2"])
    assert summary["steps"] == 2
    assert set(summary["ler"]) == {"greedy", "beam", "beam+lm"}
    for name in ("loss.png", "alignment.png", "predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["ler"] == summary["ler"]
    assert (tmp_path / "checkpoints" / "2").is_dir()
    resumed = digits_ctc.main(
        [*TINY_FLAGS, f"--out={tmp_path}", "--steps=3", "--resume", "--no-plots"]
    )
    assert resumed["steps"] == 3
    assert (tmp_path / "checkpoints" / "3").is_dir()


def test_genie_frame_labels_follow_the_true_segments(tmp_path):
    config = tiny_config(tmp_path)
    train, _ = digits_ctc.load_data(config)
    batch = digits_ctc.train_batch(train, 1, config)
    num_frames = batch.frames.shape[1] // config.stride
    got = np.asarray(digits_ctc.frame_labels(batch, num_frames, config.stride))
    expected = np.full_like(got, -1)
    for b in range(config.batch_size):
        for t in range(num_frames):
            column = t * config.stride
            if batch.paddings[b, column]:
                continue
            expected[b, t] = 0
            for (start, end), label in zip(
                batch.segments[b], batch.labels[b], strict=True
            ):
                if start <= column < end:
                    expected[b, t] = label
    np.testing.assert_array_equal(got, expected)


def test_losses_are_ordered_ctc_viterbi_genie(tmp_path):
    # -log of the sum over all paths <= -log of the best path <= -log of the
    # genie's path (one path among them): ctc <= viterbi <= framewise.
    config = tiny_config(tmp_path)
    train, _ = digits_ctc.load_data(config)
    batch = digits_ctc.train_batch(train, 0, config)
    num_rows = batch.frames.shape[2]
    graphdef, params = digits_ctc.init_model(config, num_rows)
    logits, logit_paddings = digits_ctc.forward(
        params, batch.frames, batch.paddings, graphdef=graphdef
    )
    losses = jax.jit(digits_ctc.sequence_losses, static_argnums=(3, 4))
    ctc, viterbi, genie = (
        np.asarray(losses(logits, logit_paddings, batch, loss, config.stride))
        for loss in ("ctc", "viterbi", "framewise")
    )
    for value in (ctc, viterbi, genie):
        assert value.shape == (config.batch_size,) and np.all(np.isfinite(value))
    np.testing.assert_array_less(ctc, viterbi + 1e-4)
    np.testing.assert_array_less(viterbi, genie + 1e-4)
    assert np.all(ctc > 0) and np.any(ctc < genie - 1e-2)


def test_resume_equals_uninterrupted_run(tmp_path):
    # Same flags as the smoke test's resumed run: the step is compiled once.
    flags = ["--steps=3", "--checkpoint-every=1", "--eval-every=100"]
    interrupted = tiny_config(tmp_path / "a", *flags)
    first = digits_ctc.train(interrupted, stop_at=2)
    assert first.step == 2
    resumed = digits_ctc.train(dataclasses.replace(interrupted, resume=True))
    straight = digits_ctc.train(tiny_config(tmp_path / "b", *flags))
    assert resumed.step == straight.step == 3
    leaves_close(resumed.params, straight.params, atol=1e-6)
    np.testing.assert_allclose(
        resumed.history["train"], straight.history["train"], rtol=1e-6
    )


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, {examples!r})
    import digits_ctc

    config = digits_ctc.parse_args({flags!r})
    train, _ = digits_ctc.load_data(config)
    num_rows = digits_ctc.strip_shape(config, train.images.shape[1:])[1]
    tx = digits_ctc.make_optimizer(config)
    step = digits_ctc.train_step
    results = {{}}
    for name, devices in [("one", jax.devices()[:1]), ("four", jax.devices())]:
        mesh = digits_ctc.make_mesh(devices)
        graphdef, init = digits_ctc.init_model(config, num_rows)
        params = digits_ctc.replicate(init, mesh)
        opt_state = digits_ctc.replicate(tx.init(params), mesh)
        # Two steps: the warm-up schedule makes the first learning rate zero.
        for i in range(2):
            batch = digits_ctc.train_batch(train, i, config)
            batch = digits_ctc.shard_batch(batch, mesh)
            params, opt_state, metrics = step(
                params, opt_state, batch, graphdef=graphdef, config=config
            )
        results[name] = (params, float(metrics["loss"]), batch.frames.sharding)
    (p1, loss1, s1), (p4, loss4, s4) = results["one"], results["four"]
    def max_diff(x, y):
        return max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
        )
    print(json.dumps({{
        "devices": jax.device_count(),
        "shards": len(s4.device_set),
        "loss_one": loss1,
        "loss_four": loss4,
        "param_diff": max_diff(p1, p4),
        "moved": max_diff(p1, init),
        "param_devices": len(jax.tree.leaves(p4)[0].sharding.device_set),
    }}))
    """
)


def test_sharded_step_equals_single_device_step():
    script = SHARDED_SCRIPT.format(
        examples=str(ROOT / "examples"), flags=[*TINY_FLAGS, "--out=unused"]
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == out["shards"] == out["param_devices"] == 4
    np.testing.assert_allclose(out["loss_four"], out["loss_one"], rtol=1e-5)
    assert out["param_diff"] <= 1e-5
    # One step moved the parameters, so the comparison is not vacuous.
    assert out["moved"] > 1e-3
