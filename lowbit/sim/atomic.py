"""Atomic outputs: a reader, a later run or a crash sees the old file (or nothing), never a partial one.

Rule: every output file or directory is written under a temp name in the same directory, flushed, then
renamed into place (`os.replace`, atomic on POSIX). A full disk, a kill (even SIGKILL) or an exception leaves
the previous output as it was.

Temp entries are named ``.<name>.<random>.lowbit-tmp`` and carry an exclusive `flock` for as long as their
writer lives; the kernel drops the lock when the writer dies, however it dies. `clean_stale` (run by every
writer before it writes into a directory) removes the temp entries whose lock is free: leftovers of killed
runs go away on the next start, while a concurrent run's entries are left alone.

`locked(path)` is the exclusive lock that lets two concurrent runs share a cache entry: the second waits for
the first and reuses its result instead of racing it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lowbit.sim.errors import OutputError

TMP_SUFFIX = ".lowbit-tmp"
# A temp entry is considered for cleaning only once it is this old: it covers the short window between
# creating a temp entry and locking it (a directory that vanishes in that window is created again).
STALE_AFTER_S = 1.0


def output_error(path: str | Path, e: OSError) -> OutputError:
    """One-line OutputError for a failed write of `path` (disk full, permission, read-only...)."""
    what = e.strerror or str(e)
    what = what[:1].lower() + what[1:]  # "cannot write X: no space left on device"
    hint = {errno.ENOSPC: "free some space and rerun", errno.EDQUOT: "free some quota and rerun",
            errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
            errno.EROFS: "write somewhere else", errno.EFBIG: "the file is larger than allowed here"}.get(
        e.errno or 0, "")
    return OutputError(f"cannot write {path}: {what}" + (f"; {hint}" if hint else "")
                       + "; nothing was written (a previous file, if any, is unchanged)")


def _lock_nb(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def clean_stale(directory: str | Path, prefix: str = ".") -> int:
    """Remove temp entries (``<prefix>*.lowbit-tmp``) in `directory` whose writer is gone; returns how many.

    An entry is stale when nobody holds its lock and it is older than STALE_AFTER_S. Errors are ignored:
    cleaning is best effort and never stops a run."""
    d = Path(directory)
    n = 0
    try:
        entries = [e for e in os.scandir(d) if e.name.startswith(prefix) and e.name.endswith(TMP_SUFFIX)]
    except OSError:
        return 0
    now = time.time()
    for e in entries:
        try:
            if now - e.stat(follow_symlinks=False).st_mtime < STALE_AFTER_S:
                continue
            fd = os.open(e.path, os.O_RDONLY | (os.O_DIRECTORY if e.is_dir(follow_symlinks=False) else 0))
        except OSError:
            continue
        try:
            if not _lock_nb(fd):
                continue  # a live writer holds it
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            n += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return n


def _mkdir(parent: Path, path: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None


def atomic_write_via(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` on a locked temp file next to `path`, flush it, then rename it into place.

    The file gets the ordinary umask-derived mode (mkstemp creates 0600). Any failure removes the temp file;
    an OSError (ENOSPC, EACCES, EROFS, ...) becomes a one-line OutputError."""
    path = Path(path)
    _mkdir(path.parent, path)
    clean_stale(path.parent, f".{path.name}.")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        raise output_error(path, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write(tmp)
        os.fsync(fd)  # same inode as the file `write` produced (unless it replaced it; then best effort)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        raise output_error(path, e) from None
    finally:
        if os.path.lexists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
        os.close(fd)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text (UTF-8) or bytes to `path` atomically."""
    raw = data if isinstance(data, bytes) else data.encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(raw)

    atomic_write_via(path, write)


@contextmanager
def temp_dir(parent: str | Path, name: str) -> Iterator[Path]:
    """A locked temp directory ``<parent>/.<name>.<random>.lowbit-tmp``, removed on exit unless it was
    renamed away; stale ones of earlier runs are cleaned first."""
    parent = Path(parent)
    _mkdir(parent, parent / name)
    clean_stale(parent, f".{name}.")
    for _ in range(10):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=parent))
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # cleaned away by a concurrent run before we could lock it
        except OSError as e:
            raise output_error(parent / name, e) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            break
        os.close(fd)
    else:  # pragma: no cover
        raise OutputError(f"cannot create a temp directory in {parent}: it keeps disappearing")
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


@contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a whole output directory in a temp directory (yielded) and rename it to `out` at the end.

    With `overwrite`, an existing `out` is replaced (it is moved aside first and removed after the rename,
    so a failure in between leaves it in place under its temp name for `clean_stale`)."""
    out = Path(out)
    with temp_dir(out.parent, out.name) as tmp:
        yield tmp
        old = None
        try:
            if out.exists() and overwrite:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", suffix=TMP_SUFFIX, dir=out.parent))
                os.replace(out, old / "d")
            os.replace(tmp, out)
        except OSError as e:
            if old is not None and not out.exists() and (old / "d").exists():
                os.replace(old / "d", out)
            raise output_error(out, e) from None
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)


@contextmanager
def locked(lock_path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created if missing) for the duration of the block."""
    p = Path(lock_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
