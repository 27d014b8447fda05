"""Small datasets in the real on-disk formats, for tests and benchmarks (no network).

Images are smooth colour gradients with stripes and noise (so JPEG sizes and decode costs look
like photographs, not like noise or flat fields).
"""
from __future__ import annotations

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from efficientnet_tf.data import tfrecord


def natural_image(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [height, width, 3]: photo-like statistics, deterministic per seed."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        np.sin(xs / rng.uniform(8, 40) + rng.uniform(0, 6)) * 70 + 128,
        np.cos(ys / rng.uniform(8, 40) + rng.uniform(0, 6)) * 70 + 128,
        ((xs + ys) % rng.uniform(30, 90)) * 2.0 + 40,
    ]
    image = np.stack(channels, -1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, image_format: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=image_format,
                                **({"quality": quality} if image_format == "JPEG" else {}))
    return buf.getvalue()


def write_image_tfrecords(data_dir: str, prefix: str, images, labels, num_shards: int) -> list[str]:
    """ImageNet-format shards `PREFIX-i-of-n` from encoded images and 0-based labels."""
    os.makedirs(data_dir, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = os.path.join(data_dir, tfrecord.shard_name(prefix, shard, num_shards))
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard, len(images), num_shards):
                decoded = tf.io.decode_image(images[i], channels=3)
                writer.write(tfrecord.make_example(
                    images[i], label=int(labels[i]) + 1, height=int(decoded.shape[0]),
                    width=int(decoded.shape[1]), filename=f"{prefix}_{i}.jpg",
                    synset=f"n{int(labels[i]):08d}",
                    text=f"class {int(labels[i])}").SerializeToString())
        paths.append(path)
    return paths


def write_tfds_metadata(data_dir: str, builder_name: str, split_sizes: dict) -> str:
    """Write a TFDS builder's dataset_info.json with the given split sizes, as a prepared dataset
    has; use with `tfds.testing.mock_data(..., data_dir=data_dir)` (the examples are mocked)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(builder_name, data_dir=data_dir)
    template = tfds.core.naming.ShardedFileTemplate(
        data_dir=builder.data_dir, dataset_name=builder.name, filetype_suffix="tfrecord")
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0,
                            filename_template=template.replace(split=name))
        for name, n in split_sizes.items()]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
    return builder.data_dir
