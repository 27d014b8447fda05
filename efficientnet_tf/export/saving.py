"""What every SavedModel written here shares: the default signature key, `export_info.json` beside
the graph (what `predict` and users read back), only tf.Variables in the object graph, and a save
without TensorFlow's kilobyte-long log line about renamed inputs."""
from __future__ import annotations

import contextlib
import logging
import os

import keras
import tensorflow as tf

from efficientnet_tf.files import read_json, write_json_atomic

EXPORT_INFO_FILE = os.path.join("assets.extra", "export_info.json")
SERVING_SIGNATURE = "serving_default"
# TensorFlow logs this (INFO) when it renames inputs of a saved function. The inputs of captured
# variables, named by number where a signature calls another tf.function, make it one line naming
# every variable (kilobytes), about names no consumer sees.
_CAPTURE_RENAME_LOG = "Function `%s` contains input name(s) %s with unsupported characters"


def tf_variables(variables) -> list:
    """The tf.Variables behind Keras variables. Saving Keras variable wrappers costs a traced
    save/restore function each; the SavedModel and its consumers only need the tf.Variables."""
    out = [v.value if isinstance(v, keras.Variable) else v for v in variables]
    if not all(isinstance(v, tf.Variable) for v in out):
        raise TypeError("Export needs the TensorFlow backend's variables.")
    return out


def save(module, directory: str, *, signatures: dict, info: dict, options=None) -> None:
    """`tf.saved_model.save` plus `info` as EXPORT_INFO_FILE."""
    with without_capture_rename_log():
        tf.saved_model.save(module, directory, signatures=signatures, options=options)
    write_json_atomic(os.path.join(directory, EXPORT_INFO_FILE), info)


def read_export_info(saved_model_dir: str) -> dict | None:
    """The `export_info.json` an export from this package wrote, or None for other SavedModels."""
    return read_json(os.path.join(saved_model_dir, EXPORT_INFO_FILE))


def _is_not_capture_rename(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_CAPTURE_RENAME_LOG)


@contextlib.contextmanager
def without_capture_rename_log():
    """Drop that one INFO record (TensorFlow logs through absl's logger); warnings and everything
    else pass."""
    logger = logging.getLogger("absl")
    logger.addFilter(_is_not_capture_rename)
    try:
        yield
    finally:
        logger.removeFilter(_is_not_capture_rename)
