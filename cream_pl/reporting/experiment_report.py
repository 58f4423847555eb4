"""The reports an experiment declaration may name (``report:``), and the README block it fills (``readme:``).

A report is a function ``(experiment, result, out) -> payload`` that writes ``<out>/metrics.json`` (the
payload) and its markdown, atomically, from the runner's :class:`~cream_pl.pipelines.runner.ExperimentResult`
alone. ``table`` is the generic one, for any new experiment: per seed, every row and every stated
difference with its interval; over two or more seeds, mean ± sd per row and per difference and in
how many seeds the interval excluded 0. The demos keep their own layouts (their ``metrics.json``
keys are read by people and dashboards): ``demo``, ``seeds`` and ``methods``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["REPORTS", "SPLICES", "aggregate_seeds", "check_declaration", "compare_numbers", "data_check", "report_function", "splice_block", "table_report"]

REPORTS = {"table": "cream_pl.reporting.experiment_report:table_report",
           "demo": "cream_pl.reporting.demo_report:report",
           "seeds": "cream_pl.reporting.demo_seeds_report:report",
           "methods": "cream_pl.reporting.demo_methods_report:report",
           "calibration": "cream_pl.reporting.calibration_report:report",
           "kd": "cream_pl.reporting.demo_kd_report:report"}
"""Report name -> ``module:function`` (imported when used: ``--help`` stays instant)."""
RESULTS_FILE = {"calibration": "calibration.json"}
"""A report's results file in its ``out`` folder where it is not ``metrics.json`` (what ``--compare`` reads)."""
SIGNATURE = {"table": "per_seed", "demo": "ablations", "seeds": "selected_per_seed", "methods": "head_lr_multiplier",
             "calibration": "targets_met", "kd": "main_rows"}
"""A key each report's results file holds and the others' lack: ``--compare`` refuses another report's file before
any work (before: every number listed as 'only in' one file, after the runs)."""
ONE_SEED = frozenset({"demo", "methods", "calibration", "kd"})
"""The reports that show one training seed (the lowest one run): more seeds would train for nothing."""
SPLICES = {"RESULTS": "cream_pl.reporting.demo_report:splice",
           "METHODS": "cream_pl.reporting.demo_methods_report:splice_summary",
           "TABLE": "cream_pl.reporting.experiment_report:splice_table"}
"""README block (its ``<!-- NAME:BEGIN -->`` / ``END`` markers) -> the function that fills it."""
SPLICE_REPORTS = {"RESULTS": ("demo",), "METHODS": ("methods",)}
"""The reports whose results a README block reads (``TABLE``: any report's ``metrics.md``)."""
METRICS = ("max_box_acc_v2", "gt_known", "top1_loc", "pxap", "cls_acc")


def _resolve(table: Mapping[str, str], name: str, what: str) -> Callable[..., Any]:
    if name not in table:
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{what} {name!r}: unknown; known: {sorted(table)}")
    module, function = table[name].split(":")
    return getattr(importlib.import_module(module), function)


def report_function(name: str) -> Callable[..., dict[str, Any]]:
    """The report named ``name`` (:data:`REPORTS`)."""
    return _resolve(REPORTS, name, "report")


def data_check(name: str) -> Callable[[Path], None] | None:
    """The report's check of a dataset given instead of the declared one (its module's ``check_data``), if it has one:
    what the report reads beyond the benchmark format, refused before any work."""
    module = importlib.import_module(REPORTS[name].split(":")[0]) if name in REPORTS else None
    return getattr(module, "check_data", None)


_DEMO_ROWS = {"cam": "cam", "cream": "cream", "cream_selected": "cream_selected"}
_NEEDS: dict[str, dict[str, Any]] = {
    "demo": {"one_run": True, "rows": _DEMO_ROWS},
    "seeds": {"one_run": True, "rows": _DEMO_ROWS},
    "methods": {"rows": {"{key}": "cam", "{key}_cream_selected": "cream_selected"}, "settings": ("selection",)},
    "calibration": {"one_run": True, "rows": {"cam": "cam"}, "stages": ("split_statistics", "center_baseline")},
    "kd": {"test": "epochs", "all_rows": {"cam": "cam", "cream_selected": "cream_selected", "ci_cam": "cam",
                                          "ci_cam_cream_selected": "cream_selected", "kd_ci_cam": "cam"}},
}
"""What each demo report reads beyond a table (``table`` reads anything): one run, the rows (name: map) each run
gives (``{key}``: the run's key) or the runs give between them (``all_rows``), stages, settings; checked when the
declaration is read, not after its training (a ``KeyError`` there before)."""
MIN_SEEDS = {"seeds": 2}
"""Training seeds a report needs at least (a spread), besides a declaration's ``settings.min_seeds``."""


def check_declaration(exp: Any) -> None:
    """Refuse, in one line naming the declaration, a declaration its report cannot read (:data:`_NEEDS`)."""
    from cream_pl.core.errors import UserValueError

    needs = _NEEDS.get(exp.report, {})

    def fail(what: str) -> UserValueError:
        return UserValueError(f"{exp.source}: report: {exp.report!r} needs {what}")

    if needs.get("one_run") and len(exp.runs) != 1:
        raise fail(f"exactly one run, got {len(exp.runs)}")
    for i, run in enumerate(exp.runs):
        wanted = {name.replace("{key}", run.key): m for name, m in needs.get("rows", {}).items()}
        missing = {name: m for name, m in wanted.items() if run.rows.get(name) != m}
        if missing:
            raise fail(f"the rows {wanted} (name: map) from every run; runs[{i}] ({run.key}) lacks {missing}")
        stages = [s for s in needs.get("stages", ()) if s not in run.stages]
        if stages:
            raise fail(f"the stages {list(needs['stages'])}; runs[{i}] ({run.key}) lacks {stages}")
        if "test" in needs and run.test != needs["test"]:
            raise fail(f"every run tested per epoch (test: {needs['test']}); runs[{i}] ({run.key}) is not")
    given = {name: m for run in exp.runs for name, m in run.rows.items()}
    missing = {name: m for name, m in needs.get("all_rows", {}).items() if given.get(name) != m}
    if missing:
        raise fail(f"the rows {needs['all_rows']} (name: map) from its runs; none gives {missing}")
    block = (exp.readme or {}).get("block")
    if block in SPLICE_REPORTS and exp.report not in SPLICE_REPORTS[block]:  # before: a KeyError after the training
        raise UserValueError(f"{exp.source}: readme.block: {block} is filled from the results of report "
                             f"{' or '.join(SPLICE_REPORTS[block])}, not {exp.report!r}; use block TABLE (any report)")
    for key in needs.get("settings", ()):
        if key not in exp.settings:
            raise fail(f"settings.{key}")


def splice_block(exp: Any, payload: Mapping[str, Any], out: Path, readme: Path) -> None:
    """Fill the declaration's README block from the results in ``out``."""
    _resolve(SPLICES, exp.readme["block"], "README block")(readme, payload, out)


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "values": [float(x) for x in v]}


def aggregate_seeds(per_seed: Mapping[int, Mapping[str, Any]], rows: Sequence[str],
                    metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """Mean ± sd per (row, metric) and per stated difference over the seeds' payloads (rows at the top level,
    differences under ``differences``), with how many seeds' intervals excluded 0.

    Example:
        >>> a = {"cam": {"gt_known": 50.0}, "differences": {"x-y": {"gt_known": {"diff": 2.0, "ci95": [1.0, 3.0]}}}}
        >>> b = {"cam": {"gt_known": 54.0}, "differences": {"x-y": {"gt_known": {"diff": -2.0, "ci95": [-3.0, 1.0]}}}}
        >>> agg = aggregate_seeds({0: a, 1: b}, ["cam"])
        >>> agg["methods"]["cam"]["gt_known"]["mean"], agg["differences"]["x-y"]["gt_known"]["seeds_interval_above_0"]
        (52.0, 1)
    """
    seeds = sorted(per_seed)
    methods: dict[str, dict[str, Any]] = {}
    for row in rows:
        for metric in metrics:
            vals = [per_seed[s].get(row, {}).get(metric) for s in seeds]
            if all(isinstance(v, (int, float)) for v in vals):
                methods.setdefault(row, {})[metric] = mean_sd(vals)
    differences: dict[str, dict[str, Any]] = {}
    for pair in sorted({p for s in seeds for p in per_seed[s].get("differences", {})}):
        for metric in sorted({m for s in seeds for m in per_seed[s].get("differences", {}).get(pair, {})}):
            rs = [per_seed[s].get("differences", {}).get(pair, {}).get(metric) for s in seeds]
            if any(r is None for r in rs):
                continue
            differences.setdefault(pair, {})[metric] = {
                **mean_sd([r["diff"] for r in rs]),
                "seeds_interval_above_0": sum(r["ci95"][0] > 0 for r in rs),
                "seeds_interval_below_0": sum(r["ci95"][1] < 0 for r in rs),
                "ci95_per_seed": [r["ci95"] for r in rs]}
    return {"seeds": seeds, "methods": methods, "differences": differences}


def seeds_markdown_lines(agg: Mapping[str, Any], names: Mapping[str, str], metrics: Sequence[str] = METRICS) -> list[str]:
    """The mean ± sd table and the differences table of :func:`aggregate_seeds`."""
    def cell(d: Mapping[str, Any] | None) -> str:
        return "—" if d is None else f"{d['mean']:.2f} ± {d['sd']:.2f}"

    n = len(agg["seeds"])
    lines = ["| Method | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for row, per in agg["methods"].items():
        lines.append(f"| {names.get(row, row)} | " + " | ".join(cell(per.get(m)) for m in metrics) + " |")
    lines += ["", "| difference | metric | mean ± sd over seeds | per seed | seeds whose 95 % CI excludes 0 (above / below) |",
              "| --- | --- | ---: | --- | --- |"]
    for pair, per in agg["differences"].items():
        a, b = pair.split("-", 1)
        for metric, d in per.items():
            lines.append(f"| {names.get(a, a)} − {names.get(b, b)} | {metric} | {d['mean']:+.2f} ± {d['sd']:.2f} | "
                         + ", ".join(f"{v:+.2f}" for v in d["values"])
                         + f" | {d['seeds_interval_above_0']} / {d['seeds_interval_below_0']} of {n} |")
    return lines


def table_report(exp: Any, result: Any, out: Path) -> dict[str, Any]:
    """The generic report: per seed the rows and differences; over seeds, :func:`aggregate_seeds`."""
    from cream_pl.reporting.demo_report import METHOD_COLUMNS
    from cream_pl.reporting.evidence import differences_markdown
    from cream_pl.reporting.tables import (
        by_run,
        metrics_table_markdown,
        write_json_atomic,
        write_markdown_atomic,
    )

    names = {row: f"{r.name} ({row})" if r.name != r.key else row for r in exp.runs for row in r.rows}
    per_seed = {s: {**result.rows[s], "differences": result.differences[s]} for s in result.rows}
    payload: dict[str, Any] = {"experiment": exp.name, "declaration": exp.source, "fast": result.fast,
                               "per_seed": {str(s): p for s, p in per_seed.items()},
                               "timing": {k: round(v, 1) for k, v in result.timing.items() if isinstance(v, float)}}
    md = [f"# {exp.name}", "", f"Produced by `{result.command}`; data `{result.data}`.", ""]
    protocol = {k: by_run(o.facts[k] for outcomes in result.outcomes.values() for o in outcomes.values())
                for k in ("cam_curve_interval", "eval_size")}  # what the footnotes say: the runs' own settings
    for s, p in per_seed.items():
        rows = {names.get(k, k): v for k, v in result.rows[s].items()}
        md += [f"## Seed {s}", "", metrics_table_markdown(rows, METHOD_COLUMNS, {}, interval=protocol["cam_curve_interval"],
                                                          size=protocol["eval_size"]), ""]
        if p["differences"]:
            md += [differences_markdown(p["differences"], names), ""]
    if len(per_seed) > 1:
        payload["over_seeds"] = aggregate_seeds(per_seed, list(names))
        md += [f"## Over {len(per_seed)} seeds (mean ± sample sd)", "",
               *seeds_markdown_lines(payload["over_seeds"], names), ""]
    write_json_atomic(payload, out / "metrics.json")
    write_markdown_atomic("\n".join(md), out / "metrics.md")
    return payload


def splice_table(readme: Path, payload: Mapping[str, Any], out: Path) -> None:
    """Fill a README's ``TABLE`` block with ``<out>/metrics.md``."""
    from cream_pl.core.io import atomic_write_text
    from cream_pl.reporting.demo_report import splice_readme

    atomic_write_text(readme, splice_readme(readme.read_text(), (out / "metrics.md").read_text(),
                                            begin="<!-- TABLE:BEGIN -->", end="<!-- TABLE:END -->", root=out.as_posix()))


def compare_numbers(new: Any, ref: Any, tol: float = 1e-9, skip: Sequence[str] = ("timing", "wall_time", "wall_min", "meta"),
                    path: str = "") -> list[str]:
    """Where two results differ: every number to ``tol`` (NaN equals NaN), every other value exactly, every key on
    both sides; keys named in ``skip`` (times, and the machine and wall clock of a run's ``meta``) and keys in
    seconds (``*_s``) are not compared.

    Example:
        >>> compare_numbers({"a": 1.0, "timing": 3, "b": [1, "x"]}, {"a": 1.0 + 1e-12, "timing": 4, "b": [1, "y"]})
        ["/b[1]: 'x' vs 'y'"]
    """
    import math

    if isinstance(new, Mapping) and isinstance(ref, Mapping):
        def compared(k: Any) -> bool:  # a key in skip, or one in seconds (``fit_s``), is a time
            return k not in skip and not str(k).endswith("_s")

        out = [f"{path}/{k}: only in {'the new' if k in new else 'the reference'}"
               for k in sorted(set(new) ^ set(ref), key=str) if compared(k)]
        for k in sorted(set(new) & set(ref), key=str):
            if compared(k):
                out += compare_numbers(new[k], ref[k], tol, skip, f"{path}/{k}")
        return out
    if isinstance(new, list) and isinstance(ref, list):
        if len(new) != len(ref):
            return [f"{path}: {len(new)} vs {len(ref)} items"]
        return [d for i, (a, b) in enumerate(zip(new, ref)) for d in compare_numbers(a, b, tol, skip, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(new, numbers) and isinstance(ref, numbers) and not isinstance(new, bool) and not isinstance(ref, bool):
        same = (math.isnan(new) and math.isnan(ref)) or abs(new - ref) <= tol
        return [] if same else [f"{path}: {new!r} vs {ref!r}"]
    return [] if new == ref else [f"{path}: {str(new)[:60]!r} vs {str(ref)[:60]!r}"]


def compare_verdicts(new: Any, ref: Any, path: str = "") -> list[dict[str, Any]]:
    """Every stated difference (a mapping with ``diff``, ``ci95`` and ``verdict``) found at the same place in both
    results: both values and intervals, and whether the verdict is the same. Where a rerun cannot match every number
    (another machine's float kernels train another model), this is what must still hold.

    Example:
        >>> new = {"differences": {"b-a": {"m": {"diff": 7.5, "ci95": [6.0, 8.6], "verdict": "gain"}}}}
        >>> ref = {"differences": {"b-a": {"m": {"diff": 8.0, "ci95": [6.5, 9.2], "verdict": "gain"}}}}
        >>> [(v["path"], v["same_verdict"]) for v in compare_verdicts(new, ref)]
        [('/differences/b-a/m', True)]
    """
    if isinstance(new, Mapping) and isinstance(ref, Mapping):
        if {"diff", "ci95", "verdict"} <= set(new) and {"diff", "ci95", "verdict"} <= set(ref):
            return [{"path": path or "/", "new": {k: new[k] for k in ("diff", "ci95", "verdict")},
                     "reference": {k: ref[k] for k in ("diff", "ci95", "verdict")},
                     "same_verdict": new["verdict"] == ref["verdict"]}]
        return [v for k in sorted(set(new) & set(ref), key=str) for v in compare_verdicts(new[k], ref[k], f"{path}/{k}")]
    if isinstance(new, list) and isinstance(ref, list) and len(new) == len(ref):
        return [v for i, (a, b) in enumerate(zip(new, ref)) for v in compare_verdicts(a, b, f"{path}[{i}]")]
    return []


def write_comparison(new: Mapping[str, Any], ref: Mapping[str, Any], reference: Path, out: Path,
                     command: str) -> tuple[str, list[str]]:
    """``<out>/comparison.{json,md}``: how many numbers differ (to 1e-9) and every stated difference beside the
    reference's, with whether its verdict holds; returns the one-line summary and the numbers that differ
    (:func:`compare_numbers`)."""
    from cream_pl.core.machine import machine_facts, machine_line
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    diffs, verdicts = compare_numbers(new, ref), compare_verdicts(new, ref)
    kept = sum(v["same_verdict"] for v in verdicts)
    line = ("every number equal to 1e-9 (times and machine aside)" if not diffs else
            f"{len(diffs)} numbers differ; {kept} of {len(verdicts)} stated differences keep their verdict")
    f = machine_facts()
    machine = {"cpu": f["cpu"], "cores": f["cores"], "torch": f["torch_release"]}
    write_json_atomic({"reference": str(reference), "command": command, "numbers_differing": len(diffs),
                       "first_numbers_differing": diffs[:50], "verdicts": verdicts, "verdicts_kept": kept,
                       "machine": machine}, out / "comparison.json")

    def cell(d: Mapping[str, Any]) -> str:
        lo, hi = d["ci95"]
        return f"{d['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}] {d['verdict']}"

    def ran_on(folder: Path) -> list[str]:  # the runner's record of the machines a run's stages ran on
        stages = folder / "machines.json"
        return [m for m in json.loads(stages.read_text()) if m != "not recorded"] if stages.is_file() else []

    here, there = ran_on(out), ran_on(Path(reference).parent)
    where = (f"This run's stages ran on: {'; '.join(here)}" if here else f"This report's machine: {machine_line()}")
    where += (f"; the reference's on: {'; '.join(there)}" if there else
              "; the reference's machines are not recorded (no `machines.json` beside it)")
    md = [f"# Against `{reference}`", "", f"Produced by `{command} --compare {reference}`: {line}. {where} (each "
          "stage's: `machines.json`).", "",
          "| difference | this run: a − b [95 % CI] verdict | reference | same verdict |", "| --- | --- | --- | :---: |",
          *[f"| `{v['path']}` | {cell(v['new'])} | {cell(v['reference'])} | {'yes' if v['same_verdict'] else '**no**'} |"
            for v in verdicts]]
    if diffs:
        md += ["", f"First numbers that differ (of {len(diffs)}):", "", *[f"- `{d}`" for d in diffs[:20]]]
    write_markdown_atomic("\n".join(md), out / "comparison.md")
    return line, diffs

