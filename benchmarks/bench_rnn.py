"""GRU and LSTM layers forward + backward: seqctc vs flax.nnx.RNN vs torch.

GRU: ``scan_rnn(gru_step)`` vs ``flax.nnx.RNN(nnx.GRUCell)`` vs ``torch.nn.GRU``;
LSTM: ``scan_rnn(lstm_step)`` vs ``flax.nnx.RNN(nnx.OptimizedLSTMCell)`` vs
``torch.nn.LSTM``. Each call computes the gradient of the sum of a layer's
outputs w.r.t. the parameters and the inputs. The JAX calls are jitted; torch
runs on the CPU with two threads. The peers run interleaved in one process on
the same inputs; the warm-up (compilation) is excluded and each figure is the
median of the timed repetitions. ``seqctc`` is the default strategy
(batch-major loop with the input projection inside, the cell's hand backward in
reverse mode, weight gradients as one matmul over all frames); the last column
is ``scan_rnn``'s alternative strategy (time-major ``lax.scan`` differentiated
by JAX), kept to justify the choice.

Run from the repository root::

    python benchmarks/bench_rnn.py           # writes docs/_results/bench_rnn.md
    python benchmarks/bench_rnn.py --quick   # a short run, nothing written
    python benchmarks/bench_rnn.py --quick --cells lstm
    python benchmarks/bench_rnn.py --out-dir DIR   # writes DIR/bench_rnn.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import interleaved_ms  # noqa: E402
from flax import nnx  # noqa: E402

import seqctc  # noqa: E402
from seqctc import _scan  # noqa: E402

SHAPES = [(64, 100, 8, 128), (32, 500, 64, 256)]
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "_results" / "bench_rnn.md"


@contextlib.contextmanager
def strategy(name: str):
    """Traces ``scan_rnn`` with one of its internal strategies."""
    old = _scan._STRATEGY
    _scan._STRATEGY = name
    try:
        yield
    finally:
        _scan._STRATEGY = old


STEPS = {"gru": seqctc.gru_step, "lstm": seqctc.lstm_step}
INITS = {"gru": seqctc.init_gru_params, "lstm": seqctc.init_lstm_params}
FLAX_CELLS = {"gru": nnx.GRUCell, "lstm": nnx.OptimizedLSTMCell}
TORCH = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}


def make_seqctc(cell, params, x, paddings, name: str):
    def loss(params, x, paddings):
        outputs, _ = seqctc.scan_rnn(STEPS[cell], params, x, paddings)
        return jnp.sum(outputs)

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    with strategy(name):
        jax.block_until_ready(fn(params, x, paddings))  # compile, chosen strategy
    return lambda: jax.block_until_ready(fn(params, x, paddings))


def make_flax(cell, d, h, x):
    rnn = nnx.RNN(FLAX_CELLS[cell](d, h, rngs=nnx.Rngs(0)), rngs=False)
    graphdef, state = nnx.split(rnn)
    zeros = jnp.zeros((x.shape[0], h), jnp.float32)
    carry = zeros if cell == "gru" else (zeros, zeros)

    def loss(state, x, carry):
        model = nnx.merge(graphdef, state)
        return jnp.sum(model(x, initial_carry=carry))

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(fn(state, x, carry))
    return lambda: jax.block_until_ready(fn(state, x, carry))


def make_torch(cell, d, h, x_np):
    module = TORCH[cell](d, h, batch_first=True)
    x = torch.from_numpy(x_np).requires_grad_(True)

    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        outputs, _ = module(x)
        outputs.sum().backward()

    run()
    return run


def bench(cell, shape, reps: int):
    b, t, d, h = shape
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(b, t, d)).astype(np.float32)
    x = jnp.asarray(x_np)
    paddings = jnp.zeros((b, t), jnp.float32)
    params = INITS[cell](jax.random.key(0), d, h)
    runners = {
        "seqctc": make_seqctc(cell, params, x, paddings, "fused"),
        "loop + autodiff": make_seqctc(cell, params, x, paddings, "loop"),
        "flax nnx": make_flax(cell, d, h, x),
        "torch": make_torch(cell, d, h, x_np),
    }
    return interleaved_ms(runners, reps)  # the makers compile


def table(rows) -> str:
    lines = [
        "| cell | (B, T, D, H) | seqctc ms | flax nnx ms | torch ms | flax / seqctc "
        "| torch / seqctc | loop + autodiff ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell, shape, ms in rows:
        s = ms["seqctc"]
        lines.append(
            f"| {cell.upper()} | {shape} | {s:.1f} | {ms['flax nnx']:.1f} "
            f"| {ms['torch']:.1f} | {ms['flax nnx'] / s:.2f}x "
            f"| {ms['torch'] / s:.2f}x | {ms['loop + autodiff']:.1f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run, no file")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--cells", nargs="+", default=["gru", "lstm"])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=RESULTS.parent,
        help="folder for bench_rnn.md (default docs/_results)",
    )
    args = parser.parse_args()
    results = args.out_dir / RESULTS.name
    torch.set_num_threads(2)
    reps = 3 if args.quick else max(args.reps, 10)
    shapes = SHAPES[:1] if args.quick else SHAPES
    rows = [
        (cell, shape, bench(cell, shape, reps))
        for cell in args.cells
        for shape in shapes
    ]
    text = table(rows)
    print(text)
    if args.quick:
        return
    facts = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs "
        f"({jax.devices()[0].platform}), Python {platform.python_version()}; "
        f"jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__} "
        f"(2 threads); load average {os.getloadavg()[0]:.1f} at the end (the "
        "machine is shared, so only the ratios mean anything). "
        f"Median of {reps} interleaved repetitions after a warm-up; "
        "time of one jitted gradient of the summed outputs w.r.t. parameters and "
        "inputs (float32), every array an argument of the jitted function. "
        "flax runs `nnx.RNN(nnx.GRUCell)` and `nnx.RNN(nnx.OptimizedLSTMCell)` "
        "with an explicit zero carry. Ratios above 1 mean seqctc is faster.\n"
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(
        "<!-- written by benchmarks/bench_rnn.py -->\n\n"
        "GRU and LSTM layers forward + backward "
        "(`python benchmarks/bench_rnn.py`):\n\n"
        f"{text}\n\n{facts}"
    )
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
