"""Reference image preprocessing (SPEC 3): Inception crop for training, padded center crop for eval.

Inputs are either encoded image bytes (a scalar string) or an already decoded uint8 [H, W, 3]
image. JPEG bytes are decoded only inside the crop window (`decode_and_crop_jpeg`); other
formats (PNG, GIF, BMP) are decoded whole and then cropped. Outputs are float32 [S, S, 3] in
[0, 255]; the model normalizes. All randomness is stateless, driven by an explicit `seed` [2].
"""
from __future__ import annotations

import tensorflow as tf

CROP_FRACTION = 0.875
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
AREA_RANGE = (0.08, 1.0)
MAX_ATTEMPTS = 10


def eval_crop_padding(image_size: int) -> int:
    """pad = round(S * (1/0.875 - 1)): 224 -> 32, 240 -> 34, 260 -> 37, ..., 600 -> 86."""
    return int(round(image_size * (1.0 / CROP_FRACTION - 1.0)))


def center_crop_window(shape, image_size: int):
    """[offset_h, offset_w, size, size] of the eval crop, a fraction S/(S+pad) of the short side."""
    height, width = shape[0], shape[1]
    fraction = image_size / (image_size + eval_crop_padding(image_size))
    size = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    size = tf.maximum(size, 1)
    return tf.stack([(height - size + 1) // 2, (width - size + 1) // 2, size, size])


def random_crop_window(shape, image_size: int, seed):
    """Inception-style random window; when sampling fails (whole image back), the eval crop."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([shape[0], shape[1], 3]), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE, max_attempts=MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
    failed = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
    return tf.cond(failed, lambda: center_crop_window(shape, image_size), lambda: sampled)


def _crop(image, window_fn):
    window = window_fn(tf.shape(image))
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])


def decode_and_crop(image, window_fn):
    """Decode `image` (bytes or uint8 tensor) inside `window_fn(shape)` -> uint8 [h, w, 3]."""
    if image.dtype != tf.string:
        return _crop(image, window_fn)

    def jpeg():
        window = window_fn(tf.image.extract_jpeg_shape(image))
        return tf.image.decode_and_crop_jpeg(image, window, channels=3)

    def other():
        return _crop(tf.io.decode_image(image, channels=3, expand_animations=False), window_fn)

    cropped = tf.cond(tf.io.is_jpeg(image), jpeg, other)
    cropped.set_shape([None, None, 3])
    return cropped


def resize(image, image_size: int, reference_bicubic: bool = False):
    """Bicubic resize to [S, S, 3] float32.

    Default: TF2 bicubic (half-pixel centers), clipped to [0, 255]. reference_bicubic: the TF1
    kernel the reference used (no half-pixel centers), unclipped exactly as the reference, so
    values may overshoot [0, 255] by a few units at sharp edges.
    """
    if reference_bicubic:
        return tf.raw_ops.ResizeBicubic(images=image[None], size=[image_size, image_size],
                                        align_corners=False, half_pixel_centers=False)[0]
    resized = tf.image.resize(image, [image_size, image_size], method="bicubic")
    return tf.clip_by_value(resized, 0.0, 255.0)


def preprocess_for_eval(image, image_size: int, *, reference_bicubic: bool = False):
    cropped = decode_and_crop(image, lambda shape: center_crop_window(shape, image_size))
    return resize(cropped, image_size, reference_bicubic)


def preprocess_for_train(image, image_size: int, seed, *, reference_bicubic: bool = False,
                         augment=None):
    """Random crop, resize, flip, then `augment(uint8 image, seed) -> uint8 image` if given."""
    crop_seed, flip_seed, augment_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3))
    cropped = decode_and_crop(image, lambda shape: random_crop_window(shape, image_size, crop_seed))
    image = resize(cropped, image_size, reference_bicubic)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if augment is not None:
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
        image = tf.cast(augment(image, augment_seed), tf.float32)
    return tf.ensure_shape(image, [image_size, image_size, 3])
