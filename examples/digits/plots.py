"""The PNG figures of a finished run (matplotlib, imported on first use)."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from .config import Config
from .data import NUM_CLASSES, Batch, label_strings


def digits_text(classes: Sequence[int]) -> str:
    """Classes 1-10 as the digit string they stand for."""
    return "".join(str(c - 1) for c in classes) or "∅"


def plot_loss(history: dict[str, list], path: pathlib.Path, config: Config) -> None:
    """Training loss and greedy test LER against steps."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps, losses = np.asarray(history["train"]).T
    ax.plot(steps, losses, lw=0.8, color="tab:blue", alpha=0.4)
    window = min(25, len(losses))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"{config.loss} loss")
    ax.set(xlabel="step", ylabel="training loss per digit", yscale="log")
    if history["eval"]:
        twin = ax.twinx()
        eval_steps, rates = np.asarray(history["eval"]).T
        twin.plot(eval_steps, 100 * rates, "o-", color="tab:red", label="test LER")
        twin.set_ylabel("greedy test LER (%)", color="tab:red")
        twin.set_ylim(bottom=0)
    ax.set_title(f"Digit strips, {config.loss} loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_alignment(
    strip: Batch,
    posteriors: np.ndarray,
    frames: int,
    path_labels: np.ndarray,
    guess: list[int],
    path: pathlib.Path,
    config: Config,
) -> None:
    """One strip, its per-frame class posteriors ``[T', K]`` (``frames`` valid)
    and the Viterbi alignment ``path_labels [T']`` of its true label string."""
    import matplotlib.pyplot as plt

    length = int(np.sum(strip.paddings[0] == 0))
    truth = label_strings(strip)[0]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 4.5), sharex=True, height_ratios=(1, 1.4)
    )
    top.imshow(
        strip.frames[0, :length].T,
        cmap="gray_r",
        aspect="auto",
        extent=(0, length, strip.frames.shape[2], 0),
    )
    for start, end in strip.segments[0][: len(truth)]:
        top.axvspan(start, end, color="tab:green", alpha=0.08)
    top.set(
        yticks=[],
        title=f"truth {digits_text(truth)} · greedy "
        f"{digits_text(guess)}  (shaded: true digit boxes)",
    )
    stride = config.stride
    bottom.imshow(
        posteriors[:frames].T,
        aspect="auto",
        cmap="magma",
        origin="lower",
        extent=(0, frames * stride, -0.5, NUM_CLASSES - 0.5),
    )
    centres = (np.arange(frames) + 0.5) * stride
    bottom.plot(
        centres,
        path_labels[:frames],
        "o",
        ms=3.5,
        mfc="none",
        color="cyan",
        label="Viterbi alignment",
    )
    bottom.set(
        yticks=range(NUM_CLASSES),
        yticklabels=["∅"] + list("0123456789"),
        xlabel="image column",
        ylabel="class",
    )
    bottom.legend(loc="upper right", fontsize=8)
    bottom.set_title("CTC posteriors per frame (∅ = blank)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_predictions(
    test: Batch, hypotheses: dict[str, list[list[int]]], path, num: int = 8
) -> None:
    """Test strips with truth and decodings; mistakes first, in red."""
    import matplotlib.pyplot as plt

    truth = label_strings(test)
    best = hypotheses["beam+lm"]
    wrong = [i for i, t in enumerate(truth) if hypotheses["greedy"][i] != t]
    right = [i for i in range(len(truth)) if i not in set(wrong)]
    rows = (wrong[: num // 2] + right)[:num]
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 1.05 * len(rows)))
    for ax, i in zip(np.atleast_1d(axes), rows, strict=True):
        length = int(np.sum(test.paddings[i] == 0))
        ax.imshow(test.frames[i, :length].T, cmap="gray_r", aspect="equal")
        ax.set_xlim(0, test.frames.shape[1])
        ax.set(xticks=[], yticks=[])
        ok = hypotheses["greedy"][i] == truth[i]
        ax.set_title(
            f"truth {digits_text(truth[i])}   greedy "
            f"{digits_text(hypotheses['greedy'][i])}   beam+LM {digits_text(best[i])}",
            fontsize=8,
            color="black" if ok else "tab:red",
            loc="left",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
