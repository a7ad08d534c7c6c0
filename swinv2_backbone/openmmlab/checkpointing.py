"""Crash-safe training checkpoints: :class:`AtomicCheckpointHook`, mmengine's ``CheckpointHook``
with every file written atomically and in an order that keeps a resumable checkpoint at every moment.

mmengine 0.10.7's ``CheckpointHook`` is not crash-safe. It (1) deletes the checkpoint that falls out of
``max_keep_ckpts`` *before* saving the new one, so with ``max_keep_ckpts=1`` a kill during the save
leaves no complete checkpoint while ``last_checkpoint`` names the deleted file; (2) writes the
checkpoint straight into its final file (``LocalBackend.put``: ``open(path, 'wb')``), so a kill or a
full disk leaves a truncated ``iter_N.pth`` under a name a user takes as a checkpoint; (3) rewrites
``last_checkpoint`` in place (truncate, then write), so a kill can leave it empty.

This hook keeps the arguments and the file names and changes only how files are written: the
checkpoint goes through :class:`AtomicLocalBackend` (temporary file in the same directory, fsync,
rename: :func:`swinv2_backbone.checkpoint.write_atomic`); only after that rename is
``last_checkpoint`` replaced the same way; only then are checkpoints beyond ``max_keep_ckpts``
deleted (so for a moment ``max_keep_ckpts + 1`` are on disk). A full disk raises
:class:`~swinv2_backbone.checkpoint.AtomicWriteError` naming the file and the free space, with the
previous checkpoint and ``last_checkpoint`` untouched. Temporary files of killed saves are removed
when training starts again. ``tools/train.py`` (:func:`.launch.load_config`) gives every config this
hook in place of ``CheckpointHook``.
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Any, Dict, Optional, Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..checkpoint.atomic import remove_partial_files, write_atomic

#: Name of :class:`AtomicLocalBackend` in mmengine's file-backend registry.
ATOMIC_BACKEND = "swinv2_atomic_local"
#: The file in the work directory that names the newest complete checkpoint (mmengine's name).
POINTER = "last_checkpoint"


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are crash-safe
    (:func:`swinv2_backbone.checkpoint.write_atomic`); reading, listing and removing are
    ``LocalBackend``'s.

    Args:
        **kwargs: Ignored by ``LocalBackend`` too (mmengine passes the remaining ``backend_args``).
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write ``obj`` to ``filepath`` atomically, creating its directory.

        Args:
            obj: The complete content.
            filepath: Destination file.
        """
        Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = "utf-8") -> None:
        """Write the text ``obj`` to ``filepath`` atomically, creating its directory.

        Args:
            obj: The complete text.
            filepath: Destination file.
            encoding: Text encoding.
        """
        self.put(obj.encode(encoding), filepath)


def _local_backend_args(backend_args: Optional[Dict[str, Any]], file_client_args: Any,
                        out_dir: Any) -> Dict[str, Any]:
    """The ``backend_args`` that select :class:`AtomicLocalBackend`; raises for remote storage."""
    if file_client_args is not None:
        raise ValueError("AtomicCheckpointHook writes local files only: file_client_args is not "
                         "supported (use type='CheckpointHook' for other storage)")
    if backend_args and backend_args.get("backend", "local") not in ("local", ATOMIC_BACKEND):
        raise ValueError(f"AtomicCheckpointHook writes local files only, got backend_args "
                         f"{backend_args!r} (use type='CheckpointHook' for other storage)")
    if isinstance(out_dir, str) and "://" in out_dir:
        raise ValueError(f"AtomicCheckpointHook writes local files only, got out_dir {out_dir!r} "
                         "(use type='CheckpointHook' for other storage)")
    return {**(backend_args or {}), "backend": ATOMIC_BACKEND}


class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never leaves a half-written checkpoint or a ``last_checkpoint``
    naming one (see the module docstring for the order of the writes).

    Args:
        file_client_args: Must be ``None`` (mmengine's deprecated remote-storage argument).
        backend_args: ``None`` or local storage (``dict(backend='local')``); replaced by the
            crash-safe local backend.
        **kwargs: Every other ``CheckpointHook`` argument (``interval``, ``by_epoch``,
            ``max_keep_ckpts``, ``save_best``, ``out_dir`` (local), ``filename_tmpl``, ...), with
            its meaning.
    """

    def __init__(self, file_client_args: Any = None, backend_args: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        super().__init__(backend_args=_local_backend_args(backend_args, file_client_args,
                                                          kwargs.get("out_dir")), **kwargs)

    def before_train(self, runner: Any) -> None:
        """Set up as ``CheckpointHook`` does, then delete the temporary files of saves that a kill
        interrupted (only the main process writes checkpoints, so none is in progress).

        Args:
            runner: The runner.
        """
        super().before_train(runner)
        if not is_main_process():
            return
        for directory in sorted({self.out_dir, runner.work_dir}):
            for stale in remove_partial_files(directory):
                print_log(f"removed {stale}: the unfinished write of an interrupted run",
                          logger="current")

    def _save_checkpoint_with_step(self, runner: Any, step: int, meta: Dict[str, Any]) -> None:
        """Save checkpoint ``step``, then point ``last_checkpoint`` at it, then delete the
        checkpoint ``max_keep_ckpts`` pushes out (mmengine deletes first and saves second)."""
        expired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            # recorded before saving, so the checkpoint lists itself (as mmengine's does)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        runner.save_checkpoint(self.out_dir, filename, None, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        write_atomic(osp.join(runner.work_dir, POINTER), str(self.last_ckpt).encode("utf-8"))
        for old in expired:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # DeepSpeed saves a directory per checkpoint
                self.file_backend.rmtree(path)


def register() -> None:
    """Idempotently register :class:`AtomicLocalBackend` and :class:`AtomicCheckpointHook`."""
    register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)
    if HOOKS.get(AtomicCheckpointHook.__name__) is not AtomicCheckpointHook:
        HOOKS.register_module(name=AtomicCheckpointHook.__name__, module=AtomicCheckpointHook,
                              force=True)
