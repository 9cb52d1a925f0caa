"""CTC beam search and greedy decoding: seqctc against its peers, side by side.

Peers, all on the same inputs in one process:

- fast-ctc-decode ``beam_search`` (native Rust, one utterance per call,
  probabilities ``[T, K]`` float32, blank first, ``beam_size=16``,
  ``beam_cut_threshold=0`` so that nothing is pruned);
- pyctcdecode without LM (pure Python, one utterance per call, log-probs
  ``[T, K]``, blank ``""`` first, ``beam_width=16``; its pruning is switched off
  with ``beam_prune_logp=token_min_logp=-1e9``, so it prunes no more than we do);
- ``keras.ops.ctc_decode(strategy="beam_search", beam_width=16)`` on the JAX
  backend, jitted, whole batch; its work per frame grows with ``T``, so for
  ``T > 50`` it runs on the first 50 frames of 4 utterances only and its time is
  scaled by ``T / 50`` (which flatters keras a lot);
- greedy: ``seqctc.greedy_decode`` against ``keras.ops.ctc_decode(strategy="greedy")``.

seqctc decodes the whole batch in one jitted ``beam_decode`` call (beam width 16,
exact prefix beam search, no pruning options). The slow Python peer decodes a
subset of the utterances per repetition; throughput is utterances per second
either way. Repetitions are interleaved after a warm-up, the median is reported.

Top-1 agreement: how often a peer's best hypothesis equals ours, and how often
ours is at least as likely, scoring both with ``seqctc.ctc_loss`` (the exact
``log p(labels | x)``).

Inputs: random-but-peaky logits (a Gaussian background plus a spike of random
height on a blank-heavy random class sequence, like a trained model) for
``(B, T, K) = (32, 200, 32)`` and ``(8, 1000, 64)``, and the real handwriting
logits of ``tests/data/ctcdecoder-samples`` (2 utterances, T = 100 and
32, K = 80, blank = 79).

Usage::

    python benchmarks/bench_decode.py            # full run, writes the results
    python benchmarks/bench_decode.py --quick    # a short run
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from fast_ctc_decode import beam_search as fcd_beam_search  # noqa: E402
from pyctcdecode import build_ctcdecoder  # noqa: E402

import seqctc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "_results" / "bench_decode.md"
DATA = ROOT / "tests" / "data" / "ctcdecoder-samples"
WIDTH = 16
KERAS_MAX_FRAMES = 50
KERAS_MAX_UTTS = 4


def peaky_logits(rng, batch, frames, classes):
    """Gaussian logits plus a spike of height 2..10 on a blank-heavy path."""
    logits = 1.5 * rng.normal(size=(batch, frames, classes))
    path = rng.integers(1, classes, size=(batch, frames))
    path = np.where(rng.random((batch, frames)) < 0.6, 0, path)
    # Tokens last a few frames, as in a trained model.
    path = np.repeat(path[:, ::3], 3, axis=1)[:, :frames]
    height = rng.uniform(2.0, 10.0, size=(batch, frames))
    np.put_along_axis(
        logits,
        path[:, :, None],
        np.take_along_axis(logits, path[:, :, None], -1) + height[:, :, None],
        -1,
    )
    lengths = rng.integers(int(0.8 * frames), frames + 1, size=batch)
    lengths[0] = frames
    return logits.astype(np.float32), lengths, 0


def handwriting_logits():
    rows = []
    for name in ("line", "word"):
        raw = np.loadtxt(
            DATA / f"harald_{name}_rnnOutput.csv", delimiter=";", usecols=range(80)
        )
        rows.append(raw.astype(np.float32))
    frames = max(len(r) for r in rows)
    logits = np.zeros((len(rows), frames, 80), np.float32)
    for i, r in enumerate(rows):
        logits[i, : len(r)] = r
    return logits, np.array([len(r) for r in rows]), 79


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return (x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))).astype(np.float32)


class Case:
    """One input batch and every decoder run on it."""

    def __init__(self, name, logits, lengths, blank, slow_utts):
        self.name = name
        self.logits, self.lengths, self.blank = logits, lengths, blank
        batch, frames, classes = logits.shape
        self.shape = (batch, frames, classes)
        self.paddings = np.asarray(seqctc.lengths_to_paddings(lengths, frames))
        # Peers want the blank first: class i of theirs is perm[i] of ours.
        self.perm = np.array([blank] + [k for k in range(classes) if k != blank])
        lp = log_softmax(logits)[:, :, self.perm]
        self.peer_log_probs = [lp[b, : lengths[b]] for b in range(batch)]
        self.peer_probs = [np.exp(x).astype(np.float32) for x in self.peer_log_probs]
        self.alphabet = "".join(chr(0x4E00 + i) for i in range(classes))
        self.char_to_class = {c: int(self.perm[i]) for i, c in enumerate(self.alphabet)}
        self.slow_utts = min(slow_utts, batch)

        self.ours = jax.jit(
            functools.partial(seqctc.beam_decode, beam_width=WIDTH, blank_id=blank)
        )
        self.ours_greedy = jax.jit(
            functools.partial(seqctc.greedy_decode, blank_id=blank)
        )
        self.keras_frames = min(frames, KERAS_MAX_FRAMES)
        self.keras_scale = frames / self.keras_frames
        self.keras_utts = min(batch, KERAS_MAX_UTTS)
        self.keras_logits = jnp.asarray(logits[: self.keras_utts, : self.keras_frames])
        self.keras_lengths = jnp.asarray(
            np.minimum(lengths[: self.keras_utts], self.keras_frames)
        )

        def keras_beam(x, lengths):
            return keras.ops.ctc_decode(
                x, lengths, strategy="beam_search", beam_width=WIDTH, mask_index=blank
            )

        def keras_greedy(x, lengths):
            return keras.ops.ctc_decode(x, lengths, strategy="greedy", mask_index=blank)

        self.keras_beam = jax.jit(keras_beam)
        self.keras_greedy = jax.jit(keras_greedy)
        self.pyctc = build_ctcdecoder([""] + list(self.alphabet[1:]))
        self.x = jnp.asarray(logits)
        self.p = jnp.asarray(self.paddings)
        self.outputs = {}

    # Each runner returns (seconds, utterances decoded) and stores its output.
    def run_ours(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(self.ours(self.x, self.p))
        self.outputs["ours"] = out
        return time.perf_counter() - t0, self.shape[0]

    def run_ours_greedy(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(self.ours_greedy(self.x, self.p))
        self.outputs["ours_greedy"] = out
        return time.perf_counter() - t0, self.shape[0]

    def run_fcd(self):
        t0 = time.perf_counter()
        seqs = [
            fcd_beam_search(p, self.alphabet, beam_size=WIDTH, beam_cut_threshold=0.0)[
                0
            ]
            for p in self.peer_probs
        ]
        dt = time.perf_counter() - t0
        self.outputs["fast-ctc-decode"] = [
            [self.char_to_class[c] for c in s] for s in seqs
        ]
        return dt, self.shape[0]

    def run_pyctc(self):
        t0 = time.perf_counter()
        texts = [
            self.pyctc.decode_beams(
                lp, beam_width=WIDTH, beam_prune_logp=-1e9, token_min_logp=-1e9
            )[0][0]
            for lp in self.peer_log_probs[: self.slow_utts]
        ]
        dt = time.perf_counter() - t0
        self.outputs["pyctcdecode"] = [
            [self.char_to_class[c] for c in t] for t in texts
        ]
        return dt, self.slow_utts

    def run_keras(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(
            self.keras_beam(self.keras_logits, self.keras_lengths)
        )
        dt = time.perf_counter() - t0
        self.outputs["keras"] = out
        return dt * self.keras_scale, self.keras_utts

    def run_keras_greedy(self):
        t0 = time.perf_counter()
        out = jax.block_until_ready(
            self.keras_greedy(self.x, jnp.asarray(self.lengths))
        )
        self.outputs["keras_greedy"] = out
        return time.perf_counter() - t0, self.shape[0]


def token_lists(tokens, lengths):
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [list(map(int, tokens[b, : lengths[b]])) for b in range(len(lengths))]


def keras_lists(decoded):
    paths = np.asarray(decoded[0])[0]  # [B, T], −1 padded
    return [[int(k) for k in row if k >= 0] for row in paths]


def log_likelihood(logits, lengths, seqs, blank):
    """log p(seq | x) per utterance, exact CTC."""
    batch, frames, _ = logits.shape
    max_len = max(1, max(len(s) for s in seqs))
    labels = np.zeros((batch, max_len), np.int32)
    label_paddings = np.ones((batch, max_len), np.float32)
    for b, s in enumerate(seqs):
        labels[b, : len(s)] = s
        label_paddings[b, : len(s)] = 0.0
    paddings = seqctc.lengths_to_paddings(lengths, frames)
    loss = seqctc.ctc_loss(logits, paddings, labels, label_paddings, blank_id=blank)
    return -np.asarray(loss, np.float64)


def agreement(case, ours, theirs, logits=None, lengths=None):
    """(top-1 equal fraction, ours at least as likely fraction)."""
    n = len(theirs)
    logits = case.logits[:n] if logits is None else logits[:n]
    lengths = case.lengths[:n] if lengths is None else lengths[:n]
    ours = ours[:n]
    same = np.mean([a == b for a, b in zip(ours, theirs, strict=True)])
    ll_ours = log_likelihood(logits, lengths, ours, case.blank)
    ll_theirs = log_likelihood(logits, lengths, theirs, case.blank)
    at_least = np.mean(ll_ours >= ll_theirs - 1e-4 * np.abs(ll_theirs) - 1e-4)
    return same, at_least


def bench_case(case, repeats):
    runners = {
        "seqctc beam_decode": case.run_ours,
        "fast-ctc-decode": case.run_fcd,
        "pyctcdecode": case.run_pyctc,
        "keras beam_search": case.run_keras,
        "seqctc greedy_decode": case.run_ours_greedy,
        "keras greedy": case.run_keras_greedy,
    }
    for run in runners.values():  # warm-up and compilation
        run()
    per_utt = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            dt, n = run()
            per_utt[name].append(dt / n)
    med = {name: float(np.median(v)) for name, v in per_utt.items()}

    ours = token_lists(
        case.outputs["ours"].tokens[:, 0], case.outputs["ours"].lengths[:, 0]
    )
    agree = {
        "fast-ctc-decode": agreement(case, ours, case.outputs["fast-ctc-decode"]),
        "pyctcdecode": agreement(case, ours, case.outputs["pyctcdecode"]),
    }
    # keras saw only the first KERAS_MAX_FRAMES frames: compare on those.
    kf = case.keras_frames
    k_lengths = np.minimum(case.lengths[: case.keras_utts], kf)
    ours_capped = case.ours(
        case.keras_logits, seqctc.lengths_to_paddings(k_lengths, kf)
    )
    agree["keras beam_search"] = agreement(
        case,
        token_lists(ours_capped.tokens[:, 0], ours_capped.lengths[:, 0]),
        keras_lists(case.outputs["keras"]),
        logits=case.logits[: case.keras_utts, :kf],
        lengths=k_lengths,
    )
    greedy = case.outputs["ours_greedy"]
    same_greedy = np.mean(
        [
            a == b
            for a, b in zip(
                token_lists(greedy.tokens, greedy.lengths),
                keras_lists(case.outputs["keras_greedy"]),
                strict=True,
            )
        ]
    )
    agree["keras greedy"] = (same_greedy, float("nan"))
    return med, agree


def versions():
    names = ["jax", "keras", "numpy", "fast-ctc-decode", "pyctcdecode"]
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    rng = np.random.default_rng(0)
    cases = [
        Case("random (32, 200, 32)", *peaky_logits(rng, 32, 200, 32), slow_utts=2),
        Case("random (8, 1000, 64)", *peaky_logits(rng, 8, 1000, 64), slow_utts=1),
        Case("handwriting (2, 100, 80)", *handwriting_logits(), slow_utts=2),
    ]
    if args.quick:
        cases = cases[:1] + cases[2:]

    lines = [
        "| input (B, T, K) | decoder | utt/s | seqctc speed-up | top-1 = seqctc "
        "| seqctc top-1 at least as likely |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case in cases:
        med, agree = bench_case(case, repeats)
        for name, t in med.items():
            ours = med[
                "seqctc greedy_decode" if "greedy" in name else "seqctc beam_decode"
            ]
            same, at_least = agree.get(name, (float("nan"), float("nan")))
            note = ""
            if name == "keras beam_search" and case.keras_scale != 1:
                note = (
                    f" ({case.keras_utts} utts, first {case.keras_frames} frames,"
                    f" time ×{case.keras_scale:g})"
                )
            if name == "pyctcdecode" and case.slow_utts < case.shape[0]:
                note = f" ({case.slow_utts} of {case.shape[0]} utts)"
            fmt = lambda v: "–" if np.isnan(v) else f"{100 * v:.0f} %"  # noqa: E731
            lines.append(
                f"| {case.name} | {name}{note} | {1 / t:,.1f} | {t / ours:,.1f}× "
                f"| {'–' if name.startswith('seqctc') else fmt(same)} "
                f"| {'–' if name.startswith('seqctc') else fmt(at_least)} |"
            )
        print("\n".join(lines[-len(med) :]), flush=True)
    table = "\n".join(lines)
    facts = (
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared), {platform.system()}; "
        f"{jax.devices()[0].platform.upper()} backend; {versions()}. "
        f"Median of {repeats} interleaved repetitions after a warm-up; "
        f"beam width {WIDTH}."
    )
    print()
    print(table)
    print(facts)
    if not args.no_write and not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# Decoding benchmark\n\n"
            "Generated by `python benchmarks/bench_decode.py`.\n\n"
            + table
            + "\n\n"
            + facts
            + "\n\n"
            + NOTES
        )


NOTES = """\
Notes: throughput is utterances per second; "seqctc speed-up" is the peer's
time per utterance over seqctc's (beam rows against `beam_decode`, greedy rows
against `greedy_decode`). seqctc decodes the whole batch in one jitted call;
fast-ctc-decode and pyctcdecode decode one utterance per call (pyctcdecode on a
subset of the batch, it is slow), with their pruning switched off
(`beam_cut_threshold=0`; `beam_prune_logp=token_min_logp=-1e9`). keras'
beam search re-reads its whole `[2W, T]` path buffer every frame (about 10 s per
utterance at T = 200 here); it decodes the first 50 frames of at most 4
utterances and its time is multiplied by T / 50, which underestimates its cost,
and its top-1 is compared with seqctc's on those 50 frames. "At least as
likely" compares the exact CTC log-likelihood (`seqctc.ctc_loss`) of the two
top-1 hypotheses.
"""


if __name__ == "__main__":
    main()
