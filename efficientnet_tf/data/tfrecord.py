"""The ImageNet TFRecord format (docs/datasets.md): shard names, example keys, writing and parsing.

`prepare` writes this format and the reader reads it, so both live here. A prepared directory also
holds `metadata.json` (class names and per-shard example counts), written last: its presence marks
a complete conversion, and the counts make split sizes exact without scanning the records.
"""
from __future__ import annotations

import json
import os
import re

import tensorflow as tf

from efficientnet_tf.config import ConfigError

TRAIN_PREFIX = "train"
EVAL_PREFIX = "validation"
METADATA_FILE = "metadata.json"
METADATA_FORMAT = "efficientnet_tf.imagenet_tfrecord.v1"
SHARD_RE = re.compile(r"^(?P<prefix>[a-z]+)-(?P<index>\d{5})-of-(?P<total>\d{5})$")


def shard_name(prefix: str, index: int, total: int) -> str:
    return f"{prefix}-{index:05d}-of-{total:05d}"


def list_shards(data_dir: str, prefix: str) -> list[str]:
    """All `PREFIX-NNNNN-of-MMMMM` files in data_dir, sorted; an incomplete set is an error."""
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} does not exist or is not a directory.")
    names = sorted(n for n in tf.io.gfile.listdir(data_dir)
                   if (m := SHARD_RE.match(n)) and m["prefix"] == prefix)
    if names:
        totals = {int(SHARD_RE.match(n)["total"]) for n in names}
        if len(totals) != 1 or len(names) != totals.pop():
            raise ConfigError(
                f"Incomplete shard set in {data_dir!r}: found {len(names)} files matching "
                f"'{prefix}-*-of-*' with inconsistent or missing shard numbers (first: {names[0]}, "
                f"last: {names[-1]}). Copy all shards or re-run --mode=prepare.")
    return [os.path.join(data_dir, n) for n in names]


def has_shards(data_dir: str, prefix: str = TRAIN_PREFIX) -> bool:
    return tf.io.gfile.isdir(data_dir) and any(
        (m := SHARD_RE.match(n)) and m["prefix"] == prefix for n in tf.io.gfile.listdir(data_dir))


def read_metadata(data_dir: str) -> dict | None:
    path = os.path.join(data_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        meta = json.load(f)
    if meta.get("format") != METADATA_FORMAT:
        raise ConfigError(f"{path}: not written by this project's prepare "
                          f"(format {meta.get('format')!r}, expected {METADATA_FORMAT!r}).")
    return meta


def count_records(files) -> int:
    """Exact record count of TFRecord files (reads them through; used only without metadata).

    A truncated or corrupt file is an error naming it (found by recounting file by file).
    """
    def count(paths):
        return int(tf.data.TFRecordDataset(paths, num_parallel_reads=8).reduce(
            tf.constant(0, tf.int64), lambda n, _: n + 1))
    try:
        return count(list(files))
    except tf.errors.DataLossError:
        for path in files:
            try:
                count([path])
            except tf.errors.DataLossError as e:
                raise ConfigError(f"Corrupt or truncated TFRecord file {path}: {e.message}. "
                                  "Re-copy or re-create it.") from None
        raise


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int64(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))


def make_example(encoded: bytes, *, label: int, height: int, width: int, filename: str,
                 synset: str, text: str, image_format: str = "JPEG") -> tf.train.Example:
    """One record with the keys of the standard ImageNet conversion; `label` is 1-based."""
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(encoded),
        "image/format": _bytes(image_format.encode()),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/channels": _int64(3),
        "image/colorspace": _bytes(b"RGB"),
        "image/filename": _bytes(filename.encode()),
        "image/class/label": _int64(label),
        "image/class/synset": _bytes(synset.encode()),
        "image/class/text": _bytes(text.encode()),
    }))


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


def parse_example(serialized):
    """(encoded image bytes, 0-based int32 label): the stored labels are 1-based."""
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    return parsed["image/encoded"], tf.cast(parsed["image/class/label"] - 1, tf.int32)
