"""The hyperparameters of a run: one frozen dataclass, one field per flag."""

from __future__ import annotations

import dataclasses
from typing import Any

LOSSES = ("ctc", "viterbi", "framewise")
SOURCES = ("numbers", "uniform")


def _option(default: Any, help: str, *, compare: bool = True, **kwargs: Any) -> Any:
    """A dataclass field that also carries its command-line help.

    ``compare=False`` marks bookkeeping that leaves the computation unchanged:
    a `Config` is a static argument of the jitted steps, and those fields take
    no part in its hash, so changing them never triggers a recompilation.
    """
    return dataclasses.field(
        default=default, compare=compare, metadata={"help": help, **kwargs}
    )


@dataclasses.dataclass(frozen=True)
class Config:
    """Every hyperparameter of a run; each field is a command-line flag."""

    # Data.
    data: str = _option(
        "digits",
        "`digits`: scikit-learn's bundled 8x8 digits (offline); `mnist`: MNIST "
        "IDX files from --data-dir.",
        choices=("digits", "mnist"),
    )
    data_dir: str | None = _option(
        None,
        "Folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz).",
        type=str,
    )
    strings: str = _option(
        "numbers",
        "Digit strings: `numbers` (years, dates, times, postcodes, phone "
        "numbers, amounts) or `uniform` (uniformly random digits).",
        choices=SOURCES,
    )
    min_digits: int = _option(1, "Fewest digits in a strip.")
    max_digits: int = _option(8, "Most digits in a strip (the label length N).")
    max_gap: int = _option(
        4, "Widest gap between two digits, in columns (the narrowest is 2)."
    )
    jitter: int = _option(2, "Vertical jitter of each digit, in pixel rows.")
    test_fraction: float = _option(
        0.2, "Share of the scikit-learn images kept for the test strips."
    )
    valid_fraction: float = _option(
        0.1, "Share of the scikit-learn images kept for the validation strips."
    )
    num_test: int = _option(1024, "Number of test strips.", compare=False)
    num_valid: int = _option(
        512, "Number of validation strips (LM tuning).", compare=False
    )
    # Model.
    channels: int = _option(32, "Channels of the two 3x3 convolutions.")
    features: int = _option(64, "Features per frame fed to the GRU.")
    stride: int = _option(2, "Columns per output frame (time downsampling).")
    hidden: int = _option(64, "GRU units per direction.")
    num_layers: int = _option(1, "Bidirectional GRU layers.")
    # Optimisation.
    loss: str = _option("ctc", "Training loss.", choices=LOSSES)
    steps: int = _option(1200, "Training steps.")
    batch_size: int = _option(
        32, "Global batch size (a multiple of the number of devices)."
    )
    learning_rate: float = _option(3e-3, "Peak learning rate of adamw.")
    warmup_steps: int = _option(100, "Linear warm-up steps before cosine decay.")
    weight_decay: float = _option(0.05, "adamw weight decay.")
    clip_norm: float = _option(1.0, "Global gradient-norm clipping threshold.")
    # Evaluation.
    eval_every: int = _option(
        200, "Greedy test LER every this many steps.", compare=False
    )
    eval_batch_size: int = _option(256, "Strips per evaluation batch.", compare=False)
    beam_width: int = _option(8, "Beam width of the prefix beam search.", compare=False)
    lm_order: int = _option(
        6, "Order of the character n-gram language model.", compare=False
    )
    lm_weights: str = _option(
        "0.5,0.75,1,1.5",
        "LM weights tried on the validation strips (comma separated); the best "
        "one decodes the test strips.",
        compare=False,
    )
    insertion_bonuses: str = _option(
        "0,1",
        "Insertion bonuses tried with each LM weight on the validation strips.",
        compare=False,
    )
    # Bookkeeping.
    seed: int = _option(0, "Seed of the data split, the strips and the init.")
    out: str = _option(
        "digits_out", "Output folder: checkpoints, plots, summary.", compare=False
    )
    checkpoint_every: int = _option(
        400, "Save a checkpoint every this many steps.", compare=False
    )
    resume: bool = _option(
        False, "Continue from the latest checkpoint in --out.", compare=False
    )
    plots: bool = _option(True, "Write PNG plots at the end.", compare=False)
    progress: bool = _option(True, "Show a progress bar.", compare=False)
    # Several hosts.
    coordinator_address: str | None = _option(
        None,
        "host:port of process 0; set it (and the next two) to train on several "
        "hosts through jax.distributed.initialize.",
        type=str,
        compare=False,
    )
    num_processes: int | None = _option(
        None, "Number of processes.", type=int, compare=False
    )
    process_id: int | None = _option(
        None, "Index of this process.", type=int, compare=False
    )


def floats(text: str) -> tuple[float, ...]:
    """``"0.5,1"`` as ``(0.5, 1.0)``."""
    return tuple(float(x) for x in text.split(",") if x.strip())


def validate(config: Config) -> None:
    """Raises ``ValueError`` naming the flag that makes no sense."""
    if not 1 <= config.min_digits <= config.max_digits:
        raise ValueError("--min-digits must lie in [1, --max-digits].")
    if config.max_gap < 2:
        raise ValueError("--max-gap must be at least 2.")
    if config.data == "mnist" and not config.data_dir:
        raise ValueError("--data mnist needs --data-dir.")
    if config.stride < 1:
        raise ValueError("--stride must be positive.")
    if config.loss == "framewise" and config.stride > 2:
        raise ValueError("--loss framewise needs --stride 1 or 2 (non-empty gaps).")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError("--steps and --batch-size must be positive.")
    if config.beam_width < 1:
        raise ValueError("--beam-width must be positive.")
    if not 0 < config.test_fraction + config.valid_fraction < 1:
        raise ValueError("--test-fraction + --valid-fraction must lie in (0, 1).")
    try:
        weights, bonuses = floats(config.lm_weights), floats(config.insertion_bonuses)
    except ValueError:
        raise ValueError(
            "--lm-weights and --insertion-bonuses must be comma-separated numbers."
        ) from None
    if not weights or not bonuses:
        raise ValueError("--lm-weights and --insertion-bonuses need a value each.")
