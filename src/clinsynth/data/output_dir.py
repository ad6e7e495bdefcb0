"""Output directories that clinsynth may write: never a user's folder, never a mixed release.

A steward points an output (``--out`` on the command line) at a path; what is there may be theirs.
The rules, checked *before any data is read*:

* the output must be absent, empty, or a previous clinsynth output of the same kind (recognised by
  the marker file :data:`MARKER`, or for outputs made before the marker by their manifest or
  bundle config). Anything else is refused, naming what is there.
* Replacing a previous output needs ``overwrite``; it removes only the files that output lists.
  Anything else in the folder (a steward's notes) is carried over to the new output.
* One writer at a time: an advisory lock (``flock``) on a sibling lock file refuses a second
  concurrent writer with one line.

The protocol that makes an output appear whole or not at all:

1. Everything is built in a sibling *staging* directory ``.<name>.clinsynth-partial``; a model's
   per-epoch checkpoint lives there too (``.checkpoint/``), so a killed run can ``resume``.
2. When the output is complete, the marker (with the list of files) is written into the staging
   directory last. The checkpoint is removed.
3. Commit: the previous output, if any, is renamed to ``.<name>.clinsynth-old``; the staging
   directory is renamed to ``<name>``; files of the old output that it did not list are moved
   into the new one; the rest of the old output is deleted.

A reader therefore sees the old output, briefly no output, or the new one — never both mixed.
A kill between the renames is repaired the next time a writer takes the lock (:func:`_recover`):
a complete staging directory rolls forward, anything else rolls back to the old output.

Size: ~530 lines. The checks, the lock, the staging folder, the commit and the resume state are one
protocol on one folder: each step reads the marker file the others write.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from clinsynth.errors import OUT, OVERWRITE, RESUME, OutputError

MARKER = ".clinsynth.json"
MARKER_FORMAT = 1
CHECKPOINT = ".checkpoint"
_PROBE = ".clinsynth-write-test"
Kind = Literal["release", "bundle", "partitions"]
_WHAT = {"release": "release", "bundle": "model bundle", "partitions": "partitioned synthetic table"}
#: write errors that a full disk, a quota or a permission produce, told as one line
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


def staging_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.clinsynth-partial")


def _old_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.clinsynth-old")


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.clinsynth-lock")


def _normalise(path: str | Path) -> Path:
    """An absolute path with a real name; a symlink is followed, so the user's link survives."""
    path = Path(path).expanduser()
    if path.is_symlink():
        path = path.resolve()
    path = Path(os.path.abspath(path))
    if path.name in ("", ".", ".."):
        path = path.resolve()
    if path.parent == path:
        raise OutputError(f"{OUT} '{path}' is the file system's root; choose a folder for the output")
    return path


# -- what is in a folder --------------------------------------------------------------------
@dataclass(frozen=True)
class Existing:
    """What the output path holds now: nothing, an empty folder, a clinsynth output, or something else."""

    state: Literal["absent", "file", "empty", "ours", "foreign"]
    kind: str | None = None
    files: tuple[str, ...] = ()      # what the previous output lists (relative paths), when ours
    entries: tuple[str, ...] = ()    # what is in the folder (top level), when foreign
    created: str | None = None


def inspect_output(path: str | Path) -> Existing:
    """Classify what is at ``path`` without changing anything."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return Existing("absent")
    if not path.is_dir():
        return Existing("file")
    try:
        entries = sorted(os.listdir(path))
    except OSError as e:
        raise OutputError(f"{OUT} '{path}' cannot be read ({e.strerror}); choose a folder you can write") from None
    if not entries:
        return Existing("empty")
    marker = _read_marker(path)
    if marker is not None:
        return Existing("ours", kind=marker["kind"], files=tuple(marker["files"]), created=marker.get("created"))
    legacy = _legacy_output(path)
    if legacy is not None:
        return legacy
    return Existing("foreign", entries=tuple(entries))


def _read_marker(path: Path) -> dict[str, Any] | None:
    """A finished output's marker, if it is one we can trust (every listed file inside the output)."""
    data = _staging_state(path)
    ok = (data is not None and isinstance(data.get("files"), list)
          and all(isinstance(f, str) and _safe_relative(f) for f in data["files"]))
    return data if ok else None


def _safe_relative(name: str) -> bool:
    """A listed file must stay inside its output: a marker cannot make us delete ``../x``."""
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def _legacy_output(path: Path) -> Existing | None:
    """Outputs written before the marker existed: a release's manifest, a bundle's config."""
    try:
        manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else None
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(manifest, dict) and "clinsynth_version" in manifest and isinstance(manifest.get("files"), dict):
        listed = [v.get("path") for v in manifest["files"].values() if isinstance(v, dict)]
        files = [f for f in listed if isinstance(f, str) and _safe_relative(f)] + ["manifest.json"]
        return Existing("ours", kind="release", files=tuple(files), created=manifest.get("created"))
    if isinstance(config, dict) and "bundle_format" in config and "model" in config:
        files = [f for f in ("config.json", "schema.json", "encoder.json", "weights.pt", "tables.npz")
                 if (path / f).exists()]
        return Existing("ours", kind="bundle", files=tuple(files))
    return None


def _preview(entries: tuple[str, ...] | list[str], path: Path, k: int = 5) -> str:
    shown = [e + ("/" if (path / e).is_dir() else "") for e in list(entries)[:k]]
    more = f" and {len(entries) - k} more" if len(entries) > k else ""
    return ", ".join(shown) + more


def check_target(path: str | Path, kind: Kind, overwrite: bool = False, label: str | Path | None = None) -> Existing:
    """Refuse an output path that is not ours to write, before anything is read or trained;
    messages name it as ``label`` (what the user typed) when given."""
    found = inspect_output(path)
    path = Path(label) if label is not None else Path(path)
    what = _WHAT[kind]
    if found.state == "file":
        raise OutputError(f"{OUT} '{path}' is a file; a {what} is a folder: choose a new or empty folder")
    if found.state == "foreign":
        raise OutputError(f"{OUT} '{path}' is not empty and is not a clinsynth output: it holds "
                          f"{_preview(found.entries, path)}; clinsynth writes only into a new or empty folder "
                          f"or one of its own outputs, so choose another {OUT}")
    if found.state == "ours" and found.kind != kind:
        raise OutputError(f"{OUT} '{path}' holds a clinsynth {_WHAT[found.kind or 'release']}, not a {what}; "
                          f"choose another {OUT}")
    if found.state == "ours" and not overwrite:
        made = f" (made {found.created})" if found.created else ""
        raise OutputError(f"{OUT} '{path}' holds a previous clinsynth {what}{made}; add {OVERWRITE} to replace it "
                          f"(only the files it lists are removed) or choose another {OUT}")
    return found


# -- the lock ---------------------------------------------------------------------------------
class _Lock:
    """An exclusive ``flock`` on ``.<name>.clinsynth-lock``; the file is removed on release.

    Removing a lock file races with a writer that opened it before the removal, so after taking
    the lock we check the path still names the file we hold, and retry if not.
    """

    def __init__(self, path: Path):
        self.path = _lock_path(path)
        self.out = path
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                raise OutputError(f"another clinsynth run is writing '{self.out}'" + (f" ({holder})" if holder else "")
                                  + f"; wait for it to finish or choose another {OUT}") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, since {_now()}".encode(), 0)
                return
            os.close(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the staged output ------------------------------------------------------------------------
@dataclass
class Stage:
    """A staging folder being filled; ``commit`` moves it into place whole."""

    path: Path                      # where the output will appear
    kind: Kind
    dir: Path                       # the staging folder: write everything here
    previous: Existing
    resumed: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # steps done, kept across a resume

    @property
    def checkpoint_dir(self) -> Path:
        """Where a model keeps its per-epoch checkpoint (removed when the output is committed)."""
        return self.dir / CHECKPOINT

    def mark(self, step: str, **info: Any) -> None:
        """Record a finished step in the staging folder, for a later ``resume``."""
        self.state.setdefault("done", {})[step] = info
        _write_marker(self.dir, self.kind, status="partial", files=[], extra={"state": self.state})

    def done(self, step: str) -> dict[str, Any] | None:
        return self.state.get("done", {}).get(step)

    def claim(self, fingerprint: str) -> None:
        """Tie the staging folder to one run (its data and options): a resume of another run is refused."""
        held = self.state.get("fingerprint")
        if self.resumed and held is not None and held != fingerprint:
            raise OutputError(f"{RESUME}: the interrupted run in '{self.dir}' was made from other data or options; "
                              "run the same command as before, or remove that folder to start afresh")
        if held != fingerprint:
            self.state["fingerprint"] = fingerprint
            _write_marker(self.dir, self.kind, status="partial", files=[], extra={"state": self.state})

    def files(self) -> list[str]:
        """Every file in the staging folder (relative, sorted), the checkpoint and marker excluded."""
        out = []
        for root, dirs, names in os.walk(self.dir):
            rel = Path(root).relative_to(self.dir)
            if rel.parts[:1] == (CHECKPOINT,):
                continue
            out.extend(str(rel / n) if rel.parts else n for n in names if not (not rel.parts and n == MARKER))
        return sorted(out)


def _write_marker(directory: Path, kind: Kind, status: str, files: list[str], extra: dict[str, Any] | None = None) -> None:
    from clinsynth.data.io import write_text_atomic

    data = {"clinsynth_output": MARKER_FORMAT, "kind": kind, "status": status, "created": _now(), "files": files,
            **(extra or {})}
    write_text_atomic(directory / MARKER, json.dumps(data, indent=1) + "\n")


def _staging_state(staging: Path) -> dict[str, Any] | None:
    """The marker of a folder of ours (``status`` partial or complete), or None if it has none."""
    marker = staging / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("kind") in _WHAT else None


@contextmanager
def staged_output(path: str | Path, kind: Kind, *, overwrite: bool = False, resume: bool = False,
                  reserve_bytes: int = 0) -> Iterator[Stage]:
    """Check, lock and stage an output; commit it whole when the block succeeds.

    On an exception the output at ``path`` is untouched. The staging folder is kept when it holds
    a checkpoint (so ``resume=True`` continues the run) and removed otherwise. Write errors from a
    full disk or a permission become one ``OutputError`` line saying what was kept.
    """
    given = path
    path = _normalise(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{OUT} '{given}': '{path.parent}' is a file, not a folder")
    check_target(path, kind, overwrite, label=given)  # fast refusal before taking the lock
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{OUT} '{path}': cannot create the folder '{path.parent}' ({e.strerror})") from None
    lock = _Lock(path)
    try:
        lock.acquire()
    except PermissionError:
        raise OutputError(f"{OUT} '{path}': '{path.parent}' is not writable; choose a folder you can write") from None
    except OSError as e:
        raise OutputError(f"{OUT} '{path}': cannot write in '{path.parent}' ({e.strerror})") from None
    stage: Stage | None = None
    try:
        _recover(path)
        previous = check_target(path, kind, overwrite, label=given)  # again, under the lock
        stage = _open_stage(path, kind, previous, resume, reserve_bytes)
        try:
            yield stage
            _commit(stage)
        except OSError as e:
            if not _is_write_error(e, stage):
                raise
            raise _write_error(e, stage) from None
        except RuntimeError as e:  # torch.save reports a full disk as RuntimeError
            if "write" in str(e).lower() and _disk_full(stage.dir):
                raise _write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), stage) from None
            raise
        finally:
            if stage.dir.exists() and not _keep_staging(stage):
                shutil.rmtree(stage.dir, ignore_errors=True)
    finally:
        lock.release()


def _disk_full(directory: Path) -> bool:
    try:
        return shutil.disk_usage(directory if directory.exists() else directory.parent).free < (1 << 20)
    except OSError:
        return False


def _keep_staging(stage: Stage) -> bool:
    """Keep a failed run's staging folder when it holds work a resume can use."""
    return _keep_staging_dir(stage.dir) or bool(stage.state.get("done"))


def _is_write_error(e: OSError, stage: Stage) -> bool:
    """A full disk, a quota or a permission problem while writing the output (not reading the input)."""
    if e.errno not in _WRITE_ERRNOS:
        return False
    name = getattr(e, "filename", None)
    if name is None:
        return True
    name = os.path.abspath(str(name))
    return any(name == str(p) or name.startswith(str(p) + os.sep) for p in (stage.dir, stage.path))


def _write_error(e: OSError, stage: Stage) -> OutputError:
    what = _WHAT[stage.kind]
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    kept = (f"the checkpoint is kept in '{stage.dir}' ({RESUME} continues from it)" if _keep_staging(stage)
            else "the partial output was removed")
    before = "the previous output is intact" if stage.previous.state == "ours" else "nothing was written there"
    reason = e.strerror or str(e)
    return OutputError(f"could not write the {what} '{stage.path}': {reason}{where}; {before}, {kept}")


def _open_stage(path: Path, kind: Kind, previous: Existing, resume: bool, reserve_bytes: int) -> Stage:
    staging = staging_path(path)
    state = _staging_state(staging) if staging.is_dir() else None
    progress = state is not None and (_keep_staging_dir(staging) or bool(state.get("state", {}).get("done")))
    if staging.exists():
        if state is None and not _only_probe(staging):
            raise OutputError(f"'{staging}' is in the way of the output and is not clinsynth's; move it away")
        if progress and not resume:
            raise OutputError(f"an interrupted run left its checkpoint in '{staging}': add {RESUME} to continue it, "
                              "or remove that folder to start afresh")
        if progress and state.get("kind") != kind:
            raise OutputError(f"{RESUME}: the interrupted run in '{staging}' was writing a {_WHAT[state['kind']]}, "
                              f"not a {_WHAT[kind]}")
        if not progress:
            shutil.rmtree(staging)
    try:
        staging.mkdir(exist_ok=True)
        probe = staging / _PROBE
        probe.write_bytes(b"ok")
        probe.unlink()
        if not progress:
            _write_marker(staging, kind, status="partial", files=[], extra={"state": {}})
    except OSError as e:
        if not progress:
            shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{OUT} '{path}': cannot write in '{path.parent}' ({e.strerror}); "
                          "choose a folder you can write") from None
    free = shutil.disk_usage(staging).free
    if reserve_bytes and free < reserve_bytes:
        if not progress:
            shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{OUT} '{path}': about {_mb(reserve_bytes)} is needed for the {_WHAT[kind]} but only "
                          f"{_mb(free)} is free on that disk; free some space or choose another {OUT}")
    return Stage(path, kind, staging, previous, resumed=progress, state=dict(state.get("state", {})) if progress else {})


def _keep_staging_dir(staging: Path) -> bool:
    ckpt = staging / CHECKPOINT
    return ckpt.is_dir() and any(ckpt.iterdir())


def _only_probe(staging: Path) -> bool:
    """A staging folder killed between its creation and its marker: empty, or just the write probe."""
    return staging.is_dir() and set(os.listdir(staging)) <= {_PROBE}


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _commit(stage: Stage) -> None:
    """Seal the staging folder and move it into place (the protocol in the module docstring)."""
    shutil.rmtree(stage.checkpoint_dir, ignore_errors=True)
    files = stage.files()
    previous = stage.previous
    carried = _unlisted(stage.path, previous) if previous.state == "ours" else []
    clash = sorted(set(carried) & (set(files) | {MARKER}) | {c for c in carried if any(
        c.startswith(f + "/") or f.startswith(c + "/") for f in files)})
    if clash:
        raise OutputError(f"{OUT} '{stage.path}' holds file(s) of yours where the new {_WHAT[stage.kind]} writes: "
                          f"{', '.join(clash[:5])}; move them away and run again with {RESUME}")
    _write_marker(stage.dir, stage.kind, status="complete", files=files)
    if previous.state == "empty":
        try:
            stage.path.rmdir()
        except OSError:  # a mount point or a busy folder: fill it in place, the marker last
            _fill_in_place(stage.dir, stage.path)
            return
    elif previous.state == "ours":
        os.rename(stage.path, _old_path(stage.path))
    os.rename(stage.dir, stage.path)
    if previous.state == "ours":
        _finish_swap(stage.path)


def _unlisted(path: Path, previous: Existing) -> list[str]:
    """Files in a previous output that it did not list: the steward's own, to carry over."""
    listed = set(previous.files) | {MARKER}
    out = []
    for root, _, names in os.walk(path):
        rel = Path(root).relative_to(path)
        for n in names:
            name = str(rel / n) if rel.parts else n
            if name not in listed:
                out.append(name)
    return sorted(out)


def _fill_in_place(staging: Path, path: Path) -> None:
    entries = sorted(os.listdir(staging), key=lambda e: e == MARKER)
    for entry in entries:
        os.rename(staging / entry, path / entry)
    staging.rmdir()


def _finish_swap(path: Path) -> None:
    """After the old output was renamed away and the new one put in place: carry the steward's
    files over, delete what the old output listed, and remove the old folder."""
    old = _old_path(path)
    if not old.exists():
        return
    found = inspect_output(old)
    listed = set(found.files) | {MARKER} if found.state == "ours" else None
    for root, dirs, names in os.walk(old, topdown=False):
        rel = Path(root).relative_to(old)
        for n in names:
            name = str(rel / n) if rel.parts else n
            if listed is not None and name in listed:
                (old / name).unlink()
            elif not (path / name).exists():
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                os.rename(old / name, path / name)
        for d in dirs:
            try:
                (Path(root) / d).rmdir()
            except OSError:
                pass  # not empty: something we did not list stays
    try:
        old.rmdir()
    except OSError:
        pass


def _recover(path: Path) -> None:
    """Repair a commit that was killed between its renames (called under the lock)."""
    old = _old_path(path)
    if not old.exists():
        return
    if path.exists():
        _finish_swap(path)
        return
    staging = staging_path(path)
    state = _staging_state(staging) if staging.is_dir() else None
    if state is not None and state.get("status") == "complete":
        os.rename(staging, path)  # roll forward: the new output was complete
        _finish_swap(path)
    else:
        os.rename(old, path)  # roll back to the previous output


def output_size(paths: list[str | Path]) -> int:
    """Bytes the inputs take on disk: the base of an output's size estimate."""
    total = 0
    for p in paths:
        try:
            total += os.path.getsize(p)
        except OSError:
            continue
    return total


def check_file_target(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """A single output file (``sample --out``, ``evaluate --out``): refuse a folder, and an
    existing file unless ``overwrite`` (it may be the steward's)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{OUT} '{path}' is a folder; the {what} is one file: give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"'{path}' already exists; add {OVERWRITE} to replace it or choose another name")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"'{path}': '{path.parent}' is a file, not a folder")
    return path
