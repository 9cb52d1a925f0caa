"""Command-line entry of the digits example: one flag per `Config` field.

Usage (from the repository root)::

    python examples/digits_ctc.py                 # the default run
    python examples/digits_ctc.py --loss viterbi --out runs/viterbi
    python examples/digits_ctc.py --steps 4000 --resume   # extend a finished run
    python examples/digits_ctc.py --help

Outputs in ``--out``: ``checkpoints/``, ``loss.png``, ``alignment.png``,
``predictions.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax

from . import report, train
from .config import Config, validate


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Builds a `Config` from command-line flags (one flag per field)."""
    parser = argparse.ArgumentParser(
        description="Train a CTC recogniser of handwritten digit strings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        meta = dict(field.metadata)
        if isinstance(field.default, bool):
            parser.add_argument(
                flag,
                default=field.default,
                action=argparse.BooleanOptionalAction,
                help=meta.pop("help"),
            )
        else:
            kind = meta.pop("type", type(field.default))
            parser.add_argument(flag, default=field.default, type=kind, **meta)
    config = Config(**vars(parser.parse_args(argv)))
    validate(config)
    return config


def main(argv: Sequence[str] | None = None, *, start: float | None = None) -> dict:
    """Parses flags, runs `train.train_and_evaluate`, prints the results.

    ``start`` is the ``time.perf_counter()`` at which the program started
    (the entry script takes it before importing JAX), for the wall time.
    """
    config = parse_args(argv)
    if config.coordinator_address:
        jax.distributed.initialize(
            config.coordinator_address, config.num_processes, config.process_id
        )
    summary: dict[str, Any] = train.train_and_evaluate(
        config, start=time.perf_counter() if start is None else start
    )
    if summary["steps"] < config.steps:
        print(
            f"Interrupted: checkpoint saved at step {summary['steps']}; "
            "rerun with --resume."
        )
        raise SystemExit(130)
    if jax.process_index() == 0:
        print(report.results_table([summary]))
    return summary


if __name__ == "__main__":
    main()
