"""A probe of why ACoL's and SPG's new layers get a learning-rate choice: the training loss after every step.

For each recipe and each head learning-rate multiplier (``model.init_args.head_lr_multiplier``: the new
layers train at ``lr`` times it), the recipe trains as it is (same data, seed, batches; no validation,
logger or checkpoint) and the loss of every step is kept. A multiplier at which the loss grows by
orders of magnitude, turns NaN, or settles at a constant is one the method's head does not train at;
``make demo-methods`` chooses among the multipliers on val, and its report states this probe's curves
beside that choice. Nothing here selects or tunes.

The results file keeps every finished curve with the inputs it was trained from (the recipe's text,
the dataset's identity, the multiplier and the step limit): a rerun skips the curves it holds.

By default the recipes and multipliers are those of the runs in ``make demo-methods``' declaration
that choose ``head_lr_multiplier`` on val (:func:`declared_plan`): the probe's recipes and rates are
the choice's own, read from one place.

Example:
    $ python -m cream_pl.pipelines.probe_head_lr --out results/embedded_methods/probe_head_lr.json
    $ python -m cream_pl.pipelines.probe_head_lr --recipes experiments/embedded_acol_cream.yaml \\
          --multipliers 1 10 --out /tmp/probe.json
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.core.options import OneLineArgumentParser, positive_int
from cream_pl.pipelines.entry import pipeline_main

__all__ = ["HEAD_LR_KEY", "curve_summary", "declared_plan", "loss_curve", "main", "markdown", "probe",
           "rewrite_methods_readme"]

HEAD_LR_KEY = "model.init_args.head_lr_multiplier"
DECLARATION = Path("experiments/demos/demo_methods.yaml")


def loss_curve(recipe: Path, multiplier: float, data: Path, steps: int | None = None) -> list[float]:
    """The training loss of every step of ``recipe`` with its new layers at ``multiplier`` x the base rate."""
    import pytorch_lightning as pl

    from cream_pl.pipelines.recipe_builder import build_from_recipe

    losses: list[float] = []

    class _Losses(pl.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            losses.append(float(loss))

    overrides: dict[str, Any] = {**probe_overrides(multiplier), "data.init_args.data_root": str(data)}
    if steps is not None:
        overrides["trainer.max_steps"] = int(steps)
    with tempfile.TemporaryDirectory(prefix="probe_head_lr_") as work:
        overrides["trainer.default_root_dir"] = work
        cli = build_from_recipe(recipe, overrides, work)
        cli.trainer.callbacks.append(_Losses())
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if not losses:
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{recipe}: trained no step on {data} (its train split, batch size and limit_train_batches "
                             "leave no batch)")
    return losses


def probe_overrides(multiplier: float) -> dict[str, Any]:
    """What the probe changes in a recipe: the multiplier, and no logger, callbacks, checkpoints or validation."""
    return {HEAD_LR_KEY: float(multiplier), "trainer.logger": False, "trainer.callbacks": [],
            "trainer.enable_checkpointing": False, "trainer.limit_val_batches": 0, "trainer.enable_progress_bar": False,
            "trainer.enable_model_summary": False}


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




INFERENCE_KEYS = frozenset({"cream_search", "cream_search_epochs", "ablation_iterations", "ablation_lambdas",
                            "record_per_image"})
"""The model arguments a demo-methods run may override that act at val / test time only: the probe (no val, no
test) trains the same steps with or without them."""


def declared_plan(exp: Any) -> list[tuple[Path, tuple[float, ...]]]:
    """``(recipe, multipliers)`` of each of ``exp``'s runs that chooses the head learning-rate multiplier on val.

    The probe trains a recipe as its file says: a choosing run whose overrides change its training (a ``model`` or
    ``data`` key other than :data:`INFERENCE_KEYS`), or two choosing runs of one recipe, are refused in one line.

    >>> from cream_pl.pipelines.experiment import load_experiment
    >>> [(p.name, m) for p, m in declared_plan(load_experiment(DECLARATION))]
    [('embedded_acol_cream.yaml', (1.0, 3.0, 10.0)), ('embedded_spg_cream.yaml', (1.0, 3.0, 10.0))]
    """
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.experiment import recipe_path

    plan: dict[Path, tuple[float, ...]] = {}
    for r in exp.runs:
        if r.choose is None or r.choose.key != HEAD_LR_KEY:
            continue
        training = [k for k in r.overrides if k.startswith(("model.", "data."))
                    and k.rsplit(".", 1)[-1] not in INFERENCE_KEYS]
        if training:
            raise UserValueError(f"{exp.source}: run {r.key!r} overrides {training[0]}, which its training reads; the "
                                 "probe trains the recipe as its file says (put the setting in the recipe)")
        recipe = recipe_path(r.recipe, exp.source)
        if recipe in plan:
            raise UserValueError(f"{exp.source}: run {r.key!r} probes {r.recipe} a second time (one curve per recipe "
                                 "and rate)")
        plan[recipe] = tuple(float(v) for v in r.choose.values)
    return list(plan.items())


def probe(plan: Sequence[tuple[Path, Sequence[float]]], data: Path, out: Path, steps: int | None = None,
          log: Any = print) -> dict[str, Any]:
    """Every curve of ``plan`` (each recipe at each of its multipliers) into ``out`` (JSON, rewritten atomically
    after each curve)."""
    import time

    from cream_pl.core.io import file_sha1
    from cream_pl.data.metadata import data_sha1
    from cream_pl.reporting.demo_methods_report import read_probe_curves
    from cream_pl.reporting.tables import write_json_atomic

    curves: dict[str, dict[str, Any]] = dict(read_probe_curves(out))  # every finished curve stays, asked for now or not
    data_id = data_sha1(data)  # hashed once: a curve's inputs are its recipe's text, the data, its rate and steps
    for recipe, multipliers in plan:
        recipe_id = file_sha1(recipe)
        for m in multipliers:
            key = f"{Path(recipe).stem}@{m:g}x"
            today = {"recipe_sha1": recipe_id, "data_sha1": data_id, "multiplier": float(m), "steps": steps}
            if curves.get(key, {}).get("inputs") == today:
                log(f"{key}: using {out}")
                continue
            log(f"{key}: training ({'every step of the recipe' if steps is None else f'{steps} steps'})")
            start = time.time()
            losses = loss_curve(Path(recipe), m, data, steps)
            curves[key] = {"recipe": _shown(Path(recipe)), "multiplier": float(m), "inputs": today,
                           "losses": losses, "wall_s": time.time() - start, **curve_summary(losses)}
            write_json_atomic({"probe": __doc__.split("\n\n")[0], "curves": curves}, out)
    result = {"probe": __doc__.split("\n\n")[0], "curves": curves}
    write_json_atomic(result, out)
    return result


def _shown(path: Path) -> str:
    """A recipe's path as the results name it: relative to the working folder where it lies below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def rewrite_methods_readme(results: Path, exp: Any = None) -> Path:
    """Rewrite a demo-methods results folder's ``README.md`` from its ``metrics.json`` and ``probe_head_lr.json``
    (nothing is trained or tested): the runner's report, with the differences and training grids put back in the
    order of ``exp``, the loaded declaration (default: :data:`DECLARATION`; ``metrics.json`` keeps its keys sorted),
    and the command line rebuilt from its benchmark."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.pipelines.experiment import load_experiment
    from cream_pl.pipelines.runner import command_line
    from cream_pl.reporting.demo_methods_report import in_order, read_probe, render_markdown
    from cream_pl.reporting.tables import write_markdown_atomic

    metrics = Path(results) / "metrics.json"
    if not metrics.is_file():
        raise UserValueError(f"{metrics}: not found (make demo-methods writes the results)")
    exp = exp if exp is not None else load_experiment(DECLARATION)
    try:
        payload = json.loads(metrics.read_text(encoding="utf-8"))
        b = payload["benchmark"]
        if not (isinstance(payload["methods"], dict) and isinstance(payload["differences"], dict)):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UserValueError(f"{metrics}: not a demo-methods metrics.json (JSON with benchmark, methods and "
                             "differences)") from None
    payload["differences"] = in_order(payload["differences"], [f"{d.a}-{d.b}" for d in exp.differences])
    for d in exp.differences:
        if f"{d.a}-{d.b}" in payload["differences"]:
            payload["differences"][f"{d.a}-{d.b}"] = in_order(payload["differences"][f"{d.a}-{d.b}"], d.metrics)
    for run in exp.runs:
        h = (payload.get("head_lr_multiplier") or {}).get(run.key)
        if h and run.choose is not None:
            h["candidates"] = in_order(h["candidates"], [f"{v:g}" for v in run.choose.values])
    runs = [(r.key, r.name, Path(r.recipe).stem) for r in exp.runs if r.key in payload["methods"]]
    command = command_line(exp, fast=bool(b.get("fast")), data=None if b.get("preset") else b.get("data"),
                           seeds=[b["train_seed"]] if b.get("train_seed", 0) != 0 else None)
    probe_file = read_probe(Path(results), b.get("data"))
    return write_markdown_atomic(render_markdown(payload, runs, command, probe_file), Path(results) / "README.md")


def markdown(result: Mapping[str, Any]) -> str:
    """One table row per (recipe, multiplier)."""
    def num(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "—"

    lines = ["| recipe | head lr | steps | loss at step 1 | peak (step) | lowest | mean of the last 10 steps | "
             "first NaN / inf step | wall time (s) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in result["curves"].values():
        tail = c["losses"][-10:]
        lines.append(f"| `{c['recipe']}` | {c['multiplier']:g}x | {c['steps']} | {num(c['first'], '.3g')} | "
                     f"{num(c['peak'], '.4g')} ({c['peak_step'] or '—'}) | {num(c['min'], '.3g')} | "
                     f"{num(sum(tail) / len(tail) if tail else None, '.3g')} | {c['first_nonfinite_step'] or '—'} | "
                     f"{num(c.get('wall_s'), '.0f')} |")
    total = sum(c.get("wall_s", 0.0) for c in result["curves"].values())
    return "\n".join(lines) + f"\n\nTraining time, all curves: {total / 60:.1f} min. Every step's loss: the JSON file beside this one.\n"


@pipeline_main("python -m cream_pl.pipelines.probe_head_lr")
def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m cream_pl.pipelines.probe_head_lr",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=None, help="recipe YAMLs (experiments/*.yaml), with "
                        "--multipliers (default: the declaration's runs that choose head_lr_multiplier, at its grid)")
    parser.add_argument("--multipliers", nargs="+", type=float, default=None,
                        help="head learning-rate multipliers (default: the declaration's grid)")
    parser.add_argument("--steps", type=positive_int, default=None, help="stop after this many steps (default: the recipe's "
                        "whole training)")
    parser.add_argument("--data", default="data/synth", help="the benchmark's root (default: data/synth, make demo's)")
    parser.add_argument("--out", required=True, help="JSON results (a .md table is written beside it)")
    parser.add_argument("--readme", default=None, metavar="RESULTS",
                        help="then rewrite RESULTS/README.md, a make demo-methods results folder, from its metrics.json "
                        "and this probe (a rerun with nothing to train only rewrites it)")
    parser.add_argument("--declaration", default=str(DECLARATION),
                        help="make demo-methods' declaration: the recipes and multipliers when --recipes is not given, "
                        "and the runs, differences and training grids behind --readme's results")
    args = parser.parse_args(argv)
    from cream_pl.core.io import check_output_file
    from cream_pl.pipelines.entry import check_dataset_root
    from cream_pl.pipelines.experiment import load_experiment

    for recipe in args.recipes or ():
        if not Path(recipe).is_file():
            parser.error(f"{recipe}: not found (a recipe YAML, e.g. experiments/embedded_acol_cream.yaml)")
    if args.recipes and args.multipliers is None:
        parser.error("--recipes: name the multipliers too (--multipliers 1 3 10)")
    if any(not (m > 0 and math.isfinite(m)) for m in args.multipliers or ()):
        parser.error(f"--multipliers {args.multipliers}: each must be a positive number")
    from cream_pl.pipelines.recipe_builder import check_recipe

    for recipe in args.recipes or ():  # every recipe parses before the first one trains
        try:
            check_recipe(recipe, probe_overrides(args.multipliers[0]), origin=f"{recipe} (--recipes)")
        except ValueError as err:
            parser.error(str(err))
    # the declaration is read (a bad one is one line) first, before the data and any training, where a default or --readme needs it
    needs_declaration = not args.recipes or args.readme is not None
    if needs_declaration and not Path(args.declaration).is_file():
        parser.error(f"{args.declaration}: not found (--declaration; the default is relative to the repository's root, "
                     "where make runs)")
    exp = load_experiment(args.declaration) if needs_declaration else None
    out = Path(args.out)
    if out.suffix != ".json":
        parser.error(f"--out {out}: a .json file (the table is written beside it as .md)")
    check_output_file(out)  # the three files this run writes, before it trains (before: the JSON's folder only)
    check_output_file(out.with_suffix(".md"), "--out's .md table")
    if args.readme is not None:
        check_output_file(Path(args.readme) / "README.md", "--readme")
    if not (Path(args.data) / "metadata").is_dir():
        parser.error(f"{args.data}: no dataset there (make data-synth writes make demo's embedded benchmark)")
    data = check_dataset_root(args.data, files=False)
    if args.readme is not None and not (Path(args.readme) / "metrics.json").is_file():
        parser.error(f"{Path(args.readme) / 'metrics.json'}: not found (--readme names a make demo-methods results "
                     "folder)")
    plan = ([(Path(r), tuple(args.multipliers)) for r in args.recipes] if args.recipes else
            [(r, tuple(args.multipliers or m)) for r, m in declared_plan(exp)])
    if not plan:
        parser.error(f"{args.declaration}: no run chooses {HEAD_LR_KEY.rsplit('.', 1)[-1]} on val; name --recipes and "
                     "--multipliers")
    from cream_pl.reporting.tables import write_markdown_atomic

    table = markdown(probe(plan, data, out, args.steps))
    write_markdown_atomic(table, out.with_suffix(".md"))
    print(table, end="")
    if args.readme is not None:
        print(f"{rewrite_methods_readme(Path(args.readme), exp)}: rewritten from its metrics.json "
              "and this probe")
    return 0


if __name__ == "__main__":
    sys.exit(main())
