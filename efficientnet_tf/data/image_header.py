"""Image dimensions read from the encoded header, so that oversized images are refused before
decoding: a 1 MB PNG can claim 20000 x 20000 pixels and decode to 1.2 GB (a decompression bomb).

Graph ops only (no Python callbacks), so the check runs in tf.data, in TPU input workers and in
exported serving signatures alike. Formats: JPEG, PNG, GIF, BMP and WebP (lossy, lossless and
extended). Anything else has no readable size and counts as too large: the guard is meant for
untrusted input, and an unreadable size is not a safe one.
"""
from __future__ import annotations

import tensorflow as tf

from efficientnet_tf.config import MAX_IMAGE_PIXELS

_PAD = b"\0" * 32  # reads past the end of a short string see zeros instead of failing


def _starts_with(padded, prefix: bytes, pos: int = 0):
    return tf.equal(tf.strings.substr(padded, pos, len(prefix)), prefix)


def _uint(padded, pos: int, size: int, little_endian: bool):
    """The unsigned integer of `size` bytes at `pos`, as int64."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, pos, size), tf.uint8), tf.int64)
    shifts = [8 * i for i in (range(size) if little_endian else reversed(range(size)))]
    return tf.reduce_sum(tf.bitwise.left_shift(raw, tf.constant(shifts, tf.int64)))


def _bmp_height(padded):
    height = _uint(padded, 22, 4, True)
    return tf.where(height >= 2 ** 31, 2 ** 32 - height, height)  # negative = top-down rows


def _webp_size(padded):
    lossy = (_uint(padded, 26, 2, True) & 0x3FFF, _uint(padded, 28, 2, True) & 0x3FFF)
    bits = _uint(padded, 21, 4, True)
    lossless = ((bits & 0x3FFF) + 1, (tf.bitwise.right_shift(bits, 14) & 0x3FFF) + 1)
    extended = (_uint(padded, 24, 3, True) + 1, _uint(padded, 27, 3, True) + 1)
    chunk = tf.strings.substr(padded, 12, 4)
    width = tf.where(tf.equal(chunk, b"VP8L"), lossless[0],
                     tf.where(tf.equal(chunk, b"VP8X"), extended[0], lossy[0]))
    height = tf.where(tf.equal(chunk, b"VP8L"), lossless[1],
                      tf.where(tf.equal(chunk, b"VP8X"), extended[1], lossy[1]))
    known = tf.reduce_any(tf.equal(chunk, [b"VP8 ", b"VP8L", b"VP8X"]))
    return tf.where(known, height, -1), tf.where(known, width, -1)


def image_dimensions(image_bytes):
    """(height, width) int64 of one encoded image from its header; (-1, -1) when unreadable.

    A JPEG's header is parsed by `tf.image.extract_jpeg_shape`, which raises InvalidArgument
    on a malformed one (the decoder would too).
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    padded = tf.strings.join([image_bytes, _PAD])
    unknown = tf.constant([-1, -1], tf.int64)

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)

    def other():
        png = tf.stack([_uint(padded, 20, 4, False), _uint(padded, 16, 4, False)])
        gif = tf.stack([_uint(padded, 8, 2, True), _uint(padded, 6, 2, True)])
        bmp = tf.stack([_bmp_height(padded), _uint(padded, 18, 4, True)])
        webp = tf.stack(_webp_size(padded))
        is_webp = tf.logical_and(_starts_with(padded, b"RIFF"), _starts_with(padded, b"WEBP", 8))
        return tf.where(_starts_with(padded, b"\x89PNG\r\n\x1a\n"), png,
                        tf.where(_starts_with(padded, b"GIF8"), gif,
                                 tf.where(_starts_with(padded, b"BM"), bmp,
                                          tf.where(is_webp, webp, unknown))))

    return tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)


def too_large(dimensions, max_pixels: int):
    """True where (height, width) exceeds `max_pixels` or could not be read."""
    dimensions = tf.convert_to_tensor(dimensions, tf.int64)
    height, width = dimensions[..., 0], dimensions[..., 1]
    return tf.logical_or(tf.reduce_any(dimensions < 0, axis=-1),
                         height * width > max_pixels)


def check_image_pixels(image_bytes, max_pixels: int = MAX_IMAGE_PIXELS):
    """An assertion (InvalidArgument) that one encoded image has at most `max_pixels` pixels,
    with the size its header claims (the input pipeline's error names the record)."""
    dimensions = image_dimensions(image_bytes)
    return tf.debugging.Assert(tf.logical_not(too_large(dimensions, max_pixels)), [
        f"Image too large or of unreadable size (limit {max_pixels} pixels): header height, "
        "width", dimensions], summarize=4)
