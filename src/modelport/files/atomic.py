"""Outputs appear whole or not at all.

Everything is written into a hidden temporary sibling of the destination, fsynced, then renamed
into place; on any failure (including KeyboardInterrupt) the temporary is removed. A sibling, not
/tmp, so the final rename never crosses a filesystem.
"""
from __future__ import annotations

import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..core.errors import ModelConversionError, UsageError

TEMP_MARKER = ".modelport-tmp-"


def temp_name(name: str) -> str:
    """The hidden name a temporary for `name` gets: it carries this process's pid, so a later run can
    tell a dead process's leftovers from a live one's work."""
    return f".{name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(3)}"


def temp_sibling(dst: Path) -> Path:
    return dst.parent / temp_name(dst.name)


def is_temp_name(name: str) -> bool:
    return TEMP_MARKER in name


def temp_owner(name: str) -> int | None:
    """The pid of the process that made a temporary sibling (its name carries it)."""
    _, marker, rest = name.partition(TEMP_MARKER)
    pid = rest.split("-", 1)[0]
    return int(pid) if marker and pid.isdigit() else None


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(folder: Path, name: str = "") -> list[str]:
    """Temporaries in `folder` (of `name` only, if given) whose maker is gone: what a killed run left.
    A temporary of a live process (another conversion into the same folder) is left alone."""
    if not folder.is_dir():
        return []
    prefix = f".{name}{TEMP_MARKER}" if name else ""
    dead = [p for p in folder.iterdir() if is_temp_name(p.name) and p.name.startswith(prefix)
            and not process_alive(temp_owner(p.name))]
    for path in dead:
        remove_path(path)
    return [p.name for p in dead]


def fsync_tree(path: Path) -> None:
    """fsync every file under `path` and every directory, so the rename publishes durable data."""
    if path.is_file():
        _fsync(path)
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            _fsync(Path(root) / name)
        fsync_dir(Path(root))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def check_destination(dst: Path, overwrite: bool) -> None:
    """Fail early (exit 2) on a destination we must not or cannot write, before any work."""
    if dst.exists() and not overwrite:
        raise UsageError("already exists (pass --overwrite to replace it)", dst)
    for parent in dst.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"cannot create destination: {parent} is not a directory", dst)
            if not os.access(parent, os.W_OK):
                raise UsageError(f"cannot create destination: {parent} is not writable", dst)
            break


def check_apart(sources: list[Path], dst: Path) -> None:
    """Refuse a destination inside a source or a source inside the destination, whatever the flags:
    writing there (or replacing it with --overwrite) would modify the source."""
    target = dst.expanduser().resolve()
    for source in sources:
        src = source.expanduser().resolve()
        if target == src or src in target.parents:
            raise UsageError(f"is inside the source {source}; a source is never modified, write elsewhere", dst)
        if target in src.parents:
            raise UsageError(f"holds the source {source}; a source is never modified, write elsewhere", dst)


def _prepared(dst: Path, overwrite: bool) -> Path:
    """The absolute destination, checked, with its parent folder created and what killed runs left
    beside it removed (their temporaries carry their dead pid)."""
    dst = dst.absolute()
    check_destination(dst, overwrite)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create destination folder: {exc.strerror}", dst.parent) from exc
    remove_dead_temporaries(dst.parent, dst.name)
    return dst


@contextmanager
def atomic_output(dst: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path for the writer; publish it at `dst` only if the block succeeds."""
    dst = _prepared(dst, overwrite)
    tmp = temp_sibling(dst)
    try:
        yield tmp
        if not tmp.exists():
            raise ModelConversionError("writer produced no output", dst)
        fsync_tree(tmp)
        _publish(tmp, dst)
    except OSError as exc:
        remove_path(tmp)
        raise ModelConversionError(f"write failed: {exc.strerror or exc}", dst) from exc
    except BaseException:
        remove_path(tmp)
        raise


def _publish(tmp: Path, dst: Path) -> None:
    """Rename into place; an existing destination is moved aside first and removed after."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = temp_sibling(dst)
        os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        raise
    fsync_dir(dst.parent)
    if old is not None:
        remove_path(old)


@contextmanager
def atomic_files(dst: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; every file the block writes there is published beside `dst`.

    For outputs of several files (split GGUF shards named after `dst`): each file appears whole,
    the first shard (the one loaders open) last, and a failure publishes none of them.
    """
    dst = _prepared(dst, overwrite)
    tmp = temp_sibling(dst)
    tmp.mkdir()
    try:
        yield tmp
        names = sorted(p.name for p in tmp.iterdir())
        if not names:
            raise ModelConversionError("writer produced no output", dst)
        clashes = [n for n in names if (dst.parent / n).exists()]
        if clashes and not overwrite:
            raise UsageError(f"would replace {', '.join(clashes)} (pass --overwrite)", dst.parent)
        fsync_tree(tmp)
        for name in names[1:] + names[:1]:
            os.replace(tmp / name, dst.parent / name)
        fsync_dir(dst.parent)
    except OSError as exc:
        raise ModelConversionError(f"write failed: {exc.strerror or exc}", dst) from exc
    finally:
        remove_path(tmp)
