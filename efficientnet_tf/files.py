"""Small file helpers shared by the CLI modes: outputs appear whole or not at all."""
from __future__ import annotations

import json
import os

import tensorflow as tf


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write to a sibling temp file and rename it over `path` (local paths and gs://)."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())
