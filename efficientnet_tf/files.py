"""File helpers shared by the modes: outputs appear whole or not at all; JSON is read if present.

Local paths and gs:// alike (tf.io.gfile). TensorFlow is imported on first use, so that importing
this module stays cheap.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _replace_atomic(path: str, write) -> None:
    """`write(tmp)` a sibling temp file, then rename it over `path`."""
    gfile = _gfile()
    gfile.makedirs(os.path.dirname(path) or ".")
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        write(tmp)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if gfile.exists(tmp):
            gfile.remove(tmp)
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    def write(tmp):
        with _gfile().GFile(tmp, "wb") as f:
            f.write(data)
    _replace_atomic(path, write)


def copy_atomic(src: str, path: str) -> None:
    """Copy the local or remote file `src` to `path`, which appears whole or not at all."""
    _replace_atomic(path, lambda tmp: _gfile().copy(src, tmp, overwrite=True))


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(path: str, default=None):
    """The JSON in `path`, or `default` when there is no such file."""
    gfile = _gfile()
    if not gfile.exists(path):
        return default
    with gfile.GFile(path) as f:
        return json.load(f)


def check_destination(path, overwrite: bool) -> str:
    """`path` without trailing slashes. Checked before slow work: an existing `path` is refused
    (FileExistsError) unless `overwrite`."""
    path = os.fspath(path).rstrip("/")
    if not path:
        raise ValueError("The output path is empty.")
    if _gfile().exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another path or pass "
                              "overwrite=True (--overwrite) to replace it.")
    return path


@contextlib.contextmanager
def atomic_directory(path, overwrite: bool = False):
    """Yield a sibling temporary path to write a directory at; on success it is renamed to `path`
    (replacing an existing one whole, which `check_destination` refuses unless `overwrite`), on
    failure it is deleted and `path` is left as it was. The renames are atomic on local
    filesystems only."""
    gfile = _gfile()
    path = check_destination(path, overwrite)
    parent, base = os.path.split(path)
    if parent:
        gfile.makedirs(parent)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(parent, f".{base}.tmp-{tag}")
    try:
        yield tmp
        old = None
        if gfile.exists(path):
            old = os.path.join(parent, f".{base}.old-{tag}")
            gfile.rename(path, old)
        gfile.rename(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    gfile = _gfile()
    if gfile.isdir(path):
        gfile.rmtree(path)
    elif gfile.exists(path):
        gfile.remove(path)
