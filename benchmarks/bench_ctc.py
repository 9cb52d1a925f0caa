"""CTC value + gradient: seqctc against optax and torch, side by side.

Each peer computes the summed loss and its gradient with respect to the logits:
seqctc and optax as one jitted ``jax.value_and_grad``; torch as ``log_softmax``,
``F.ctc_loss`` and ``backward`` on CPU with 2 threads. Repetitions are
interleaved (seqctc, optax, torch, seqctc, ...) after a warm-up, and the median is
reported. Peak memory is the temp size of the compiled XLA computation.

Usage::

    python benchmarks/bench_ctc.py            # full run, writes the results file
    python benchmarks/bench_ctc.py --quick    # a short run
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from _timing import interleaved_ms  # noqa: E402

import seqctc  # noqa: E402

SHAPES = [(1, 40, 11, 5), (32, 200, 32, 40), (16, 1000, 32, 200), (64, 100, 11, 5)]
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "_results" / "bench_ctc.md"


def make_batch(rng, batch, frames, classes, max_labels):
    """Random logits; frame lengths in [0.8 T, T], label lengths in [N / 2, N]."""
    logits = rng.normal(size=(batch, frames, classes)).astype(np.float32)
    labels = rng.integers(1, classes, size=(batch, max_labels)).astype(np.int32)
    frame_lengths = rng.integers(int(0.8 * frames), frames + 1, size=batch)
    num_labels = rng.integers(max(max_labels // 2, 1), max_labels + 1, size=batch)
    frame_lengths[0], num_labels[0] = frames, max_labels
    logit_paddings = seqctc.lengths_to_paddings(frame_lengths, frames)
    label_paddings = seqctc.lengths_to_paddings(num_labels, max_labels)
    return logits, np.asarray(logit_paddings), labels, np.asarray(label_paddings)


def jax_value_and_grad(loss_fn, logit_paddings, labels, label_paddings):
    def total(x):
        return jnp.sum(loss_fn(x, logit_paddings, labels, label_paddings))

    return jax.jit(jax.value_and_grad(total))


def torch_value_and_grad(logit_paddings, labels, label_paddings):
    frame_lengths = torch.tensor(np.sum(logit_paddings == 0, axis=1))
    num_labels = torch.tensor(np.sum(label_paddings == 0, axis=1))
    targets = torch.tensor(labels.astype(np.int64))

    def run(x):
        x = x.detach().requires_grad_(True)
        log_probs = torch.log_softmax(x, dim=-1).transpose(0, 1)  # [T, B, K]
        loss = torch.nn.functional.ctc_loss(
            log_probs, targets, frame_lengths, num_labels, reduction="sum"
        )
        loss.backward()
        return loss.detach(), x.grad

    return run


def temp_bytes(fn, x):
    analysis = fn.lower(x).compile().memory_analysis()
    return None if analysis is None else analysis.temp_size_in_bytes


def bench_shape(shape, repeats, rng):
    logits, lp, labels, lap = make_batch(rng, *shape)
    ours = jax_value_and_grad(seqctc.ctc_loss, lp, labels, lap)
    theirs = jax_value_and_grad(optax.ctc_loss, lp, labels, lap)
    torch_fn = torch_value_and_grad(lp, labels, lap)
    x_jax = jnp.asarray(logits)
    x_torch = torch.tensor(logits)

    ours_loss = jax.jit(lambda x: seqctc.ctc_loss(x, lp, labels, lap))
    theirs_loss = jax.jit(lambda x: optax.ctc_loss(x, lp, labels, lap))

    # Same numbers: per-row losses and gradients against optax, and both
    # libraries' gradients against seqctc's in float64.
    loss_ours = ours_loss(x_jax)
    loss_optax = theirs_loss(x_jax)
    loss_diff = float(np.max(np.abs(loss_ours - loss_optax) / np.abs(loss_optax)))
    _, grad_ours = ours(x_jax)
    _, grad_optax = theirs(x_jax)
    grad_diff = float(np.max(np.abs(grad_ours - grad_optax)))
    with jax.enable_x64(True):
        _, grad_f64 = jax_value_and_grad(seqctc.ctc_loss, lp, labels, lap)(
            jnp.asarray(logits, jnp.float64)
        )
        grad_f64 = np.asarray(grad_f64)
    f64_diff = {
        "seqctc": float(np.max(np.abs(np.asarray(grad_ours) - grad_f64))),
        "optax": float(np.max(np.abs(np.asarray(grad_optax) - grad_f64))),
    }

    runners = {
        "seqctc": lambda: jax.block_until_ready(ours(x_jax)),
        "optax": lambda: jax.block_until_ready(theirs(x_jax)),
        "torch": lambda: torch_fn(x_torch),
        "seqctc loss": lambda: jax.block_until_ready(ours_loss(x_jax)),
        "optax loss": lambda: jax.block_until_ready(theirs_loss(x_jax)),
    }
    return {
        "shape": shape,
        "ms": interleaved_ms(runners, repeats, warmup=2),
        "temp": {
            "seqctc": temp_bytes(ours, x_jax),
            "optax": temp_bytes(theirs, x_jax),
        },
        "loss_rel_diff": loss_diff,
        "grad_abs_diff": grad_diff,
        "f64_diff": f64_diff,
    }


def table(rows):
    lines = [
        "| (B, T, K, N) | seqctc ms | optax ms | torch ms | optax / seqctc "
        "| torch / seqctc | temp MiB seqctc | temp MiB optax | loss rel. diff "
        "| grad abs. diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms, temp = r["ms"], r["temp"]
        mib = {k: "n/a" if v is None else f"{v / 2**20:.2f}" for k, v in temp.items()}
        lines.append(
            f"| {r['shape']} | {ms['seqctc']:.3f} | {ms['optax']:.3f} "
            f"| {ms['torch']:.3f} | {ms['optax'] / ms['seqctc']:.2f}× "
            f"| {ms['torch'] / ms['seqctc']:.2f}× | {mib['seqctc']} | {mib['optax']} "
            f"| {r['loss_rel_diff']:.1e} | {r['grad_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def detail_table(rows):
    """Loss-only times and the gradients' distance to a float64 gradient."""
    lines = [
        "| (B, T, K, N) | seqctc loss ms | optax loss ms | optax / seqctc "
        "| grad − float64, seqctc | grad − float64, optax |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms, f64 = r["ms"], r["f64_diff"]
        lines.append(
            f"| {r['shape']} | {ms['seqctc loss']:.3f} | {ms['optax loss']:.3f} "
            f"| {ms['optax loss'] / ms['seqctc loss']:.2f}× "
            f"| {f64['seqctc']:.1e} | {f64['optax']:.1e} |"
        )
    return "\n".join(lines)


def machine_facts():
    return (
        f"- CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores visible; torch threads: "
        f"{torch.get_num_threads()}\n"
        f"- python {platform.python_version()}, jax {jax.__version__}, "
        f"optax {optax.__version__}, torch {torch.__version__}, "
        f"numpy {np.__version__}\n"
        f"- device: {jax.devices()[0].platform}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="do not write docs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    repeats = args.repeats or (5 if args.quick else 15)
    shapes = SHAPES[:2] if args.quick else SHAPES
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        rows.append(bench_shape(shape, repeats, rng))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    details = detail_table(rows)
    print()
    print(text)
    print()
    print(details)
    if not args.quick and not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# CTC value + gradient: seqctc vs optax vs torch\n\n"
            "Generated by `python benchmarks/bench_ctc.py`: jitted "
            "`jax.value_and_grad` of the summed loss for seqctc and optax, "
            "`log_softmax` + `F.ctc_loss` + `backward` for torch (CPU, 2 threads); "
            f"median of {repeats} interleaved repetitions after warm-up. Ratios "
            "above 1 mean seqctc is faster. Temp memory is "
            "`jax.jit(f).lower(x).compile().memory_analysis().temp_size_in_bytes`. "
            "The last two columns compare seqctc with optax (per-row loss, "
            "gradient).\n\n"
            + text
            + "\n\nThe loss alone (jitted forward, no gradient), and the largest "
            "absolute difference of each float32 gradient from seqctc's float64 "
            "gradient (`jax.enable_x64`) on the same inputs:\n\n"
            + details
            + "\n\n"
            + machine_facts()
            + "\n"
        )
        print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
