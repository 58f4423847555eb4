"""A probe of why ACoL's and SPG's new layers get a learning-rate choice: the training loss after every step.

For each recipe and each head learning-rate multiplier (``model.init_args.head_lr_multiplier``: the new
layers train at ``lr`` times it), the recipe trains as it is (same data, seed, batches; no validation,
logger or checkpoint) and the loss of every step is kept. A multiplier at which the loss grows by
orders of magnitude, turns NaN, or settles at a constant is one the method's head does not train at;
``make demo-methods`` chooses among the multipliers on val, and its report states this probe's curves
beside that choice. Nothing here selects or tunes.

The results file keeps every finished curve with the inputs it was trained from (the recipe's text,
the dataset's identity, the multiplier and the step limit): a rerun skips the curves it holds.

Example:
    $ python -m cream_pl.pipelines.probe_head_lr --recipes experiments/embedded_acol_cream.yaml \\
          experiments/embedded_spg_cream.yaml --out results/embedded_methods/probe_head_lr.json
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.options import OneLineArgumentParser
from cream_pl.pipelines.entry import pipeline_main

__all__ = ["curve_summary", "loss_curve", "main", "markdown", "probe"]

MULTIPLIERS = (1.0, 3.0, 10.0)


def loss_curve(recipe: Path, multiplier: float, data: Path, steps: int | None = None) -> list[float]:
    """The training loss of every step of ``recipe`` with its new layers at ``multiplier`` x the base rate."""
    import pytorch_lightning as pl

    from cream_pl.pipelines.recipe_builder import build_from_recipe

    losses: list[float] = []

    class _Losses(pl.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            losses.append(float(loss))

    overrides: dict[str, Any] = {"model.init_args.head_lr_multiplier": float(multiplier), "data.init_args.data_root": str(data),
                                 "trainer.logger": False, "trainer.callbacks": [], "trainer.enable_checkpointing": False,
                                 "trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False,
                                 "trainer.enable_model_summary": False}
    if steps is not None:
        overrides["trainer.max_steps"] = int(steps)
    with tempfile.TemporaryDirectory(prefix="probe_head_lr_") as work:
        overrides["trainer.default_root_dir"] = work
        cli = build_from_recipe(recipe, overrides, work)
        cli.trainer.callbacks.append(_Losses())
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return losses


def curve_summary(losses: Sequence[float]) -> dict[str, Any]:
    """Where a loss curve starts, peaks and ends, and its first non-finite step (steps count from 1).

    >>> s = curve_summary([5.2, 118.0, 947.0, 4.2, 4.2])
    >>> s["first"], s["peak"], s["peak_step"], s["last"], s["first_nonfinite_step"]
    (5.2, 947.0, 3, 4.2, None)
    >>> curve_summary([2.0, float("nan")])["first_nonfinite_step"]
    2
    """
    finite = [(i + 1, v) for i, v in enumerate(losses) if math.isfinite(v)]
    bad = next((i + 1 for i, v in enumerate(losses) if not math.isfinite(v)), None)
    peak_step, peak = max(finite, key=lambda t: t[1]) if finite else (None, float("nan"))
    return {"steps": len(losses), "first": losses[0] if losses else float("nan"), "peak": peak, "peak_step": peak_step,
            "last": losses[-1] if losses else float("nan"), "min": min((v for _, v in finite), default=float("nan")),
            "first_nonfinite_step": bad}


def _inputs(recipe: Path, multiplier: float, data: Path, steps: int | None) -> dict[str, Any]:
    from cream_pl.pipelines.run_state import data_sha1

    return {"recipe_sha1": hashlib.sha1(Path(recipe).read_bytes()).hexdigest(), "data_sha1": data_sha1(data),
            "multiplier": float(multiplier), "steps": steps}


def probe(recipes: Sequence[Path], data: Path, out: Path, multipliers: Sequence[float] = MULTIPLIERS,
          steps: int | None = None, log: Any = print) -> dict[str, Any]:
    """Every (recipe, multiplier) curve into ``out`` (JSON, rewritten atomically after each curve)."""
    from cream_pl.reporting.tables import write_json_atomic

    held = json.loads(out.read_text()).get("curves", {}) if out.is_file() else {}
    curves: dict[str, dict[str, Any]] = {}
    for recipe in recipes:
        for m in multipliers:
            key, today = f"{Path(recipe).stem}@{m:g}x", _inputs(recipe, m, data, steps)
            if held.get(key, {}).get("inputs") == today:
                log(f"{key}: using {out}")
                curves[key] = held[key]
                continue
            log(f"{key}: training ({'every step of the recipe' if steps is None else f'{steps} steps'})")
            losses = loss_curve(Path(recipe), m, data, steps)
            curves[key] = {"recipe": f"experiments/{Path(recipe).name}", "multiplier": float(m), "inputs": today,
                           "losses": losses, **curve_summary(losses)}
            write_json_atomic({"probe": __doc__.split("\n\n")[0], "curves": curves}, out)
    result = {"probe": __doc__.split("\n\n")[0], "curves": curves}
    write_json_atomic(result, out)
    return result


def markdown(result: Mapping[str, Any]) -> str:
    """One table row per (recipe, multiplier)."""
    lines = ["| recipe | head lr | steps | loss at step 1 | peak (step) | lowest | mean of the last 10 steps | "
             "first NaN / inf step |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in result["curves"].values():
        tail = c["losses"][-10:]
        lines.append(f"| `{c['recipe']}` | {c['multiplier']:g}x | {c['steps']} | {c['first']:.3g} | {c['peak']:.4g} "
                     f"({c['peak_step']}) | {c['min']:.3g} | {sum(tail) / max(len(tail), 1):.3g} | "
                     f"{c['first_nonfinite_step'] or '—'} |")
    return "\n".join(lines) + "\n\nEvery step's loss: the JSON file beside this one.\n"


@pipeline_main("python -m cream_pl.pipelines.probe_head_lr")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.probe_head_lr",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", required=True, help="recipe YAMLs (experiments/*.yaml)")
    parser.add_argument("--multipliers", nargs="+", type=float, default=list(MULTIPLIERS),
                        help="head learning-rate multipliers (default: demo-methods' grid, 1 3 10)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: the recipe's "
                        "whole training)")
    parser.add_argument("--data", default="data/synth", help="the benchmark's root (default: data/synth, make demo's)")
    parser.add_argument("--out", required=True, help="JSON results (a .md table is written beside it)")
    args = parser.parse_args(argv)
    from cream_pl.core.io import check_output_dir
    from cream_pl.pipelines.entry import check_dataset_root

    for recipe in args.recipes:
        if not Path(recipe).is_file():
            parser.error(f"{recipe}: not found (a recipe YAML, e.g. experiments/embedded_acol_cream.yaml)")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps {args.steps}: must be 1 or more")
    if any(not (m > 0 and math.isfinite(m)) for m in args.multipliers):
        parser.error(f"--multipliers {args.multipliers}: each must be a positive number")
    out = Path(args.out)
    check_output_dir(out.parent)
    if not (Path(args.data) / "metadata").is_dir():
        parser.error(f"{args.data}: no dataset there (make data-synth writes make demo's embedded benchmark)")
    data = check_dataset_root(args.data, files=False)
    from cream_pl.reporting.tables import write_markdown_atomic

    result = probe([Path(r) for r in args.recipes], data, out, args.multipliers, args.steps)
    write_markdown_atomic(markdown(result), out.with_suffix(".md"))
    print(markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
