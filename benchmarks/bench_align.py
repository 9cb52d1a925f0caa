"""Viterbi alignment: seqctc against torchaudio's forced_align and numpy loops.

seqctc aligns the whole batch in one jitted ``viterbi_align`` call (CTC graph,
and the blank-free segmentation graph). The peers:

- ``torchaudio.functional.forced_align``, one utterance at a time (it takes
  B = 1 only), on the same log-probabilities. torchaudio deprecated it in 2.8
  (whose warning announces its removal), and each torchaudio wheel pins one
  torch release (the project's torch has none), so it lives in a venv of its
  own: pass that venv's python with ``--torchaudio-python``; the script then
  runs a small worker in it and exchanges arrays through ``.npz`` files,
  timing it in the same rounds as the others (interleaved). Without the flag,
  torchaudio is used in-process if it imports, and skipped otherwise.
- two plain numpy implementations of the same max-product recursion (the batch
  vectorised, and one row at a time).

Checked on the shared inputs: the paths (frame labels) equal torchaudio's, the
token spans and their confidence equal ``torchaudio.functional.merge_tokens``
on the exponentiated frame scores, and the best log probabilities equal numpy's.

``--long`` adds one recording of an hour at 50 frames/s (T = 180,000 frames,
N = 40,000 labels, K = 32), run in a fresh process of this python so that its
peak resident memory is its own: the time of the first (compiling) call and its
peak RSS. torchaudio keeps T x S int8 back-pointers (14 GB there) and is not run
on it unless ``--long-torchaudio``.

Usage::

    python benchmarks/bench_align.py           # writes docs/_results/bench_align.md
    python benchmarks/bench_align.py --quick   # a short run, writes nothing
    python benchmarks/bench_align.py --long \
        --torchaudio-python ta-venv/bin/python
    python benchmarks/bench_align.py --out-dir docs/_results/gpu   # GPU tables

A torchaudio venv (CPU is enough; any python 3.11)::

    python -m venv ta-venv
    ta-venv/bin/pip install torch==2.8.0 torchaudio==2.8.0 numpy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "_results"
NEG = -1e30
LONG_SHAPE = (1, 180_000, 32, 40_000)  # B, T, K, N: an hour at 50 frames/s


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


# ---------------------------------------------------------------------------
# torchaudio, in this process or in a worker process of another python.


def _torchaudio_rows(data):
    """Per row (log_probs [1, T_b, K], targets [1, N_b]) torch tensors."""
    import torch

    rows = []
    for b in range(data["log_probs"].shape[0]):
        t_b, n_b = int(data["frame_lengths"][b]), int(data["label_lengths"][b])
        rows.append(
            (
                torch.from_numpy(
                    np.ascontiguousarray(data["log_probs"][b : b + 1, :t_b])
                ),
                torch.from_numpy(np.ascontiguousarray(data["labels"][b : b + 1, :n_b])),
            )
        )
    return rows


def _torchaudio_align(rows):
    """forced_align row by row; returns [(frame_labels, frame_scores)]."""
    import torchaudio.functional as taf

    return [taf.forced_align(lp, tg, blank=0) for lp, tg in rows]


def _torchaudio_spans(results):
    """merge_tokens on each row's exponentiated scores: [[(token, start, end, p)]]."""
    import torchaudio.functional as taf

    out = []
    for frame_labels, scores in results:
        spans = taf.merge_tokens(frame_labels[0], scores[0].exp(), blank=0)
        out.append([(s.token, s.start, s.end, s.score) for s in spans])
    return out


def worker(path):
    """The torchaudio side: reads commands on stdin, answers one line each."""
    import warnings

    import torch
    import torchaudio

    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    rows = _torchaudio_rows(dict(np.load(path)))
    print(
        json.dumps({"torch": torch.__version__, "torchaudio": torchaudio.__version__})
    )
    sys.stdout.flush()
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "run":
            start = time.perf_counter()
            _torchaudio_align(rows)
            print(json.dumps({"seconds": time.perf_counter() - start}))
        elif command[0] == "paths":
            results = _torchaudio_align(rows)
            labels = np.full(np.load(path)["log_probs"].shape[:2], -1, np.int32)
            for b, (frame_labels, _) in enumerate(results):
                labels[b, : frame_labels.shape[1]] = frame_labels[0].numpy()
            np.savez(command[1], frame_labels=labels)
            with open(command[1] + ".json", "w") as f:
                json.dump(_torchaudio_spans(results), f)
            print(json.dumps({"saved": command[1]}))
        sys.stdout.flush()


class TorchaudioPeer:
    """forced_align per utterance: in a worker process, or in this one."""

    def __init__(self, data, python):
        self.process = None
        self.note = None
        self.versions = None
        self.rows = None
        if python is None:
            try:
                import torch
                import torchaudio

                _torchaudio_align(_torchaudio_rows({k: v[:1] for k, v in data.items()}))
            except Exception as err:  # noqa: BLE001 - any failure means "skip"
                self.note = (
                    f"torchaudio not usable in this python ({type(err).__name__}: "
                    f"{err}); pass --torchaudio-python with a venv that has "
                    "torchaudio.functional.forced_align (see the script's docstring)."
                )
                return
            self.rows = _torchaudio_rows(data)
            self.versions = {
                "torch": torch.__version__,
                "torchaudio": torchaudio.__version__,
            }
            return
        self.tmp = tempfile.mkdtemp(prefix="bench_align_")
        self.inputs = os.path.join(self.tmp, "inputs.npz")
        np.savez(self.inputs, **data)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.process = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker", self.inputs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.versions = self._ask(None)

    def _ask(self, command):
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the torchaudio worker stopped")
        return json.loads(line)

    @property
    def available(self):
        return self.versions is not None

    def run(self):
        if self.process is None:
            _torchaudio_align(self.rows)
        else:
            self._ask("run")

    def seconds_of_run(self):
        """Timed inside the worker (no pipe round trip) when it is one."""
        if self.process is None:
            start = time.perf_counter()
            self.run()
            return time.perf_counter() - start
        return self._ask("run")["seconds"]

    def paths_and_spans(self, shape):
        """``[B, T]`` frame labels (-1 on padding) and the merged token spans."""
        if self.process is None:
            results = _torchaudio_align(self.rows)
            labels = np.full(shape, -1, np.int32)
            for b, (frame_labels, _) in enumerate(results):
                labels[b, : frame_labels.shape[1]] = frame_labels[0].numpy()
            return labels, _torchaudio_spans(results)
        out = os.path.join(self.tmp, "paths.npz")
        self._ask(f"paths {out}")
        with open(out + ".json") as f:
            spans = json.load(f)
        return np.load(out)["frame_labels"], spans

    def close(self):
        if self.process is not None:
            self._ask_quit()

    def _ask_quit(self):
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=30)
        except Exception:  # noqa: BLE001 - best effort
            self.process.kill()


# ---------------------------------------------------------------------------


def bench(shape, repeats, rng, torchaudio_python):
    import jax

    import seqctc

    logits, lp, labels, lap = make_batch(rng, *shape)
    align = jax.jit(seqctc.viterbi_align, static_argnames="blank_id")
    spans_fn = jax.jit(seqctc.token_spans, static_argnames="max_tokens")
    x = jax.device_put(logits)
    ours = align(x, lp, labels, lap)
    spans = spans_fn(ours, x, max_tokens=labels.shape[1])
    path, best = numpy_viterbi_batched(logits, lp, labels, lap)
    # Same answers: best log probabilities (float32 sums over ~1000 frames).
    diff = float(np.max(np.abs(np.asarray(ours.log_prob) - best) / np.abs(best)))
    valid = lp == 0
    same_path = float(np.mean(np.asarray(ours.states)[valid] == path[valid]))

    data = {
        "log_probs": _log_softmax(logits).astype(np.float32),
        "labels": labels,
        "frame_lengths": (lp == 0).sum(1),
        "label_lengths": (lap == 0).sum(1),
    }
    peer = TorchaudioPeer(data, torchaudio_python)
    checks = {}
    if peer.available:
        theirs, their_spans = peer.paths_and_spans(lp.shape)
        frame_labels = np.asarray(ours.frame_labels)
        checks["rows with identical paths"] = int(
            np.sum(np.all(frame_labels == theirs, axis=1))
        )
        checks["frames on the same class"] = float(
            np.mean(frame_labels[valid] == theirs[valid])
        )
        span_diff, same_spans = 0.0, 0
        for b, row in enumerate(their_spans):
            starts = np.asarray(spans.starts[b, : len(row)])
            ends = np.asarray(spans.ends[b, : len(row)])
            same_spans += int(
                np.array_equal(starts, [s[1] for s in row])
                and np.array_equal(ends, [s[2] for s in row])
            )
            confidence = np.asarray(spans.confidence[b, : len(row)])
            span_diff = max(
                span_diff, float(np.max(np.abs(confidence - [s[3] for s in row])))
            )
        checks["rows with identical token spans"] = same_spans
        checks["max |confidence - merge_tokens score|"] = span_diff

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
    names = list(runners)
    if peer.available:
        names.append("torchaudio forced_align (B=1 loop)")
    # Warm-up round, then interleaved rounds; the median of each.
    for run in runners.values():
        run()
    if peer.available:
        peer.run()
    times = {name: [] for name in names}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        if peer.available:
            times[names[-1]].append(peer.seconds_of_run())
    peer.close()
    return {
        "shape": shape,
        "ms": {name: 1e3 * float(np.median(t)) for name, t in times.items()},
        "diff": diff,
        "same_path": same_path,
        "checks": checks,
        "torch_note": peer.note,
        "versions": peer.versions,
        "repeats": repeats,
    }


def table(result):
    ms = result["ms"]
    base = ms["seqctc (CTC graph)"]
    batch = result["shape"][0]
    lines = [
        f"(B, T, K, N) = {result['shape']}, frame lengths in [0.8 T, T], label "
        f"lengths in [N/2, N]; median of {result['repeats']} interleaved rounds.",
        "",
        "| implementation | ms per batch | sequences / s | time / seqctc (CTC graph) |",
        "|---|---:|---:|---:|",
    ]
    for name, value in ms.items():
        rate = 1e3 * batch / value
        lines.append(f"| {name} | {value:.1f} | {rate:.0f} | {value / base:.2f}× |")
    lines += [
        "",
        f"- max relative difference of the best log probability, seqctc vs numpy: "
        f"{result['diff']:.1e}",
        f"- fraction of valid frames on the same path as numpy: "
        f"{result['same_path']:.4f}",
    ]
    for name, value in result["checks"].items():
        if isinstance(value, int):
            lines.append(f"- torchaudio check, {name}: {value} of {batch}")
        elif name.startswith("frames"):
            lines.append(f"- torchaudio check, {name}: {value:.4f}")
        else:
            lines.append(f"- torchaudio check, {name}: {value:.1e}")
    if result["versions"]:
        lines.append(
            f"- torchaudio {result['versions']['torchaudio']} with torch "
            f"{result['versions']['torch']} (its own venv, timed in a worker "
            "process in the same rounds)"
        )
    if result["torch_note"]:
        lines.append(f"- torchaudio `forced_align` skipped: {result['torch_note']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The long recording, in a process of its own.


def _peak_rss_gib():
    """Peak resident memory of this process (GiB): VmHWM, the high-water mark
    of its own address space. ``ru_maxrss`` would do but for a Linux detail:
    it keeps the parent's mark across ``vfork`` + ``exec``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def long_child(out, pinned=False):
    """Runs the long case once in this (fresh) process; writes a JSON result.

    ``pinned``: first restrict the process to one core (before jax starts, so
    that XLA sizes its thread pool to it).
    """
    if pinned:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import jax

    import seqctc

    batch, frames, classes, max_labels = LONG_SHAPE
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
    labels = rng.integers(1, classes, size=(batch, max_labels)).astype(np.int32)
    lp = np.zeros((batch, frames), np.float32)
    lap = np.zeros((batch, max_labels), np.float32)
    before = _peak_rss_gib()
    start = time.perf_counter()
    compiled = jax.jit(seqctc.viterbi_align).lower(logits, lp, labels, lap).compile()
    compiled_at = time.perf_counter()
    result = jax.block_until_ready(compiled(logits, lp, labels, lap))
    done = time.perf_counter()
    spans = jax.block_until_ready(
        jax.jit(seqctc.token_spans, static_argnames="max_tokens")(
            result, logits, max_tokens=max_labels
        )
    )
    memory = compiled.memory_analysis()
    Path(out).write_text(
        json.dumps(
            {
                "compile_s": compiled_at - start,
                "run_s": done - compiled_at,
                "log_prob": float(result.log_prob[0]),
                "tokens_found": int(np.sum(np.asarray(spans.tokens[0]) >= 0)),
                "rss_before_gib": before,
                "peak_rss_gib": _peak_rss_gib(),
                "temp_gib": getattr(memory, "temp_size_in_bytes", 0) / 2**30,
            }
        )
    )


def long_torchaudio_child(out):
    """torchaudio on the long case (needs ~T * S bytes of back-pointers)."""
    import torch
    import torchaudio.functional as taf

    batch, frames, classes, max_labels = LONG_SHAPE
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
    labels = rng.integers(1, classes, size=(batch, max_labels)).astype(np.int32)
    log_probs = torch.log_softmax(torch.from_numpy(logits), dim=-1)
    start = time.perf_counter()
    taf.forced_align(log_probs, torch.from_numpy(labels), blank=0)
    seconds = time.perf_counter() - start
    Path(out).write_text(
        json.dumps({"run_s": seconds, "peak_rss_gib": _peak_rss_gib()})
    )


def run_long(python, child_flag):
    """Runs a long-case child; returns its JSON result and its peak RSS (GiB).

    The child reports its own peak (VmHWM: what ``/usr/bin/time -v`` prints as
    "Maximum resident set size" when it runs the child by itself).
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "long.json")
        start = time.perf_counter()
        proc = subprocess.run(
            [python, os.path.abspath(__file__), child_flag, out],
            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"),
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(out):
            return {"failed": proc.returncode, "wall_s": wall}, float("nan")
        result = json.loads(Path(out).read_text())
        result["wall_s"] = wall
        return result, result["peak_rss_gib"]


def _long_row(name, result, peak):
    if "failed" in result:
        return f"| {name} | failed ({result['failed']}) | | | | |"
    total = result["compile_s"] + result["run_s"]
    return (
        f"| {name} | {result['compile_s']:.1f} | {result['run_s']:.1f} "
        f"| {total:.1f} | {result['wall_s']:.1f} | {peak:.2f} |"
    )


def long_table(ours, ours_peak, pinned, theirs):
    batch, frames, classes, max_labels = LONG_SHAPE
    lines = [
        f"One recording: T = {frames:,} frames (an hour at 50 frames/s), "
        f"N = {max_labels:,} labels (S = {2 * max_labels + 1:,} states), "
        f"K = {classes}, "
        "random logits; a fresh process, jitted, no flag (the checkpointed path "
        "is chosen from the sizes). Targets: ≤ 5 min and ≤ 2 GiB on 2 CPU cores.",
        "",
        "| | compile s | run s | total s | process wall s | peak RSS GiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines.append(_long_row("seqctc `viterbi_align`", ours, ours_peak))
    if pinned is not None:
        lines.append(_long_row("the same, process pinned to one core", *pinned))
    if theirs is not None:
        result, peak = theirs
        if "failed" in result:
            failed = result["failed"]
            lines.append(f"| torchaudio `forced_align` | | failed ({failed}) | | | |")
        else:
            lines.append(
                f"| torchaudio `forced_align` | | {result['run_s']:.1f} | | "
                f"{result['wall_s']:.1f} | {peak:.2f} |"
            )
    else:
        need = frames * (2 * max_labels + 1) / 2**30
        lines.append(
            f"| torchaudio `forced_align` | not run | | | | ≥ {need:.1f} "
            "(T × S int8 back-pointers) |"
        )
    if "failed" not in ours:
        lines += [
            "",
            f"- seqctc: log probability of the path {ours['log_prob']:.1f}, "
            f"{ours['tokens_found']:,} token spans; compiled temporary buffers "
            f"{ours['temp_gib']:.2f} GiB; the process held "
            f"{ours['rss_before_gib']:.2f} GiB (python, jax, the inputs) before "
            "the call.",
        ]
    if pinned is not None:
        lines.append(
            "- pinned: `os.sched_setaffinity` to one core before jax starts (as "
            "`taskset -c 0` would). XLA splits each frame's update of the "
            "S states over its threads and waits for the slowest; on cores "
            "shared with other jobs that wait dominates."
        )
    return "\n".join(lines)


def machine_facts(versions):
    import jax

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    line = (
        f"- CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores visible (shared with other jobs: "
        f"only the ratios mean much)\n"
        f"- python {platform.python_version()}, jax {jax.__version__}, "
        f"numpy {np.__version__}, torch {torch_version}\n"
        f"- device: {jax.devices()[0].platform}"
    )
    if versions:
        line += (
            f"\n- torchaudio venv: torchaudio {versions['torchaudio']}, "
            f"torch {versions['torch']}"
        )
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder of the results file (docs/_results/gpu for a GPU run)",
    )
    parser.add_argument(
        "--torchaudio-python",
        help="python of a venv with torchaudio's forced_align (torchaudio 2.8)",
    )
    parser.add_argument(
        "--long", action="store_true", help="add the one-hour recording (T = 180,000)"
    )
    parser.add_argument(
        "--long-torchaudio",
        action="store_true",
        help="also run torchaudio on the long recording (needs ~14 GB)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--long-child", help=argparse.SUPPRESS)
    parser.add_argument("--long-child-pinned", help=argparse.SUPPRESS)
    parser.add_argument("--long-torchaudio-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.long_child:
        return long_child(args.long_child)
    if args.long_child_pinned:
        return long_child(args.long_child_pinned, pinned=True)
    if args.long_torchaudio_child:
        return long_torchaudio_child(args.long_torchaudio_child)

    results = args.out_dir / "bench_align.md"
    rng = np.random.default_rng(0)
    if args.quick:
        shape, repeats = (8, 200, 32, 40), 3
    else:
        shape, repeats = (64, 1000, 32, 200), 7
    long_text = None
    if args.long:  # first, from a small parent process
        ours = run_long(sys.executable, "--long-child")
        pinned = None
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
            pinned = run_long(sys.executable, "--long-child-pinned")
        theirs = None
        if args.long_torchaudio:
            theirs = run_long(
                args.torchaudio_python or sys.executable, "--long-torchaudio-child"
            )
        long_text = "## One long recording\n\n" + long_table(*ours, pinned, theirs)
        print(long_text + "\n", flush=True)
    result = bench(shape, repeats, rng, args.torchaudio_python)
    text = "## A batch\n\n" + table(result)
    print(text, flush=True)
    if long_text:
        text += "\n\n" + long_text
    if not args.quick:
        command = "python benchmarks/bench_align.py"
        if args.torchaudio_python:
            command += " --torchaudio-python PATH"
        if args.long:
            command += " --long"
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(
            "# Viterbi alignment benchmark\n\n"
            f"Generated by `{command}`.\n\n"
            f"{text}\n\n## Machine\n\n{machine_facts(result['versions'])}\n"
        )
        print(f"\nwrote {results}")


if __name__ == "__main__":
    main()
