"""Tests of the digits example's training: end to end on a tiny config.

Two steps through `main` (plots, checkpoints, summary, the LM tuning), resume
against an uninterrupted run, a SIGKILL after a checkpoint, the three losses
against each other, the genie's frame labels against a loop over the boxes,
and the data-parallel step on four virtual CPU devices against one device.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from examples.digits import data, main, model, report, train

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A config small enough to compile and run in seconds.
TINY_FLAGS = [
    "--max-digits=3",
    "--max-gap=3",
    "--num-test=16",
    "--num-valid=16",
    "--eval-batch-size=16",
    "--features=8",
    "--hidden=8",
    "--batch-size=8",
    "--beam-width=2",
    "--lm-order=3",
    "--lm-weights=0.5,1",
    "--insertion-bonuses=0,1",
    "--warmup-steps=1",
    "--learning-rate=0.01",
    "--no-progress",
]


def tiny_config(tmp_path: pathlib.Path, *flags: str):
    return main.parse_args([*TINY_FLAGS, f"--out={tmp_path}", *flags])


def child_env(xla_flags: str = "") -> dict[str, str]:
    """The environment of a child Python: the repository on its path, and
    XLA's backend optimisations off (they change compile time, not results)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["XLA_FLAGS"] = " ".join(
        [env.get("XLA_FLAGS", ""), xla_flags, "--xla_backend_optimization_level=0"]
    ).strip()
    return env


def leaves_close(a, b, atol: float) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def test_label_error_rate_is_edit_distance_over_reference_length():
    # One substitution, one deletion, one insertion over 3 + 2 + 1 labels.
    hypotheses = [[1, 2, 4], [5], [7, 8]]
    references = [[1, 2, 3], [5, 6], [7]]
    assert train.label_error_rate(hypotheses, references) == 3 / 6


def test_flags_are_documented_and_checked(capsys):
    with pytest.raises(SystemExit):
        main.parse_args(["--help"])
    text = capsys.readouterr().out
    for field in dataclasses.fields(main.Config):
        assert "--" + field.name.replace("_", "-") in text
    with pytest.raises(ValueError, match="--max-gap"):
        main.parse_args(["--max-gap=1"])
    with pytest.raises(ValueError, match="--lm-weights"):
        main.parse_args(["--lm-weights=a,b"])
    with pytest.raises(SystemExit):
        main.parse_args(["--loss=bogus"])


@pytest.mark.long
def test_smoke_two_steps_then_resume_then_report(tmp_path):
    summary = main.main([*TINY_FLAGS, f"--out={tmp_path}", "--steps=2"])
    assert summary["steps"] == 2
    assert (
        set(summary["ler"])
        == set(summary["valid_ler"])
        == {
            "greedy",
            "beam",
            "beam+lm",
        }
    )
    # The LM settings are the best of the grid on the validation strips.
    grid = summary["lm_grid"]
    assert [row[:2] for row in grid] == [[0.5, 0.0], [0.5, 1.0], [1.0, 0.0], [1, 1]]
    best = min(grid, key=lambda row: row[2])
    assert [summary["lm"]["weight"], summary["lm"]["insertion_bonus"]] == best[:2]
    assert summary["valid_ler"]["beam+lm"] == best[2]
    for name in ("loss.png", "alignment.png", "predictions.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["ler"] == summary["ler"]
    assert (tmp_path / "checkpoints" / "2").is_dir()
    resumed = main.main(
        [*TINY_FLAGS, f"--out={tmp_path}", "--steps=3", "--resume", "--no-plots"]
    )
    assert resumed["steps"] == 3
    assert (tmp_path / "checkpoints" / "3").is_dir()
    # The results page is assembled from the summaries, figure by figure.
    page, static = tmp_path / "digits.md", tmp_path / "static"
    static.mkdir()
    report.main([str(tmp_path), "--page", str(page), "--static", str(static)])
    text = page.read_text()
    greedy = f"{100 * resumed['ler']['greedy']:.2f} %"
    assert greedy in text and f"{resumed['train_loss']:.4f}" in text
    assert "python examples/digits_ctc.py --out" in text
    assert sorted(p.name for p in static.iterdir()) == [
        "digits_alignment.png",
        "digits_loss.png",
        "digits_predictions.png",
    ]


def test_genie_frame_labels_follow_the_true_segments(tmp_path):
    config = tiny_config(tmp_path)
    batch = data.train_batch(data.load_data(config).train, 1, config)
    num_frames = batch.frames.shape[1] // config.stride
    got = np.asarray(model.frame_labels(batch, num_frames, config.stride))
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
    batch = data.train_batch(data.load_data(config).train, 0, config)
    graphdef, params = model.init_model(config, batch.frames.shape[2])
    logits, logit_paddings = train.forward(
        params, batch.frames, batch.paddings, graphdef=graphdef
    )
    losses = jax.jit(model.sequence_losses, static_argnums=(3, 4))
    ctc, viterbi, genie = (
        np.asarray(losses(logits, logit_paddings, batch, loss, config.stride))
        for loss in ("ctc", "viterbi", "framewise")
    )
    for value in (ctc, viterbi, genie):
        assert value.shape == (config.batch_size,) and np.all(np.isfinite(value))
    np.testing.assert_array_less(ctc, viterbi + 1e-4)
    np.testing.assert_array_less(viterbi, genie + 1e-4)
    assert np.all(ctc > 0) and np.any(ctc < genie - 1e-2)


@pytest.mark.long
def test_resume_equals_uninterrupted_run(tmp_path):
    # Same flags as the smoke test's resumed run: the step is compiled once.
    flags = ["--steps=3", "--checkpoint-every=1", "--eval-every=100"]
    interrupted = tiny_config(tmp_path / "a", *flags)
    first = train.train(interrupted, stop_at=2)
    assert first.step == 2
    resumed = train.train(dataclasses.replace(interrupted, resume=True))
    straight = train.train(tiny_config(tmp_path / "b", *flags))
    assert resumed.step == straight.step == 3
    leaves_close(resumed.params, straight.params, atol=1e-6)
    np.testing.assert_allclose(
        resumed.history["train"], straight.history["train"], rtol=1e-6
    )


KILLED_SCRIPT = textwrap.dedent(
    """
    import sys
    from examples.digits import main, train

    train.train(main.parse_args(sys.argv[1:]))
    """
)


@pytest.mark.long
def test_history_survives_a_kill_after_a_checkpoint(tmp_path):
    # Train in a child, SIGKILL it once the step-60 checkpoint is complete
    # (orbax renames a finished checkpoint's folder to its step), then resume:
    # the history holds every step once, 51-60 included (the losses are
    # fetched from the device in groups of 25, so a checkpoint must flush them).
    flags = [
        *TINY_FLAGS,
        f"--out={tmp_path}",
        "--steps=100000",
        "--checkpoint-every=30",
        "--eval-every=100000",
    ]
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, *flags],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 600
        while not (tmp_path / "checkpoints" / "60").is_dir():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no step-60 checkpoint"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    config = main.parse_args(flags)
    saved = train.checkpoint_manager(config).latest_step()
    assert saved >= 60 and saved % 30 == 0
    # Resume (`stop_at=saved`: restore only, no step to compile or run).
    resumed = train.train(dataclasses.replace(config, resume=True), stop_at=saved)
    assert resumed.step == saved
    steps = [step for step, _ in resumed.history["train"]]
    assert steps == list(range(1, saved + 1))
    assert all(np.isfinite(loss) for _, loss in resumed.history["train"])


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from examples.digits import data, main, model, train

    config = main.parse_args({flags!r})
    source = data.load_data(config).train
    num_rows = data.strip_shape(config, source.images.shape[1:])[1]
    tx = train.make_optimizer(config)
    results = {{}}
    for name, devices in [("one", jax.devices()[:1]), ("four", jax.devices())]:
        mesh = train.make_mesh(devices)
        graphdef, init = model.init_model(config, num_rows)
        params = train.replicate(init, mesh)
        opt_state = train.replicate(tx.init(params), mesh)
        # Two steps: the warm-up schedule makes the first learning rate zero.
        for i in range(2):
            batch = train.shard_batch(data.train_batch(source, i, config), mesh)
            params, opt_state, metrics = train.train_step(
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


@pytest.mark.long
def test_sharded_step_equals_single_device_step():
    script = SHARDED_SCRIPT.format(flags=[*TINY_FLAGS, "--out=unused"])
    env = child_env("--xla_force_host_platform_device_count=4")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
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
