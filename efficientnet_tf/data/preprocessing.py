"""Reference image preprocessing (docs/fidelity.md): Inception crop for training, padded center
crop for eval.

Reference-exact by default: the official EfficientNet code's crops, its TF1 resize kernels (no
half-pixel offset) and no clipping, quirks included. Inputs are either encoded image bytes (a
scalar string) or an already decoded uint8 [H, W, 3] image. JPEG bytes are decoded only inside the
crop window (`decode_and_crop_jpeg`, which is not always equal to decode + slice); other formats
(PNG, GIF, BMP; the reference raises on them) are decoded whole and then cropped. Outputs are
float32 [S, S, 3] on the 0..255 scale; the model normalizes. All randomness is stateless, driven
by an explicit `seed` [2]. Encoded images whose header claims more than `max_pixels` pixels
(default MAX_IMAGE_PIXELS, PIL's bomb threshold) are refused before decoding.
"""
from __future__ import annotations

import tensorflow as tf

from efficientnet_tf.config import MAX_IMAGE_PIXELS, RESIZE_METHODS
from efficientnet_tf.data.augment import ImageAugmenter
from efficientnet_tf.data.image_header import check_image_pixels

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


def sample_crop_window(shape, seed):
    """Inception-style random window [offset_h, offset_w, h, w]; the whole image when it fails."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([shape[0], shape[1], 3]), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE, max_attempts=MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def train_crop_window(shape, image_size: int, sampled):
    """(window, fallback): `sampled`, or the eval crop where the reference falls back to it.

    The reference falls back when at least 3 of the source's [height, width, channels] (a JPEG's
    header) equal the crop's [h, w, 3]; for a grayscale JPEG the channels never match, so it keeps
    and resizes the whole image instead. That quirk is reproduced.
    """
    crop_shape = tf.stack([sampled[2], sampled[3], 3])
    fallback = tf.reduce_sum(tf.cast(tf.equal(shape[:3], crop_shape), tf.int32)) >= 3
    window = tf.cond(fallback, lambda: center_crop_window(shape, image_size), lambda: sampled)
    return window, fallback


def random_crop_window(shape, image_size: int, seed):
    """The training crop window of `preprocess_for_train` for this `shape` and crop `seed`."""
    return train_crop_window(shape, image_size, sample_crop_window(shape, seed))[0]


def _decode_and_crop(image, window_fn, max_pixels: int = MAX_IMAGE_PIXELS):
    """(crop, extra) for `window_fn(shape) -> (window, extra)`, `shape` the source's [h, w, c].

    Encoded images larger than `max_pixels` (by their header) fail with InvalidArgument before
    anything is decoded.
    """
    def crop(decoded):
        window, extra = window_fn(tf.shape(decoded))
        return tf.slice(decoded, [window[0], window[1], 0], [window[2], window[3], 3]), extra

    if image.dtype != tf.string:
        return crop(image)
    with tf.control_dependencies([check_image_pixels(image, max_pixels)]):
        image = tf.identity(image)

    def jpeg():
        window, extra = window_fn(tf.image.extract_jpeg_shape(image))
        return tf.image.decode_and_crop_jpeg(image, window, channels=3), extra

    def other():
        return crop(tf.io.decode_image(image, channels=3, expand_animations=False))

    cropped, extra = tf.cond(tf.io.is_jpeg(image), jpeg, other)
    cropped.set_shape([None, None, 3])
    return cropped, extra


def decode_and_crop(image, window_fn, max_pixels: int = MAX_IMAGE_PIXELS):
    """Decode `image` (bytes or uint8 tensor) inside `window_fn(shape)` -> uint8 [h, w, 3]."""
    return _decode_and_crop(image, lambda shape: (window_fn(shape), tf.constant(False)),
                            max_pixels)[0]


def resize(image, image_size: int, method: str = "bicubic", half_pixel_centers: bool = False):
    """Resize to float32 [S, S, 3] with `method` "bicubic" or "bilinear".

    Default: the reference's TF1 kernels (align_corners=False, half_pixel_centers=False), unclipped
    like the reference, so bicubic overshoots [0, 255] by up to tens of units at sharp edges.
    half_pixel_centers: TF2 `tf.image.resize` (correctly centred sampling) clipped to [0, 255];
    up to ~100 units away from what the reference's checkpoints were trained and evaluated on.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method {method!r}: must be one of {', '.join(RESIZE_METHODS)}")
    if half_pixel_centers:
        resized = tf.image.resize(image, [image_size, image_size], method=method)
        return tf.clip_by_value(resized, 0.0, 255.0)
    op = tf.raw_ops.ResizeBicubic if method == "bicubic" else tf.raw_ops.ResizeBilinear
    return op(images=image[None], size=[image_size, image_size], align_corners=False,
              half_pixel_centers=False)[0]


def preprocess_for_eval(image, image_size: int, *, resize_method: str = "bicubic",
                        half_pixel_centers: bool = False, max_pixels: int = MAX_IMAGE_PIXELS):
    cropped = decode_and_crop(image, lambda shape: center_crop_window(shape, image_size),
                              max_pixels)
    return resize(cropped, image_size, resize_method, half_pixel_centers)


def preprocess_for_train(image, image_size: int, seed, *, resize_method: str = "bicubic",
                         half_pixel_centers: bool = False, augment=None,
                         max_pixels: int = MAX_IMAGE_PIXELS):
    """Random crop, resize, flip, then `augment(uint8 image, seed) -> uint8 image` if given.

    As the reference: the fallback center crop is always resized bicubic (even for bilinear), and
    the augmenter's input is clipped to [0, 255] and truncated to uint8.
    """
    crop_seed, flip_seed, augment_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3))
    cropped, fallback = _decode_and_crop(image, lambda shape: train_crop_window(
        shape, image_size, sample_crop_window(shape, crop_seed)), max_pixels)

    def resize_crop(method):
        return resize(cropped, image_size, method, half_pixel_centers)

    image = resize_crop(resize_method)
    if resize_method != "bicubic":
        image = tf.cond(fallback, lambda: resize_crop("bicubic"), lambda: image)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if augment is not None:
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
        image = tf.cast(augment(image, augment_seed), tf.float32)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def preprocess_image(image_bytes, is_training=False, image_size=224, resize_method=None,
                     augment_name=None, randaug_num_layers=None, randaug_magnitude=None, *,
                     seed=None):
    """The reference's `preprocessing.preprocess_image` (float32 only: cast for bfloat16), run by
    the same code as the input pipeline -> float32 [S, S, 3] on the 0..255 scale.

    resize_method: None (the reference default, bicubic), "bicubic" or "bilinear". augment_name:
    None, "autoaugment" or "randaugment". Training randomness is stateless: `seed` [2] makes it
    reproducible; None draws one (the reference was unseeded).
    """
    resize_method = resize_method or "bicubic"
    if not is_training:
        return preprocess_for_eval(image_bytes, image_size, resize_method=resize_method)
    if seed is None:
        seed = tf.random.uniform([2], minval=0, maxval=tf.int64.max, dtype=tf.int64)
    augment = (ImageAugmenter(augment_name, num_layers=randaug_num_layers or 2,
                              magnitude=randaug_magnitude or 10) if augment_name else None)
    return preprocess_for_train(image_bytes, image_size, seed, resize_method=resize_method,
                                augment=augment)
