"""An experiment is a declaration: a short YAML file under ``experiments/demos/`` that the one runner executes.

A declaration names the dataset (a synthetic preset with overrides, or a path), the runs (a recipe
with overrides and seeds, the maps of its test that become result rows, the maps whose per-image
outcomes are kept, and the extra stages it goes through), the differences to state with paired
bootstrap intervals, the report that writes ``metrics.json`` / ``metrics.md`` and the README block
it fills. :mod:`cream_pl.pipelines.runner` does the rest: path-free fingerprints, resume by stage,
atomic outputs, stage times, intervals, reports.

Every key is checked when the file is read: an unknown key, a missing one or a value of the wrong
type is one line that names the file and the key (``experiments/demos/x.yaml: runs[1].recipe: ...``),
and so are a difference naming a row no run gives or a metric without a paired interval, an unknown
report, README block or preset. The runner then parses every run's recipe with its overrides before
any work (:func:`cream_pl.pipelines.runner.check_run_configs`).

Overrides are Lightning-CLI dotted keys (as in ``cream-pl fit --trainer.max_epochs 3``). A string
value may name a place: ``{run}`` (the run's folder), ``{data}`` (the dataset root) and ``{out}`` (the
results folder) are filled in when the run is built; such an override says where things are, not
what is computed, so it never enters a run's fingerprint (moving a folder keeps the work).

Example (``experiments/demos/demo.yaml`` is a full one):
    >>> import tempfile, textwrap, pathlib
    >>> text = textwrap.dedent('''
    ...     name: resnet50-two-seeds
    ...     out: results/r50
    ...     work: outputs/r50
    ...     dataset: {preset: cub}
    ...     runs:
    ...       - key: cream
    ...         recipe: embedded_cream
    ...         seeds: [0, 1]
    ...         overrides: {model.init_args.backbone: resnet50}
    ...     differences: [{a: cream_selected, b: cam, metrics: [max_box_acc_v2]}]
    ... ''')
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r50.yaml"
    >>> _ = path.write_text(text)
    >>> exp = load_experiment(path)
    >>> exp.runs[0].seeds, exp.runs[0].rows, exp.report
    ((0, 1), {'cam': 'cam', 'cream_selected': 'cream_selected'}, 'table')
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cream_pl.core.errors import UserValueError
from cream_pl.core.io import read_yaml_file

__all__ = ["Choice", "DatasetDecl", "Difference", "Experiment", "RunDecl", "load_experiment", "PLACES"]

PLACES = ("{run}", "{data}", "{out}")
"""Placeholders an override's string value may hold: such an override says where, and is left out of fingerprints."""


@dataclass(frozen=True)
class DatasetDecl:
    """The data: ``root`` (generated there from ``preset`` + ``overrides`` with ``seed`` when the experiment owns
    it, i.e. ``preset`` is set; ``{work}`` in it is the work folder); ``preset: null`` uses ``root`` as it is (a
    user's dataset, never touched)."""

    root: str = "data/synth"
    preset: str | None = "cub"
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """A training hyperparameter chosen on val: the override ``key`` takes each of ``values`` (the first is the
    recipe's own, run without the override in the run's folder; the others in ``<key><suffix><value>``), and the
    value with the best ``val`` score (``val_method.json``'s key; ties: the first listed) gives the run's rows."""

    key: str
    values: tuple[float, ...]
    suffix: str
    val: str = "max_box_acc_v2"


@dataclass(frozen=True)
class RunDecl:
    """One run: ``recipe`` (a stem under ``experiments/`` or a path) + ``overrides``, at each of ``seeds``.

    ``rows``: result row -> map of the run's test (``{key}`` in a row name is the run's key); ``record``:
    the maps whose per-image test outcomes are kept (the rows' maps by default); ``stages``: the extra
    stages after fit and test (:data:`cream_pl.pipelines.run_stages.STAGES`), in order; ``folder``: the
    run's folder under the work folder (``{key}``, ``{seed}`` filled in; a folder without ``{seed}`` is the
    first seed's, and ``_seed<n>`` is added for the others); ``seed_folders``: a seed whose work lives
    elsewhere (``make demo-seeds`` reuses ``make demo``'s seed 0)."""

    key: str
    recipe: str
    name: str = ""
    seeds: tuple[int, ...] = (0,)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    rows: Mapping[str, str] = field(default_factory=dict)
    record: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    folder: str = "{key}"
    seed_folders: Mapping[int, str] = field(default_factory=dict)
    choose: Choice | None = None
    test: str = "model"
    """``model``: the fitted model is tested (``model.ckpt``); ``epochs``: the fit validates and keeps a
    checkpoint after every epoch (the recipe's ``EpochCheckpoints``), and the rows come from testing the
    last epoch's checkpoint (``test_epoch=NNN.json``), so other epochs can be tested too (teachers)."""
    teachers: tuple[str, ...] = ()
    """Runs (``test: epochs``) whose every epoch is a teacher candidate: the checkpoint of the best val Top-1 Cls
    teaches classification, the one of the best val GT-known localisation (KD-CI-CAM; chosen on val before this
    run trains, passed as ``model.init_args.{cls,loc}_teacher_ckpt``); their test adds the ``cls_teacher`` and
    ``loc_teacher`` rows."""

    def given_rows(self) -> list[tuple[str, str]]:
        """The result rows this run gives, each with where it comes from: ``rows``, ``stages`` (a stage's rows) or
        ``teachers`` (``cls_teacher`` / ``loc_teacher``)."""
        from cream_pl.pipelines.run_stages import STAGES

        return ([(row, "rows") for row in self.rows] + [(row, "stages") for s in self.stages for row in STAGES[s].rows]
                + [(row, "teachers") for row in ("cls_teacher", "loc_teacher") if self.teachers])

    def folder_name(self, seed: int) -> str:
        """This run's folder for ``seed``, under the work folder (``folder`` filled in; ``_seed<n>`` added for a seed
        other than the first where ``folder`` has no ``{seed}``)."""
        name = self.folder.format(key=self.key, seed=seed)
        if "{seed}" not in self.folder and seed != self.seeds[0]:
            name = f"seed{seed}" if self.folder == "." else f"{name}_seed{seed}"
        return name


@dataclass(frozen=True)
class Difference:
    """``a − b`` for each of ``metrics``, with a paired bootstrap 95 % interval over the test images."""

    a: str
    b: str
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class Experiment:
    """A whole declaration (see the module docstring); ``source`` is the file it was read from."""

    name: str
    out: str
    work: str
    runs: tuple[RunDecl, ...]
    dataset: DatasetDecl = DatasetDecl()
    version: int = 1
    fast: Mapping[str, Any] = field(default_factory=dict)
    differences: tuple[Difference, ...] = ()
    report: str = "table"
    readme: Mapping[str, str] = field(default_factory=dict)
    legacy: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


_DEFAULT_ROWS = {"cam": "cam", "cream_selected": "cream_selected"}
CHOOSE_VAL = ("max_box_acc_v2", "cls_acc")
"""The val figures of a run's own map a ``choose`` may go by (``val_method.json``, written by the runner's fit)."""
DEFAULT_FAST: dict[str, Any] = {
    "dataset": {"num_train": 64, "num_val": 16, "num_test": 32, "num_classes": 4},
    "overrides": {"trainer.max_epochs": 1, "trainer.check_val_every_n_epoch": 1, "model.init_args.pretrained": False,
                  "data.init_args.batch_size": 16, "model.init_args.cam_curve_interval": 0.01,
                  "data.init_args.resize_size": 128, "data.init_args.crop_size": 112}}
"""``--fast`` where a declaration says nothing else: tiny data, one epoch from a random init, small crops, a coarse
threshold grid (a smoke test: the numbers only show that the pipeline runs)."""
_KEYS = {
    "experiment": {"name": str, "out": str, "work": str, "runs": list, "dataset": dict, "version": int, "fast": dict,
                   "differences": list, "report": str, "readme": (dict, type(None)), "legacy": dict, "settings": dict,
                   "defaults": dict, "extends": str},
    "dataset": {"root": str, "preset": (str, type(None)), "seed": int, "overrides": dict},
    "run": {"key": str, "recipe": str, "name": str, "seeds": list, "overrides": dict, "rows": dict, "record": list,
            "stages": list, "folder": str, "seed_folders": dict, "choose": dict, "test": str, "teachers": list},
    "choose": {"key": str, "values": list, "suffix": str, "val": str},
    "difference": {"a": str, "b": str, "metrics": list},
    "fast": {"dataset": dict, "overrides": dict},
    "readme": {"file": str, "block": str},
}
_KEYS["defaults"] = {k: v for k, v in _KEYS["run"].items() if k != "key"}
_REQUIRED = {"experiment": ("name", "out", "work", "runs"), "run": ("key", "recipe"), "choose": ("key", "values"),
             "difference": ("a", "b", "metrics"), "dataset": (), "fast": (), "readme": ("file", "block"), "defaults": ()}


def _checked(where: str, kind: str, value: Any, source: str) -> dict[str, Any]:
    """``value`` as a mapping of ``kind``'s keys, each of its type; else one line naming ``source`` and ``where``."""
    def fail(msg: str) -> UserValueError:
        return UserValueError(f"{source}: {where}{msg}")

    if not isinstance(value, Mapping):
        if value is None and not where:
            raise UserValueError(f"{source}: the file is empty (a declaration is a mapping of {sorted(_KEYS[kind])})")
        raise UserValueError(f"{source}: {where + ': ' if where else ''}expected a mapping of {sorted(_KEYS[kind])}, "
                             f"got {type(value).__name__}")
    unknown = sorted(set(value) - set(_KEYS[kind]))
    if unknown:
        raise fail(f"{'.' if where else ''}{unknown[0]}: unknown key; expected one of {sorted(_KEYS[kind])}")
    for key in _REQUIRED[kind]:
        if key not in value:
            raise fail(f"{'.' if where else ''}{key}: missing (required)")
    for key, v in value.items():
        want = _KEYS[kind][key]
        if not isinstance(v, want) or (isinstance(v, bool) and want is int):
            names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise fail(f"{'.' if where else ''}{key}: expected {names}, got {type(v).__name__} ({v!r})")
    return dict(value)


def _run(i: int, value: Any, defaults: Mapping[str, Any], source: str) -> RunDecl:
    where = f"runs[{i}]"

    def bad(key: str, msg: str) -> UserValueError:
        return UserValueError(f"{source}: {where}{'.' + key if key else ''}: {msg}")

    raw = _checked(where, "run", {**defaults, **value} if isinstance(value, Mapping) else value, source)
    if "overrides" in defaults and "overrides" in value:  # a run's overrides add to the defaults'
        raw["overrides"] = {**defaults["overrides"], **value["overrides"]}
    key = raw["key"]
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", key) or set(key) == {"."}:
        raise bad("key", f"{key!r}: letters, digits, '_', '.' and '-' only (it names the run's folder)")
    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 2**32 - 1 for s in seeds):
        raise bad("seeds", f"expected a non-empty list of seeds in [0, 4294967295], got {seeds!r}")
    if len(set(seeds)) != len(seeds):  # [0, 0] ran one seed and reported it as two
        raise bad("seeds", f"{seeds!r} repeats a seed")
    for name in ("overrides", "rows"):
        if any(not isinstance(k, str) for k in raw.get(name) or {}):
            raise bad(name, f"expected string keys, got {sorted(map(repr, raw[name]))}")
    for k, v in raw.get("overrides", {}).items():
        if ("[" in k or "]" in k) and not re.fullmatch(r"[\w.]+\[\w+\](\.[\w.]+)?", k):
            raise bad("overrides", f"{k!r}: a callback is named as trainer.callbacks[ClassName].init_args.<arg>")
        for token in re.findall(r"\{(\w+)\}", v) if isinstance(v, str) else ():  # "{runn}": a literal folder name
            near = difflib.get_close_matches(token, [p.strip("{}") for p in PLACES], n=1, cutoff=0.6)
            if f"{{{token}}}" not in PLACES and (near or token == "work"):
                raise bad(f"overrides.{k}", f"{{{token}}} is not a place; places: {list(PLACES)}")
    for name in ("stages", "record", "teachers"):
        if not all(isinstance(x, str) for x in raw.get(name, ())):
            raise bad(name, f"expected a list of names, got {raw[name]!r}")
    choose = None
    if "choose" in raw:
        c = _checked(f"{where}.choose", "choose", raw["choose"], source)
        values = c["values"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise bad("choose.values", f"expected finite numbers, got {values!r}")
        if len(values) < 2 or len(set(values)) != len(values):
            raise bad("choose.values", f"a choice needs at least two different values, got {values}")
        if c.get("val", CHOOSE_VAL[0]) not in CHOOSE_VAL:
            raise bad("choose.val", f"unknown {c['val']!r}; the val figures a run keeps: {list(CHOOSE_VAL)}")
        choose = Choice(c["key"], tuple(float(v) for v in values), c.get("suffix", "_" + c["key"].rsplit(".", 1)[-1]),
                        c.get("val", CHOOSE_VAL[0]))
    from cream_pl.pipelines.run_stages import STAGES

    stages = tuple(raw.get("stages", ()))
    for s in stages:
        if s not in STAGES:
            raise bad("stages", f"unknown stage {s!r}; known: {sorted(STAGES)}")
    rows = {k.replace("{key}", key): str(m) for k, m in (raw["rows"] if raw.get("rows") is not None else _DEFAULT_ROWS).items()}
    record = tuple(raw.get("record") or dict.fromkeys(rows.values()))
    if set(rows.values()) - set(record):  # a row without per-image outcomes could state no difference
        raise bad("record", f"{record} leaves out the rows' map(s) {sorted(set(rows.values()) - set(record))}")
    if raw.get("test", "model") not in ("model", "epochs"):
        raise bad("test", f"expected 'model' or 'epochs', got {raw['test']!r}")
    if raw.get("test") == "epochs" and (raw.get("stages") or raw.get("choose")):
        raise bad("", "a run tested per epoch takes no stages and no choose (they work on a fitted model.ckpt)")
    folder = raw.get("folder", "{key}")
    if not _only_key_and_seed(folder) or ".." in Path(folder).parts or Path(folder).is_absolute():
        raise bad("folder", f"{folder!r}: a relative folder that may hold {{key}} and {{seed}}, nothing else")
    seed_folders = {}
    for k, v in (raw.get("seed_folders") or {}).items():
        if not (isinstance(k, int) or isinstance(k, str) and k.isdigit()) or isinstance(k, bool) or not isinstance(v, str):
            raise bad("seed_folders", f"expected seed -> folder, got {raw['seed_folders']!r}")
        if int(k) not in seeds:  # before: accepted, and never used (or used by a --seeds variant, outside --work)
            raise bad("seed_folders", f"seed {k} is not one of the run's seeds {list(seeds)}")
        seed_folders[int(k)] = v
    for k in raw.get("overrides", {}):
        if ".".join(p for p in str(k).split(".") if p != "init_args") == "data.data_root":  # before: trained on it,
            raise bad("overrides", f"{k}: the runs' data is the declaration's dataset (dataset.root or preset; a "  # reported
                      "variant: --data), not a run's override")  # the declared one, never restarted on its edits
    return RunDecl(key=key, recipe=raw["recipe"], name=raw.get("name", key), seeds=tuple(seeds),
                   overrides=dict(raw.get("overrides", {})), rows=rows, record=record, stages=stages,
                   folder=folder, seed_folders=seed_folders, choose=choose,
                   test=raw.get("test", "model"), teachers=tuple(raw.get("teachers", ())))


def _only_key_and_seed(template: str) -> bool:
    """Whether ``template``'s only fields are a plain ``{key}`` or ``{seed}`` (no attribute, index, spec or conversion)."""
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:  # an unmatched brace
        return False
    return all(f is None or (f in ("key", "seed") and not spec and not conv) for _, f, spec, conv in parsed)


_SETTINGS: dict[str, type | tuple[type, ...]] = {"min_seeds": int, "selection": str, "missing": dict}
"""What a declaration's ``settings`` may hold (read by the runner and the reports): a typo is refused, not ignored."""


def _check_table(where: str, value: Mapping[str, Any], known: Mapping[str, Any] | None, source: str) -> None:
    """``settings``: known keys of their types; ``legacy``: one ``<version key>: <integer>`` (a work folder of before
    the runner names its layout so)."""
    for key, v in value.items():
        want = known.get(key) if known is not None else int
        if known is not None and want is None:
            raise UserValueError(f"{source}: {where}.{key}: unknown key; expected one of {sorted(known)}")
        if not isinstance(v, want) or isinstance(v, bool):  # type: ignore[arg-type]
            kind = {int: "an integer", str: "a string", dict: "a mapping"}.get(want, str(want))  # type: ignore[call-overload]
            raise UserValueError(f"{source}: {where}.{key}: expected {kind}, got {v!r}")
    if known is None and len(value) > 1:
        raise UserValueError(f"{source}: {where}: one '<version key>: <integer>' at most, got {dict(value)}")


def _check_rows_unique(runs: Sequence[RunDecl], source: str) -> None:
    """Each result row comes from one run (two runs' ``cam`` rows: one was silently dropped from the table). A stage
    both runs go through (``center_baseline``: the data's, the same for every run) may give its row twice."""
    owner: dict[str, tuple[int, str]] = {}  # row -> (run index, "rows" / "stages" / "teachers")
    for i, r in enumerate(runs):
        for row, where in r.given_rows():
            if row in owner and not (where == owner[row][1] == "stages"):
                j = owner[row][0]
                raise UserValueError(f"{source}: runs[{i}].{where}: row {row!r} is also runs[{j}]'s ({runs[j].key}, "
                                     f"its {owner[row][1]}); give each run's rows their own names, e.g. "
                                     "rows: {\"{key}\": cam, \"{key}_cream_selected\": cream_selected}")
            owner.setdefault(row, (i, where))


def _check_differences(diffs: Sequence[Difference], runs: Sequence[RunDecl], source: str) -> None:
    """Each difference names rows that the runs, their stages or their teachers give, and metrics with a paired interval."""
    from cream_pl.metrics.bootstrap import RECORD_METRICS

    rows = {row for r in runs for row, _ in r.given_rows()}
    for i, d in enumerate(diffs):
        if not d.metrics or not all(isinstance(m, str) for m in d.metrics):
            raise UserValueError(f"{source}: differences[{i}].metrics: expected a non-empty list of metric names, "
                                 f"got {list(d.metrics)!r}")
        for side, row in (("a", d.a), ("b", d.b)):
            if row not in rows:
                raise UserValueError(f"{source}: differences[{i}].{side}: no run gives a row {row!r}; rows: {sorted(rows)}")
        if d.a == d.b:  # before: always "+0.00, no significant difference"
            raise UserValueError(f"{source}: differences[{i}]: a and b are both {d.a!r}; a difference needs two rows")
        for metric in d.metrics:
            if metric not in RECORD_METRICS:
                raise UserValueError(f"{source}: differences[{i}].metrics: {metric!r} has no paired interval; "
                                     f"metrics: {sorted(RECORD_METRICS)}")


RECIPES = Path(__file__).resolve().parents[2] / "experiments"
"""Where a run's ``recipe`` stem names a file (``embedded_cream`` -> ``experiments/embedded_cream.yaml``)."""


def recipe_path(name: str, source: str) -> Path:
    """A run's recipe file: ``name`` itself where it ends in ``.yaml``, else ``experiments/<name>.yaml``; a missing
    one is one line naming the declaration (``source``)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPES / f"{name}.yaml"
    if not path.is_file():
        from cream_pl.core.errors import UserFileNotFoundError

        raise UserFileNotFoundError(f"{path}: recipe not found ({source})")
    return path


def _check_folders_unique(runs: Sequence[RunDecl], source: str) -> None:
    """Each (run, seed) has its own work folder (two runs in one folder each found the other's inputs there, and
    started over on every invocation, each removing the other's model)."""
    owner: dict[str, tuple[int, int]] = {}
    for i, r in enumerate(runs):
        for seed in r.seeds:
            name = r.seed_folders.get(seed) or str(Path(r.folder_name(seed)))
            if name in owner and owner[name] != (i, seed):
                j, other = owner[name]
                raise UserValueError(f"{source}: runs[{i}].folder: {name!r} (seed {seed}) is also runs[{j}]'s "
                                     f"({runs[j].key}, seed {other}); give each run its own folder, e.g. '{{key}}'")
            owner[name] = (i, seed)


def _check_difference_seeds(diffs: Sequence[Difference], runs: Sequence[RunDecl], source: str) -> None:
    """The two rows of a difference come from runs of the same seeds (before: the seeds only one of them has were
    left out of that difference, and its over-seeds line was dropped, without a word)."""
    seeds: dict[str, tuple[int, ...]] = {}
    for r in runs:
        for row, _ in r.given_rows():
            seeds.setdefault(row, tuple(sorted(r.seeds)))
    for i, d in enumerate(diffs):
        if d.a in seeds and d.b in seeds and seeds[d.a] != seeds[d.b]:
            raise UserValueError(f"{source}: differences[{i}]: {d.a} has seeds {list(seeds[d.a])} but {d.b} "
                                 f"{list(seeds[d.b])}; a paired difference needs the same seeds on both sides")


def load_experiment(path: Path | str) -> Experiment:
    """Read and check a declaration; every problem is one :class:`UserValueError` line naming the file, the line
    and the key (``x.yaml:7: runs[1].seeds: ...``)."""
    try:
        return _load_experiment(Path(path))
    except UserValueError as err:
        raise _with_line(err, Path(path)) from None


def _with_line(err: UserValueError, path: Path) -> UserValueError:
    """``err`` with the line of the key it names in ``path`` (``<file>: <key path>: ...`` -> ``<file>:<line>: ...``);
    as it is where it names no key of the file. A run a base declaration (``extends:``) alone gives keeps no line,
    and a run this file merges into one is found by its key."""
    from cream_pl.core.io import line_of, yaml_key_lines

    source, msg = str(path), str(err)
    if not msg.startswith(source + ": "):
        return err
    rest = msg[len(source) + 2:]
    lines, where = yaml_key_lines(path), rest
    m = re.match(r"runs\[(\d+)\]", rest)
    try:
        raw = read_yaml_file(path, "experiment declaration") if m else None
        if m and isinstance(raw, Mapping) and "extends" in raw:  # the merged list's index -> this file's
            base = read_yaml_file(path.parent / raw["extends"], "experiment declaration")
            mine = [r.get("key") if isinstance(r, Mapping) else None for r in raw.get("runs") or []]
            merged = [r.get("key") for r in _merged_runs(base.get("runs", []), raw.get("runs") or [])]
            i = int(m.group(1))
            if i >= len(merged) or merged[i] not in mine:
                return err
            where = f"runs[{mine.index(merged[i])}]" + rest[m.end():]
    except (ValueError, OSError, TypeError, AttributeError, KeyError):  # a file the checks refused: its line is a bonus
        return err
    line = line_of(where, lines)
    return err if line is None else UserValueError(f"{source}:{line}: {rest}")


def _merged_runs(base_runs: Sequence[Mapping[str, Any]], my_runs: Sequence[Any]) -> list[dict[str, Any]]:
    """The runs of a declaration that ``extends:`` another: the base's in order, each with this file's run of the same
    key merged in field by field, then this file's other runs."""
    mine = {r.get("key"): r for r in my_runs if isinstance(r, Mapping)}
    return [{**r, **mine.pop(r["key"], {})} for r in base_runs] + list(mine.values())


def _load_experiment(path: Path) -> Experiment:
    if path.is_dir():
        raise UserValueError(f"{path}: a folder; an experiment declaration is a YAML file")
    if not path.is_file():
        from cream_pl.core.errors import UserFileNotFoundError

        raise UserFileNotFoundError(f"{path}: experiment declaration not found")
    raw = read_yaml_file(path, "experiment declaration")
    source = str(path)
    top = _checked("", "experiment", raw, source)
    if "extends" in top:  # another declaration's keys, replaced by this one's (runs: field by field, by key)
        base_path = path.parent / top.pop("extends")
        if not base_path.is_file():
            raise UserValueError(f"{source}: extends: {base_path} not found (a path relative to the declaration)")
        base = _checked("", "experiment", read_yaml_file(base_path, "experiment declaration"), str(base_path))
        for i, r in enumerate(base.get("runs", [])):  # merged by key below: each a mapping with one
            if not isinstance(r, Mapping) or not isinstance(r.get("key"), str):
                raise UserValueError(f"{base_path}: runs[{i}]: expected a mapping with a key (a run's name), got {r!r}")
        runs = _merged_runs(base.get("runs", []), top.get("runs", []))
        top = {**{k: v for k, v in base.items() if k != "extends"}, **top, "runs": runs}
        top = {k: v for k, v in top.items() if v is not None}
    defaults = _checked("defaults", "defaults", top.get("defaults", {}), source)  # its overrides: a dict, checked there
    for key in ("name", "out", "work"):  # out: "" wrote the results into the current folder
        if not top[key].strip():
            raise UserValueError(f"{source}: {key}: empty (expected {'a name' if key == 'name' else 'a folder'})")
    _check_table("settings", top.get("settings", {}), _SETTINGS, source)
    _check_table("legacy", top.get("legacy", {}), None, source)
    runs = tuple(_run(i, r, defaults, source) for i, r in enumerate(top["runs"]))
    if not runs:
        raise UserValueError(f"{source}: runs: at least one run is needed")
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise UserValueError(f"{source}: runs: the run keys {keys} repeat one")
    _check_rows_unique(runs, source)
    _check_folders_unique(runs, source)
    for i, r in enumerate(runs):
        for t in r.teachers:  # teachers come from earlier per-epoch runs
            if t not in keys[:i] or runs[keys.index(t)].test != "epochs":
                raise UserValueError(f"{source}: runs[{i}].teachers: {t!r} is not an earlier run with test: epochs")
    diffs = []
    for i, d in enumerate(top.get("differences", [])):
        d = _checked(f"differences[{i}]", "difference", d, source)
        diffs.append(Difference(d["a"], d["b"], tuple(d["metrics"])))
    _check_differences(diffs, runs, source)
    _check_difference_seeds(diffs, runs, source)
    ds = _checked("dataset", "dataset", top.get("dataset", {}), source)
    if isinstance(ds.get("seed"), bool) or ds.get("seed", 0) < 0:  # before: found when the data stage generated it
        raise UserValueError(f"{source}: dataset.seed: expected an integer >= 0, got {ds['seed']!r}")
    fast = _checked("fast", "fast", top.get("fast", {}), source)
    readme = _checked("readme", "readme", top["readme"], source) if top.get("readme") is not None else {}
    from cream_pl.data.synth import PRESETS, preset_config
    from cream_pl.reporting.experiment_report import REPORTS, SPLICES

    for where, value, known in (("dataset.preset", ds.get("preset", DatasetDecl.preset), PRESETS),
                                ("report", top.get("report", "table"), REPORTS), ("readme.block", readme.get("block"), SPLICES)):
        if value is not None and value not in known:
            raise UserValueError(f"{source}: {where}: unknown {value!r}; known: {sorted(known)}")
    if ds.get("preset", DatasetDecl.preset) is not None:  # the generator takes the overrides, --fast's too
        for where, extra in (("dataset.overrides", {}), ("fast.dataset", fast.get("dataset", {}))):
            try:
                preset_config(ds.get("preset", DatasetDecl.preset), {**ds.get("overrides", {}), **extra})
            except ValueError as err:
                raise UserValueError(f"{source}: {where}: {err}") from None
    exp = Experiment(name=top["name"], out=top["out"], work=top["work"], runs=runs,
                     dataset=DatasetDecl(**{k: v for k, v in ds.items()}), version=top.get("version", 1),
                     fast={**DEFAULT_FAST, **fast},
                     differences=tuple(diffs), report=top.get("report", "table"), readme=readme,
                     legacy=top.get("legacy", {}), settings=top.get("settings", {}), source=source)
    from cream_pl.reporting.experiment_report import check_declaration

    check_declaration(exp)  # what its report reads: before any work, not a KeyError after the training
    return exp
