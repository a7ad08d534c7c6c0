"""Work beside the model in a background thread: :class:`Prefetcher` produces items ahead of their
consumer (decoding the next batches), :class:`BackgroundConsumer` handles items behind their producer
(writing the finished outputs).

A thread suffices for both: Pillow's decoders and resizing, torch's operations and file writes and
fsyncs release the GIL, so the model's forward in the main thread keeps running beside them.

Invariants of both classes:

* **order**: items are produced / handled in order (one thread, one FIFO queue);
* **bounded memory**: at most ``depth`` items wait in the queue, plus the one being produced or handled;
* **errors surface**: the thread stops at its first exception (any ``BaseException``), which is
  re-raised in the calling thread at its next call, with the thread's traceback;
* **no hang**: every wait on the queue is a short timed wait that re-checks whether the other side
  has stopped or failed, so neither thread blocks for good on a partner that is gone;
* ``depth`` 0 runs everything in the calling thread (no thread), the synchronous reference.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import (Callable, Generic, Iterable, Iterator, NamedTuple, Optional, Tuple, Type,
                    TypeVar)

T = TypeVar("T")

#: Seconds between the checks of a waiting thread (a wait ends at once when the queue changes).
_POLL_SECONDS = 0.1
_END = object()  # marks the end of the items in a queue


#: The depth ``--prefetch auto`` gives the background threads where they have a core of their own.
AUTO_DEPTH = 2


class AutoDepth(NamedTuple):
    """The choice of ``--prefetch auto``.

    Args:
        depth: Queue depth of the background threads (0: none, everything in the main thread).
        why: The reason, for the summary line (``'no CPU to spare beside the model's 2 threads'``).
    """

    depth: int
    why: str


def auto_depth(device_type: str, model_threads: int, cpus: int) -> AutoDepth:
    """The queue depth ``--prefetch auto`` picks, and why: :data:`AUTO_DEPTH` where the background
    threads have a core of their own (the model runs on an accelerator, or the process may use more
    CPUs than the model's intra-op threads), else 0 (no threads). On a CPU whose every core runs one
    of the model's threads, the background threads take turns with them, and each turn holds up the
    model's parallel region on every core: the forward slows by more than the work overlapped.

    Args:
        device_type: The model's device type (``'cpu'``, ``'cuda'``...).
        model_threads: The model's intra-op threads on CPU (``torch.get_num_threads()``).
        cpus: CPUs this process may use (:func:`usable_cpus`).
    """
    threads = f"the model's {model_threads} thread{'s' if model_threads != 1 else ''}"
    if device_type != "cpu":
        return AutoDepth(AUTO_DEPTH, f"the model runs on {device_type}")
    if cpus > model_threads:
        return AutoDepth(AUTO_DEPTH, f"{cpus} CPUs for {threads}")
    return AutoDepth(0, f"no CPU to spare beside {threads}")


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"),
                proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may use: those it may run on (its affinity), capped by the CPU quota of
    its cgroup or an ancestor's (a container's ``--cpus``, a Kubernetes CPU limit), rounded up.
    A quota does not show in the affinity: a container limited to 2 CPUs of a 64-core host still
    sees 64.

    Args:
        cgroup_root: Where the cgroup hierarchies are mounted.
        proc_cgroup: The process's cgroup membership file.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cgroup_cpu_quota(cgroup_root: Path, proc_cgroup: Path) -> Optional[float]:
    """The smallest CPU quota, in CPUs, of the process's cgroup and its ancestors (cgroup v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), or ``None`` without one (or
    where the files cannot be read: no cgroups, another OS).

    Args:
        cgroup_root: Where the cgroup hierarchies are mounted (v2 at the root or under
            ``unified``, v1's cpu controller under ``cpu``).
        proc_cgroup: The process's cgroup membership file (``/proc/self/cgroup``).
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:  # v2
            mounts = [cgroup_root, cgroup_root / "unified"]
        elif "cpu" in controllers.split(","):  # v1: "cpu", or a co-mounted "cpu,cpuacct"
            mounts = [cgroup_root / "cpu", cgroup_root / controllers]
        else:
            continue
        for mount in dict.fromkeys(mounts):  # "cpu" alone names one mount twice: read it once
            folder = mount / path.lstrip("/")
            # up to the mount; a path outside it (``..`` from a cgroup namespace) ends at "/"
            for candidate in (folder, *folder.parents):
                quota = _folder_quota(candidate)
                if quota is not None:
                    quotas.append(quota)
                if candidate == mount:
                    break
    return min(quotas, default=None)


def _folder_quota(folder: Path) -> Optional[float]:
    """The CPU quota one cgroup folder sets, in CPUs (``None``: no quota, or no such files)."""
    try:
        fields = (folder / "cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
    except OSError:
        try:
            fields = [(folder / name).read_text().strip()  # v1: quota -1 means none
                      for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us")]
        except OSError:
            return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except (ValueError, IndexError):  # "max", or a file not in the expected form
        return None
    return quota / period if quota > 0 and period > 0 else None


def check_depth(depth: int, name: str = "prefetch") -> int:
    """``depth`` if it is an int >= 0, else a ``ValueError`` naming ``name``.

    Args:
        depth: Queue length: items waiting between the two threads (0: no thread).
        name: The argument's name for the message.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"{name} must be an int >= 0 (items prepared ahead in a background thread; "
                         f"0 works in the calling thread), got {depth!r}")
    return depth


class Prefetcher(Generic[T]):
    """Iterates ``items`` in a background thread, up to ``depth`` items ahead of the caller.

    Iterate it like ``items``; an exception the source raises comes out of ``next()`` in the
    caller's thread after the items produced before it. Use it as a context manager (or call
    :meth:`close`) so that a caller that stops early also stops the thread.

    Args:
        items: The source, iterated in the background thread only (with ``depth`` 0, in the caller's).
        depth: Most items produced ahead and not yet taken; 0: no thread.
        name: The thread's name (seen in debuggers and tracebacks).
    """

    def __init__(self, items: Iterable[T], depth: int, name: str = "prefetch") -> None:
        self._depth = check_depth(depth)
        self._items: Iterator[T] = iter(items)
        self._finished = False
        self._stop = threading.Event()
        self._queue: "queue.Queue[Tuple[object, Optional[BaseException]]]" = queue.Queue(maxsize=max(depth, 1))
        self._thread: Optional[threading.Thread] = None
        if depth:
            self._thread = threading.Thread(target=self._produce, name=name, daemon=True)
            self._thread.start()

    def _put(self, entry: Tuple[object, Optional[BaseException]]) -> bool:
        """Queue ``entry`` unless the caller has closed the prefetcher; whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        """The thread: every item, then the end mark with the source's exception, if any."""
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return  # closed by the caller: nobody takes the rest
        except BaseException as err:  # handed to the caller, who re-raises it
            self._put((_END, err))
            return
        self._put((_END, None))

    def __iter__(self) -> "Prefetcher[T]":
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            return next(self._items)
        while True:
            try:
                item, err = self._queue.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self._finished = True  # only a close() from another thread gets here
                    raise RuntimeError("the prefetch thread stopped without finishing its items") from None
        if item is _END:
            self._finished = True
            self._thread.join()
            if err is not None:
                raise err
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the thread (it finishes the item it is producing, which is dropped) and wait for it;
        further ``next()`` calls end the iteration."""
        self._finished = True
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # free a slot so that a thread waiting in put() sees the stop at once
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=_POLL_SECONDS)

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], err: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        self.close()


class BackgroundConsumer(Generic[T]):
    """Calls ``handle(item)`` for every submitted item, in a background thread, in submission order.

    :meth:`submit` returns once the item is queued (it waits while ``depth`` items are queued);
    :meth:`close` waits until every item is handled. The first exception ``handle`` raises stops
    the thread; the items queued after it are not handled, and the exception is re-raised by the
    next :meth:`submit` or by :meth:`close`. As a context manager it closes on every exit, so the
    items submitted before an exception in the caller are still handled; an exception of the thread
    raised then carries the caller's as its ``__context__``.

    Args:
        handle: Called with each item in the background thread (with ``depth`` 0, in the caller's).
        depth: Most submitted items waiting to be handled; 0: ``submit`` handles the item itself.
        name: The thread's name.
    """

    def __init__(self, handle: Callable[[T], None], depth: int, name: str = "consumer") -> None:
        self._handle = handle
        self._depth = check_depth(depth)
        self._error: Optional[BaseException] = None
        self._raised = False
        self._stop = threading.Event()
        self._queue: "queue.Queue[object]" = queue.Queue(maxsize=max(depth, 1))
        self._thread: Optional[threading.Thread] = None
        if depth:
            self._thread = threading.Thread(target=self._consume, name=name, daemon=True)
            self._thread.start()

    def _consume(self) -> None:
        """The thread: handle items until the end mark, a stop, or the first exception."""
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self._handle(item)  # type: ignore[arg-type]
            except BaseException as err:  # handed to the caller, who re-raises it
                self._error = err
                return

    def _raise_error(self) -> None:
        """Re-raise the thread's exception in the caller (once)."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def _put(self, entry: object) -> None:
        """Queue ``entry``, waiting for a slot; raises the thread's exception if it fails meanwhile."""
        assert self._thread is not None
        while True:
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("the background thread has stopped; nothing more can be queued")
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def submit(self, item: T) -> None:
        """Queue ``item`` for handling (with ``depth`` 0: handle it now).

        Args:
            item: Passed to ``handle``.
        """
        if self._thread is None:
            self._handle(item)
        else:
            self._put(item)

    def close(self) -> None:
        """Wait until every submitted item is handled; raises the thread's exception, if any."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._put(_END)
            while self._thread.is_alive():
                self._thread.join(timeout=_POLL_SECONDS)
        self._raise_error()

    def __enter__(self) -> "BackgroundConsumer[T]":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], err: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        self.close()
