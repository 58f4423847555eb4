"""``make demo-kd``'s results: the numbers (:func:`build_results`) and the files (:func:`write_results`).

:func:`build_results` turns the tested rows, their per-image test records, the per-image background
flags and the per-epoch val curves into ``metrics.json``'s content: every row on all test images
and on the unusual- / usual-background subsets, the teachers, the peaks of each curve, every stated
difference with its paired bootstrap 95 % interval (:func:`cream_pl.reporting.evidence.compute_differences`,
subsets as ``"a-b@unusual"``), and the confounder's gap (one model's accuracy on usual minus
unusual backgrounds, an independent bootstrap: the two groups hold different images).
:func:`explain` states what they show, each sentence computed from the numbers (a gain or a loss
only where the interval excludes 0). :func:`write_results` writes ``metrics.json``, ``README.md``
and ``dilemma.png``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cream_pl.reporting.evidence import interval_text

__all__ = ["MAIN_ROWS", "check_data", "NAMES", "PAIRS", "SUBSET_PAIRS", "build_results", "explain", "plot_dilemma",
           "render_markdown", "subset_metrics", "write_results"]

MAIN_ROWS = ("cam", "cream_selected", "ci_cam", "ci_cam_cream_selected", "kd_ci_cam")
TEACHER_ROWS = ("cls_teacher", "loc_teacher")
NAMES = {"cam": "CAM", "cream_selected": "CREAM (val-selected)", "ci_cam": "CI-CAM",
         "ci_cam_cream_selected": "CI-CAM + CREAM (val-selected)", "kd_ci_cam": "KD-CI-CAM",
         "cls_teacher": "cls teacher", "loc_teacher": "loc teacher",
         "@unusual": "unusual-background test images", "@usual": "usual-background test images"}
RUN_NAMES = {"cream": "CAM / CREAM run", "ci_cam": "CI-CAM run", "ci_cam_rrc": "CI-CAM run (RandomResizedCrop)",
             "kd_ci_cam": "KD-CI-CAM student"}
ALL = ("max_box_acc_v2", "gt_known", "top1_loc", "cls_acc")
LOC = ("max_box_acc_v2", "gt_known", "top1_loc")
PAIRS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("cream_selected", "cam", LOC),
    ("ci_cam", "cam", ALL),
    ("ci_cam_cream_selected", "ci_cam", LOC),
    ("ci_cam_cream_selected", "cream_selected", LOC),
    ("kd_ci_cam", "ci_cam", ALL),
    ("kd_ci_cam", "cls_teacher", ("cls_acc",)),
    ("kd_ci_cam", "loc_teacher", ("gt_known",)),
)
"""Differences on all test images (plus cls teacher − loc teacher when they are two checkpoints)."""
SUBSET_PAIRS: tuple[tuple[str, str, tuple[str, ...]], ...] = (("ci_cam", "cam", ALL), ("kd_ci_cam", "cam", ALL),
                                                               ("kd_ci_cam", "ci_cam", ALL))
"""Differences on the unusual- and on the usual-background test images."""
GAP_ROWS = ("cam", "ci_cam", "kd_ci_cam")
GAP_FIELDS = {"cls_acc": "top1", "gt_known": "gt_known"}
COLUMNS = [("max_box_acc_v2", "MaxBoxAccV2"), ("gt_known", "GT-known Loc"), ("top1_loc", "Top-1 Loc"),
           ("cls_acc", "Top-1 Cls")]
METRIC_NAMES = dict(COLUMNS)
KEEP = ("run", "epoch", "method", "max_box_acc_v2", "max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70",
        "max_box_acc", "gt_known", "top1_loc", "top5_loc", "pxap", "loc_threshold", "loc_threshold_source", "cls_acc")


def check_data(root: Path) -> None:
    """A dataset given instead of the declared one (``--data``) must be a confounded synthetic one: refused before
    any training otherwise (the report reads its backgrounds and its generator's photographs)."""
    from cream_pl.core.errors import UserValueError

    how = "demo-kd needs a confounded synthetic dataset (cream-pl data synth --preset cub --confounded)"
    missing = [p for p in ("metadata/test/backgrounds.txt", "synth_config.json") if not (Path(root) / p).is_file()]
    if missing:
        raise UserValueError(f"{Path(root) / missing[0]}: not found; {how}")
    info = Path(root) / "synth_config.json"
    try:
        confounded = json.loads(info.read_text()).get("config", {}).get("confounded") is True
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserValueError(f"{info}: not a synthetic dataset's config (JSON with a 'config' mapping); {how}") from None
    if not confounded:
        raise UserValueError(f"{info}: config.confounded is not true; {how}")
    from cream_pl.data.metadata import read_split

    usual = usual_background_flags(root, [s.image_id for s in read_split(Path(root) / "metadata" / "test").samples])
    if usual.all() or not usual.any():
        raise UserValueError(f"{Path(root) / 'metadata' / 'test' / 'backgrounds.txt'}: the test split needs images on "
                             "their class's usual background and on others (the usual - unusual gap); "
                             "confounded_eval 'uniform' draws both")


def usual_background_flags(data_root: Path, image_ids: Sequence[str], split: str = "test") -> np.ndarray:
    """Per image (in ``image_ids``' order, i.e. by record ``index``): on its class's usual background?

    Reads ``metadata/<split>/backgrounds.txt`` (``<image_id>,<photo>,<is_usual 0|1>``) of a
    confounded synthetic dataset.
    """
    path = Path(data_root) / "metadata" / split / "backgrounds.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: demo-kd needs a confounded synthetic dataset "
                                "(cream-pl data synth --confounded)")
    usual: dict[str, bool] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.strip().split(",")
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected '<image_id>,<photo>,<0|1>', got {line!r}")
        usual[parts[0]] = parts[2] == "1"
    missing = [i for i in image_ids if i not in usual]
    if missing:
        raise ValueError(f"{path}: no background entry for {len(missing)} image(s), e.g. {missing[0]}")
    return np.array([usual[i] for i in image_ids], dtype=bool)



# ---------------------------------------------------------------------------------------------- numbers
def curve_peak(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """``{"epoch", "value"}`` of the first epoch at which ``key`` is highest.

    Example:
        >>> curve_peak([{"epoch": 1, "v": 3.0}, {"epoch": 2, "v": 5.0}, {"epoch": 3, "v": 5.0}], "v")
        {'epoch': 2, 'value': 5.0}
    """
    usable = [r for r in rows if r.get(key) is not None]
    if not usable:
        raise ValueError(f"no epoch has a value for {key!r}")
    best = max(range(len(usable)), key=lambda i: (usable[i][key], -i))
    return {"epoch": int(usable[best]["epoch"]), "value": float(usable[best][key])}


def subset_metrics(record: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """MaxBoxAccV2 (re-maximised over thresholds), GT-known, Top-1 Loc and Top-1 Cls of a per-image record."""
    from cream_pl.metrics.bootstrap import accuracy_statistic, max_box_acc_statistic

    n = int(len(record["index"]))
    if n == 0:
        return {"n_images": 0}
    levels = tuple(np.asarray(record.get("iou_thresholds", (30, 50, 70))).tolist())
    return {"n_images": n, "max_box_acc_v2": float(max_box_acc_statistic(record["best_iou"], levels)),
            "gt_known": float(accuracy_statistic(record["gt_known"])),
            "top1_loc": float(accuracy_statistic(record["top1_loc"])), "cls_acc": float(accuracy_statistic(record["top1"]))}


def _gap(rec: Mapping[str, np.ndarray], usual: np.ndarray, field: str, n_resamples: int, seed: int) -> dict[str, Any] | None:
    from cream_pl.metrics.bootstrap import independent_bootstrap_accuracy, verdict

    on_usual = usual[np.asarray(rec["index"])]
    x = np.asarray(rec[field])
    if on_usual.all() or not on_usual.any():
        return None
    r = independent_bootstrap_accuracy(x[on_usual], x[~on_usual], n_resamples=n_resamples, seed=seed)
    return {"diff": r["diff"], "ci95": r["ci95"], "verdict": verdict(r), "usual": r["a"], "unusual": r["b"],
            "n_usual": r["n_a"], "n_unusual": r["n_b"], "n_resamples": r["n_resamples"], "method": r["method"]}


def build_results(tested: Mapping[str, Mapping[str, Any]], records: Mapping[str, Mapping[str, np.ndarray]],
                  usual: np.ndarray, curves: Mapping[str, Sequence[Mapping[str, Any]]], teachers: Mapping[str, Any],
                  n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``metrics.json``'s numbers: rows (all / by background), teachers, curves and their peaks, intervals.

    Args:
        tested: ``{row: test numbers}`` (``run``, ``epoch``, ``method``, ``cls_acc``, the method's metrics).
        records: ``{row: per-image test record}`` for the same rows.
        usual: per test image (by record ``index``), whether it has its class's usual background.
        curves: ``{run: per-epoch val rows}``.
        teachers: :func:`cream_pl.pipelines.run_stages.select_teachers`' result (the runner's ``teachers``).
    """
    from cream_pl.reporting.evidence import compute_differences, compute_subset_differences, subset_records

    usual = np.asarray(usual, dtype=bool)
    groups = {"unusual": np.flatnonzero(~usual), "usual": np.flatnonzero(usual)}
    methods: dict[str, dict[str, Any]] = {}
    for key in (*MAIN_ROWS, *TEACHER_ROWS):
        if key not in tested:
            continue
        row = {k: tested[key].get(k) for k in KEEP if k in tested[key]}
        row["display_name"] = NAMES[key]
        row["subsets"] = {tag: subset_metrics(subset_records(records[key], idx)) for tag, idx in groups.items()}
        methods[key] = row
    pairs = list(PAIRS)
    if not teachers["same_checkpoint"]:
        pairs.append(("cls_teacher", "loc_teacher", ("cls_acc", "gt_known", "max_box_acc_v2")))
    differences = compute_differences(records, pairs, n_resamples=n_resamples, seed=seed)
    for tag, idx in groups.items():
        differences.update(compute_subset_differences(records, SUBSET_PAIRS, idx, tag, n_resamples=n_resamples,
                                                      seed=seed))
    confounder: dict[str, dict[str, Any]] = {}
    for key in GAP_ROWS:
        if key in records:
            gaps = {m: _gap(records[key], usual, f, n_resamples, seed) for m, f in GAP_FIELDS.items()}
            confounder[key] = {m: g for m, g in gaps.items() if g is not None}
    dilemma = {}
    for run, rows in curves.items():
        cls, loc = curve_peak(rows, "val_cls_acc"), curve_peak(rows, "val_gt_known")
        dilemma[run] = {"epochs": list(rows), "peak_val_cls_acc": cls, "peak_val_gt_known": loc,
                        "peaks_differ": cls["epoch"] != loc["epoch"]}
    selected = {k: tested[k]["selected_cream"] for k in ("cream_selected", "ci_cam_cream_selected")
                if k in tested and tested[k].get("selected_cream")}
    thresholds = np.asarray(next(iter(records.values()))["thresholds"])
    return {"methods": methods, "main_rows": [k for k in MAIN_ROWS if k in methods],
            "cam_curve_interval": float(np.round(thresholds[1] - thresholds[0], 6)),
            "teachers": {role: dict(teachers[role]) for role in ("cls", "loc")} | {
                "same_checkpoint": teachers["same_checkpoint"]},
            "dilemma": dilemma, "differences": differences, "confounder": confounder, "selected_cream": selected,
            "n_resamples": n_resamples}


# ---------------------------------------------------------------------------------------------- words
def _diff(results: Mapping[str, Any], pair: str, metric: str) -> Mapping[str, Any] | None:
    return results["differences"].get(pair, {}).get(metric)


def _diff_list(results: Mapping[str, Any], pair: str, metrics: Sequence[str]) -> str:
    parts = [f"{METRIC_NAMES[m]} {interval_text(d)}" for m in metrics if (d := _diff(results, pair, m)) is not None]
    return "; ".join(parts)


def _verdicts(results: Mapping[str, Any], pair: str, metrics: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"gain": [], "loss": [], "no significant difference": []}
    for m in metrics:
        d = _diff(results, pair, m)
        if d is not None:
            out[d["verdict"]].append(METRIC_NAMES[m])
    return out


def _usual_backgrounds(bench: Mapping[str, Any]) -> str:
    """Which classes share a usual photograph (the generator gives class k photo k mod P)."""
    photos, k = list(bench["background_photos"]), int(bench["num_classes"])
    shared = {p: [c for c in range(k) if photos[c % len(photos)] == p] for p in photos}
    pieces = [f"'{p}': classes {' and '.join(map(str, cs))}" for p, cs in shared.items() if len(cs) > 1]
    text = f"each class's usual background is one of {len(photos)} photographs"
    if not pieces:
        return text + ", one per class"
    return text + f", {len(pieces)} of them the usual background of more than one class ({'; '.join(pieces)})"


def _run_label(run: str) -> str:
    return RUN_NAMES.get(run, run)


def _teacher_text(t: Mapping[str, Any]) -> str:
    return (f"{_run_label(t['run'])}, epoch {t['epoch']} (val Top-1 Cls {t['val_cls_acc']:.2f}, "
            f"val GT-known {t['val_gt_known']:.2f})")


def explain(results: Mapping[str, Any], fast: bool = False, candidates: Sequence[str] | None = None) -> list[str]:
    """What the numbers show, one sentence per finding, each computed from ``results``."""
    lines: list[str] = []
    if fast:
        lines.append("This is a --fast smoke run (tiny data, two epochs per run): the numbers only show that the "
                     "pipeline runs and must not be read as evidence.")
    bench = results["benchmark"]
    n, u = bench["num_test"], bench["num_test_usual"]
    lines.append(f"Test split: {n} images, {u} ({100 * u / n:.1f} %) on their class's usual background and "
                 f"{n - u} on an unusual one; {_usual_backgrounds(bench)}; in train each class is on its usual "
                 f"background with probability {bench['usual_background_prob']}.")
    # -- the dilemma
    for run, d in results["dilemma"].items():
        c, g = d["peak_val_cls_acc"], d["peak_val_gt_known"]
        same = "the same epoch" if not d["peaks_differ"] else f"{abs(c['epoch'] - g['epoch'])} epoch(s) apart"
        lines.append(f"Dilemma, {_run_label(run)} ({len(d['epochs'])} epochs): val Top-1 Cls peaks at epoch "
                     f"{c['epoch']} ({c['value']:.2f}), val GT-known at epoch {g['epoch']} ({g['value']:.2f}): {same}.")
    t = results["teachers"]
    if candidates is None:  # the runs the teachers came from
        candidates = list(dict.fromkeys(t[role]["run"] for role in ("cls", "loc")))
    candidates = [_run_label(name) for name in candidates]
    lines.append(f"Teachers, chosen on val over every epoch of the {' and the '.join(candidates)}: cls teacher = "
                 f"{_teacher_text(t['cls'])}; loc teacher = {_teacher_text(t['loc'])}.")
    if t["same_checkpoint"]:
        lines.append("The two teachers are the same checkpoint: on this benchmark the checkpoint that classifies best "
                     "on val also localises best, so there is no classification/localisation dilemma for the two "
                     "teachers to resolve. The student was still trained, distilling from that one checkpoint in both "
                     "roles: it tests whether distillation from the best CI-CAM checkpoint helps, not the "
                     "multi-teacher claim.")
    else:
        gave_cls = t["cls"]["val_cls_acc"] - t["loc"]["val_cls_acc"]
        gave_loc = t["loc"]["val_gt_known"] - t["cls"]["val_gt_known"]
        lines.append(f"They are two checkpoints: on val the loc teacher gives up {gave_cls:.2f} points of Top-1 Cls "
                     f"and the cls teacher {gave_loc:.2f} points of GT-known.")
        spec = _diff_list(results, "cls_teacher-loc_teacher", ("cls_acc", "gt_known"))
        if spec:
            v = {m: d["verdict"] for m in ("cls_acc", "gt_known") if (d := _diff(results, "cls_teacher-loc_teacher", m))}
            real = v.get("cls_acc") == "gain" and v.get("gt_known") == "loss"
            lines.append(f"On test, cls teacher − loc teacher: {spec}. "
                         + ("Each teacher is significantly better in its own role on test: the dilemma is real here."
                            if real else "Test does not confirm both specialisations (each teacher significantly "
                            "better in its own role), so the val choice may reflect val noise as much as a dilemma."))
    # -- claim 1: de-confounding
    conf = results["confounder"]
    for key in GAP_ROWS:
        gaps = conf.get(key, {})
        parts = [f"{METRIC_NAMES[m]} {g['usual']:.2f} vs {g['unusual']:.2f}, gap {interval_text(g)}" for m, g in gaps.items()]
        if parts:
            lines.append(f"The confounder, {NAMES[key]} on usual vs unusual backgrounds: {'; '.join(parts)}.")
    cam_gap = conf.get("cam", {}).get("cls_acc")
    if cam_gap is not None and cam_gap["verdict"] != "gain":
        lines.append("CAM does not classify significantly better on its classes' usual backgrounds, so on this "
                     "benchmark the confounder does not measurably bias CAM's classification and there is little for "
                     "the intervention to remove there.")
    for tag in ("unusual", "usual"):
        text = _diff_list(results, f"ci_cam-cam@{tag}", ALL)
        if text:
            lines.append(f"CI-CAM − CAM on the {NAMES['@' + tag]}: {text}.")
    v = _verdicts(results, "ci_cam-cam@unusual", ALL)
    if any(v.values()):
        claim = []
        if v["gain"]:
            claim.append(f"CI-CAM beats CAM in {', '.join(v['gain'])}")
        if v["loss"]:
            claim.append(f"loses to it in {', '.join(v['loss'])}")
        if v["no significant difference"]:
            claim.append(f"shows no significant difference in {', '.join(v['no significant difference'])}")
        lines.append("Claim 1 (the intervention removes the confounder), on the unusual-background images: "
                     + "; ".join(claim) + ".")
    unusual, usual_d = _diff(results, "ci_cam-cam@unusual", "cls_acc"), _diff(results, "ci_cam-cam@usual", "cls_acc")
    if unusual is not None and usual_d is not None and unusual["verdict"] == "gain" and usual_d["verdict"] != "gain":
        cam_usual = results["methods"]["cam"]["subsets"]["usual"].get("cls_acc")
        loc = _diff(results, "ci_cam-cam@unusual", "gt_known")
        loc_text = "" if loc is None else {
            "gain": "; its GT-known is better there too", "loss": f"; its GT-known there is worse ({interval_text(loc)})",
            "no significant difference": "; its GT-known there is not significantly different"}[loc["verdict"]]
        lines.append(f"CI-CAM's Top-1 Cls gain over CAM is on the unusual backgrounds ({interval_text(unusual)}), not on the usual "
                     f"ones ({interval_text(usual_d)}, where CAM already reaches {cam_usual:.2f}): the classification gain lies "
                     f"where de-confounding predicts it{loc_text}.")
    # -- claim 2: distillation
    for pair, metric, role in (("kd_ci_cam-cls_teacher", "cls_acc", "cls"), ("kd_ci_cam-loc_teacher", "gt_known", "loc")):
        d = _diff(results, pair, metric)
        if d is not None:
            word = {"gain": "exceeds", "loss": "falls short of",
                    "no significant difference": "reaches (no significant difference from)"}[d["verdict"]]
            lines.append(f"Claim 2, KD-CI-CAM − {role} teacher, {METRIC_NAMES[metric]}: {interval_text(d)}: the student {word} the "
                         f"{role} teacher's {METRIC_NAMES[metric]}.")
    held = {role: d["verdict"] != "loss" for pair, metric, role in (("kd_ci_cam-cls_teacher", "cls_acc", "cls"),
                                                                   ("kd_ci_cam-loc_teacher", "gt_known", "loc"))
            if (d := _diff(results, pair, metric)) is not None}
    if len(held) == 2:
        if all(held.values()):
            verdict_text = "the student keeps both teachers' strengths: the claim holds on this benchmark"
        elif not any(held.values()):
            verdict_text = "the student keeps neither teacher's strength: the claim fails on this benchmark"
        else:
            kept = "localisation" if held["loc"] else "classification"
            lost = "classification" if held["loc"] else "localisation"
            verdict_text = (f"the student keeps the {kept} teacher's strength but not the {lost} teacher's: the "
                            f"dilemma is resolved on the {kept} side only")
        lines.append(f"Claim 2 on this benchmark: {verdict_text}"
                     + (" (with one checkpoint in both roles, this is a self-distillation result)."
                        if results["teachers"]["same_checkpoint"] else "."))
    text = _diff_list(results, "kd_ci_cam-ci_cam", ALL)
    if text:
        lines.append(f"KD-CI-CAM − CI-CAM (same recipe, no distillation): {text}.")
    for pair in ("cream_selected-cam", "ci_cam_cream_selected-ci_cam"):
        text = _diff_list(results, pair, LOC)
        if text:
            a, b = pair.split("-")
            lines.append(f"{NAMES[a]} − {NAMES[b]}: {text}.")
    return lines


def cannot_show(results: Mapping[str, Any]) -> list[str]:
    """What this synthetic benchmark cannot show, with its numbers."""
    bench = results["benchmark"]
    photos = len(bench["background_photos"])
    other = (1 - bench["usual_background_prob"]) / max(photos - 1, 1)
    epochs = sorted({len(d["epochs"]) for d in results["dilemma"].values()})
    return [
        f"One dataset seed and one training seed per run: the intervals cover the sampling of the {bench['num_test']} "
        "test images, not the spread over training runs or datasets.",
        f"The confounder is a background photograph: {photos} of them, each class on its usual one in "
        f"{100 * bench['usual_background_prob']:.0f} % of its train images and on each other one in {100 * other:.0f} %, "
        "so an 'unusual' test background is rare for the class, not unseen. The class is decided by a small saturated "
        "head that no background contains; real context (water for waterbirds, branches, sky) overlaps the objects' "
        "own appearance far more. A null result here does not show that CI-CAM cannot de-confound real images.",
        f"Training is {'/'.join(map(str, epochs))} CPU epochs of an EfficientNet-Lite0 with frozen early blocks at "
        "160-px crops, against 100 GPU epochs of VGG16 / InceptionV3 in the papers: where and whether Top-1 Cls and "
        "GT-known peak apart depends on the schedule, so the dilemma measured here is this recipe's, not CUB's.",
        "The teachers are checkpoints of two plain CI-CAM recipes (no fg/bg or area losses, one augmentation for all "
        "three routes of the student; spec kd_ci_cam.md §3.1, §7), and every number follows the wsolevaluation "
        "protocol (val-chosen τ, 224×224 squash, GT-class maps), not the KD-CI-CAM code's favourable one: none of "
        "these numbers predicts the papers' CUB / ILSVRC tables.",
    ]


# ---------------------------------------------------------------------------------------------- files
def plot_dilemma(results: Mapping[str, Any], out_path: Path, dpi: int = 120) -> Path:
    """One panel per run: val Top-1 Cls and val GT-known against the epoch, peaks and teachers marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cream_pl.core.io import atomic_write_bytes

    runs = list(results["dilemma"])
    fig = Figure(figsize=(3.4 * len(runs), 3.4))
    axes = [fig.add_subplot(1, len(runs), 1)]
    axes += [fig.add_subplot(1, len(runs), i + 1, sharey=axes[0]) for i in range(1, len(runs))]
    teachers = results["teachers"]
    for ax, run in zip(axes, runs):
        d = results["dilemma"][run]
        for key, label, color, style in (("val_cls_acc", "val Top-1 Cls", "C0", "-"),
                                         ("val_gt_known", "val GT-known", "C1", "--")):
            xs = [r["epoch"] for r in d["epochs"] if r.get(key) is not None]
            ys = [r[key] for r in d["epochs"] if r.get(key) is not None]
            ax.plot(xs, ys, style, color=color, marker="o", markersize=3, label=label)
            peak = d[f"peak_{key}"]
            ax.plot(peak["epoch"], peak["value"], "*", color=color, markersize=12, zorder=5)
        for role, color in (("cls", "C0"), ("loc", "C1")):
            if teachers[role]["run"] == run:
                ax.axvline(teachers[role]["epoch"], color=color, linestyle=":", linewidth=1.2)
                ax.annotate(f"{role} teacher", (teachers[role]["epoch"], 0.02 if role == "cls" else 0.1),
                            xycoords=("data", "axes fraction"), color=color, fontsize=8, ha="center")
        ax.set_title(_run_label(run), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_xticks([r["epoch"] for r in d["epochs"]])
        ax.set_xlim(0.5, max(r["epoch"] for r in d["epochs"]) + 0.5)  # room for the teacher labels
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("val accuracy (%)  (★ peak)")
    axes[0].legend(fontsize=8, loc="best")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(out_path, buf.getvalue())


def _curve_table(results: Mapping[str, Any]) -> str:
    width = max(len(d["epochs"]) for d in results["dilemma"].values())
    lines = ["| run | val metric | " + " | ".join(f"ep {e}" for e in range(1, width + 1)) + " |",
             "| --- | --- | " + " | ".join("---:" for _ in range(width)) + " |"]
    for run, d in results["dilemma"].items():
        for key, label in (("val_cls_acc", "Top-1 Cls"), ("val_gt_known", "GT-known Loc")):
            peak = d[f"peak_{key}"]["epoch"]
            cells = {r["epoch"]: (f"**{r[key]:.1f}**" if r["epoch"] == peak else f"{r[key]:.1f}")
                     for r in d["epochs"] if r.get(key) is not None}
            lines.append(f"| {_run_label(run)} | {label} | " + " | ".join(cells.get(e, "—") for e in range(1, width + 1))
                         + " |")
    return "\n".join(lines)


def _subset_table(results: Mapping[str, Any]) -> str:
    keys = ("max_box_acc_v2", "gt_known", "cls_acc")
    lines = ["| Method | " + " | ".join(f"unusual: {METRIC_NAMES[k]}" for k in keys) + " | "
             + " | ".join(f"usual: {METRIC_NAMES[k]}" for k in keys) + " |",
             "| --- |" + " ---: |" * (2 * len(keys))]
    for row in results["methods"].values():
        cells = [f"{row['subsets'][tag][k]:.2f}" if k in row["subsets"][tag] else "—" for tag in ("unusual", "usual")
                 for k in keys]
        lines.append(f"| {row['display_name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _confounder_table(results: Mapping[str, Any]) -> str:
    lines = ["| model | metric | usual | unusual | usual − unusual | independent bootstrap 95 % CI | verdict |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for key, gaps in results["confounder"].items():
        for m, g in gaps.items():
            lo, hi = g["ci95"]
            lines.append(f"| {NAMES[key]} | {METRIC_NAMES[m]} | {g['usual']:.2f} | {g['unusual']:.2f} | {g['diff']:+.2f} "
                         f"| [{lo:+.2f}, {hi:+.2f}] | {g['verdict']} |")
    return "\n".join(lines)


def _stage_label(key: str) -> str:
    """``fit_ci_cam_s`` -> ``fit ci_cam``; ``test_ci_cam_epoch005_s`` -> ``test ci_cam epoch 5``."""
    kind, _, rest = key.removesuffix("_s").partition("_")
    run, sep, epoch = rest.rpartition("_epoch")
    if kind == "test" and sep:
        return f"test {run} epoch {int(epoch)}"
    return f"{kind} {rest}".strip()


def _run_text(name: str, r: Mapping[str, Any]) -> str:
    crop = r.get("train_transform")
    aug = (f"RandomResizedCrop({r.get('crop_size')}, scale (0.2, 1))" if crop == "resized_crop"
           else f"resize {r.get('resize_size')} → random crop {r.get('crop_size')}")
    text = (f"`{name}` ({_run_label(name)}): `{r['recipe']}`, {r.get('model', '?')}, {r['epochs']} epochs, {aug} + flip, "
            f"SGD lr {r.get('lr')}, val after every epoch")
    if r.get("cream_candidates"):
        text += f"; CREAM's {r['cream_candidates']}-candidate grid scored on val in the last epoch"
    if r.get("kd"):
        kd = r["kd"]
        text += (f"; α {kd['kd_alpha']}, T {kd['kd_temperature_cls']:g} / {kd['kd_temperature_loc']:g}, KL form "
                 f"'{kd['kd_variant']}', routing '{kd['kd_routing']}'")
    return text + (f"; fit {r['fit_s']:.0f} s" if r.get("fit_s") is not None else "")


def _design(results: Mapping[str, Any]) -> list[str]:
    """Why the pipeline is built this way (the choices, with their numbers)."""
    bench = results["benchmark"]
    return [
        f"Data: the `cub` preset's generator with `confounded=True`, usual-background probability "
        f"{bench['usual_background_prob']} in train and `confounded_eval={bench['confounded_eval']}`: val and test "
        "backgrounds are drawn uniformly, so the test split holds both subsets (an unusual-only test split could not "
        "show the confounder at work). The `cub` preset's own bytes are unchanged.",
        "Per-epoch evidence: `EpochCheckpoints` writes each epoch's checkpoint (weights only) and its val Top-1 Cls / "
        "GT-known; `cream_search_epochs: last` scores CREAM's grid only in the last epoch's validation, the one whose "
        "checkpoint is tested (the choice stays on val).",
        "Teachers: argmax over (run, epoch) of val Top-1 Cls and of val GT-known among both CI-CAM runs (a second "
        "recipe gives the choice more to choose from), ties to the earlier run, then epoch; their test records give the "
        "student − teacher intervals. The rows are the last epoch of each run, as the protocol tests the last "
        "checkpoint.",
        _size_text(results) if bench["num_test"] >= 1000 else f"Size: a reduced run ({bench['num_test']} test images).",
    ]


BUDGET_MIN = 20
"""The wall time ``make demo-kd`` is sized to on 2 CPU cores: the runs' epochs and training crops."""


def _size_text(results: Mapping[str, Any]) -> str:
    """The budget beside the time this run took (its last full invocation's wall time, else its stage times)."""
    meta = results["meta"]
    took = (meta.get("full_run_wall_s") or meta["total_s"]) / 60
    crops = sorted({r["crop_size"] for r in results["runs"].values() if r.get("crop_size")})
    what = "every run's epochs" + (f" and the {' / '.join(f'{c}-px' for c in crops)} training crops" if crops else "")
    verdict = "within it" if took <= BUDGET_MIN else "over it (the stage times above say where the time went)"
    return (f"Size: {what} are chosen to keep the whole `make demo-kd` within {BUDGET_MIN} min on 2 CPU cores; this run "
            f"took {took:.1f} min, {verdict}; the test split is the preset's full {results['benchmark']['num_test']} "
            "images.")


def render_markdown(results: Mapping[str, Any], summary: Sequence[str], limits: Sequence[str]) -> str:
    """The results folder's README: tables, the dilemma, intervals, what it shows and what it cannot."""
    from cream_pl.reporting.evidence import differences_markdown
    from cream_pl.reporting.tables import metrics_table_markdown

    meta, bench = results["meta"], results["benchmark"]
    size = meta.get("eval_size", 224)  # a results file written before the meta kept it: the protocol's size
    notes = {
        "max_box_acc_v2": "mean over IoU δ ∈ {30, 50, 70} of the best-threshold box accuracy (each δ picks its own τ), "
                          f"all contours, thresholds every {meta['cam_curve_interval']:g}, <SIZE> squash-resized test images",
        "gt_known": "IoU ≥ 0.5 of the largest contour of the GT-class map at the val split's τ* (IoU-50), never searched "
                    "on test",
        "top1_loc": "GT-known Loc that also requires the top-1 class to be correct",
        "cls_acc": "top-1 classification accuracy (the down branch for CI-CAM models)",
    }
    rows = {r["display_name"] + (" (extra)" if k in TEACHER_ROWS else ""): r for k, r in results["methods"].items()}
    stages = ", ".join(f"{_stage_label(k)} {v:.0f} s" for k, v in meta["timing"].items())
    loads = [v for v in meta.get("load_average_1min", {}).values() if v == v]
    load_text = ""
    if loads:
        busy = max(loads) > (meta.get("cpu_count") or 1) + 0.5
        load_text = (f" The 1-min load average at the end of the stages was {min(loads):.1f}–{max(loads):.1f} on "
                     f"{meta.get('cpu_count')} cores" + ("; other processes competed for the CPU during part of the run, "
                                                         "so those stage times are upper bounds." if busy else "."))
    sel = "; ".join(f"{NAMES[k]}: T {int(s['T'])}, κ {s['kappa']:g}, λ {s['lambda']:g}, {s['feature_norm']} "
                    f"(val MaxBoxAccV2 {s['val_score']:.2f})" for k in MAIN_ROWS if (s := results["selected_cream"].get(k)))
    return "\n".join([
        "# KD-CI-CAM on its own terms: de-confounding and the classification/localisation dilemma",
        "",
        f"Produced by `make demo-kd` (`{meta['command']}`) on {meta['machine']}: "
        f"{meta['total_s'] / 60:.1f} min of measured stage time ({stages}); "
        + (f"the last invocation that ran every stage took {meta['full_run_wall_s'] / 60:.1f} min wall-clock, this one "
           f"{meta['wall_s'] / 60:.1f} min" if meta.get("full_run_wall_s") is not None else
           f"this invocation {meta['wall_s'] / 60:.1f} min wall-clock")
        + f" (a resumed invocation skips finished stages).{load_text} Benchmark: the "
        "CUB-like preset with "
        "class-correlated "
        "backgrounds (`cream-pl data synth --preset cub --confounded --confounded-eval uniform`, seed "
        f"{bench['seed']}): {bench['num_classes']} classes, {bench['num_train']} train / {bench['num_val']} val / "
        f"{bench['num_test']} test images.",
        "",
        "## Results (test split)",
        "",
        metrics_table_markdown(rows, COLUMNS, protocol_notes=notes, size=size),
        "",
        "The five rows are the last epoch of their runs (the protocol's last-checkpoint rule); CREAM's inference T, κ, λ "
        f"and M-step norm are chosen on val ({sel or 'no selection'}). CI-CAM rows use the intervened (down) branch's "
        "ground-truth-class CAM. The teachers *(extra)* are the checkpoints chosen below.",
        "",
        "### By background",
        "",
        f"Unusual: the {bench['num_test_unusual']} test images whose background is not their class's usual one; usual: "
        f"the other {bench['num_test_usual']}. MaxBoxAccV2 is re-maximised over the thresholds on each subset.",
        "",
        _subset_table(results),
        "",
        "## The dilemma: val Top-1 Cls and GT-known after every epoch",
        "",
        _curve_table(results),
        "",
        "Bold: each curve's peak (the first epoch of its maximum). Val GT-known is scored at the val split's own τ*. "
        "Teachers: the cls teacher is the checkpoint with the best val Top-1 Cls over every epoch of both CI-CAM runs, "
        "the loc teacher the one with the best val GT-known (ties to the earlier run, then epoch), as the official "
        "code chose its teachers; test never chooses.",
        "",
        "![dilemma](dilemma.png)",
        "",
        "## Differences, with paired bootstrap intervals",
        "",
        differences_markdown(results["differences"], NAMES),
        "",
        "### The confounder at work: one model, usual vs unusual backgrounds",
        "",
        _confounder_table(results),
        "",
        f"Two different groups of test images, so the interval is an independent bootstrap ({results['n_resamples']} "
        "resamples of each group, percentile interval), not a paired one.",
        "",
        "## What the numbers show",
        "",
        *[f"- {s}" for s in summary],
        "",
        "## What this benchmark cannot show",
        "",
        *[f"- {s}" for s in limits],
        "",
        "## How they were made",
        "",
        *[f"- {_run_text(name, r)}" for name, r in results["runs"].items()],
        "",
        *[f"- {s}" for s in _design(results)],
        "",
        "Raw numbers (every IoU level, PxAP, per-epoch val rows, intervals, timings): `metrics.json`.",
    ])


def write_results(results: dict[str, Any], out: Path, *, timing: Mapping[str, float], fast: bool, command: str,
                  wall_s: float, load: Mapping[str, float] | None = None, full_wall_s: float | None = None,
                  candidates: Sequence[str] | None = None, eval_size: int | str = 224) -> None:
    """Add the summary and meta to ``results``; write ``metrics.json``, ``README.md`` and ``dilemma.png``.

    ``command``: the runner's command line that produced them; ``load``: the 1-min load average when each stage of
    ``timing`` ended; ``candidates``: the runs the teachers were chosen from (default: the teachers' own runs);
    ``eval_size``: the maps' evaluation size (the runs' ``model.init_args.eval_size``).
    """
    from cream_pl.core.machine import machine_facts
    from cream_pl.reporting.tables import write_json_atomic, write_markdown_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = machine_facts()
    results["meta"] = {
        "fast": fast, "command": command, "timing": dict(timing), "total_s": float(sum(timing.values())), "wall_s": wall_s,
        "full_run_wall_s": full_wall_s,
        "load_average_1min": dict(load or {}), "cpu_count": m["cores"],
        "cam_curve_interval": results["cam_curve_interval"], "eval_size": eval_size,
        "machine": f"{m['arch']} CPU, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads)"}
    results["summary"] = explain(results, fast=fast, candidates=candidates)
    results["cannot_show"] = cannot_show(results)
    plot_dilemma(results, out / "dilemma.png")
    write_json_atomic(results, out / "metrics.json")
    write_markdown_atomic(render_markdown(results, results["summary"], results["cannot_show"]), out / "README.md")


def report(exp: Any, result: Any, out: Path) -> dict[str, Any]:
    """``make demo-kd``'s report from the runner's outcomes: the rows and teachers tested, their per-image records,
    the per-epoch val curves, the backgrounds of the test images; ``metrics.json``, ``README.md``, ``dilemma.png``."""
    import json
    import os
    import time

    import yaml

    from cream_pl.data.metadata import read_split
    from cream_pl.reporting.tables import by_run

    start = time.time()
    seed = min(result.outcomes)
    outcomes = result.outcomes[seed]
    tested, records = dict(result.rows[seed]), dict(result.records[seed])
    curves = {k: o.stages["epochs"]["curve"] for k, o in outcomes.items()}
    data = result.data
    image_ids = [s.image_id for s in read_split(data / "metadata" / "test").samples]
    usual = usual_background_flags(data, image_ids)
    t = time.time()
    results = build_results(tested, records, usual, curves, result.teachers, n_resamples=1000)
    synth = json.loads((data / "synth_config.json").read_text())
    results["benchmark"] = {"preset": exp.dataset.preset, **exp.dataset.overrides, "seed": exp.dataset.seed,
                            "config": synth["config"], "background_photos": synth["background_photos"],
                            "num_test": len(image_ids), "num_test_usual": int(usual.sum()),
                            "num_test_unusual": int((~usual).sum()),
                            "num_val": len(read_split(data / "metadata" / "val").samples),
                            "num_train": synth["config"]["num_train"], "num_classes": synth["config"]["num_classes"]}
    first = next(iter(outcomes.values()))  # the experiment's data stage is timed beside its first run's
    timing: dict[str, float] = {"data_s": first.timing["data_s"]} if "data_s" in first.timing else {}
    load: dict[str, float] = {}  # the 1-min load average when each stage ended (StageTimer's load.json)
    for i, (key, o) in enumerate(outcomes.items()):
        ended = json.loads(path.read_text()) if (path := o.folder / "load.json").is_file() else {}
        if i == 0 and "data_s" in timing and "data_s" in ended:  # the experiment's stages sit in the first run's
            load["data_s"] = ended["data_s"]
        for name, v in o.timing.items():
            new = (f"fit_{key}_s" if name == "fit_s" else
                   f"test_{key}_{name.removeprefix('test_')}" if name.startswith("test_epoch") else None)
            if new is not None:
                timing[new] = v
                if name in ended:
                    load[new] = ended[name]
    timing["bootstrap_s"] = time.time() - t
    load["bootstrap_s"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    runs = {}
    for run in exp.runs:
        if run.key in outcomes:
            config = yaml.safe_load((outcomes[run.key].folder / "config.yaml").read_text())
            runs[run.key] = {"recipe": f"experiments/{run.recipe}.yaml", "epochs": len(curves[run.key]),
                             "fit_s": timing.get(f"fit_{run.key}_s"), **recipe_facts(config, student=bool(run.teachers))}
    results["runs"] = runs
    wall = result.timing["this_invocation_s"] + (time.time() - start)
    full = result.work / "full_run.json"  # the wall time of the last invocation that ran every stage
    if not result.skipped:
        from cream_pl.reporting.tables import write_json_atomic

        write_json_atomic({"wall_s": wall}, full)
    write_results(results, out, timing=timing, fast=result.fast, command=result.command, wall_s=wall, load=load,
                  full_wall_s=json.loads(full.read_text())["wall_s"] if full.is_file() else None,
                  candidates=[t for r in exp.runs for t in r.teachers],
                  eval_size=by_run(o.facts["eval_size"] for o in outcomes.values()))  # read from each run's config
    print(f"[{exp.name}] wrote {out / 'metrics.json'}, {out / 'README.md'}, {out / 'dilemma.png'}", flush=True)
    return results


def recipe_facts(config: Mapping[str, Any], student: bool = False) -> dict[str, Any]:
    """What the results README says of a run's recipe (as it ran): model, crops, CREAM grid, KD."""
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    grid = model.get("cream_search")
    facts = {"model": config["model"]["class_path"].rsplit(".", 1)[-1], "train_transform": data.get("train_transform"),
             "crop_size": data.get("crop_size"), "resize_size": data.get("resize_size"), "lr": model.get("lr"),
             "cream_search": grid, "cream_search_epochs": model.get("cream_search_epochs", "all"),
             "cream_candidates": int(np.prod([len(v) if isinstance(v, list) else 1 for v in grid.values()])) if grid else 0}
    if student:
        facts["kd"] = {k: model.get(k) for k in ("kd_alpha", "kd_temperature_cls", "kd_temperature_loc", "kd_variant",
                                                  "kd_routing", "kd_loc_weight")}
    return facts
