"""A learnable synthetic classification task, generated on the fly and deterministic per seed.

Example i of a split is a function of (seed, split, i) only: class i mod K, drawn as stripes in a
class-specific colour, orientation and frequency over a dark background, with random phase,
brightness and pixel noise. Colour survives any crop and stripe orientation survives flips, so a
tiny network learns it within a few hundred steps, yet no two images are identical.
"""
from __future__ import annotations

import math

import tensorflow as tf

# Added to the example index in the random key, so the splits never share an image.
SPLIT_OFFSETS = {"train": 0, "eval": 1 << 40}


def class_color(label, num_classes):
    """A hue per class spread over the colour circle, as RGB in [0, 255]."""
    hue = tf.cast(label, tf.float32) / float(num_classes)
    hsv = tf.stack([hue, tf.constant(0.8), tf.constant(0.95)])
    return tf.image.hsv_to_rgb(hsv) * 255.0


def make_image(index, *, num_classes: int, image_size: int, seed: int, offset):
    """(uint8 [S, S, 3] image, int32 label) for example `index` of the split whose
    `SPLIT_OFFSETS` entry is `offset`."""
    index = tf.cast(index, tf.int64)
    label = tf.cast(index % num_classes, tf.int32)
    key = tf.stack([tf.constant(seed, tf.int64), index + tf.cast(offset, tf.int64)])
    phase_seed, gain_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(key, num=3))
    phase = tf.random.stateless_uniform([], phase_seed, 0.0, 2.0 * math.pi)
    gain = tf.random.stateless_uniform([], gain_seed, 0.75, 1.15)
    coords = tf.range(image_size, dtype=tf.float32) / float(image_size)
    ys, xs = tf.meshgrid(coords, coords, indexing="ij")
    frequency = tf.cast(3 + (label // 2) % 3, tf.float32)
    along = tf.where(label % 2 == 0, ys, xs)
    stripes = 0.5 + 0.5 * tf.sin(2.0 * math.pi * frequency * along + phase)
    background = tf.constant([40.0, 40.0, 40.0])
    image = (stripes[..., None] * class_color(label, num_classes)
             + (1.0 - stripes[..., None]) * background) * gain
    image += tf.random.stateless_normal([image_size, image_size, 3], noise_seed, stddev=20.0)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8), label
