"""CTC loss and value + gradient: seqctc against optax and torch, on a sweep.

Every array (logits, both paddings, labels) is an argument of the jitted
function, as in a training step. The sweep covers short and long inputs (T from
40 to 4,000, N up to 400), small, BPE-sized and OCR-sized vocabularies (K from 8
to 6,625) and batches from 1 to 128. For each shape the script times, side by
side and interleaved after a warm-up: seqctc and optax as jitted functions (the
per-row loss alone, and ``jax.value_and_grad`` of the summed loss), torch as
``log_softmax`` + ``F.ctc_loss`` (+ ``backward``) on the CPU with 2 threads.
It reports the medians, the ratios (above 1: seqctc faster), the temp memory
of the compiled XLA computations, the agreement with optax, and the distance of
each float32 gradient from seqctc's float64 gradient. It writes a table and two
figures (ratio against T, against K).

Usage::

    python benchmarks/bench_ctc.py                 # full sweep, writes docs/_results
    python benchmarks/bench_ctc.py --quick         # four shapes, writes nothing
    python benchmarks/bench_ctc.py --out-dir DIR   # results and figures into DIR
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

# (B, T, K, N): the four shapes of earlier rounds first, then the sweep.
SHAPES = [
    (1, 40, 11, 5),
    (32, 200, 32, 40),
    (16, 1000, 32, 200),
    (64, 100, 11, 5),
    (128, 50, 32, 10),
    (128, 100, 64, 20),
    (8, 1000, 32, 150),
    (8, 2000, 32, 300),
    (4, 4000, 8, 400),
    (1, 4000, 32, 400),
    (16, 500, 256, 100),
    (8, 400, 1024, 80),
    (32, 100, 1000, 20),
    (16, 100, 6625, 25),
    (1, 1000, 6625, 100),
]
QUICK = [(1, 40, 11, 5), (32, 200, 32, 40), (8, 2000, 32, 300), (16, 100, 6625, 25)]
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "_results"
# A sample of a call faster than this is the mean of several calls in a row.
MIN_SAMPLE_MS = 2.0


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


def jax_fns(loss_fn):
    """The jitted loss and value+gradient of ``loss_fn``, every array an argument."""

    def total(x, logit_paddings, labels, label_paddings):
        return jnp.sum(loss_fn(x, logit_paddings, labels, label_paddings))

    return jax.jit(loss_fn), jax.jit(jax.value_and_grad(total))


def torch_fns(logit_paddings, labels, label_paddings):
    frame_lengths = torch.tensor(np.sum(logit_paddings == 0, axis=1))
    num_labels = torch.tensor(np.sum(label_paddings == 0, axis=1))
    targets = torch.tensor(labels.astype(np.int64))

    def loss(x):
        log_probs = torch.log_softmax(x, dim=-1).transpose(0, 1)  # [T, B, K]
        return torch.nn.functional.ctc_loss(
            log_probs, targets, frame_lengths, num_labels, reduction="sum"
        )

    def value_and_grad(x):
        x = x.detach().requires_grad_(True)
        value = loss(x)
        value.backward()
        return value.detach(), x.grad

    def loss_alone(x):
        with torch.no_grad():
            return loss(x)

    return loss_alone, value_and_grad


def temp_mib(fn, *args):
    analysis = fn.lower(*args).compile().memory_analysis()
    return None if analysis is None else analysis.temp_size_in_bytes / 2**20


def bench_shape(shape, repeats, rng):
    logits, lp, labels, lap = make_batch(rng, *shape)
    args = tuple(jnp.asarray(a) for a in (logits, lp, labels, lap))
    ours_loss, ours_vg = jax_fns(seqctc.ctc_loss)
    optax_loss, optax_vg = jax_fns(optax.ctc_loss)
    torch_loss, torch_vg = torch_fns(lp, labels, lap)
    x_torch = torch.tensor(logits)

    # Same numbers: per-row losses against optax; both gradients against
    # seqctc's float64 gradient.
    loss_ours, loss_optax = ours_loss(*args), optax_loss(*args)
    loss_diff = float(np.max(np.abs(loss_ours - loss_optax) / np.abs(loss_optax)))
    _, grad_ours = ours_vg(*args)
    _, grad_optax = optax_vg(*args)
    with jax.enable_x64(True):
        _, grad_f64 = jax_fns(seqctc.ctc_loss)[1](
            jnp.asarray(logits, jnp.float64), *args[1:]
        )
        grad_f64 = np.asarray(grad_f64)
    f64_diff = {
        "seqctc": float(np.max(np.abs(np.asarray(grad_ours) - grad_f64))),
        "optax": float(np.max(np.abs(np.asarray(grad_optax) - grad_f64))),
    }

    def run(fn):
        return lambda: jax.block_until_ready(fn(*args))

    runners = {
        "seqctc vg": run(ours_vg),
        "optax vg": run(optax_vg),
        "torch vg": lambda: torch_vg(x_torch),
        "seqctc loss": run(ours_loss),
        "optax loss": run(optax_loss),
        "torch loss": lambda: torch_loss(x_torch),
    }
    return {
        "shape": shape,
        "ms": interleaved_ms(runners, repeats, warmup=2, min_sample_ms=MIN_SAMPLE_MS),
        "temp": {
            "seqctc vg": temp_mib(ours_vg, *args),
            "optax vg": temp_mib(optax_vg, *args),
            "seqctc loss": temp_mib(ours_loss, *args),
            "optax loss": temp_mib(optax_loss, *args),
        },
        "loss_rel_diff": loss_diff,
        "f64_diff": f64_diff,
    }


def ratios(row, what):
    ms = row["ms"]
    return ms[f"optax {what}"] / ms[f"seqctc {what}"], (
        ms[f"torch {what}"] / ms[f"seqctc {what}"]
    )


def _mib(value):
    return "n/a" if value is None else f"{value:.1f}"


def table(rows):
    lines = [
        "| (B, T, K, N) | value+grad ms | vs optax | vs torch | loss ms "
        "| vs optax | vs torch | temp MiB v+g (optax) | temp MiB loss (optax) "
        "| loss rel. diff | grad − f64 (optax) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms, temp, f64 = r["ms"], r["temp"], r["f64_diff"]
        vg_optax, vg_torch = ratios(r, "vg")
        lo_optax, lo_torch = ratios(r, "loss")
        lines.append(
            f"| {r['shape']} | {ms['seqctc vg']:.2f} | {vg_optax:.2f}× "
            f"| {vg_torch:.2f}× | {ms['seqctc loss']:.2f} | {lo_optax:.2f}× "
            f"| {lo_torch:.2f}× | {_mib(temp['seqctc vg'])} "
            f"({_mib(temp['optax vg'])}) | {_mib(temp['seqctc loss'])} "
            f"({_mib(temp['optax loss'])}) | {r['loss_rel_diff']:.1e} "
            f"| {f64['seqctc']:.1e} ({f64['optax']:.1e}) |"
        )
    return "\n".join(lines)


def summary(rows):
    vg = np.array([ratios(r, "vg") for r in rows])
    lo = np.array([ratios(r, "loss") for r in rows])
    return (
        f"Over the {len(rows)} shapes: value+grad {vg[:, 0].min():.2f}–"
        f"{vg[:, 0].max():.2f}× optax (geometric mean "
        f"{np.exp(np.mean(np.log(vg[:, 0]))):.2f}×), {vg[:, 1].min():.2f}–"
        f"{vg[:, 1].max():.2f}× torch; loss alone {lo[:, 0].min():.2f}–"
        f"{lo[:, 0].max():.2f}× optax (geometric mean "
        f"{np.exp(np.mean(np.log(lo[:, 0]))):.2f}×), {lo[:, 1].min():.2f}–"
        f"{lo[:, 1].max():.2f}× torch."
    )


def plot(rows, out_dir):
    """Speed-up over optax against T (K <= 64) and against K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for axis, name, keep in (
        (1, "T", lambda s: s[2] <= 64),
        (2, "K", lambda s: True),
    ):
        chosen = sorted(
            (r for r in rows if keep(r["shape"])), key=lambda r: r["shape"][axis]
        )
        if not chosen:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        xs = [r["shape"][axis] for r in chosen]
        for what, label in (("vg", "value + gradient"), ("loss", "loss alone")):
            ax.plot(xs, [ratios(r, what)[0] for r in chosen], "o-", label=label)
        for r, x in zip(chosen, xs, strict=True):
            ax.annotate(
                str(r["shape"]),
                (x, ratios(r, "vg")[0]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} (log scale)")
        ax.set_ylabel("optax time / seqctc time")
        ax.set_title(
            f"CTC speed-up over optax against {name} ({jax.default_backend()})"
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"bench_ctc_ratio_vs_{name}.png", dpi=120)
        plt.close(fig)


def machine_facts():
    return (
        f"- CPU: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} logical cores visible; torch threads: "
        f"{torch.get_num_threads()}\n"
        f"- python {platform.python_version()}, jax {jax.__version__}, "
        f"optax {optax.__version__}, torch {torch.__version__}, "
        f"numpy {np.__version__}\n"
        f"- device: {jax.devices()[0].platform} ({jax.devices()[0].device_kind})"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four shapes, no file")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--shapes", nargs="*", help="B,T,K,N shapes to run instead")
    args = parser.parse_args()
    torch.set_num_threads(2)
    repeats = args.repeats or (5 if args.quick else 9)
    shapes = QUICK if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        rows.append(bench_shape(shape, repeats, rng))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text, total = table(rows), summary(rows)
    print(f"\n{text}\n\n{total}")
    if args.quick or args.shapes:
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out_dir)
    (args.out_dir / "bench_ctc.md").write_text(
        "# CTC loss and value + gradient: seqctc vs optax vs torch\n\n"
        "Generated by `python benchmarks/bench_ctc.py`. Every array is an "
        "argument of the jitted function. seqctc and optax: the jitted per-row "
        "loss, and jitted `jax.value_and_grad` of the summed loss; torch: "
        "`log_softmax` + `F.ctc_loss` (+ `backward`) on the CPU with 2 threads. "
        f"Median of {repeats} interleaved repetitions after warm-up (a call "
        f"faster than {MIN_SAMPLE_MS:g} ms is repeated back to back within a "
        "repetition, each call waiting for its result, and the repetition "
        "counts their mean); ratios above 1 mean seqctc is faster. Temp memory "
        "is the compiled computation's "
        "`memory_analysis().temp_size_in_bytes`, optax's in parentheses. The "
        "last columns: the largest relative difference of the per-row losses "
        "from optax's, and the largest absolute difference of each float32 "
        "gradient from seqctc's float64 gradient (optax's in parentheses).\n\n"
        + text
        + "\n\n"
        + total
        + "\n\n"
        + machine_facts()
        + "\n"
    )
    print(f"\nwrote {args.out_dir / 'bench_ctc.md'}")


if __name__ == "__main__":
    main()
