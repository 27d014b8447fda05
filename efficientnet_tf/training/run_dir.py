"""A training run's directory: which checkpoint to resume from, and who may write there.

Resuming must survive a damaged newest checkpoint (a partial copy from a bucket, a full disk):
every tensor of a checkpoint is read before it is trusted, newest first. Resuming from an older
one sets the unreadable newer ones aside (renamed, never deleted) with a warning naming each and
why. With checkpoints present and none readable, training stops and changes nothing, instead of
starting from scratch over them.

Two training processes writing one directory would interleave checkpoints; a lock file names
the holder (host, pid) and is refreshed at every checkpoint, so a crashed holder does not keep
the directory forever: its lock is taken over when its process is gone (same host) or when it
has not been refreshed for `STALE_AFTER_S` (another host).
"""
from __future__ import annotations

import json
import os
import socket
import time

import tensorflow as tf
from absl import logging

LOCK_FILE = "train.lock"
STALE_AFTER_S = 3600.0
UNREADABLE_SUFFIX = ".unreadable"


def unreadable_reason(path: str) -> str | None:
    """Why the checkpoint at prefix `path` cannot be restored, or None when every tensor reads."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return None


def _checkpoint_files(path: str) -> list[str]:
    return sorted(tf.io.gfile.glob(f"{path}.index") + tf.io.gfile.glob(f"{path}.data-*"))


def _set_aside(model_dir: str, path: str, newest_good: str) -> None:
    """Rename `path`'s files to *.unreadable (kept for inspection; the next save of that step
    would overwrite them) and drop it from the directory's checkpoint list."""
    for name in _checkpoint_files(path):
        tf.io.gfile.rename(name, name + UNREADABLE_SUFFIX, overwrite=True)
    state = tf.train.get_checkpoint_state(model_dir)
    kept = [p for p in state.all_model_checkpoint_paths if p != path]
    tf.compat.v1.train.update_checkpoint_state(model_dir, newest_good,
                                               all_model_checkpoint_paths=kept)


def newest_readable_checkpoint(model_dir: str, set_aside: bool = True) -> str | None:
    """The newest checkpoint of `model_dir` that reads in full; unreadable newer ones are
    named in a warning and, with `set_aside` (resuming training), renamed out of the way. None
    without checkpoints; an error when none of them reads."""
    state = tf.train.get_checkpoint_state(model_dir)
    paths = list(state.all_model_checkpoint_paths) if state is not None else []
    latest = tf.train.latest_checkpoint(model_dir)
    if latest and latest not in paths:
        paths.append(latest)
    paths = [p if os.path.isabs(p) or "://" in p else os.path.join(model_dir, p) for p in paths]
    paths = [p for p in paths if tf.io.gfile.exists(f"{p}.index")]
    failures = []
    for path in reversed(paths):
        reason = unreadable_reason(path)
        if reason is None:
            for bad, why in failures:
                logging.warning("Checkpoint %s is unreadable (%s); using %s instead%s.", bad, why,
                                path, f" (its files renamed to *{UNREADABLE_SUFFIX})"
                                if set_aside else "")
                if set_aside:
                    _set_aside(model_dir, bad, path)
            return path
        failures.append((path, reason))
    if failures:
        raise RuntimeError(f"No readable checkpoint in --model_dir={model_dir}: "
                           + "; ".join(f"{p} ({why})" for p, why in failures)
                           + ". Nothing was changed there: restore a good copy, or use a new "
                           "--model_dir to start from scratch.")
    return None


class RunLock:
    """`model_dir/train.lock` while a training process writes there (see module docstring)."""

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    def _holder(self) -> dict | None:
        try:
            with tf.io.gfile.GFile(self.path) as f:
                return json.load(f)
        except (tf.errors.NotFoundError, json.JSONDecodeError):
            return None

    def _alive(self, holder: dict) -> bool:
        if holder.get("host") == self.owner["host"]:
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return time.time() - float(holder.get("refreshed", 0)) < STALE_AFTER_S

    def _write(self):
        data = json.dumps({**self.owner, "refreshed": time.time()})
        if "://" in self.path:  # object stores have no exclusive create: best effort
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(data)
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(data)

    def acquire(self):
        holder = self._holder()
        if holder is not None and self._alive(holder):
            raise RuntimeError(
                f"{self.path}: another training process (host {holder.get('host')}, pid "
                f"{holder.get('pid')}) is writing to this --model_dir. Wait for it to finish, "
                f"stop it, or use another --model_dir.")
        if holder is not None:
            logging.warning("Taking over %s from a process that is gone: %s", self.path, holder)
            tf.io.gfile.remove(self.path)
        try:
            self._write()
        except FileExistsError:
            raise RuntimeError(f"{self.path}: another training process took this --model_dir "
                               "at the same moment.") from None
        return self

    def refresh(self):
        """Called at every checkpoint: a lock on another host goes stale when this stops."""
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(json.dumps({**self.owner, "refreshed": time.time()}))
        tf.io.gfile.rename(tmp, self.path, overwrite=True)

    def release(self):
        holder = self._holder()
        if holder is not None and {k: holder.get(k) for k in self.owner} == self.owner:
            tf.io.gfile.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
