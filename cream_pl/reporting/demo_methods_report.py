"""The report of ``make demo-methods``: ``results/embedded_methods/README.md`` and the README's summary block.

Every sentence is computed from ``metrics.json`` (a gain or a loss only where the paired bootstrap
interval excludes 0); nothing here trains or evaluates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.reporting.evidence import METRIC_NAMES

__all__ = ["BEGIN", "END", "build_payload", "head_lr_lines", "report", "plugin_table", "probe_lines", "render_markdown", "splice_summary", "summary_lines", "variant_lines"]

BEGIN, END = "<!-- METHODS:BEGIN -->", "<!-- METHODS:END -->"


def _diff(payload: Mapping[str, Any], a: str, b: str, metric: str) -> Mapping[str, Any] | None:
    return payload["differences"].get(f"{a}-{b}", {}).get(metric)


def _cell(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "—"
    lo, hi = d["ci95"]
    return f"{d['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def plugin_table(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]]) -> str:
    """One row per method: X, X + CREAM (val-selected) and their paired difference, per metric."""
    head = ["| method | metric | X | X + CREAM (val-selected) | X + CREAM − X [95 % CI] | verdict |",
            "| --- | --- | ---: | ---: | ---: | --- |"]
    rows = payload["methods"]
    for key, name, _ in runs:
        for metric in ("max_box_acc_v2", "gt_known", "top1_loc"):
            d = _diff(payload, f"{key}_cream_selected", key, metric)
            head.append(f"| {name} | {METRIC_NAMES[metric]} | {rows[key][metric]:.2f} | "
                        f"{rows[key + '_cream_selected'][metric]:.2f} | {_cell(d)} | {d['verdict'] if d else '—'} |")
    return "\n".join(head)


def _cls_table(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]]) -> str:
    lines = ["| method | Top-1 Cls | T | κ | λ | M-step norm | CREAM variant | val MaxBoxAccV2 of the choice |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    from cream_pl.reporting.evidence import PAPER_DEFAULTS as P

    lines.append(f"| paper defaults | | {P['T']} | {P['kappa']:g} | {P['lambda']:g} | {P['feature_norm']} | | |")
    for key, name, _ in runs:
        s = payload["selected"][key]
        lines.append(f"| {name} | {payload['methods'][key]['cls_acc']:.2f} | {s['T']} | {s['kappa']:g} | "
                     f"{s['lambda']:g} | {s['feature_norm']} | {s.get('variant') or '—'} | {s['val_score']:.2f} |")
    return "\n".join(lines)


_VARIANT_MEANING = {
    "branches": "CREAM on each ACoL branch, then ACoL's max-fusion",
    "fused": "CREAM on ACoL's fused map, EM over both branches' features",
    "before_adl": "embeddings from the features before the last ADL layer",
    "after_adl": "embeddings from the features after it (ADL applied)",
}


def variant_lines(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]]) -> list[str]:
    """Per method with several CREAM variants: each variant's best val MaxBoxAccV2 and the one val chose.

    >>> p = {"selected": {"adl": {"variant": "after_adl", "variants_val": {"before_adl": 60.5, "after_adl": 61.0}}}}
    >>> variant_lines(p, [("adl", "ADL", "")])[0]
    'ADL: val chose **after_adl** (embeddings from the features after it (ADL applied)): best val MaxBoxAccV2 before_adl 60.50, after_adl 61.00.'
    """
    out = []
    for key, name, _ in runs:
        s = payload["selected"].get(key, {})
        vals = s.get("variants_val") or {}
        if not vals:
            continue
        chosen = s.get("variant", "")
        scores = ", ".join(f"{v} {x:.2f}" for v, x in vals.items())
        out.append(f"{name}: val chose **{chosen}** ({_VARIANT_MEANING.get(chosen, chosen)}): best val MaxBoxAccV2 "
                   f"{scores}.")
    return out


def head_lr_lines(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]]) -> list[str]:
    """Per method whose training grid was chosen on val: every candidate's val and test figures, and the choice.

    >>> p = {"head_lr_multiplier": {"spg": {"chosen": 3.0, "recipe": 10.0, "candidates": {
    ...     "10": {"val_max_box_acc_v2": 0.0, "val_cls_acc": 12.5, "test_max_box_acc_v2": 0.0,
    ...            "test_cream_max_box_acc_v2": 0.0, "test_cls_acc": 12.5},
    ...     "3": {"val_max_box_acc_v2": 61.0, "val_cls_acc": 90.0, "test_max_box_acc_v2": 60.0,
    ...           "test_cream_max_box_acc_v2": 66.0, "test_cls_acc": 91.0}}}}}
    >>> head_lr_lines(p, [("spg", "SPG", "")])[0].startswith("SPG: val chose the new layers' learning rate at **3x**")
    True
    """
    out = []
    for key, name, _ in runs:
        h = (payload.get("head_lr_multiplier") or {}).get(key)
        if not h:
            continue
        cells = "; ".join(f"x{m}: val {c['val_max_box_acc_v2']:.2f} (Top-1 Cls {c['val_cls_acc']:.1f}), test X "
                          f"{c['test_max_box_acc_v2']:.2f}, X + CREAM {c['test_cream_max_box_acc_v2']:.2f}"
                          for m, c in h["candidates"].items())
        out.append(f"{name}: val chose the new layers' learning rate at **{h['chosen']:g}x** the base rate "
                   f"(the recipe's: {h['recipe']:g}x; chosen by X's val MaxBoxAccV2, the test columns are reported, "
                   f"never used): {cells}.")
    return out


def probe_lines(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]]) -> list[str]:
    """Per method, from the probe: how CREAM changes its map's contrast and its GT-known misses.

    >>> f = lambda i, o, s, l, t: {"map_inside_box": i, "map_outside_box": o, "misses_too_small": s,
    ...                            "misses_too_large": l, "tau": t, "right": 60.0}
    >>> p = {"probe_map_extent": {"acol": {"cam": f(0.655, 0.251, 113, 287, 0.573),
    ...                                    "cream_selected": f(0.789, 0.467, 145, 278, 0.789)}}}
    >>> line = probe_lines(p, [("acol", "ACoL", "")])[0]
    >>> line.split(":")[0], "margin between object and background shrinks (0.404 → 0.322)" in line
    ('ACoL', True)
    """
    out = []
    for key, name, _ in runs:
        pr = (payload.get("probe_map_extent") or {}).get(key)
        if not pr:
            continue
        x, c = pr["cam"], pr["cream_selected"]
        mx = x["map_inside_box"] - x["map_outside_box"]
        mc = c["map_inside_box"] - c["map_outside_box"]
        line = (f"{name}: X's map averages {x['map_inside_box']:.3f} inside the true boxes and {x['map_outside_box']:.3f} "
                f"outside; CREAM raises the inside by {c['map_inside_box'] - x['map_inside_box']:+.3f} and the outside by "
                f"{c['map_outside_box'] - x['map_outside_box']:+.3f}, so the margin between object and background "
                f"{'grows' if mc > mx else 'shrinks'} ({mx:.3f} → {mc:.3f}). GT-known misses at the val τ* "
                f"({x['tau']:.3f} → {c['tau']:.3f}): boxes too large {x['misses_too_large']} → {c['misses_too_large']}, "
                f"too small {x['misses_too_small']} → {c['misses_too_small']}.")
        if mc < mx:
            line += (" CREAM re-activates the background more than the object here: no threshold of its map separates "
                     "them as well as X's does.")
        elif c["misses_too_large"] < x["misses_too_large"]:
            line += " With the wider margin the val τ* rises, and fewer boxes spread past the object."
        out.append(line)
    return out


PROBE_FILE = "probe_head_lr.json"
"""The head learning-rate probe's results (:mod:`cream_pl.pipelines.probe_head_lr`), in the results folder."""


def _curve_text(c: Mapping[str, Any], tail: int = 10) -> str:
    """One curve of the probe: its first loss, its peak, and how it ends (NaN, or its last ``tail`` steps' mean).

    >>> _curve_text({"multiplier": 10.0, "first": 5.15, "peak": 946.9, "peak_step": 4, "steps": 45,
    ...              "first_nonfinite_step": None, "losses": [5.15, 946.9] + [4.2] * 43})
    'at 10x from 5.15, up to 946.9 at step 4, 4.20 on average over its last 10 of 45 steps'
    >>> _curve_text({"multiplier": 1.0, "first": 4.2, "peak": 4.2, "peak_step": 1, "steps": 3,
    ...              "first_nonfinite_step": 3, "losses": [4.2, 1.0, float("nan")]})
    'at 1x from 4.2, NaN / inf from step 3 of 3'
    """
    text = f"at {c['multiplier']:g}x from {c['first']:.3g}"
    if c["peak_step"] and c["peak_step"] > 1:
        text += f", up to {c['peak']:,.4g} at step {c['peak_step']}"
    if c["first_nonfinite_step"]:
        return text + f", NaN / inf from step {c['first_nonfinite_step']} of {c['steps']}"
    last = c["losses"][-tail:]
    return text + f", {sum(last) / len(last):.2f} on average over its last {len(last)} of {c['steps']} steps"


def head_lr_probe_lines(probe: Mapping[str, Any] | None, payload: Mapping[str, Any],
                        runs: Sequence[tuple[str, str, str]]) -> list[str]:
    """Why the methods whose head learning rate is chosen on val get a choice, from the probe's loss curves.

    >>> c = lambda m, f, p, s, n: {"recipe": "experiments/embedded_acol_cream.yaml", "multiplier": m, "first": f,
    ...     "peak": p, "peak_step": s, "losses": [f, p, 4.2], "steps": 3, "first_nonfinite_step": n}
    >>> probe = {"curves": {"a@1x": c(1.0, 5.2, 5.2, 1, None), "a@10x": c(10.0, 5.2, 947.0, 2, None)}}
    >>> line = head_lr_probe_lines(probe, {"head_lr_multiplier": {"acol": {}}}, [("acol", "ACoL", "embedded_acol_cream")])[0]
    >>> "ACoL at 10x from 5.2, up to 947 at step 2, 318.80 on average over its last 3 of 3 steps" in line
    True
    """
    chosen = [(k, n, r) for k, n, r in runs if k in (payload.get("head_lr_multiplier") or {})]
    names = " and ".join(n for _, n, _ in chosen)
    why = (f"Why {names} get a choice: their new multi-layer heads (3x3 convolutions without normalisation on the "
           "trunk map) train at the head rate, which the other recipes set at 10x, calibrated on CAM, whose only new "
           "layer is one linear classifier.")
    if not probe:
        return [why + " (The training-loss probe of each rate, `make probe-head-lr`, was not run for this report.)"]
    parts = []
    for _, name, recipe in chosen:
        curves = sorted((c for c in probe["curves"].values() if Path(c["recipe"]).stem == recipe),
                        key=lambda c: -c["multiplier"])
        if curves:
            parts.append(f"{name} " + "; ".join(_curve_text(c) for c in curves))
    probed = ("" if not parts else " The training loss of every step of each recipe at each rate (`make probe-head-lr`, "
              "[`probe_head_lr.md`](probe_head_lr.md); the recipes as the runs train them): " + ". ".join(parts) + ".")
    if probe.get("stale"):
        probed += (f" Left out: {', '.join(probe['stale'])}, trained from another recipe or dataset than these runs' "
                   "(`make probe-head-lr` trains them again).")
    grid = sorted({float(m) for k, _, _ in chosen for m in payload["head_lr_multiplier"][k].get("candidates", {})})
    return [why + probed + " wsolevaluation's protocol chooses every method's training hyperparameters on val; here "
            f"only these {len(chosen)} get a grid ({', '.join(f'{m:g}x' for m in grid)}), and their recipes carry val's "
            f"choice; the other {len(runs) - len(chosen)} keep the shared 10x, so a cross-method difference with "
            f"{' or '.join(n for _, n, _ in chosen)} compares a val-chosen rate with a fixed one."]


def summary_lines(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]]) -> list[str]:
    """What the numbers show, one sentence per claim, each computed from an interval."""
    out: list[str] = []
    gains, losses = [], []
    for key, name, _ in runs:
        d = _diff(payload, f"{key}_cream_selected", key, "max_box_acc_v2")
        if d is None:
            continue
        (gains if d["verdict"] == "gain" else losses if d["verdict"] == "loss" else []).append(name)
        g = _diff(payload, f"{key}_cream_selected", key, "gt_known")
        out.append(f"CREAM (val-selected) on {name}: MaxBoxAccV2 {d['b']:.2f} → {d['a']:.2f}, {_cell(d)}, "
                   f"{d['verdict']}" + (f"; GT-known {_cell(g)}, {g['verdict']}" if g else "") + ".")
    n = len(runs)
    lost = [(k, nm, r) for k, nm, r in runs if nm in losses]
    out += [f"Why CREAM loses on {line}" for line in probe_lines(payload, lost)]
    out.append(f"CREAM's MaxBoxAccV2 gain excludes 0 for {len(gains)} of {n} methods"
               + (f" ({', '.join(gains)})" if gains else "") + (f"; a loss for {', '.join(losses)}" if losses else "")
               + ".")
    for key, name, _ in runs:
        if key == "cam":
            continue
        d = _diff(payload, key, "cam", "max_box_acc_v2")
        c = _diff(payload, f"{key}_cream_selected", "cam_cream_selected", "max_box_acc_v2")
        if d is not None:
            out.append(f"{name} − CAM (both without CREAM): MaxBoxAccV2 {_cell(d)}, {d['verdict']}"
                       + (f"; {name} + CREAM − CAM + CREAM: {_cell(c)}, {c['verdict']}" if c else "") + ".")
        cls, loc = _diff(payload, key, "cam", "cls_acc"), _diff(payload, key, "cam", "top1_loc")
        if cls is not None and cls["verdict"] == "loss":
            out.append(f"{name} classifies worse than CAM after the same epochs (Top-1 Cls {cls['a']:.2f} vs "
                       f"{cls['b']:.2f}, {_cell(cls)}): its training images differ from the test images, and its "
                       "Top-1 Loc, which needs the right class"
                       + (f", falls with it ({_cell(loc)} against CAM)" if loc else " too, falls with it") + ".")
    return out


def _head_cost_text() -> str:
    """What ACoL's and SPG's heads cost on Lite0, counted now (:func:`cream_pl.models.wsol_heads.head_costs`)."""
    from cream_pl.models.wsol_heads import head_costs

    c = head_costs("efficientnet_lite0", num_classes=200)
    return ("ACoL and SPG run on Lite0 with head widths scaled to its channels (ACoL: two branches of two 3x3 "
            f"convolutions of 320 channels in place of `conv_head`, {c['acol']:.2f} GMAC per 224-px image at CUB's 200 "
            f"classes, {c['acol'] / c['backbone']:.1f}x the {c['backbone']:.2f} GMAC backbone, where the reference's "
            f"fixed 1024-channel heads would cost {c['acol_reference']:.1f} GMAC, {c['acol_reference'] / c['backbone']:.0f}x; "
            f"SPG: {c['spg']:.2f} GMAC of training-only branches; counted by `cream_pl.models.wsol_heads.head_costs`).")


def render_markdown(payload: Mapping[str, Any], runs: Sequence[tuple[str, str, str]], command: str,
                    probe: Mapping[str, Any] | None = None) -> str:
    """``results/embedded_methods/README.md``; ``command``: the runner's command line that produced it; ``probe``:
    :mod:`cream_pl.pipelines.probe_head_lr`'s results (``probe_head_lr.json`` beside it), if it ran."""
    from cream_pl.reporting.evidence import differences_markdown

    b, t = payload["benchmark"], payload["timing"]
    names = {}
    for key, name, _ in runs:
        names[key], names[key + "_cream_selected"] = name, f"{name} + CREAM"
    stage = "; ".join(f"{name} fit {t[key].get('fit_s', float('nan')) / 60:.1f} min, test "
                      f"{t[key].get('test_s', float('nan')) / 60:.1f} min" for key, name, _ in runs if key in t)
    lines = [
        "# WSOL methods with and without CREAM " + ("on the embedded CUB-like benchmark" if b["preset"] else
                                                     f"on `{b['data']}`"),
        "",
        f"Produced by `make demo-methods` (`{command}`): "
        + (f"the `{b['preset']}` preset (seed {b['seed']})" if b["preset"] else f"the dataset `{b['data']}`")
        + f", {b['num_val']} val / {b['num_test']} test images, "
        f"{b['seeds']} training seed ({b['train_seed']}) per row. Each method is one run of its recipe "
        f"({', '.join(f'`experiments/{r}.yaml`' for _, _, r in runs)}): the same data, backbone "
        "(EfficientNet-Lite0), optimiser and epochs; only the training method differs. CREAM's context "
        "embeddings are learned during each method's own training; its T, κ, λ and M-step feature norm are "
        f"chosen on the val split by MaxBoxAccV2 over one {len(payload['protocol']['search_space']['iterations']) * len(payload['protocol']['search_space']['kappa']) * len(payload['protocol']['search_space']['lambda']) * len(payload['protocol']['search_space']['feature_norm'])}-candidate grid, the same for every method "
        "(for ADL and ACoL times the method's CREAM variants: where CREAM runs on ACoL's two branches, which ADL "
        "features the embeddings learn from); the test split never selects. " + _head_cost_text(),
        "",
        "## X and X + CREAM",
        "",
        plugin_table(payload, runs),
        "",
        "## Classification and CREAM's val choice per method",
        "",
        _cls_table(payload, runs),
        "",
        "## CREAM's variants, chosen on val",
        "",
        *([f"- {s}" for s in variant_lines(payload, runs)] or ["- (no method with several variants in this run)"]),
        "",
        "## Training hyperparameters chosen on val",
        "",
        *([f"- {s}" for s in head_lr_lines(payload, runs)]
          or ["- (every method trained with its recipe's settings)"]),
        *([f"- {s}" for s in head_lr_probe_lines(probe, payload, runs)] if payload.get("head_lr_multiplier") else []),
        "",
        "## Where the boxes go wrong (a probe of the trained models, test split, no selection)",
        "",
        "Each map's GT-known box (largest contour at its val τ*) against the true box it overlaps most "
        "(`python -m cream_pl.pipelines.probe_map_extent`; its \"right\" column reproduces GT-known Loc):",
        "",
        *([f"- {s}" for s in probe_lines(payload, runs)] or ["- (no probe)"]),
        "",
        "## Every stated difference",
        "",
        differences_markdown(payload["differences"], names),
        "",
        "## What the numbers show",
        "",
        *[f"- {s}" for s in summary_lines(payload, runs)],
        "",
        "## Not run",
        "",
        *([f"- **{k}**: {v}." for k, v in payload["missing"].items()]
          or ["- None: all six of the benchmark's methods run (CAM, HaS, CutMix, ADL, ACoL, SPG)."]),
        "",
        "## Limits",
        "",
        f"- One training seed per row, {b.get('epochs', '?')} CPU epochs on a synthetic set: the intervals cover "
        "test-image sampling, not seed variance. Nothing here predicts the methods' CUB numbers (each recipe under "
        "`experiments/cub_*` names the reference's MaxBoxAccV2 for its row).",
        f"- Time: {t['total_s'] / 60:.1f} min of stages ({stage}); each measured when it ran; "
        f"this invocation {t['this_invocation_s'] / 60:.1f} min (it skips stages whose outputs exist), on the project's "
        "2-core CPU machine.",
        "",
    ]
    return "\n".join(lines)


def splice_summary(readme: Path, payload: Mapping[str, Any], results: Path) -> None:
    """Replace the README's METHODS block by the plug-in table and the summary sentences."""
    from cream_pl.core.io import atomic_write_text
    from cream_pl.reporting.demo_report import splice_readme

    runs = [(k, payload["methods"][k]["display_name"], "") for k in payload["methods"] if not k.endswith("_cream_selected")]
    body = "\n".join([plugin_table(payload, runs), "", *[f"- {s}" for s in summary_lines(payload, runs)], "",
                      f"Details, every difference and the val choices: [`{results.as_posix()}/README.md`]"
                      f"({results.as_posix()}/README.md)."])
    atomic_write_text(readme, splice_readme(readme.read_text(), body, begin=BEGIN, end=END, root=results.as_posix()))
    print(f"{readme}: methods block regenerated from {results}")


def _selected(o: Any) -> dict[str, Any]:
    sel = o.test["methods"]["cream_selected"]
    return {"T": int(sel["T"]), "kappa": float(sel["kappa"]), "lambda": float(sel["lambda"]),
            "feature_norm": sel["feature_norm"], "val_score": float(sel["val_score"]), "val_metric": "max_box_acc_v2",
            "candidates": o.facts["candidates"], **({"variant": sel["variant"]} if "variant" in sel else {}),
            **({"variants_val": o.val["variants"]} if o.val.get("variants") else {})}


def _head_lr(o: Any) -> dict[str, Any]:
    c = o.choice
    return {"chosen": c["chosen"], "recipe": c["recipe"], "val_metric": "max_box_acc_v2 of X",
            "candidates": {f"{v:g}": {"val_max_box_acc_v2": t.val["max_box_acc_v2"], "val_cls_acc": t.val["cls_acc"],
                                      "test_max_box_acc_v2": t.test["methods"]["cam"]["max_box_acc_v2"],
                                      "test_cream_max_box_acc_v2": t.test["methods"]["cream_selected"]["max_box_acc_v2"],
                                      "test_cls_acc": t.test["cls_acc"]} for v, t in c["tried"].items()}}


def build_payload(exp: Any, result: Any) -> dict[str, Any]:
    """``make demo-methods``'s ``metrics.json`` from the runner's outcomes (one seed)."""
    seed = min(result.rows)
    outcomes = result.outcomes[seed]
    runs = [r for r in exp.runs if r.key in outcomes]
    rows: dict[str, Any] = {}
    timing: dict[str, Any] = {"data_s": round(result.timing["data_s"], 1) if result.timing["data_ran"] else 0.0}
    for run in runs:
        o = outcomes[run.key]
        for row, m in run.rows.items():
            rows[row] = {**result.rows[seed][row], "display_name": run.name + (" + CREAM (val-selected)" if m != "cam" else ""),
                         "run": run.key, "map": m, "wsol_method": o.facts["wsol_method"],
                         "wsol_method_args": o.facts["wsol_method_args"]}
        tried = o.choice["tried"].values() if o.choice else [o]
        timing[run.key] = {k: round(sum(t.timing.get(k, 0.0) for t in tried), 1) for k in ("fit_s", "test_s")}
    first = outcomes[runs[0].key].facts
    stage_s = timing["data_s"] + sum(v for r in runs for v in timing[r.key].values() if v == v)
    timing.update(total_s=round(stage_s, 1), this_invocation_s=round(result.timing["this_invocation_s"], 1))
    search = {k: v for k, v in (first["search_space"] or {}).items() if k != "variant"}
    return {
        "benchmark": {"data": str(result.data), "preset": exp.dataset.preset if result.owned_data else None,
                      "seed": exp.dataset.seed, "train_seed": seed,
                      "num_val": first["num_val"], "num_test": first["num_test"], "epochs": first["epochs"],
                      "seeds": 1, "fast": result.fast},
        "protocol": {"split": "test", "eval_size": first["eval_size"], "cam_curve_interval": first["cam_curve_interval"],
                     "max_box_acc_v2": "mean over IoU {30,50,70} of the best-threshold box accuracy, all contours",
                     "gt_known/top1_loc": "largest-contour box at the val split's tau* (IoU >= 0.5)",
                     "selection": exp.settings["selection"], "search_space": search,
                     "variants": {r.key: outcomes[r.key].facts["search_space"]["variant"] for r in runs
                                  if "variant" in (outcomes[r.key].facts["search_space"] or {})}},
        "methods": rows,
        "selected": {r.key: _selected(outcomes[r.key]) for r in runs},
        "head_lr_multiplier": {r.key: _head_lr(outcomes[r.key]) for r in runs if outcomes[r.key].choice},
        "probe_map_extent": {r.key: outcomes[r.key].stages["probe_map_extent"]["probe"] for r in runs
                             if "probe_map_extent" in outcomes[r.key].stages},
        "differences": result.differences[seed],
        "missing": dict(exp.settings.get("missing", {})),
        "timing": timing,
    }


def report(exp: Any, result: Any, out: Path) -> dict[str, Any]:
    """``metrics.json`` and ``README.md`` of ``make demo-methods``."""
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    payload = build_payload(exp, result)
    runs = [(r.key, r.name, Path(r.recipe).stem) for r in exp.runs if r.key in result.outcomes[min(result.rows)]]
    write_json_atomic(payload, out / "metrics.json")
    write_markdown_atomic(render_markdown(payload, runs, result.command, read_probe(out, result.data)), out / "README.md")
    print(f"[{exp.name}] done in {payload['timing']['this_invocation_s'] / 60:.1f} min (all stages "
          f"{payload['timing']['total_s'] / 60:.1f} min): {out / 'README.md'}", flush=True)
    return payload


def read_probe_curves(path: Path) -> dict[str, Any]:
    """The curves of a probe results file (none where there is no file); a file that is not one is one line."""
    import json

    from cream_pl.core.errors import UserValueError

    if not Path(path).is_file():
        return {}
    try:
        curves = json.loads(Path(path).read_text(encoding="utf-8"))["curves"]
        if not isinstance(curves, dict) or not all(isinstance(c, dict) and "losses" in c for c in curves.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise UserValueError(f"{path}: not a probe_head_lr results file (JSON with a 'curves' mapping)") from None
    return curves


def read_probe(results: Path, data: Path | str | None = None) -> dict[str, Any] | None:
    """``<results>/probe_head_lr.json`` (:mod:`cream_pl.pipelines.probe_head_lr`), or ``None`` where it has not run.

    A curve whose recipe (as it is here) or dataset (``data``, where it is here) is not the one it was trained from
    is left out, named under ``"stale"``: the report never states a probe of other inputs.
    """
    from cream_pl.core.io import file_sha1
    from cream_pl.data.metadata import data_sha1

    path = Path(results) / PROBE_FILE
    if not path.is_file():
        return None
    today = {"data_sha1": data_sha1(Path(data))} if data is not None and (Path(data) / "metadata").is_dir() else {}
    stored = read_probe_curves(path)
    recipes = {c.get("recipe", "") for c in stored.values()}
    recipe_sha1 = {r: file_sha1(r) for r in recipes if Path(r).is_file()}  # each recipe hashed once, not per rate
    curves, stale = {}, []
    for key, c in stored.items():
        r = c.get("recipe", "")
        now = dict(today, **({"recipe_sha1": recipe_sha1[r]} if r in recipe_sha1 else {}))
        if all(c.get("inputs", {}).get(k) == v for k, v in now.items()):
            curves[key] = c
        else:
            stale.append(key)
    return {"curves": curves, "stale": stale}


def in_order(d: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``d`` with ``keys`` first, in that order, then its other keys.

    >>> in_order({"b": 1, "a": 2, "c": 3}, ["c", "a"])
    {'c': 3, 'a': 2, 'b': 1}
    """
    return {k: d[k] for k in keys if k in d} | {k: v for k, v in d.items() if k not in keys}
