"""Small file helpers shared by the CLI modes: outputs appear whole or not at all."""
from __future__ import annotations

import json
import os

import tensorflow as tf


def _replace_atomic(path: str, write) -> None:
    """`write(tmp)` a sibling temp file, then rename it over `path` (local paths and gs://)."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    def write(tmp):
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
    _replace_atomic(path, write)


def copy_atomic(src: str, path: str) -> None:
    """Copy the local or remote file `src` to `path`, which appears whole or not at all."""
    _replace_atomic(path, lambda tmp: tf.io.gfile.copy(src, tmp, overwrite=True))


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())
