"""Crash-safe file writes: a file that a reader finds under its final name is always complete.

:func:`write_atomic` writes the bytes to a temporary file in the destination's directory, flushes
and fsyncs it, renames it over the destination (``os.replace``, atomic within one file system) and
fsyncs the directory, so a process killed at any moment leaves either the old file or the new one,
never a mixture. What a kill can leave behind is the temporary file, named
``.<name>.<pid>.partial`` (hidden, and matching no ``*.pth`` / ``*.safetensors`` pattern);
:func:`remove_partial_files` deletes those of a directory.

A write that fails (a full disk, a quota, an I/O error) removes its temporary file and raises
:class:`AtomicWriteError`, an ``OSError`` with the same ``errno`` whose message names the file, the
free space of its file system and the size that was to be written; the destination is untouched.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Union

PathLike = Union[str, os.PathLike]

#: Ending of the temporary files :func:`write_atomic` writes before renaming them.
PARTIAL_SUFFIX = ".partial"


class AtomicWriteError(OSError):
    """A crash-safe write failed; nothing was written under the destination's name.

    Args:
        errno: The failed system call's error number (``errno.ENOSPC`` for a full disk).
        message: What failed, the file, the free space and the size to write.
    """

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


def partial_name(path: PathLike, pid: int) -> Path:
    """The temporary file :func:`write_atomic` uses for ``path`` in process ``pid``.

    Args:
        path: The destination file.
        pid: Process id of the writer.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{pid}{PARTIAL_SUFFIX}")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable. Some file systems cannot open or fsync a directory;
    the rename itself is atomic there regardless, so that failure is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_and_sync(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked) and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _drop_cached(fd: int) -> None:
    """Drop the (synced) pages of ``fd`` from the page cache. Advice only: where the system lacks
    it or refuses it, the pages stay cached and nothing else changes."""
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _describe_failure(path: Path, size: int, err: OSError) -> str:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return (f"cannot write {path}: {err.strerror or err} ({free} on the file system of "
            f"{path.parent}, {size / 2**20:.1f} MiB to write); nothing was written under that name "
            "and the file that was there, if any, is unchanged")


def write_atomic(path: PathLike, data: bytes, keep_cached: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``
    at every moment (see the module docstring). The file gets the permissions ``open`` would give
    (0o666 less the umask).

    Args:
        path: Destination file; its directory must exist.
        data: The complete content.
        keep_cached: ``False`` drops the written pages from the page cache once they are on disk,
            for writers that stream many files no one reads back soon: every page left cached
            costs the kernel CPU time to allocate and later reclaim, which a streaming writer
            takes from the computation beside it.

    Raises:
        AtomicWriteError: The write, fsync or rename failed (the temporary file is removed).
    """
    path = Path(path)
    temporary = partial_name(path, os.getpid())
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_and_sync(fd, data)
            if not keep_cached:
                _drop_cached(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as err:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise AtomicWriteError(err.errno or 0, _describe_failure(path, len(data), err)) from err
    _fsync_directory(path.parent)


def remove_partial_files(directory: PathLike) -> List[Path]:
    """Delete the temporary files that killed :func:`write_atomic` calls left in ``directory``
    (not recursive); returns them. Only call it when no other process writes there.

    Args:
        directory: A folder that :func:`write_atomic` wrote into.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = sorted(p for p in directory.iterdir()
                   if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX) and p.is_file())
    for p in stale:
        p.unlink()
    return stale
