"""The one owner of atomic file writes and of output-path checks.

Atomic writes go to a temporary file in the destination folder, are flushed and ``fsync``-ed,
then ``os.replace``-d over the destination: readers see the old file or the whole new one, never
half a file. ``tempfile.mkstemp`` creates its file with mode 0600; the file is given the mode a
plain ``open(path, "w")`` would have given it (that of the file it replaces, else
``0o666 & ~umask``) before the replace. A writer killed where no ``finally`` runs (SIGKILL, a power cut)
leaves its temporary file; its name carries the host and the process id, and the first write of a later process
into that folder removes it (:func:`remove_dead_writers_debris`).

The output checks run before any work starts, so that a bad ``--out`` fails in one line at once
instead of after the work (:func:`check_output_dir`, :func:`check_output_file`).

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> old = os.umask(0o022)
    >>> p = atomic_write_text(d / "a" / "b.txt", "ok")
    >>> _ = os.umask(old)
    >>> p.read_text(), oct(p.stat().st_mode & 0o777)
    ('ok', '0o644')
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from cream_pl.core.errors import UserValueError

__all__ = [
    "file_sha1",
    "current_umask",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_copy_file",
    "remove_dead_writers_debris",
    "check_output_dir",
    "check_output_file",
    "check_outside_inputs",
    "read_json_file",
    "JSONFileError",
    "read_yaml_file",
    "yaml_key_lines",
    "line_of",
]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status``).

    Elsewhere it falls back to ``os.umask`` set-and-restore (briefly changes the umask).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, else ``0o666 & ~umask``."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


_HOST = socket.gethostname().replace(os.sep, "_")
_SWEPT: set[Path] = set()
"""The folders whose killed writers' temporary files this process has removed (once per folder: an export writes
thousands of maps into one)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process (alive), or not a pid
        return pid > 0
    return True


def _tmp_prefix(name: str) -> str:
    """The temporary file's name starts ``.<name>.<host>-<pid>.``: a later writer can tell a killed one's debris."""
    return f".{name}.{_HOST}-{os.getpid()}."


def remove_dead_writers_debris(folder: Path) -> list[Path]:
    """Remove the temporary files that writers on this host left in ``folder`` when they were killed (SIGKILL, a
    power cut: no ``finally`` ran); a live writer's file, another host's and any other file stay. Returns them.

    Example:
        >>> import subprocess, sys, tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        >>> _ = (d / f".a.json.{_HOST}-{int(dead.stdout)}.x1y2.tmp").write_text("half")  # a killed writer's
        >>> _ = (d / f".a.json.{_HOST}-{os.getpid()}.z3.tmp").write_text("half")  # a live one's
        >>> _ = (d / ".a.json.otherhost-1.q.tmp").write_text("half")
        >>> [p.name.split(".")[-2] for p in remove_dead_writers_debris(d)], len(list(d.iterdir()))
        (['x1y2'], 2)
    """
    removed = []
    marker = f".{_HOST}-"
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp") and marker in name):
            continue
        pid = name[name.rindex(marker) + len(marker):].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _atomic(path: str | os.PathLike[str], fill: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(os.path.abspath(path.parent))
    if folder not in _SWEPT:
        _SWEPT.add(folder)
        remove_dead_writers_debris(folder)
    mode = _final_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created); returns the path."""
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy the contents of ``src`` to ``dst`` atomically (streamed; ``dst`` gets a fresh file's mode)."""

    def fill(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f, length=1 << 20)

    return _atomic(dst, fill)


def _blocking_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` that is not a folder, or ``None``."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _check_writable_base(path: Path, what: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserValueError(f"{path}: {what} cannot be created: {parent} is not writable")
            _probe_folder(parent, f"{path}: {what} cannot be created in {parent}")
            return


def _probe_folder(folder: Path, message: str) -> None:
    """Create and remove an empty folder in ``folder``: ``os.access`` answers yes to root on a read-only
    file system or under ``/proc``, where the real write would fail after the work."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cream-pl-write-check-", dir=folder))
    except OSError as err:
        raise UserValueError(f"{message}: {err.strerror or err}") from None


def check_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be (or already is) an output folder.

    Raises:
        UserValueError: ``path`` is an existing file, lies under a file, or cannot be created.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "f.txt"; _ = f.write_text("x")
        >>> try:
        ...     check_output_dir(f / "sub")
        ... except ValueError as err:
        ...     print(str(err).replace(str(f), "F"))
        F/sub: --out must be a folder, but F is a file
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        kind = "an existing file" if path.is_file() else "a device, pipe or socket"  # /dev/null was "a file"
        raise UserValueError(f"{path}: {what} must be a folder, but it is {kind}")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        raise UserValueError(f"{path}: {what} must be a folder, but {blocker} is a file")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserValueError(f"{path}: {what} is not writable")
        _probe_folder(path, f"{path}: {what} is not writable")
    else:
        _check_writable_base(path, what)
    return path


def check_output_file(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written as a file.

    Raises:
        UserValueError: ``path`` is an existing folder or device, lies under a file, or cannot be created.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> try:
        ...     check_output_file(d)
        ... except ValueError as err:
        ...     print(str(err).replace(str(d), "D"))
        D: --out must be a file path, but it is an existing folder
    """
    path = Path(path)
    if path.is_dir():
        raise UserValueError(f"{path}: {what} must be a file path, but it is an existing folder")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        raise UserValueError(f"{path}: {what} cannot be created, {blocker} is a file, not a folder")
    if path.exists() and not path.is_file():  # a rename over /dev/null (as root) replaced the device itself
        raise UserValueError(f"{path}: {what} must be a regular file path, but it is a device, pipe or socket")
    if path.exists():  # replaced atomically: a temporary file in its folder, then a rename
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise UserValueError(f"{path}: {what} cannot be replaced: {path.parent} is not writable")
        _probe_folder(path.parent, f"{path}: {what} cannot be replaced in {path.parent}")
    else:
        _check_writable_base(path, what)
    return path


def check_outside_inputs(out: str | os.PathLike[str], inputs: dict[str, str | os.PathLike[str] | None], why: str,
                         label: str = "") -> None:
    """Refuse an output folder that is, or lies inside, a folder a command reads (``{option: folder}``; ``None``: not
    given), before any work: ``<label><out>: is|inside <option> <folder>, <why>`` (the outputs written into a dataset,
    which ``data check`` then refuses).

    Example:
        >>> try:
        ...     check_outside_inputs("/d/metadata", {"--data": "/d"}, "give another --out", label="--out ")
        ... except ValueError as err:
        ...     print(err)
        --out /d/metadata: inside --data /d, give another --out
    """
    where = Path(out).resolve()
    for option, folder in inputs.items():
        top = Path(folder).resolve() if folder is not None else None
        if top is not None and (where == top or top in where.parents):
            raise UserValueError(f"{label}{out}: {'is' if where == top else 'inside'} {option} {folder}, {why}")


def file_sha1(path: str | os.PathLike[str]) -> str:
    """The SHA-1 of a file's bytes (a recipe's identity in a fingerprint: its text, never where it is)."""
    import hashlib

    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


class JSONFileError(UserValueError):
    """A JSON file that cannot be read or decoded: ``<file>[:<line>]: <problem> (<what>)``.

    Attributes:
        path: the file.
        line: the line of the problem, where there is one.
        problem: what is wrong, without the file and ``what``.
    """

    def __init__(self, path: Path, problem: str, what: str, line: int | None = None) -> None:
        self.path, self.problem, self.line = path, problem, line
        super().__init__(f"{path}{f':{line}' if line is not None else ''}: {problem} ({what})")


def read_json_file(path: str | os.PathLike[str], what: str = "JSON file") -> object:
    """The content of a user's JSON file; any problem reading or decoding it is one line naming the file.

    Covers a missing or unreadable file, bytes that are not UTF-8, invalid JSON (with its line and
    column, and a hint when the file ends in the middle of the JSON), JSON nested too deeply for the
    decoder (``RecursionError``) and numbers too long to convert.

    Raises:
        UserFileNotFoundError: the file does not exist.
        JSONFileError: ``<file>[:<line>]: <problem> (<what>)``.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "deep.json"; _ = f.write_text("[" * 100000 + "]" * 100000)
        >>> try:
        ...     read_json_file(f, "pseudo-box file")
        ... except ValueError as err:
        ...     print(str(err).replace(str(f), "F"))
        F: invalid JSON: nested too deeply (pseudo-box file)
    """
    import json

    from cream_pl.core.errors import UserFileNotFoundError

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserFileNotFoundError(f"{path}: file not found ({what})") from None
    except OSError as err:
        raise JSONFileError(path, f"cannot read the file: {err.strerror or err}", what) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JSONFileError(path, f"byte {err.start}: not valid UTF-8 text", what) from None
    if not text.strip():
        raise JSONFileError(path, "empty file", what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (the file ends in the middle of the JSON: truncated?)" if err.pos >= len(text.rstrip()) else ""
        raise JSONFileError(path, f"invalid JSON at column {err.colno}: {err.msg}{hint}", what, err.lineno) from None
    except RecursionError:
        raise JSONFileError(path, "invalid JSON: nested too deeply", what) from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise JSONFileError(path, f"invalid JSON: {' '.join(str(err).split())[:200]}", what) from None


def _unique_keys_loader() -> type:
    """``yaml.SafeLoader`` that refuses a mapping key written twice (``safe_load`` keeps the last one silently: a
    second ``runs:`` replaced the first). Keys a merge (``<<: *anchor``) brings in may still be overridden."""
    import yaml

    class UniqueKeysLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)  # the key's value: `true`/`True` alike, `1`/`'1'` not
                if not isinstance(key, (str, int, float, bool, type(None))):
                    continue
                key = (type(key) is str, key)  # 1 and 1.0 are one dict key; 1 and '1' are two
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key[1]!r} (first on line {seen[key]})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeysLoader


def read_yaml_file(path: str | os.PathLike[str], what: str = "YAML file") -> object:
    """The content of a user's YAML file (``yaml.safe_load``); a problem is one line naming the file and line.

    Raises:
        UserFileNotFoundError: the file does not exist.
        UserValueError: ``<file>[:<line>]: <problem> (<what>)``: unreadable, not UTF-8, invalid YAML,
            nested too deeply.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "c.yaml"; _ = f.write_text(": : [")
        >>> try:
        ...     read_yaml_file(f, "run config")
        ... except ValueError as err:
        ...     print(str(err).replace(str(f), "F"))
        F:1: invalid YAML: expected <block end>, but found ':' (run config)
    """
    import yaml

    from cream_pl.core.errors import UserFileNotFoundError

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserFileNotFoundError(f"{path}: file not found ({what})") from None
    except OSError as err:
        raise UserValueError(f"{path}: cannot read the file ({what}): {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UserValueError(f"{path}: byte {err.start}: not valid UTF-8 text ({what})") from None
    try:
        return yaml.load(text, Loader=_unique_keys_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise UserValueError(f"{path}{line}: invalid YAML: {problem} ({what})") from None
    except RecursionError:
        raise UserValueError(f"{path}: invalid YAML: nested too deeply ({what})") from None


def yaml_key_lines(path: str | os.PathLike[str]) -> dict[str, int]:
    """The line (1-based) of every key and list item of a readable YAML file, by its path as the checks name it
    (``runs[1].seeds``, ``dataset.overrides.num_classes``); ``{}`` where the file cannot be read or parsed (the
    reader says why). A key with dots in it (an override ``model.init_args.lr``) is one step of the path.

    Example:
        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "e.yaml"
        >>> _ = f.write_text("name: x\\nruns:\\n  - key: a\\n    seeds: [0, 1]\\n")
        >>> lines = yaml_key_lines(f)
        >>> lines["runs"], lines["runs[0]"], lines["runs[0].seeds"], lines["runs[0].seeds[1]"]
        (2, 3, 4, 4)
        >>> line_of("runs[0].seeds: repeats a seed", lines), line_of("runs[0].recipe: missing", lines)
        (4, 3)
    """
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return {}
    lines: dict[str, int] = {}
    seen: set[int] = set()

    def walk(node: yaml.Node | None, prefix: str) -> None:
        if node is None or id(node) in seen:  # an alias is its anchor's node: walked once
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    name = f"{prefix}.{key.value}" if prefix else str(key.value)
                    lines.setdefault(name, key.start_mark.line + 1)
                    walk(value, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(f"{prefix}[{i}]", item.start_mark.line + 1)
                walk(item, f"{prefix}[{i}]")

    walk(root, "")
    return lines


def line_of(where: str, lines: dict[str, int]) -> int | None:
    """The line of the longest key path in ``lines`` that begins ``where`` (a message's ``<path>: <problem>``, or the
    path alone) and ends at a step's boundary; ``None`` where none does (see :func:`yaml_key_lines`)."""
    best = None
    for name, line in lines.items():
        if where.startswith(name) and where[len(name):len(name) + 1] in ("", ":", ".", "[") and (
                best is None or len(name) > len(best[0])):
            best = (name, line)
    return None if best is None else best[1]
