"""Viterbi alignment of a batch: seqctc against plain numpy Viterbi loops.

seqctc aligns the whole batch in one jitted ``viterbi_align`` call (CTC graph,
and the blank-free segmentation graph). The baselines are two plain numpy
implementations of the same max-product recursion with back-pointers: one that
loops over frames with the whole batch vectorised, and one that loops over the
rows as well (one utterance at a time, like ``torchaudio.functional.forced_align``
is called). torchaudio itself is compared only where it imports next to this
venv's torch: installing it here would replace the shared torch, and a separate
torch + torchaudio venv is several GB, so the script says so and skips it
otherwise. Repetitions are interleaved after a warm-up; medians are reported.

Usage::

    python benchmarks/bench_align.py            # full run, writes the results file
    python benchmarks/bench_align.py --quick    # a short run
    python benchmarks/bench_align.py --out-dir docs/_results/gpu   # GPU tables
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved_ms  # noqa: E402

import seqctc  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "_results"
NEG = -1e30


def make_batch(rng, batch, frames, classes, max_labels):
    """Random logits; frame lengths in [0.8 T, T], label lengths in [N / 2, N]."""
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
    labels = rng.integers(1, classes, size=(batch, max_labels)).astype(np.int32)
    frame_lengths = rng.integers(int(0.8 * frames), frames + 1, size=batch)
    num_labels = rng.integers(max(max_labels // 2, 1), max_labels + 1, size=batch)
    frame_lengths[0], num_labels[0] = frames, max_labels
    logit_paddings = (np.arange(frames)[None] >= frame_lengths[:, None]) * 1.0
    label_paddings = (np.arange(max_labels)[None] >= num_labels[:, None]) * 1.0
    return (
        logits,
        logit_paddings.astype(np.float32),
        labels,
        label_paddings.astype(np.float32),
    )


def _log_softmax(x):
    m = np.max(x, axis=-1, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def numpy_viterbi_batched(logits, logit_paddings, labels, label_paddings):
    """CTC Viterbi in numpy: a loop over frames, the batch vectorised."""
    batch, frames, _ = logits.shape
    log_probs = _log_softmax(logits.astype(np.float32))
    valid_labels = label_paddings == 0
    num_labels = valid_labels.sum(1)
    num_frames = (logit_paddings == 0).sum(1)
    states = np.zeros((batch, 2 * labels.shape[1] + 1), np.int64)
    states[:, 1::2] = np.where(valid_labels, labels, 0)
    num_states = 2 * num_labels + 1
    in_graph = np.arange(states.shape[1])[None] < num_states[:, None]
    skip = np.zeros_like(in_graph)
    skip[:, 3::2] = valid_labels[:, 1:] & (labels[:, 1:] != labels[:, :-1])
    rows = np.arange(batch)[:, None]
    delta = np.full(states.shape, NEG, np.float32)
    delta[:, :2] = np.take_along_axis(log_probs[:, 0], states[:, :2], 1)
    delta[~in_graph] = NEG
    backs = np.zeros((frames, *states.shape), np.int8)
    for t in range(1, frames):
        prev = np.concatenate([np.full((batch, 1), NEG, np.float32), delta[:, :-1]], 1)
        prev2 = np.concatenate([np.full((batch, 2), NEG, np.float32), delta[:, :-2]], 1)
        prev2 = np.where(skip, prev2, NEG)
        cand = np.stack([delta, prev, prev2], -1)
        back = np.argmax(cand, -1).astype(np.int8)
        new = np.max(cand, -1) + log_probs[rows, t, states]
        new[~in_graph] = NEG
        live = (t < num_frames)[:, None]
        delta = np.where(live, new, delta)
        backs[t] = np.where(live, back, 0)
    last = num_states - 1
    end_blank = delta[np.arange(batch), last]
    end_label = np.where(num_labels > 0, delta[np.arange(batch), last - 1], NEG)
    state = np.where(end_blank >= end_label, last, last - 1)
    best = np.maximum(end_blank, end_label)
    path = np.zeros((batch, frames), np.int64)
    for t in range(frames - 1, -1, -1):
        path[:, t] = state
        state = state - backs[t, np.arange(batch), state]
    return path, best


def numpy_viterbi_rows(logits, logit_paddings, labels, label_paddings):
    """CTC Viterbi in numpy, one utterance at a time (a loop over rows, frames)."""
    best = []
    for b in range(logits.shape[0]):
        t_b = int(np.sum(logit_paddings[b] == 0))
        n_b = int(np.sum(label_paddings[b] == 0))
        _, score = numpy_viterbi_batched(
            logits[b : b + 1, :t_b],
            logit_paddings[b : b + 1, :t_b],
            labels[b : b + 1, :n_b],
            label_paddings[b : b + 1, :n_b],
        )
        best.append(score[0])
    return np.array(best)


def torchaudio_runner(logits, logit_paddings, labels, label_paddings):
    """``forced_align`` per utterance, or a reason why it cannot run here."""
    try:
        import torch
        import torchaudio.functional as taf

        forced_align = taf.forced_align
    except Exception as err:  # noqa: BLE001 - any import failure means "skip"
        return None, (
            f"torchaudio not importable here ({type(err).__name__}: {err}). Its "
            "wheels are built against one torch release: installing it into this "
            "venv would replace the shared torch, torchaudio 2.11 (the newest) "
            "fails to load its library next to torch 2.13, and a separate "
            "torch 2.11 + torchaudio venv is several GB of CUDA wheels."
        )
    log_probs = torch.log_softmax(torch.tensor(logits), dim=-1)
    rows = []
    for b in range(logits.shape[0]):
        t_b = int(np.sum(logit_paddings[b] == 0))
        n_b = int(np.sum(label_paddings[b] == 0))
        rows.append((log_probs[b : b + 1, :t_b], torch.tensor(labels[b : b + 1, :n_b])))

    def run():
        return [forced_align(lp, tg, blank=0) for lp, tg in rows]

    return run, None


def bench(shape, repeats, rng):
    logits, lp, labels, lap = make_batch(rng, *shape)
    align = jax.jit(seqctc.viterbi_align, static_argnames="blank_id")
    x = jax.device_put(logits)
    ours = align(x, lp, labels, lap)
    path, best = numpy_viterbi_batched(logits, lp, labels, lap)
    # Same answers: best log probabilities (float32 sums over ~1000 frames).
    diff = float(np.max(np.abs(np.asarray(ours.log_prob) - best) / np.abs(best)))
    valid = lp == 0
    same_path = float(np.mean(np.asarray(ours.states)[valid] == path[valid]))

    runners = {
        "seqctc (CTC graph)": lambda: jax.block_until_ready(align(x, lp, labels, lap)),
        "seqctc (blank-free graph)": lambda: jax.block_until_ready(
            align(x, lp, labels, lap, blank_id=None)
        ),
        "numpy, batch vectorised": lambda: numpy_viterbi_batched(
            logits, lp, labels, lap
        ),
        "numpy, one row at a time": lambda: numpy_viterbi_rows(logits, lp, labels, lap),
    }
    torch_run, torch_note = torchaudio_runner(logits, lp, labels, lap)
    if torch_run is not None:
        try:
            torch_run()
            runners["torchaudio forced_align (B=1 loop)"] = torch_run
        except Exception as err:  # noqa: BLE001 - report and go on without it
            torch_note = f"forced_align failed ({type(err).__name__}: {err})"
    return {
        "shape": shape,
        "ms": interleaved_ms(runners, repeats, warmup=1),
        "diff": diff,
        "same_path": same_path,
        "torch_note": torch_note,
    }


def table(result):
    ms = result["ms"]
    base = ms["seqctc (CTC graph)"]
    lines = [
        f"(B, T, K, N) = {result['shape']}, median of the interleaved repetitions.",
        "",
        "| implementation | ms per batch | ratio to seqctc (CTC graph) |",
        "|---|---:|---:|",
    ]
    for name, value in ms.items():
        lines.append(f"| {name} | {value:.1f} | {value / base:.2f}× |")
    lines += [
        "",
        f"- max relative difference of the best log probability, seqctc vs numpy: "
        f"{result['diff']:.1e}",
        f"- fraction of valid frames on the same path as numpy: "
        f"{result['same_path']:.4f}",
    ]
    if result["torch_note"]:
        lines.append(f"- torchaudio `forced_align` skipped: {result['torch_note']}")
    return "\n".join(lines)


def machine_facts():
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    return (
        f"- CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores visible (shared with other jobs: "
        f"only the ratios mean much)\n"
        f"- python {platform.python_version()}, jax {jax.__version__}, "
        f"numpy {np.__version__}, torch {torch_version}\n"
        f"- device: {jax.devices()[0].platform}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder of the results file (docs/_results/gpu for a GPU run)",
    )
    args = parser.parse_args()
    results = args.out_dir / "bench_align.md"
    rng = np.random.default_rng(0)
    if args.quick:
        shape, repeats = (8, 200, 32, 40), 3
    else:
        shape, repeats = (64, 1000, 32, 200), 7
    result = bench(shape, repeats, rng)
    text = table(result)
    print(text)
    if not args.quick:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(
            "# Viterbi alignment benchmark\n\n"
            "Generated by `python benchmarks/bench_align.py`.\n\n"
            f"{text}\n\n## Machine\n\n{machine_facts()}\n"
        )
        print(f"\nwrote {results}")


if __name__ == "__main__":
    main()
