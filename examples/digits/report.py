r"""The results page of the digits example, generated from the runs' summaries.

One command writes ``docs/_results/digits.md`` and copies the plots of the first
run to ``docs/_static/digits_*.png``::

    python examples/digits/report.py runs/ctc runs/viterbi runs/framewise

Each argument is the ``--out`` folder of a finished run (its ``summary.json``
and PNG plots). Nothing here imports JAX; every figure on the page comes from
the summaries.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOSS_NAMES = {
    "ctc": "`ctc` (expected loss over all segmentations)",
    "viterbi": "`viterbi` (best segmentation only, maximum likelihood)",
    "framewise": "`framewise` (the genie: true segments, blanks between digits)",
}
PLOTS = ("loss", "alignment", "predictions")


def _wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=80)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def results_table(summaries: Sequence[dict[str, Any]]) -> str:
    """One row per run: losses, the three decoders' test LER, times."""
    lines = [
        "| training loss | final train loss | greedy LER | beam LER "
        "| beam + LM LER | wall time | CPU time |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        loss = s["config"]["loss"]
        ler = s["ler"]
        best = min(ler.values())
        cells = [f"**{_pct(v)}**" if v == best else _pct(v) for v in ler.values()]
        lines.append(
            f"| {LOSS_NAMES.get(loss, loss)} | {s['train_loss']:.4f} | "
            + " | ".join(cells)
            + f" | {s['wall_time']:.0f} s | {s['cpu_time']:.0f} s |"
        )
    return "\n".join(lines)


def lm_table(summaries: Sequence[dict[str, Any]]) -> str:
    """The LM settings chosen on the validation strips, and what they give."""
    lines = [
        "| training loss | LM weight | insertion bonus | validation LER: greedy "
        "| beam | beam + LM |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        v = s["valid_ler"]
        lines.append(
            f"| `{s['config']['loss']}` | {s['lm']['weight']:g} | "
            f"{s['lm']['insertion_bonus']:g} | {_pct(v['greedy'])} | "
            f"{_pct(v['beam'])} | {_pct(v['beam+lm'])} |"
        )
    return "\n".join(lines)


def grid_table(summary: dict[str, Any]) -> str:
    """Validation LER of beam + LM over the grid of weights and bonuses."""
    weights = sorted({w for w, _, _ in summary["lm_grid"]})
    bonuses = sorted({b for _, b, _ in summary["lm_grid"]})
    rate = {(w, b): r for w, b, r in summary["lm_grid"]}
    lines = [
        "| LM weight | " + " | ".join(f"bonus {b:g}" for b in bonuses) + " |",
        "|---" * (len(bonuses) + 1) + "|",
    ]
    for w in weights:
        cells = [_pct(rate[w, b]) if (w, b) in rate else "" for b in bonuses]
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def page(summaries: Sequence[dict[str, Any]], commands: Sequence[str]) -> str:
    """The whole results page (markdown)."""
    first = summaries[0]
    c = first["config"]
    m = first.get("machine", {})
    same = all(
        {k: v for k, v in s["config"].items() if k not in ("loss", "out")}
        == {k: v for k, v in c.items() if k not in ("loss", "out")}
        for s in summaries
    )
    loads = ", ".join(
        f"`{s['config']['loss']}` {s['machine']['load_before'][0]:.1f} → "
        f"{s['machine']['load_after'][0]:.1f}"
        for s in summaries
        if "machine" in s
    )
    differ = "only `--loss` differs" if same else "runs differ"
    settings = f"""Settings (every run; {differ}):
{c["steps"]:,} steps of {c["batch_size"]} strips of {c["min_digits"]}–{c["max_digits"]}
digits (`--strings {c["strings"]}`), a bidirectional GRU of {c["hidden"]} units
per direction, beam width {c["beam_width"]}, a {c["lm_order"]}-gram character LM
fit on the label strings of every training batch. The test set is
{c["num_test"]:,} strips ({first["num_test_digits"]:,} digits) drawn only from
the test images; the LM weight and insertion bonus are chosen on
{c["num_valid"]:,} validation strips ({first["num_valid_digits"]:,} digits) drawn
from the validation images. LER = total edit distance / total number of digits."""
    timing = f"""{m.get("cpu", "unknown CPU")}, {m.get("cores", "?")} cores, Python
{m.get("python", "?")}, jax {m.get("jax", "?")}, flax {m.get("flax", "?")}, optax
{m.get("optax", "?")}; devices: {first.get("devices", "?")}. Wall time counts
everything from the start of `python examples/digits_ctc.py`: imports,
compilation, training, evaluation with every decoder, the LM tuning,
checkpoints and plots. CPU time is the process's user + system time. One-minute
load average before → after each run (other jobs included): {loads}."""
    text = f"""# Digit strips: CTC, Viterbi and the genie; greedy, beam and beam + LM

This page is generated by `python examples/digits/report.py` from the
`summary.json` of each run below; do not edit it by hand.

{_wrap(settings)}

Commands:

```bash
{chr(10).join(commands)}
```

## Test label error rates

{results_table(summaries)}

Losses are per digit (the per-strip loss divided by the number of digits) and
are not comparable across rows: `viterbi` and `framewise` score one path, `ctc`
all of them. Bold: the best decoder of each run.

## The language model, tuned on the validation strips

{lm_table(summaries)}

Validation LER of beam + LM for every weight and insertion bonus tried, in the
`{c["loss"]}` run:

{grid_table(first)}

## Machine and timing

{_wrap(timing)}

## Plots (the `{c["loss"]}` run)

Loss and greedy test LER during training:

![loss curve](../_static/digits_loss.png)

A test strip, its per-frame CTC posteriors and the Viterbi alignment of the
true label string (cyan circles):

![posteriors and alignment](../_static/digits_alignment.png)

Test strips with their decodings, mistakes of greedy decoding first (red):

![predictions](../_static/digits_predictions.png)
"""
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="--out folders of finished runs")
    parser.add_argument("--page", default=str(ROOT / "docs" / "_results" / "digits.md"))
    parser.add_argument("--static", default=str(ROOT / "docs" / "_static"))
    args = parser.parse_args(argv)
    runs = [pathlib.Path(r) for r in args.runs]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    commands = []
    for run, s in zip(runs, summaries, strict=True):
        flag = "" if s["config"]["loss"] == "ctc" else f" --loss {s['config']['loss']}"
        commands.append(f"python examples/digits_ctc.py{flag} --out {run}")
    commands.append("python examples/digits/report.py " + " ".join(map(str, runs)))
    pathlib.Path(args.page).write_text(page(summaries, commands), encoding="utf-8")
    static = pathlib.Path(args.static)
    for name in PLOTS:
        if (runs[0] / f"{name}.png").exists():
            shutil.copyfile(runs[0] / f"{name}.png", static / f"digits_{name}.png")
    print(f"wrote {args.page} and the plots of {runs[0]} to {static}")


if __name__ == "__main__":
    main()
