"""``make demo``'s results folder: ``metrics.json``, ``metrics.md`` and the ablation tables, from the numbers alone.

Every sentence of the summary is computed from the results (no fixed claims): each difference is
stated with its paired bootstrap 95 % interval (:mod:`cream_pl.reporting.evidence`) and called a gain or a
loss only when the interval excludes 0; a missed target is stated as missed, with the measured
reason where the results hold one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cream_pl.reporting.evidence import interval_text
from cream_pl.reporting.tables import (
    ablation_table_markdown,
    metrics_table_markdown,
    write_json_atomic,
    write_markdown_atomic,
)

__all__ = ["DISPLAY_NAMES", "METHOD_COLUMNS", "ablations", "demo_payload", "explain", "report", "splice", "write_results"]

METHOD_COLUMNS = [
    ("max_box_acc_v2", "MaxBoxAccV2"),
    ("max_box_acc_iou30", "IoU30"),
    ("max_box_acc_iou50", "IoU50"),
    ("max_box_acc_iou70", "IoU70"),
    ("gt_known", "GT-known Loc"),
    ("top1_loc", "Top-1 Loc"),
    ("top5_loc", "Top-5 Loc"),
    ("pxap", "PxAP"),
    ("cls_acc", "cls_acc"),
]
DISPLAY_NAMES = {"center_baseline": "center baseline", "cam": "CAM", "cream": "CREAM (paper defaults)",
                 "cream_selected": "CREAM (val-selected)", "cream_reg": "CREAM_reg (val-chosen design)",
                 "cream_reg_psol": "CREAM_reg, PSOL head (GAP + MLP)"}
PROTOCOL_NOTES = {
    "max_box_acc_v2": "mean over IoU δ ∈ {30, 50, 70} of the best-threshold box accuracy (each δ picks its own τ), "
    "all contours (RETR_TREE, holes included), thresholds <THRESHOLDS>, <SIZE> squash-resized images; for "
    "CREAM_reg, which outputs one box and no map, the accuracy of that box at each δ (no threshold to maximise over)",
    "pxap": "pixel average precision over the 1002 histogram bins of wsolevaluation's MaskEvaluator (<SIZE> score "
    "maps, ignore pixels excluded); none for the center baseline's row here and for CREAM_reg (a box, no map)",
    **{f"max_box_acc_iou{d}": f"best-threshold box accuracy at IoU ≥ 0.{d // 10} (all contours), one of MaxBoxAccV2's "
       "three terms" for d in (30, 50, 70)},
    "gt_known": "IoU ≥ 0.5 (inclusive '+1' IoU) of one box per image: for CAM/CREAM the largest contour of the "
    "GT-class map at the threshold τ* that maximised IoU-50 box accuracy on the val split; for CREAM_reg the "
    "regressor's box",
    "top1_loc": "GT-known Loc that also requires the classifier's top-1 class to be correct",
    "top5_loc": "GT-known Loc that also requires the GT class among the classifier's top-5",
}
DIAGNOSTICS = ("cam", "cream", "m_hat_alone", "cream_no_calibration", "cosine_to_fg_embedding",
               "feature_norm_class_agnostic")
"""The diagnostics' maps in the order the summary names them."""
TARGETS = {"cream_selected-cam": ("max_box_acc_v2", 8.0), "cream_reg-cream_selected": ("gt_known", 4.0)}
"""The targets (each with the interval's lower bound > 0): CREAM (val-selected) − CAM ≥ +8 MaxBoxAccV2 (the
paper's CUB mean gain, +8.6) and CREAM_reg − CREAM ≥ +4 GT-known (paper, CUB VGG16: 86.7 → 91.0, +4.3)."""


def explain(results: Mapping[str, Any]) -> list[str]:
    """Sentences that state what the numbers show, each difference with its interval."""
    diffs = results.get("differences", {})
    lines: list[str] = []
    bench = results.get("benchmark", {})
    lines.append(f"One training run (seed {bench.get('train_seed', 0)}) stands behind every row; the intervals are "
                 f"paired bootstraps over the {bench.get('num_test')} test images, so they cover the sampling of test "
                 "images, not of training runs (that spread is `make demo-seeds`'s).")
    for pair, label in (("cream_selected-cam", "CREAM (val-selected) − CAM"), ("cream-cam", "CREAM (paper defaults) − CAM"),
                        ("cream_selected-cream", "CREAM (val-selected) − CREAM (paper defaults)")):
        if pair in diffs and "max_box_acc_v2" in diffs[pair]:
            text = f"{label}: MaxBoxAccV2 {interval_text(diffs[pair]['max_box_acc_v2'])}"
            if "gt_known" in diffs[pair]:
                text += f"; GT-known Loc {interval_text(diffs[pair]['gt_known'])}"
            if pair in TARGETS and TARGETS[pair][0] == "max_box_acc_v2":
                target = TARGETS[pair][1]
                d = diffs[pair]["max_box_acc_v2"]
                met = d["diff"] >= target and d["ci95"][0] > 0
                text += f". Target +{target:g} with the interval above 0: {'met' if met else 'not met'}"
            lines.append(text + ".")
    sel = results.get("selected", {}).get("cream")
    if sel:
        from cream_pl.reporting.evidence import PAPER_DEFAULTS as P

        lines.append(f"Val selection chose T = {sel['T']}, κ = {sel['kappa']:g}, λ = {sel['lambda']:g}, feature norm "
                     f"{sel['feature_norm']} (paper: T = {P['T']}, κ = {P['kappa']:g}, λ = {P['lambda']:g}, "
                     f"{P['feature_norm']}) among {sel['candidates']} candidates, val MaxBoxAccV2 {sel['val_score']:.2f}.")
    if "cam-center_baseline" in diffs:
        d = diffs["cam-center_baseline"]["max_box_acc_v2"]
        lines.append(f"CAM − center baseline: MaxBoxAccV2 {interval_text(d)} (CUB: CAM 56.7–63.7 vs the center "
                     "baseline's 54.4).")
    lines += _explain_regressor(results)
    lines += _explain_diagnostics(results)
    return lines


def _explain_regressor(results: Mapping[str, Any]) -> list[str]:
    if "cream_reg" not in results:
        return []
    q = results.get("pseudo_box_quality", {})
    cands, sel = results.get("cream_reg_candidates", {}), results.get("cream_reg_selection", {})
    chosen = cands.get(sel.get("chosen"), {})
    diffs = results.get("differences", {})
    out = []
    if q:
        out.append(f"CREAM_reg's pseudo boxes ({q.get('source')}, τ* {q.get('threshold', float('nan')):.3f} from val) are "
                   f"correct (IoU ≥ 0.5) on {100 * q.get('iou50_fraction', float('nan')):.1f} % of the "
                   f"{q.get('num_images', '?')} train images (mean IoU {q.get('mean_iou', float('nan')):.3f}).")
    if cands:
        rec = sel.get("recipe", {})
        frozen = {n: c for n, c in cands.items() if c.get("features") != "finetune"}
        tuned = {n: c for n, c in cands.items() if c.get("features") == "finetune"}
        what = (f"{len(frozen)} box heads on the classifier's frozen features, trained with one recipe: "
                f"{rec.get('optimizer')}, lr {rec.get('lr')}, {rec.get('loss')} loss, {rec.get('max_epochs')} epochs, "
                "feature-space flips")
        for name, c in tuned.items():
            r = c.get("recipe", {})
            frozen_part = (r.get("regressor_kwargs") or {}).get("freeze_backbone")
            what += (f"; {name}: the {c['head']} head on its own {r.get('backbone', 'efficientnet_lite0')} fine-tuned "
                     f"on the images as PSOL does ({'ImageNet start, ' if r.get('pretrained') else ''}"
                     f"{r.get('optimizer')}, lr {r.get('lr')}, {r.get('loss')} loss, {r.get('max_epochs')} epoch(s) of "
                     f"random box-safe crops{', ' + frozen_part + ' frozen' if frozen_part else ''})")
        out.append(f"CREAM_reg's design was chosen on val GT-known among {len(cands)} candidates ({what}): " + "; ".join(
                       f"{name} val {c['val_gt_known']:.2f} (test {c.get('gt_known', float('nan')):.2f})"
                       for name, c in cands.items()) + f"; chosen: {sel.get('chosen')}. The test split chose nothing.")
        if "train_gt_known" in chosen:
            denoise = chosen["train_gt_known"] > chosen["train_pseudo_box_gt_known"]
            out.append(f"On the train images themselves (no flip), the chosen regressor is right (IoU ≥ 0.5 to the true "
                       f"box) on {chosen['train_gt_known']:.1f} %, its own pseudo boxes on "
                       f"{chosen['train_pseudo_box_gt_known']:.1f} % (same {results['protocol']['eval_size']} grid): it "
                       + ("denoises them: it is right more often than the boxes it learned from."
                          if denoise else "does not denoise them."))
    for pair, label in (("cream_reg-cream_selected", "CREAM_reg − CREAM (val-selected)"),
                        ("cream_reg-cam", "CREAM_reg − CAM"),
                        ("cream_reg_psol-cream_selected", "CREAM_reg with the PSOL head − CREAM (val-selected)")):
        d = diffs.get(pair, {}).get("gt_known")
        if d is None:
            continue
        line = f"{label}: GT-known Loc {interval_text(d)}"
        if "top1_loc" in diffs[pair]:
            line += f"; Top-1 Loc {interval_text(diffs[pair]['top1_loc'])}"
        if pair in TARGETS:
            target = TARGETS[pair][1]
            met = d["diff"] >= target and d["ci95"][0] > 0
            line += f"; target +{target:g} with the interval above 0: {'met' if met else 'not met'}"
        out.append(line + ".")
    agree = results.get("cream_reg_agreement")
    if agree and agree.get("n"):
        wrong, right = agree["neither"] + agree["only_b"], agree["both"] + agree["only_a"]
        fit = chosen.get("train_pseudo_iou_per_epoch") or [float("nan")]
        out.append(f"Why CREAM_reg adds little to CREAM here (a probe on the test images): the two are both right on "
                   f"{agree['both']} and both wrong on {agree['neither']} of {agree['n']}; the regressor fixes "
                   f"{agree['only_b']} of CREAM's {wrong} misses and loses {agree['only_a']} of its {right} hits. It "
                   f"reproduces CREAM's boxes, errors included (its boxes overlap the train pseudo boxes at IoU "
                   f"{fit[-1]:.3f} at the end of training): its input is the very feature map CREAM boxed, so the "
                   "head can learn CREAM's map-to-box mapping itself, and only what that mapping cannot express is "
                   "averaged out. PSOL's regressor denoises from other features (a second network) and other views "
                   "(random crops), under which CREAM's errors do not repeat; here that path is the fine-tuned "
                   "candidate above, at the CPU budget of the demo, and the CUB recipe's paper row "
                   "(`make train-regressor`).")
    for name, c in cands.items():
        if c.get("features") != "finetune" or name == sel.get("chosen"):
            continue
        curve, ref = c.get("train_pseudo_iou_per_epoch") or [], chosen.get("train_pseudo_iou_per_epoch") or []
        if curve and ref:
            line = (f"Why the fine-tuned feature source loses here ({name}, val {c['val_gt_known']:.2f} against "
                    f"{chosen.get('val_gt_known', float('nan')):.2f}): the demo's budget gives it {len(curve)} "
                    f"epoch(s){_batch_share(c)}, at whose end its boxes overlap its pseudo boxes at IoU {curve[-1]:.3f} on the random "
                    f"crops it trains on (the chosen head on the frozen features: {ref[0]:.3f} after one epoch, "
                    f"{ref[-1]:.3f} after {len(ref)}).")
            if "train_gt_known" in c:
                line += (f" On whole train images (every {c.get('train_subsample', 1)}-th, {c['num_train']} images, "
                         f"the evaluation transform) the overlap drops to {c['train_mean_iou_to_pseudo_boxes']:.3f} and "
                         f"it is right on {c['train_gt_known']:.1f} % where its pseudo boxes are right on "
                         f"{c['train_pseudo_box_gt_known']:.1f} %: it has not yet learned its pseudo boxes on the "
                         "whole images it is scored on, which its crops (box-safe, area 0.2-1) only partly show.")
            out.append(line + " Whether PSOL's full recipe closes the gap is the CUB recipe's comparison "
                       "(`make train-regressor`, chosen on val the same way), beyond this CPU budget.")
    psol = cands.get("psol_frozen")
    if psol and "train_gt_known" in psol:
        out.append(f"Why the PSOL head does worse: global average pooling throws away where the object is. On its own "
                   f"train images it is right on {psol['train_gt_known']:.1f} % (mean IoU "
                   f"{psol['train_mean_iou_to_pseudo_boxes']:.3f} to its pseudo boxes), on test {psol['gt_known']:.1f} %; "
                   "a head that keeps the map's layout reads the box off where the features respond.")
    return out


def _explain_diagnostics(results: Mapping[str, Any]) -> list[str]:
    diag = results.get("diagnostics", {}).get("max_box_acc_v2")
    if not diag:
        return []
    lines = []
    order = [k for k in DIAGNOSTICS if k in diag] + sorted(set(diag) - set(DIAGNOSTICS))  # fresh or read back: one order
    resp = results.get("diagnostics", {}).get("responsibilities", {})
    d = results.get("differences", {}).get("cream-cam", {}).get("max_box_acc_v2")
    if "paper_defaults" in resp and d is not None and d["verdict"] == "loss":
        p = resp["paper_defaults"]
        text = (f"Why CREAM with the paper's defaults loses to CAM here: with κ = {p['kappa']:g} and {p['feature_norm']} "
                f"M-step features the EM stays soft on EfficientNet-Lite0's features: the foreground responsibility "
                f"z_fg averages {p['z_fg_inside_box']:.2f} on the feature cells inside the true box and "
                f"{p['z_fg_outside_box']:.2f} outside (contrast {p['z_fg_inside_box'] - p['z_fg_outside_box']:.2f}), "
                "and adding that soft map to CAM blurs the object's edge")
        s = resp.get("val_selected")
        if s:
            text += (f"; the val-selected T = {s['T']}, κ = {s['kappa']:g}, {s['feature_norm']} separates them: "
                     f"{s['z_fg_inside_box']:.2f} inside vs {s['z_fg_outside_box']:.2f} outside (contrast "
                     f"{s['z_fg_inside_box'] - s['z_fg_outside_box']:.2f})")
        lines.append(text + ". The paper fixed κ for VGG16 / InceptionV3 / ResNet50 features; it does not carry over "
                     "to another backbone's feature geometry, which is why the protocol's val selection matters.")
    lines.append("Diagnostics (test split, MaxBoxAccV2 at interval 0.01, one model; values only, no difference is "
                 "claimed from them): " + ", ".join(f"`{k}` {diag[k]:.2f}" for k in order) + ".")
    return lines


def write_results(results: dict[str, Any], out: Path, *, data: Path, seed: int, num_classes: int, fast: bool,
                  command: str, produced_by: str = "`make demo`", figures: bool = True) -> None:
    """``metrics.json``, ``metrics.md``, ``ablation_T.md``, ``ablation_lambda.md`` (atomic); ``command``: the runner's
    command line that reproduced them; ``produced_by``: the target (and seed) named beside it; ``figures``: link the
    figures ``make demo`` draws into ``out``."""
    results["summary"] = explain(results)
    if fast:
        results["summary"].insert(0, "This is a --fast smoke run (tiny data, one epoch, random init): the numbers only "
                                     "show that the pipeline runs.")
    write_json_atomic(results, out / "metrics.json")
    from cream_pl.reporting.evidence import differences_markdown, selection_markdown

    ablations = results["ablations"]
    rows = {DISPLAY_NAMES[k]: results[k] for k in ("center_baseline", "cam", "cream", "cream_selected", "cream_reg",
                                                    "cream_reg_psol") if k in results}
    bench = results.get("benchmark", {})
    if bench.get("preset"):
        title = "# Embedded benchmark results"
        source = (f"test split ({bench['num_test']} images) of the synthetic WSOL benchmark, preset `{bench['preset']}` "
                  f"(`cream-pl data synth --preset {bench['preset']} --seed {seed}`)")
    else:
        title = f"# Results on `{data}`"
        source = f"test split of `{data}` ({num_classes} classes, from its metadata)"
    md = [title, "", f"Produced by {produced_by} (`{command}`); {source}, EfficientNet-Lite0 (ImageNet) "
          f"backbone; {bench.get('seeds', 1)} training seed.", "",
          metrics_table_markdown(rows, METHOD_COLUMNS, PROTOCOL_NOTES, interval=results["protocol"]["cam_curve_interval"],
                                 size=results["protocol"]["eval_size"]), ""]
    if "selected" in results:
        md += ["## CREAM's inference hyperparameters, chosen on val", "",
               selection_markdown(results["selected"]["cream"]), ""]
    if results.get("cream_reg_candidates"):
        md += ["## CREAM_reg's design, chosen on val", "", regressor_candidates_markdown(results), ""]
    if results.get("differences"):
        md += ["## Differences, with paired bootstrap intervals", "",
               differences_markdown(results["differences"], DISPLAY_NAMES), ""]
    md += ["## Ablations of the paper-default CREAM (test; not used for any choice)", "",
           ablation_table_markdown("T (EM iterations)", ablations["T"]["values"],
                                   {m: ablations["T"][m] for m in ("max_box_acc_v2", "gt_known", "top1_loc")}), "",
           ablation_table_markdown("λ (momentum)", ablations["lambda"]["values"],
                                   {m: ablations["lambda"][m] for m in ("max_box_acc_v2", "gt_known", "top1_loc")}), "",
           "## What the numbers show", "", *[f"- {line}" for line in results["summary"]], ""]
    if figures:
        md += ["![BoxAcc vs threshold](box_acc_curves.png)", "", "![overlays](overlays.png)", ""]
    write_markdown_atomic("\n".join(md), out / "metrics.md")
    for key, label, name in (("T", "T", "ablation_T.md"), ("lambda", "λ", "ablation_lambda.md")):
        write_markdown_atomic(ablation_table_markdown(label, ablations[key]["values"], {
            m: ablations[key][m] for m in ("max_box_acc_v2", "gt_known", "top1_loc")}) + "\n", out / name)


PROTOCOL = {
    "split": "test",
    "max_box_acc_v2": "mean over IoU {30,50,70} of the best-threshold box accuracy, all contours",
    "max_box_acc": "V1: IoU 50, largest contour, best threshold",
    "gt_known/top1_loc/top5_loc": "largest-contour box at the fixed threshold tau* chosen on the val split (IoU >= 0.5)",
    "pxap": "pixel average precision over 1002 histogram bins (where the split has masks)",
    "selection": "cream_selected: T, kappa, lambda and the M-step feature norm chosen on the val split by MaxBoxAccV2",
    "regressor": "class from the classifier, box from the regressor; IoU >= 0.5 with the '+1' inclusive IoU",
    "center_baseline": "a fixed centred Gaussian map (CREAM paper, table 1); MaxBoxAccV2 only",
}
ABLATION_T = (0, 1, 2, 3, 4)
ABLATION_LAMBDA = (0.2, 0.6, 0.8, 0.99, 1.0)
"""The paper-default CREAM's ablations the demo reports (and plots): EM iterations T, momentum λ."""
DEMO_TIMES = {"fit_s": "classifier_s", "test_s": "evaluation_s"}
"""The runner's stage names -> the demo's ``timing`` keys."""


def ablations(methods: Mapping[str, Any]) -> dict[str, Any]:
    """The paper-default CREAM's T and λ ablations (test), read off the tested maps."""
    t_names = ["cream_T0" if "cream_T0" in methods else "cam", "cream_T1", "cream", "cream_T3", "cream_T4"]
    lam_names = ["cream_lambda0.2", "cream_lambda0.6", "cream", "cream_lambda0.99", "cream_lambda1"]
    metrics = ("max_box_acc_v2", "gt_known", "top1_loc")
    return {"T": {"values": list(ABLATION_T), **{m: [methods.get(n, {}).get(m) for n in t_names] for m in metrics}},
            "lambda": {"values": list(ABLATION_LAMBDA),
                       **{m: [methods.get(n, {}).get(m) for n in lam_names] for m in metrics}}}


def demo_payload(exp: Any, result: Any, seed: int) -> dict[str, Any]:
    """``make demo``'s ``metrics.json`` (before its summary sentences) for one seed of its one run."""
    o = next(iter(result.outcomes[seed].values()))
    facts, methods = o.facts, o.test["methods"]
    results: dict[str, Any] = dict(result.rows[seed])
    if "cream_selected" in methods:
        sel = methods["cream_selected"]
        results["selected"] = {"cream": {
            "T": int(sel["T"]), "kappa": float(sel["kappa"]), "lambda": float(sel["lambda"]),
            "feature_norm": sel["feature_norm"], "val_score": float(sel["val_score"]), "val_metric": "max_box_acc_v2",
            "candidates": facts["candidates"], "search_space": facts["search_space"]}}
    if "diagnostics" in o.stages:
        results["diagnostics"] = o.stages["diagnostics"]["diagnostics"]
    if "regressor" in o.stages:
        reg = o.stages["regressor"]
        results["cream_reg_candidates"] = reg["candidates"]
        if "agreement" in reg:
            results["cream_reg_agreement"] = reg["agreement"]
        results["cream_reg_selection"] = reg["selection"]
        results["pseudo_box_quality"] = {k: v for k, v in o.stages["pseudo_boxes"].items() if k != "file"}
    results["differences"] = result.differences[seed]
    timing = {DEMO_TIMES.get(k, k): v for k, v in o.timing.items() if DEMO_TIMES.get(k, k) in STAGES}
    timing["total_s"] = sum(timing.values())
    timing["this_invocation_s"] = result.timing["this_invocation_s"]
    results["ablations"] = ablations(methods)
    synth = result.data / "synth_config.json"
    results["benchmark"] = {"preset": exp.dataset.preset if (result.owned_data and synth.is_file()) else None,
                            "num_test": facts["num_test"], "num_val": facts["num_val"], "num_train": facts["num_train"],
                            "num_classes": facts["num_classes"], "data": str(result.data), "seeds": 1,
                            "train_seed": seed}
    results["protocol"] = {"split": "test", "eval_size": facts["eval_size"], **PROTOCOL,
                           "cam_curve_interval": facts["cam_curve_interval"],
                           "num_test_images": facts["num_test"]}
    results["timing"] = {k: round(v, 1) for k, v in timing.items()}
    return results


def report(exp: Any, result: Any, out: Path) -> dict[str, Any]:
    """``make demo``'s report: ``metrics.json``, ``metrics.md`` and the ablation tables of its one seed."""
    seed = min(result.rows)
    results = demo_payload(exp, result, seed)
    write_results(results, out, data=result.data, seed=exp.dataset.seed, num_classes=results["benchmark"]["num_classes"],
                  fast=result.fast, command=result.command)
    cam, sel_row, t = results["cam"], results.get("cream_selected", results.get("cream")), results["timing"]
    line = (f"[{exp.name}] done in {t['this_invocation_s'] / 60:.1f} min (all stages: {t['total_s'] / 60:.1f} min): "
            f"MaxBoxAccV2 CAM {cam['max_box_acc_v2']:.2f} -> CREAM (val-selected) {sel_row['max_box_acc_v2']:.2f}; "
            f"GT-known CAM {cam['gt_known']:.2f} -> {sel_row['gt_known']:.2f}")
    if "cream_reg" in results:
        line += f" -> CREAM_reg {results['cream_reg'].get('gt_known', float('nan')):.2f}"
    print(line + f"  ({out / 'metrics.md'})", flush=True)
    return results


def regressor_candidates_markdown(results: Mapping[str, Any]) -> str:
    """Every CREAM_reg candidate: val GT-known (the choice), test GT-known / Top-1 Loc beside it, train correctness."""
    sel = results.get("cream_reg_selection", {})
    lines = ["| candidate | head | features | val GT-known | test GT-known | test Top-1 Loc | train: right (regressor) | "
             "train: right (its pseudo boxes) | chosen |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, c in results["cream_reg_candidates"].items():
        source = "own backbone, fine-tuned" if c["features"] == "finetune" else "classifier's, frozen"
        train = (f"{c['train_gt_known']:.1f} | {c['train_pseudo_box_gt_known']:.1f}" if "train_gt_known" in c
                 else "— | —")
        lines.append(f"| {name} | {c['head']} | {source} | {c['val_gt_known']:.2f} | "
                     f"{c.get('gt_known', float('nan')):.2f} | {c.get('top1_loc', float('nan')):.2f} | {train} | "
                     f"{'**chosen**' if name == sel.get('chosen') else ''} |")
    lines += ["", "Chosen by val GT-known Loc (ties: the first listed); the test columns are reported, never used. "
              "\"train: right\" = IoU ≥ 0.5 to the true box on the train images (no flip), in the "
              f"{results['protocol']['eval_size']} grid; measured "
              "from the cache for the frozen heads and for the chosen design whatever its source (\"—\": a fine-tuned "
              "candidate not chosen, whose own pass over the train split the report does not need)."]
    return "\n".join(lines)


BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
STAGES = ("data_s", "classifier_s", "evaluation_s", "diagnostics_s", "figures_s", "pseudo_boxes_s", "regressor_s",
          "bootstrap_s")
"""The demo's stages, as timed in ``<work>/timing.json`` (``total_s`` sums them)."""



def has_block(readme: str, begin: str = BEGIN, end: str = END) -> bool:
    """Whether ``readme`` holds exactly one ``begin`` ... ``end`` block, in that order (what :func:`splice_readme`
    fills)."""
    return readme.count(begin) == 1 and readme.count(end) == 1 and readme.index(begin) < readme.index(end)


def splice_readme(readme: str, metrics_md: str, extra: str = "", *, begin: str = BEGIN, end: str = END,
                  root: str = "results/embedded") -> str:
    """``readme`` with the text between the ``begin`` / ``end`` markers replaced by ``metrics_md`` (its title
    dropped, relative image links re-rooted at ``root``) and ``extra``.

    Example:
        >>> splice_readme("a\\n<!-- RESULTS:BEGIN -->\\nold\\n<!-- RESULTS:END -->\\nb", "# T\\n\\nnew ![x](x.png)")
        'a\\n<!-- RESULTS:BEGIN -->\\nnew ![x](results/embedded/x.png)\\n<!-- RESULTS:END -->\\nb'
    """
    import re

    if not has_block(readme, begin, end):
        raise ValueError(f"the README needs exactly one {begin} ... {end} block")
    body = metrics_md.strip().split("\n")
    if body and body[0].startswith("# "):
        body = body[1:]
    text = "\n".join(body).strip()
    text = re.sub(r"\]\((?!https?:|results/)([^)]+\.png)\)", rf"]({root.rstrip('/')}/\1)", text)
    if extra:
        text += "\n\n" + extra.strip()
    head, rest = readme.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{text}\n{end}{tail}"


def splice(readme: Path, payload: Any = None, results: Path = Path("results/embedded")) -> None:
    """Regenerate the README's results block from ``results/metrics.{md,json}``, with the stage times of that run."""
    import json

    from cream_pl.core.io import atomic_write_text

    metrics = json.loads((results / "metrics.json").read_text())
    t = metrics.get("timing", {})
    stages = ", ".join(f"{k[:-2].replace('_', ' ')} {t[k] / 60:.1f} min" for k in STAGES
                       if k in t and t[k] >= 3.0)  # the instant stages (figures, reading files) are left out
    extra = (f"Wall time of that `make demo` run: {t.get('total_s', float('nan')) / 60:.1f} min of stages on this "
             f"project's 2-core CPU machine ({stages}; the classifier stage includes the fit-end pseudo boxes).") if t else ""
    text = splice_readme(readme.read_text(), (results / "metrics.md").read_text(), extra)
    atomic_write_text(readme, text)
    print(f"{readme}: results block regenerated from {results}")


def main(argv: list[str] | None = None) -> int:
    """``python -m cream_pl.reporting.demo_report``: regenerate the README's results block from results/embedded."""
    import json

    from cream_pl.core.options import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m cream_pl.reporting.demo_report", description=main.__doc__)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--results", type=Path, default=Path("results/embedded"))
    args = parser.parse_args(argv)
    for path, what in ((args.results / "metrics.json", "make demo writes it"),
                       (args.results / "metrics.md", "make demo writes it"), (args.readme, "--readme")):
        if not path.is_file():
            parser.error(f"{path}: not found ({what})")
    try:
        if not isinstance(json.loads((args.results / "metrics.json").read_text(encoding="utf-8")), dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as err:
        parser.error(f"{args.results / 'metrics.json'}: not a JSON results file ({err})")
    try:
        splice(args.readme, None, args.results)
    except ValueError as err:  # a README without its one results block
        parser.error(f"{args.readme}: {err}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())


def _batch_share(candidate: dict[str, Any]) -> str:
    """`` over 50 % of the train batches`` when the candidate's trainer saw a share of each epoch, else ``""``."""
    share = ((candidate.get("recipe") or {}).get("trainer_kwargs") or {}).get("limit_train_batches")
    return f" over {100 * float(share):.0f} % of the train batches" if isinstance(share, float) and share < 1 else ""
