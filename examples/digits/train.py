"""Training and evaluation: jitted steps, checkpoints, `train_and_evaluate`.

Training is data parallel over every local device (and every host, with
``--coordinator-address``): the batch is sharded over a 1-D mesh, parameters
are replicated, and the same code runs on one CPU, eight GPUs or a TPU slice.
Checkpoints are written with orbax; ``--resume`` (or Ctrl-C and ``--resume``)
continues exactly where the run stopped, loss history included.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import pathlib
import platform
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from rapidfuzz.distance import Levenshtein
from tqdm.auto import tqdm

import seqctc

from . import data as data_lib
from . import plots
from .config import Config, floats
from .data import BLANK_ID, NUM_CLASSES, Batch, Splits
from .model import init_model, loss_fn

# ---------------------------------------------------------------------------
# Training and evaluation steps.
# ---------------------------------------------------------------------------


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """adamw on a warm-up + cosine schedule, after global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_steps, config.steps // 2),
        decay_steps=config.steps,
        end_value=config.learning_rate * 0.01,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


@functools.partial(
    jax.jit, static_argnames=("graphdef", "config"), donate_argnums=(0, 1)
)
def train_step(params, opt_state, batch: Batch, *, graphdef, config: Config):
    """One optimisation step: ``(params, opt_state, metrics)``.

    Compiled once per model and config: every batch has the same padded shape.
    """
    tx = make_optimizer(config)
    value, grads = jax.value_and_grad(loss_fn)(
        params, graphdef, batch, config.loss, config.stride
    )
    # optax's bias correction mixes its int32 step count with floats, which
    # the tests' strict dtype promotion would reject.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {"loss": value, "grad_norm": optax.tree.norm(grads)}
    return params, opt_state, metrics


@functools.partial(jax.jit, static_argnames="graphdef")
def forward(params, frames, paddings, *, graphdef):
    """``[B, T, D]`` strips to ``[B, T/stride, 11]`` logits and their paddings."""
    return nnx.merge(graphdef, params)(frames, paddings)


@jax.jit
def greedy_search(logits, logit_paddings):
    """Best-path decoding: ``(tokens [B, T'], lengths [B])``."""
    out = seqctc.greedy_decode(logits, logit_paddings, blank_id=BLANK_ID)
    return out.tokens, out.lengths


@functools.partial(jax.jit, static_argnames="beam_width")
def beam_search(
    logits, logit_paddings, lm, lm_weight, insertion_bonus, *, beam_width: int
):
    """Prefix beam search fused with an n-gram LM: ``(tokens, lengths)``.

    The weights are traced, so one compiled search serves every weight tried,
    and ``lm_weight=0, insertion_bonus=0`` is the plain beam search.
    """
    out = seqctc.beam_decode(
        logits,
        logit_paddings,
        beam_width=beam_width,
        blank_id=BLANK_ID,
        lm=lm,
        lm_weight=lm_weight,
        insertion_bonus=insertion_bonus,
    )
    return out.tokens[:, 0], out.lengths[:, 0]


@jax.jit
def align(logits, logit_paddings, labels, label_paddings):
    """The Viterbi alignment of the labels (for the plots)."""
    return seqctc.viterbi_align(
        logits, logit_paddings, labels, label_paddings, blank_id=BLANK_ID
    )


def label_error_rate(
    hypotheses: Sequence[Sequence[int]], references: Sequence[Sequence[int]]
) -> float:
    """Total edit distance over total reference length."""
    errors = sum(
        Levenshtein.distance(h, r) for h, r in zip(hypotheses, references, strict=True)
    )
    return errors / max(sum(len(r) for r in references), 1)


def to_lists(tokens: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Decoded ``tokens[B, L]`` and ``lengths[B]`` as Python lists."""
    return [row[:n].tolist() for row, n in zip(tokens, lengths, strict=True)]


# ---------------------------------------------------------------------------
# Devices: a 1-D data-parallel mesh.
# ---------------------------------------------------------------------------


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all of them)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
    """Places a global numpy batch on the mesh, split along the batch axis.

    Every process builds the same global batch (it is cheap) and hands over
    only the rows its own devices hold, so one code path serves one device,
    many devices and many hosts.
    """
    sharding = NamedSharding(mesh, P("data"))

    def put(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

    return Batch(*(put(x) for x in batch))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies every leaf of ``tree`` to every device of the mesh."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(
            np.shape(x), sharding, lambda i: np.asarray(x)[i]
        ),
        tree,
    )


def gather(x: jax.Array) -> np.ndarray:
    """A sharded array as one numpy array on every process."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ---------------------------------------------------------------------------
# Checkpoints (orbax).
# ---------------------------------------------------------------------------


def checkpoint_manager(config: Config) -> ocp.CheckpointManager:
    """Keeps the two latest checkpoints under ``--out/checkpoints``; orbax
    writes each one to a temporary folder and renames it when complete, so a
    kill leaves either the whole checkpoint or none of it."""
    path = pathlib.Path(config.out).absolute() / "checkpoints"
    return ocp.CheckpointManager(
        path, options=ocp.CheckpointManagerOptions(max_to_keep=2)
    )


def save_checkpoint(manager, step: int, params, opt_state, history) -> None:
    """Saves parameters, optimizer state and the metric history at ``step``
    (the history must already hold every step up to ``step``)."""
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
            history=ocp.args.JsonSave(history),
        ),
        force=True,
    )


def restore_checkpoint(manager, step: int, params, opt_state):
    """Restores the checkpoint at ``step`` into the shapes and shardings of
    ``params`` and ``opt_state``; returns ``(params, opt_state, history)``."""
    target = jax.tree.map(
        ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state}
    )
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            history=ocp.args.JsonRestore(),
        ),
    )
    state = restored["state"]
    return state["params"], state["opt_state"], restored["history"]


# ---------------------------------------------------------------------------
# Evaluation.
# ---------------------------------------------------------------------------


def batches_of(data: Batch, size: int) -> list[tuple[Batch, int]]:
    """Cuts ``data`` into batches of exactly ``size`` rows (the last one padded
    with repeats, so one compiled shape serves all); pairs each with its number
    of real rows."""
    total = len(data.frames)
    chunks = []
    for start in range(0, total, size):
        rows = np.arange(start, start + size) % total
        chunks.append((Batch(*(x[rows] for x in data)), min(size, total - start)))
    return chunks


def eval_batch_size(config: Config, mesh: Mesh, num: int) -> int:
    """``--eval-batch-size`` capped by ``num`` strips, rounded to the mesh."""
    size = min(config.eval_batch_size, num)
    return -(-size // mesh.size) * mesh.size


class Scored(NamedTuple):
    """The network's outputs on a set of strips, computed once and decoded by
    every decoder: ``[(logits, logit_paddings, real rows)]`` per batch."""

    chunks: list[tuple[jax.Array, jax.Array, int]]
    references: list[list[int]]


def score(graphdef, params, data: Batch, mesh: Mesh, config: Config) -> Scored:
    """Runs the network over ``data`` in batches of the evaluation size."""
    size = eval_batch_size(config, mesh, len(data.frames))
    chunks = []
    for chunk, real in batches_of(data, size):
        frames, paddings = shard_batch(chunk, mesh)[:2]
        logits, logit_paddings = forward(params, frames, paddings, graphdef=graphdef)
        chunks.append((logits, logit_paddings, real))
    return Scored(chunks, data_lib.label_strings(data))


def decode(scored: Scored, decoder: Callable) -> tuple[float, list[list[int]]]:
    """Label error rate of ``decoder`` (logits to tokens and lengths) and its
    hypotheses."""
    hypotheses = []
    for logits, logit_paddings, real in scored.chunks:
        tokens, lengths = decoder(logits, logit_paddings)
        hypotheses.extend(to_lists(gather(tokens), gather(lengths))[:real])
    return label_error_rate(hypotheses, scored.references), hypotheses


def fit_language_model(config: Config) -> seqctc.CharNGramLM:
    """A Kneser-Ney character n-gram LM over the label strings of every
    training batch (exactly the text the recogniser trains on)."""
    return seqctc.CharNGramLM.fit(
        data_lib.training_strings(config),
        order=config.lm_order,
        num_classes=NUM_CLASSES,
        blank_id=BLANK_ID,
    )


def make_decoders(config: Config, lm, lm_weight: float, bonus: float):
    """The decoders compared at the end, from logits to tokens and lengths."""
    beam = functools.partial(beam_search, lm=lm, beam_width=config.beam_width)
    return {
        "greedy": greedy_search,
        "beam": functools.partial(beam, lm_weight=0.0, insertion_bonus=0.0),
        "beam+lm": functools.partial(beam, lm_weight=lm_weight, insertion_bonus=bonus),
    }


def tune_language_model(
    scored: Scored, lm, config: Config
) -> tuple[float, float, list[list[float]]]:
    """Picks the LM weight and insertion bonus of lowest validation LER.

    Returns ``(lm_weight, insertion_bonus, [[weight, bonus, LER], ...])``;
    ties go to the first pair in flag order (the smaller weight and bonus).
    """
    beam = functools.partial(beam_search, lm=lm, beam_width=config.beam_width)
    grid = []
    for weight, bonus in itertools.product(
        floats(config.lm_weights), floats(config.insertion_bonuses)
    ):
        decoder = functools.partial(beam, lm_weight=weight, insertion_bonus=bonus)
        grid.append([weight, bonus, decode(scored, decoder)[0]])
    weight, bonus, _ = min(grid, key=lambda row: row[2])
    return weight, bonus, grid


# ---------------------------------------------------------------------------
# The training loop.
# ---------------------------------------------------------------------------


class Result(NamedTuple):
    """What `train` returns."""

    params: Any  # the final parameters (a nested dict of arrays)
    graphdef: Any  # the model's nnx graph definition
    step: int  # steps completed
    history: dict[str, list]  # "train": [[step, loss]], "eval": [[step, LER]]


def train(
    config: Config,
    splits: Splits | None = None,
    *,
    mesh: Mesh | None = None,
    stop_at: int | None = None,
) -> Result:
    """Trains (or resumes) a recogniser; stops after ``stop_at`` steps if set.

    ``splits`` are the digit images (`data.load_data` when None). Saves a
    checkpoint every ``--checkpoint-every`` steps, at the end and on Ctrl-C,
    each with the loss history up to its step, so an interrupted run, even a
    killed one, loses at most the steps since its last checkpoint.
    """
    mesh = make_mesh() if mesh is None else mesh
    if config.batch_size % mesh.size:
        raise ValueError(
            f"--batch-size {config.batch_size} must be a multiple of the "
            f"{mesh.size} devices."
        )
    splits = data_lib.load_data(config) if splits is None else splits
    test = data_lib.test_strips(splits.test, config)
    num_rows = data_lib.strip_shape(config, splits.train.images.shape[1:])[1]
    graphdef, params = init_model(config, num_rows)
    tx = make_optimizer(config)
    params = replicate(params, mesh)
    opt_state = replicate(tx.init(params), mesh)
    data_lib.check_data(data_lib.train_batch(splits.train, 0, config), config)
    data_lib.check_data(test, config)

    manager = checkpoint_manager(config)
    step, history = 0, {"train": [], "eval": []}
    if config.resume and manager.latest_step() is not None:
        step = manager.latest_step()
        params, opt_state, history = restore_checkpoint(
            manager, step, params, opt_state
        )

    stop = config.steps if stop_at is None else min(stop_at, config.steps)
    main_process = jax.process_index() == 0
    bar = tqdm(
        total=config.steps,
        initial=step,
        disable=not (config.progress and main_process),
        dynamic_ncols=True,
        desc=f"{config.loss} on {mesh.size} {jax.default_backend()}",
    )
    pending = []  # device scalars, fetched in groups so the host never waits
    postfix = {}
    # Ctrl-C only raises a flag: the step in flight completes, and the loop
    # saves a checkpoint and returns, so `--resume` loses nothing.
    interrupted = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # Python only lets the main thread set handlers.
        previous_handler = signal.signal(
            signal.SIGINT, lambda *_: interrupted.append(True)
        )
    try:
        while step < stop and not interrupted:
            batch = shard_batch(data_lib.train_batch(splits.train, step, config), mesh)
            params, opt_state, metrics = train_step(
                params, opt_state, batch, graphdef=graphdef, config=config
            )
            step += 1
            pending.append((step, metrics["loss"]))
            bar.update(1)
            checkpoint = step % config.checkpoint_every == 0 or step == stop
            if len(pending) == 25 or checkpoint or interrupted:
                # Every checkpoint carries the history up to its own step.
                history["train"].extend([s, float(v)] for s, v in pending)
                pending = []
                postfix["loss"] = f"{history['train'][-1][1]:.4f}"
                bar.set_postfix(postfix, refresh=False)
            if step % config.eval_every == 0 or step == config.steps:
                scored = score(graphdef, params, test, mesh, config)
                rate = decode(scored, greedy_search)[0]
                history["eval"].append([step, rate])
                postfix["test_ler"] = f"{100 * rate:.2f}%"
                bar.set_postfix(postfix)
            if checkpoint or interrupted:
                save_checkpoint(manager, step, params, opt_state, history)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
        manager.wait_until_finished()
        bar.close()
    return Result(params, graphdef, step, history)


# ---------------------------------------------------------------------------
# Training and evaluation, end to end.
# ---------------------------------------------------------------------------


def train_and_evaluate(config: Config, *, start: float | None = None) -> dict[str, Any]:
    """Trains, tunes the LM on the validation strips, evaluates every decoder
    on the test strips, writes plots and ``summary.json`` to ``--out``.

    Returns the summary; its ``steps`` is below ``--steps`` when the run was
    interrupted (a checkpoint is saved; rerun with ``--resume``). ``start``
    (a ``time.perf_counter()``, default now) is where the wall time begins.
    """
    start = time.perf_counter() if start is None else start
    load_before = os.getloadavg()
    out = pathlib.Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh()
    splits = data_lib.load_data(config)
    result = train(config, splits, mesh=mesh)
    summary: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "steps": result.step,
    }
    if result.step < config.steps:
        return summary

    lm = fit_language_model(config)
    valid = data_lib.valid_strips(splits.valid, config)
    test = data_lib.test_strips(splits.test, config)
    scored_valid = score(result.graphdef, result.params, valid, mesh, config)
    lm_weight, bonus, grid = tune_language_model(scored_valid, lm, config)
    decoders = make_decoders(config, lm, lm_weight, bonus)
    scored = score(result.graphdef, result.params, test, mesh, config)
    rates, hypotheses, valid_rates = {}, {}, {}
    for name, decoder in decoders.items():
        rates[name], hypotheses[name] = decode(scored, decoder)
        valid_rates[name] = decode(scored_valid, decoder)[0]
    tail = [loss for _, loss in result.history["train"][-50:]]
    summary.update(
        train_loss=float(np.mean(tail)) if tail else math.nan,
        ler=rates,
        valid_ler=valid_rates,
        lm={"order": config.lm_order, "weight": lm_weight, "insertion_bonus": bonus},
        lm_grid=grid,
        num_test_digits=sum(len(r) for r in scored.references),
        num_valid_digits=sum(len(r) for r in scored_valid.references),
        devices=f"{mesh.size} x {jax.devices()[0].device_kind}",
        machine=machine(load_before),
    )
    if config.plots:
        write_plots(result, test, scored, hypotheses, out, config)
    if jax.process_index() == 0:
        summary["wall_time"] = time.perf_counter() - start
        summary["cpu_time"] = time.process_time()
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def machine(load_before: tuple[float, ...]) -> dict[str, Any]:
    """Where the run ran: CPU, cores, load averages, versions."""
    import flax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if "model name" in ln]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": cores or os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
    }


def write_plots(
    result: Result, test: Batch, scored: Scored, hypotheses, out, config
) -> None:
    """The loss curve, one strip's posteriors and alignment, test predictions."""
    # The first test strip of five digits or more, from the scored batches
    # (every process takes part in the gather).
    logits, logit_paddings, _ = scored.chunks[0]
    logits, logit_paddings = gather(logits), gather(logit_paddings)
    pick = next((i for i, r in enumerate(scored.references) if len(r) >= 5), 0)
    strip = Batch(*(x[pick : pick + 1] for x in test))
    logits, logit_paddings = logits[pick : pick + 1], logit_paddings[pick : pick + 1]
    alignment = align(logits, logit_paddings, strip.labels, strip.label_paddings)
    tokens, lengths = greedy_search(logits, logit_paddings)
    if jax.process_index() != 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    plots.plot_loss(result.history, out / "loss.png", config)
    plots.plot_alignment(
        strip,
        np.asarray(jax.nn.softmax(logits[0], axis=-1)),
        int(np.sum(logit_paddings[0] == 0)),
        np.asarray(alignment.frame_labels[0]),
        to_lists(np.asarray(tokens), np.asarray(lengths))[0],
        out / "alignment.png",
        config,
    )
    plots.plot_predictions(test, hypotheses, out / "predictions.png")
