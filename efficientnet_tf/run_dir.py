"""A training run's directory: its files, which checkpoint to resume from, who may write there.

Layout: `config.json` (the `ExperimentConfig`), TF checkpoints `ckpt-N`, `eval_results.json`
(the latest eval), `best.weights.h5` + `best_eval_results.json` (the best EMA weights so far),
`train/` and `eval/` TensorBoard logs, and `train.lock` while a trainer writes there.

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

from efficientnet_tf.config import ConfigError
from efficientnet_tf.experiment import ExperimentConfig
from efficientnet_tf.files import read_json, write_json_atomic

CONFIG_FILE = "config.json"
EVAL_RESULTS_FILE = "eval_results.json"
BEST_WEIGHTS_FILE = "best.weights.h5"
BEST_RESULTS_FILE = "best_eval_results.json"
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
        raise ConfigError(f"No readable checkpoint in --model_dir={model_dir}: "
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
            return read_json(self.path)
        except json.JSONDecodeError:
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
            raise ConfigError(
                f"{self.path}: another training process (host {holder.get('host')}, pid "
                f"{holder.get('pid')}) is writing to this --model_dir. Wait for it to finish, "
                f"stop it, or use another --model_dir.")
        if holder is not None:
            logging.warning("Taking over %s from a process that is gone: %s", self.path, holder)
            tf.io.gfile.remove(self.path)
        try:
            self._write()
        except FileExistsError:
            raise ConfigError(f"{self.path}: another training process took this --model_dir "
                               "at the same moment.") from None
        return self

    def refresh(self):
        """Called at every checkpoint: a lock on another host goes stale when this stops."""
        write_json_atomic(self.path, {**self.owner, "refreshed": time.time()})

    def release(self):
        holder = self._holder()
        if holder is not None and {k: holder.get(k) for k in self.owner} == self.owner:
            tf.io.gfile.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def read_experiment(model_dir: str, *, required: bool = True) -> ExperimentConfig | None:
    """The run's config.json (None when absent and not `required`)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    saved = read_json(path)
    if saved is None:
        if not required:
            return None
        raise FileNotFoundError(f"{path} not found: the model directory must be a training "
                                "run's (--mode=train writes config.json there).")
    try:
        return ExperimentConfig.from_dict(saved)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def require_same_model(model_dir: str, experiment: ExperimentConfig, action: str) -> None:
    """Checkpoints of one network are never mixed with another's (`ModelConfig.architecture`)."""
    saved = read_experiment(model_dir, required=False)
    if saved is not None and saved.model.architecture() != experiment.model.architecture():
        raise ConfigError(
            f"{os.path.join(model_dir, CONFIG_FILE)} describes a different model than this "
            f"run's; checkpoints in {model_dir} cannot be {action} with it. Use a new model "
            "directory or the same model settings.")


def load_trained_model(model_dir: str, *, checkpoint_path: str | None = None,
                       classifier_activation="softmax", **build_kwargs):
    """A training run's model with its EMA weights (what eval and the paper report) in place.

    Builds in the current dtype policy from the run's config.json; `build_kwargs` go to
    `build_model` (e.g. input_shape). The latest checkpoint unless `checkpoint_path` is given.
    """
    from efficientnet_tf.model import build_model
    from efficientnet_tf.training.ema import ExponentialMovingAverage

    experiment = read_experiment(model_dir)
    model = build_model(config=experiment.model, classifier_activation=classifier_activation,
                        **build_kwargs)
    decay = experiment.recipe.moving_average_decay
    ema = ExponentialMovingAverage(model, decay) if decay > 0 else None
    objects = {"model": model, **({"ema": ema} if ema is not None else {})}
    path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if not path:
        raise FileNotFoundError(f"No checkpoint in {model_dir}.")
    tf.train.Checkpoint(**objects).restore(path).expect_partial().assert_existing_objects_matched()
    if ema is not None:
        ema.copy_to(model)
    return model
