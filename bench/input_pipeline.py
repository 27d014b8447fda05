"""Train-preprocessing throughput (images/s) from JPEG TFRecords, against naive baselines.

Run by hand: `python bench/input_pipeline.py [--num_images 300 --measure 1200 --image_size 224]`.
Writes photo-like ~400x350 JPEGs into ImageNet-format TFRecords in a temporary directory, then
times, in one run:
  naive           decode the whole JPEG, then crop; one map, no parallelism (the textbook loop)
  naive_parallel  the same decode-then-crop, with parallel map + prefetch (isolates the decode)
  pipeline        build_dataset(..., "train"): crop-window decode, parallel map, prefetch
  naive+RA        naive, then RandAugment (2 layers, magnitude 10), still one sequential map
  pipeline+RA     build_dataset with RandAugment
  naive+AA        naive, then AutoAugment policy v0
  pipeline+AA     build_dataset with AutoAugment
Each pipeline variant is compared with the naive variant doing the same augmentation.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from efficientnet_tf.data import DataConfig, build_dataset  # noqa: E402
from efficientnet_tf.data import preprocessing as pp  # noqa: E402
from efficientnet_tf.data.augment import ImageAugmenter  # noqa: E402
from efficientnet_tf.data.testing import encode, natural_image, write_image_tfrecords  # noqa: E402
from efficientnet_tf.data.tfrecord import list_shards, parse_example  # noqa: E402


def write_data(root: str, num_images: int) -> None:
    rng = np.random.default_rng(0)
    images = [encode(natural_image(int(rng.integers(300, 400)),
                                   int(rng.integers(350, 450)), seed=i),
                     quality=90) for i in range(num_images)]
    labels = rng.integers(0, 1000, num_images)
    write_image_tfrecords(root, "train", images, labels, num_shards=8)
    write_image_tfrecords(root, "validation", images[:8], labels[:8], num_shards=1)
    size = sum(len(b) for b in images) / num_images / 1024
    print(f"wrote {num_images} JPEGs (mean {size:.0f} KiB) to {root}")


def naive_dataset(root: str, image_size: int, batch_size: int, parallel: bool,
                  augment: str | None = None) -> tf.data.Dataset:
    """Decode the whole image, then take the same Inception crop from the decoded pixels."""
    augmenter = ImageAugmenter(augment) if augment else None

    def process(record):
        encoded, label = parse_example(record)
        image = tf.io.decode_jpeg(encoded, channels=3)
        seed = tf.random.uniform([2], maxval=1 << 30, dtype=tf.int32)
        window = pp.random_crop_window(tf.shape(image), image_size, seed)
        image = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])
        image = tf.image.resize(image, [image_size, image_size], method="bicubic")
        image = tf.image.random_flip_left_right(image)
        if augmenter is not None:
            image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
            image = tf.cast(augmenter(image, tf.cast(seed, tf.int64)), tf.float32)
        return image, label

    calls = tf.data.AUTOTUNE if parallel else None
    ds = tf.data.TFRecordDataset(list_shards(root, "train")).repeat()
    ds = ds.map(process, num_parallel_calls=calls, deterministic=not parallel)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE) if parallel else ds


def measure(ds: tf.data.Dataset, batch_size: int, num_images: int) -> tuple[float, float]:
    """(images per wall-clock second, process CPU milliseconds per image).

    CPU time per image is the fair comparison on a shared or small machine: a parallel pipeline
    turns it into wall-clock throughput only as far as free cores allow.
    """
    it = iter(ds)
    for _ in range(3):  # warm-up: function instantiation, autotuning, page cache
        next(it)
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    while seen < num_images:
        next(it)
        seen += batch_size
    return seen / (time.perf_counter() - wall), (time.process_time() - cpu) * 1000 / seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=300)
    parser.add_argument("--measure", type=int, default=1200, help="images timed per variant")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    print(f"TF {tf.__version__}, {os.cpu_count()} CPUs, image size {args.image_size}")
    with tempfile.TemporaryDirectory() as root:
        write_data(root, args.num_images)
        base = DataConfig(dataset="imagenet", data_dir=root)
        variants = {
            "naive": naive_dataset(root, args.image_size, args.batch_size, parallel=False),
            "naive_parallel": naive_dataset(root, args.image_size, args.batch_size, parallel=True),
            "pipeline": build_dataset(base, "train", args.batch_size, image_size=args.image_size),
        }
        for short, augment in (("RA", "randaugment"), ("AA", "autoaugment")):
            variants[f"naive+{short}"] = naive_dataset(root, args.image_size, args.batch_size,
                                                       parallel=False, augment=augment)
            variants[f"pipeline+{short}"] = build_dataset(
                base.replace(augment_name=augment), "train", args.batch_size,
                image_size=args.image_size)
        print(f"{'variant':15s} {'images/s':>9s} {'vs naive':>9s} {'CPU ms/img':>11s}")
        results = {}
        for name, ds in variants.items():
            results[name] = measure(ds, args.batch_size, args.measure)
            rate, cpu_ms = results[name]
            _, plus, augment = name.partition("+")
            baseline = "naive" + plus + augment  # the naive variant with the same augmentation
            print(f"{name:15s} {rate:9.1f} {rate / results[baseline][0]:8.2f}x {cpu_ms:11.2f}")


if __name__ == "__main__":
    main()
