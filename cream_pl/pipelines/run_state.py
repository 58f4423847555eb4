"""The bookkeeping every demo shares: path-free fingerprints, starting a run folder over, stage times, recipe callbacks.

A demo reuses finished work when, and only when, the work's inputs are the same: the dataset's
content hash, the recipe's text hash, the overrides, the seed and the demo's version. Where the
files are is not an input: :func:`path_free` writes every path under a named root (the data, the
work folder) as ``<name>/relative``, so moving a data or work folder reuses what is there.
:func:`start_over_if_stale` compares a run folder's ``inputs.json`` with today's inputs and clears
the folder when they differ; :class:`StageTimer` keeps each stage's time (with the machine's load
when it ended, and the machine it ran on) across resumed invocations; :func:`ensure_synthetic_dataset` is every demo's data stage.

Example:
    >>> path_free({"data.root": "/d/synth/", "ckpt": "/w/runs/a/last.ckpt", "lr": 0.1, "opt": "adamw"},
    ...           {"data": "/d/synth", "work": "/w"})
    {'data.root': '<data>', 'ckpt': '<work>/runs/a/last.ckpt', 'lr': 0.1, 'opt': 'adamw'}
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cream_pl.data.metadata import data_sha1  # its home is the data layer; re-exported for the runner

__all__ = ["StageTimer", "WORK_MARKER", "callback_index", "check_work_dataset", "check_work_folder", "clear_run_folder", "data_sha1", "ensure_synthetic_dataset",
           "path_free", "percentages_ok", "read_state", "recipe_places", "records_ok", "run_entries", "start_over_if_stale",
           "synthetic_dataset_is_current"]

WORK_MARKER = ".cream-pl-work"
"""The file that marks a folder as a runner's work folder."""


def check_work_folder(work: Path) -> None:
    """Mark ``work`` as a runner's work folder: an absent or empty folder, one marked before, or one that holds a
    run's ``inputs.json`` (two levels down at most: a work folder of before the mark); else refuse it, in one line.

    Raises:
        UserValueError: ``work`` holds files and no sign of a runner's work.
    """
    from cream_pl.core.io import atomic_write_text

    work = Path(work)
    if work.is_dir() and not (work / WORK_MARKER).is_file() and any(work.iterdir()):
        runs = (work / "inputs.json", *work.glob("*/inputs.json"), *work.glob("*/*/inputs.json"),
                *work.glob("*/synth_config.json"))  # a run's, or the data stage's (a work folder cut short after it)
        if not any(p.is_file() for p in runs):
            from cream_pl.core.errors import UserValueError

            raise UserValueError(f"{work}: holds files that are not a cream-pl runner's work (no {WORK_MARKER}, no "
                                 "inputs.json); give --work an empty or new folder")
    work.mkdir(parents=True, exist_ok=True)
    if not (work / WORK_MARKER).is_file():
        atomic_write_text(work / WORK_MARKER, "a cream-pl experiment runner's work folder\n")


WORK_DATASET = ".cream-pl-dataset.json"
"""``<work>/.cream-pl-dataset.json``: the dataset a work folder's runs were made on (its resolved root and content hash)."""


def check_work_dataset(work: Path, root: Path, sha1: str | None, restart: bool = False,
                       experiment: str | None = None) -> None:
    """Tie ``work`` to one experiment and its dataset at ``root`` (content hash ``sha1``, ``None`` while a dataset the
    runner generates is not written yet), or refuse another one in one line, before the data stage.

    The same root with other content (a regenerated dataset) and the same content at another root (a moved one)
    are the work folder's dataset: its runs start over, or are kept, by their fingerprints. Another root with other
    content is another dataset, whose runs would clear this one's finished work (two ``make demo DATA=`` roots of
    one folder name shared ``outputs/demo_<name>``); another declaration's runs would regenerate the dataset it keeps
    inside the work folder. Both are refused, nothing removed; ``restart`` starts this experiment's runs over on
    another dataset, but never takes another experiment's folder (its finished runs would be locked out of it).

    Raises:
        UserValueError: ``work`` holds the runs of another experiment or dataset.
    """
    from cream_pl.reporting.tables import write_json_atomic

    here = str(Path(root).resolve())
    stored = read_state(work / WORK_DATASET, log=None) or {}
    theirs = stored.get("experiment")
    if experiment is not None and theirs not in (None, experiment):
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{work}: holds the runs of experiment {theirs!r}, not {experiment!r}; nothing was "
                             "removed: give this one another work folder (--work; make demo: WORK=), or remove that "
                             "folder yourself (--restart starts this experiment's own runs over, never another's)")
    if not restart and sha1 is not None and stored and stored.get("root") != here and stored.get("data_sha1") != sha1:
        what = f"another dataset ({stored.get('root')}), not of {root}"
    else:
        record = {"experiment": experiment or theirs, "root": here,
                  "data_sha1": sha1 if sha1 is not None else stored.get("data_sha1")}
        if stored != record:
            write_json_atomic(record, work / WORK_DATASET)
        return
    from cream_pl.core.errors import UserValueError

    raise UserValueError(f"{work}: holds the runs of {what}; nothing was removed: give this one another work folder "
                         "(--work; make demo: WORK=), or --restart to start this one over there")


def path_free(value: Any, roots: Mapping[str, str | os.PathLike[str]]) -> Any:
    """``value`` (JSON-like) with each string that names a path under one of ``roots`` written ``<name>/rel``.

    Only strings with a ``/`` (or the OS separator) are read as paths, and never one already written
    ``<name>/...`` (so the function is idempotent); the deepest root that holds a path names it. Mappings and sequences are walked; other values are returned as they are.
    """
    resolved = sorted(((name, Path(root).resolve()) for name, root in roots.items()), key=lambda r: -len(r[1].parts))

    def one(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: one(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [one(x) for x in v]
        if isinstance(v, str) and v.startswith("<"):  # already written relative to a root
            return v
        if isinstance(v, os.PathLike) or (isinstance(v, str) and ("/" in v or os.sep in v)):
            p = Path(v).resolve()
            for name, root in resolved:
                if p == root or root in p.parents:
                    rel = p.relative_to(root).as_posix()
                    return f"<{name}>" if rel == "." else f"<{name}>/{rel}"
            return os.fspath(v)
        return v

    return one(value)


def read_state(path: Path, check: Callable[[Any], bool] | None = None,
               log: Callable[[str], None] | None = print, then: str = "doing that work again") -> Any:
    """A state file the runner wrote (a JSON object): its content, or ``None`` where it is missing or damaged
    (unreadable, not a JSON object, or refused by ``check``), so that the stage that writes it runs again; a damaged
    one is logged (a file holding ``null`` reads as missing).

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "test.json"; _ = f.write_text('{"methods": {"cam": {"gt_known": NaN}}}')
        >>> read_state(f, lambda v: percentages_ok(v["methods"]["cam"], ["gt_known"]), log=None) is None
        True
    """
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
        ok = value is None or (isinstance(value, dict) and (check is None or bool(check(value))))
    except (OSError, ValueError, RecursionError, LookupError, TypeError, AttributeError):
        ok = False  # ValueError: not JSON, not UTF-8; LookupError / TypeError / AttributeError: another structure
    if not ok:
        if log is not None:
            log(f"{path}: damaged (not what the runner wrote there); {then}")
        return None
    return value


def changed_keys(before: Any, now: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between an earlier run's recorded inputs and these (``["unknown"]`` where the
    record is not a mapping): what a message says made a run's work another's.

    Example:
        >>> changed_keys({"lr": 0.1, "seed": 0}, {"lr": 0.1, "seed": 1, "workers": 2}), changed_keys(None, {})
        (['seed', 'workers'], ['unknown'])
    """
    if not isinstance(before, Mapping):
        return ["unknown"]
    return sorted(k for k in {**before, **now} if before.get(k) != now.get(k))


def percentages_ok(row: Any, keys: Sequence[str], allow_none: Sequence[str] = ()) -> bool:
    """``row[key]`` is a finite number in [0, 100] for each of ``keys`` (``None`` allowed for ``allow_none``).

    >>> percentages_ok({"a": 50.0, "b": None}, ["a", "b"], allow_none=["b"]), percentages_ok({"a": 250.0}, ["a"])
    (True, False)
    """
    def ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 100.0

    return isinstance(row, Mapping) and all(
        k in row and (ok(row[k]) or (row[k] is None and k in allow_none)) for k in keys)


def records_ok(path: Path, methods: Sequence[str], fields: Sequence[str], flat_as: str | None = None) -> bool:
    """``path`` holds per-image records (:func:`cream_pl.reporting.evidence.load_records`) of every one of ``methods``,
    each with ``fields`` of one length and no NaN or infinite value."""
    import numpy as np

    from cream_pl.reporting.evidence import load_records

    try:
        records = load_records(path, flat_as=flat_as)
    except Exception:  # a truncated or foreign file: zipfile, pickle and numpy errors alike
        return False
    for m in methods:
        rec = records.get(m, {})
        if not all(f in rec for f in fields) or len({len(np.atleast_1d(rec[f])) for f in fields}) != 1:
            return False
        if any(a.dtype.kind in "fc" and not np.isfinite(a).all() for a in rec.values()):
            return False
    return True


def start_over_if_stale(run_dir: Path, inputs: Mapping[str, Any], log: Callable[[str], None] = print,
                        legacy: Callable[[dict[str, Any]], Any] | None = None, keep: tuple[str, ...] = (),
                        name: str | None = None, restart: bool = False) -> bool:
    """Make ``run_dir`` hold the work of ``inputs``; returns whether it was cleared.

    ``run_dir/inputs.json`` equal to ``inputs`` (after a JSON round trip): nothing happens. Else, when
    ``legacy`` maps the stored inputs (an older fingerprint's layout) to ``inputs``, only ``inputs.json``
    is rewritten in today's layout. Else (and with ``restart``) every entry of ``run_dir`` but ``keep`` is removed,
    and ``inputs.json`` is written (atomically) first, before any new work; ``name`` names the run in the log line.
    A folder that holds entries but no ``inputs.json`` is not the runner's: refused, nothing removed.
    """
    from cream_pl.reporting.tables import write_json_atomic

    today = json.loads(json.dumps(inputs, sort_keys=True, default=str))
    path = run_dir / "inputs.json"
    stored = read_state(path, log=None)
    if stored == today and not restart:
        return False
    if stored is not None and not restart and legacy is not None and json.loads(json.dumps(legacy(stored), default=str)) == today:
        write_json_atomic(today, path)
        return False
    stale = run_entries(run_dir, keep)
    if stale and not path.exists():  # no work of the runner's: a user's files, never removed
        from cream_pl.core.errors import UserValueError

        names = ", ".join(sorted(p.name for p in stale)[:3]) + (", ..." if len(stale) > 3 else "")
        raise UserValueError(f"{run_dir}: holds files the runner did not write ({names}; no inputs.json there); "
                             "nothing was removed: give the run an empty or new work folder (--work)")
    if stale:
        why = ("--restart" if restart else f"{path} is damaged, so what its work was made from is unknown"
               if stored is None else "its inputs changed (data, recipe, overrides, seed or version)")
        log(f"{name or run_dir}: {why}; starting it over")
    clear_run_folder(run_dir, keep)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(today, path)
    return bool(stale)


def run_entries(run_dir: Path, keep: Sequence[str] = ()) -> list[Path]:
    """A run folder's own work: every entry but its ``inputs.json``, the work folder's mark and dataset, ``keep`` (the data or
    results folder, where they lie inside it) and another run's folder inside it (one holding an ``inputs.json``)."""
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir() if p.name not in (*keep, "inputs.json", WORK_MARKER, WORK_DATASET)
            and not (p / "inputs.json").is_file()]


def clear_run_folder(run_dir: Path, keep: Sequence[str] = ()) -> None:
    """Remove a run folder's own work (:func:`run_entries`): the run starts over under the same inputs."""
    for p in run_entries(run_dir, keep):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


class StageTimer:
    """Stage times in ``path`` (JSON); a skipped stage keeps the time of the invocation that did the work.

    Beside it, ``load.json`` keeps the 1-minute load average when each stage ended: above the core
    count, other processes competed for the CPU and the time is an upper bound. ``machine.json`` keeps
    the machine each stage ran on (:func:`cream_pl.core.machine.machine_line`: CPU model, cores, torch,
    threads, kernels), since a rerun on other kernels or another thread count trains another model.
    """

    def __init__(self, path: Path, log: Callable[[str], None] = print) -> None:
        self.path = Path(path)
        self.load_path, self.machine_path = self.path.with_name("load.json"), self.path.with_name("machine.json")
        self.saved: dict[str, float]
        self.load: dict[str, float]
        self.machine: dict[str, str]
        self.saved, self.load, self.machine = (read_state(p, log=log, then="its stage times start again") or {}
                                               for p in (self.path, self.load_path, self.machine_path))
        self.skipped = False  # some stage of this invocation was found done

    def clear(self) -> None:
        """Forget every stored time (the work starts over)."""
        self.saved.clear()
        self.load.clear()
        self.machine.clear()

    def record(self, stage: str, seconds: float, ran: bool) -> None:
        """Keep ``stage``'s time where it ran, or where none is kept yet (a stage found done); the machine only where
        it ran here (a stage found done keeps the machine that did it, or none where that was not recorded)."""
        from cream_pl.core.machine import machine_line
        from cream_pl.reporting.tables import write_json_atomic

        self.skipped |= not ran
        if ran or stage not in self.saved:
            self.saved[stage] = float(seconds)
            self.load[stage] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            if ran:
                self.machine[stage] = machine_line()
            write_json_atomic(self.saved, self.path)
            write_json_atomic(self.load, self.load_path)
            write_json_atomic(self.machine, self.machine_path)


def callback_index(recipe: Path, class_name: str) -> int | None:
    """Index of the recipe's ``trainer.callbacks`` entry whose ``class_path`` ends with ``class_name``, or ``None``."""
    from cream_pl.core.errors import UserValueError
    from cream_pl.core.io import read_yaml_file

    config = read_yaml_file(recipe, "recipe") or {}
    trainer = (config.get("trainer") or {}) if isinstance(config, dict) else None
    callbacks = (trainer.get("callbacks") or []) if isinstance(trainer, dict) else None
    if not isinstance(callbacks, list):
        raise UserValueError(f"{recipe}: a recipe is a mapping whose trainer.callbacks is a list")
    for i, cb in enumerate(callbacks):
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith(class_name):
            return i
    return None


def recipe_places(recipe: Path) -> dict[str, str]:
    """Where the recipe's logger and callbacks write under its ``trainer.default_root_dir``: dotted override keys, each
    mapped to its path with that root written ``{root}`` (so a runner can move them into a run's folder).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "r.yaml"
        >>> _ = path.write_text("trainer: {default_root_dir: out/x, logger: {init_args: {save_dir: out/x}},"
        ...                     " callbacks: [{init_args: {dirpath: out/x/ckpt, mode: max}}, {init_args: {dirpath: elsewhere}}]}")
        >>> recipe_places(path)
        {'trainer.logger.init_args.save_dir': '{root}', 'trainer.callbacks.0.init_args.dirpath': '{root}/ckpt'}
    """
    from cream_pl.core.io import read_yaml_file

    config = read_yaml_file(recipe, "recipe")
    trainer = config.get("trainer") if isinstance(config, dict) else None
    root = trainer.get("default_root_dir") if isinstance(trainer, dict) else None
    if not isinstance(root, str) or not root.strip("/"):
        return {}
    root = root.rstrip("/")
    found: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}.{i}")
        elif isinstance(node, str) and (node == root or node.startswith(root + "/")):
            found[key] = "{root}" + node[len(root):]

    for section in ("logger", "callbacks"):
        walk(trainer.get(section), f"trainer.{section}")
    return found


def synthetic_dataset_is_current(root: Path, config: Mapping[str, Any], seed: int, *, owned: bool = True) -> bool:
    """A dataset is at ``root`` and, when the demo owns it and it is synthetic, records ``config`` and ``seed``."""
    root = Path(root)
    if not (root / "metadata" / "test" / "image_ids.txt").is_file():
        return False
    info = root / "synth_config.json"
    if not owned or not info.is_file():
        return True
    meta = read_state(info) or {}  # damaged: generated again
    return meta.get("config") == json.loads(json.dumps(dict(config))) and meta.get("seed") == seed


def ensure_synthetic_dataset(root: Path, config: Mapping[str, Any], seed: int, *, owned: bool = True,
                             log: Callable[[str], None] = print, what: str = "the embedded synthetic benchmark") -> bool:
    """The data stage: use the dataset at ``root``, or generate it; returns whether it was generated.

    ``config``: the :class:`~cream_pl.data.synth.SynthConfig` fields (JSON-like). A root the demo owns is
    (re)generated, atomically (into a sibling ``.tmp`` folder, then renamed), when it is missing or its
    ``synth_config.json`` records another configuration or seed. A user's dataset (``owned=False``) is
    used as it is and never touched.
    """
    from cream_pl.data.synth import SynthConfig, generate_synthetic_dataset

    root = Path(root)
    if synthetic_dataset_is_current(root, config, seed, owned=owned):
        log(f"data: using {root}")
        return False
    own = {"images", "masks", "metadata", "class_names.txt", "synth_config.json"}  # the generator's (cut short: redone)
    if root.is_dir() and any(p.name not in own for p in root.iterdir()) and not (root / "synth_config.json").is_file():
        from cream_pl.core.errors import UserValueError

        raise UserValueError(f"{root}: holds files that are not a synthetic dataset the runner wrote (no "
                             "synth_config.json, no metadata/test/); nothing was removed: move them, or give --data")
    if (root / "metadata" / "test" / "image_ids.txt").is_file():
        log(f"data: {root} holds another synthetic configuration; regenerating it")
    config = json.loads(json.dumps(dict(config)))
    log(f"data: generating {what} into {root} (seed {seed})")
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    generate_synthetic_dataset(tmp, seed=seed, config=SynthConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                                      for k, v in config.items()}))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return True
