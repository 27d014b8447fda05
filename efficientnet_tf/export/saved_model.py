"""The TF Serving SavedModel of a classifier, BN folded by default.

`serving_default` takes encoded images (`image_bytes`, string [batch]) and runs the eval
preprocessing inside; `serving_images` takes float32 RGB [batch, S, S, 3] in [0, 255], already
cropped and resized to the model resolution S. Both refuse oversized requests before decoding.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging

from efficientnet_tf.config import MAX_IMAGE_PIXELS, MAX_SERVING_BATCH_SIZE
from efficientnet_tf.data.image_header import image_dimensions, too_large
from efficientnet_tf.data.preprocessing import preprocess_for_eval
from efficientnet_tf.export.folding import fold_model
from efficientnet_tf.export.saving import SERVING_SIGNATURE, save, tf_variables
from efficientnet_tf.files import atomic_directory, check_destination
from efficientnet_tf.model import (
    classifier_layer,
    config_name,
    eval_resize_method,
    input_normalization,
    label_offset,
    model_image_size,
    outputs_logits,
)

IMAGES_SIGNATURE = "serving_images"
# What tf.io.decode_image reads and image_header can size (JPEG XL has no readable size there).
IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"


def check_image_bytes(image_bytes):
    """Assertions (InvalidArgument) naming the batch entries that are empty or not in one of
    the IMAGE_FORMATS.

    The decoders' own errors do not say which element of a batch failed.
    """
    padded = tf.strings.join([image_bytes, b"\0" * 12])  # substr fails past the end

    def starts_with(prefix, pos=0):
        return tf.equal(tf.strings.substr(padded, pos, len(prefix)), prefix)

    known = tf.reduce_any(tf.stack([
        starts_with(b"\xff\xd8\xff"), starts_with(b"\x89PNG"), starts_with(b"GIF"),
        starts_with(b"BM"), tf.logical_and(starts_with(b"RIFF"), starts_with(b"WEBP", 8))]),
        axis=0)
    empty = tf.equal(tf.strings.length(image_bytes), 0)
    return [
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(empty)), [
            "image_bytes: empty string(s) at batch indices", tf.where(empty)[:, 0],
            "; expected encoded JPEG or PNG bytes."], summarize=16),
        tf.debugging.Assert(tf.reduce_all(tf.logical_or(known, empty)), [
            f"image_bytes: not a {IMAGE_FORMATS} image at batch indices",
            tf.where(tf.logical_not(tf.logical_or(known, empty)))[:, 0]], summarize=16),
    ]


def check_image_sizes(image_bytes, max_pixels: int):
    """An assertion (InvalidArgument) naming the batch entries whose header claims more than
    `max_pixels` pixels (or no readable size), with those sizes: before anything is decoded."""
    dimensions = tf.map_fn(image_dimensions, image_bytes,
                           fn_output_signature=tf.TensorSpec([2], tf.int64))
    bad = tf.where(too_large(dimensions, max_pixels))[:, 0]
    return tf.debugging.Assert(tf.equal(tf.size(bad), 0), [
        f"image_bytes: image(s) above max_image_pixels={max_pixels} (or of unreadable size) at "
        "batch indices", bad, "; header height, width:", tf.gather(dimensions, bad)],
        summarize=16)


def check_batch_size(batch, max_batch_size: int):
    return tf.debugging.Assert(batch <= max_batch_size, [
        f"batch of more than max_batch_size={max_batch_size} images:", batch])


class ServingModule(tf.__internal__.tracking.AutoTrackable):
    """The object saved as the serving SavedModel; its tf.functions are the signatures.

    Requests above `max_batch_size` images, and encoded images above `max_image_pixels`, are
    refused with InvalidArgument before any decoding: one request must not be able to take the
    server's memory (a 1 MB PNG can decode to 1.2 GB).
    """

    def __init__(self, network, *, apply_softmax: bool, image_size: int, top_k: int,
                 resize_method: str, half_pixel_centers: bool,
                 max_image_pixels: int = MAX_IMAGE_PIXELS,
                 max_batch_size: int = MAX_SERVING_BATCH_SIZE):
        super().__init__()
        if isinstance(network, keras.Model):
            # Only the weights enter the object graph; saving Keras objects is slow and useless.
            self.variables = tf_variables(network.variables)
            self._run = lambda images: network(images, training=False)
        else:
            self.network = network
            self._run = network.__call__
        self._apply_softmax = apply_softmax
        self._image_size = image_size
        self._top_k = top_k
        self._resize = dict(resize_method=resize_method, half_pixel_centers=half_pixel_centers,
                            max_pixels=max_image_pixels)
        self._max_image_pixels = int(max_image_pixels)
        self._max_batch_size = int(max_batch_size)
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string)])

    def _serve_images(self, images):
        with tf.control_dependencies([check_batch_size(tf.shape(images)[0],
                                                       self._max_batch_size)]):
            images = tf.identity(images)
        out = tf.cast(self._run(images), tf.float32)
        probs = tf.nn.softmax(out) if self._apply_softmax else out
        top = tf.math.top_k(probs, k=self._top_k)
        return {"probabilities": probs,
                "classes": tf.argmax(probs, axis=-1, output_type=tf.int64),
                "top_k_classes": tf.cast(top.indices, tf.int64),
                "top_k_probabilities": top.values}

    def preprocess(self, image_bytes):
        with tf.control_dependencies([check_batch_size(tf.size(image_bytes),
                                                       self._max_batch_size)]):
            with tf.control_dependencies(check_image_bytes(image_bytes)):
                with tf.control_dependencies([check_image_sizes(image_bytes,
                                                                self._max_image_pixels)]):
                    image_bytes = tf.identity(image_bytes)
        size = self._image_size
        return tf.map_fn(
            lambda b: preprocess_for_eval(b, size, **self._resize),
            image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    def _serve_bytes(self, image_bytes):
        return self.serve_images(self.preprocess(image_bytes))


def export_saved_model(model: keras.Model, export_dir: str, *, image_size: int | None = None,
                       class_names=None, top_k: int = 5, fold_batch_norm: bool = True,
                       resize_method: str | None = None, half_pixel_centers: bool = False,
                       max_image_pixels: int = MAX_IMAGE_PIXELS,
                       max_batch_size: int = MAX_SERVING_BATCH_SIZE,
                       overwrite: bool = False) -> str:
    """Write the TF Serving SavedModel of a classifier from `build_model` (see module docstring).

    Signatures: `serving_default` (`image_bytes`) and `serving_images` (`images`), both with
    outputs `probabilities` float32 [batch, classes], `classes` int64 [batch], `top_k_classes`
    int64 [batch, k], `top_k_probabilities` float32 [batch, k]. `fold_batch_norm` serves the
    folded network (faster on CPU, same output within float32 rounding). `resize_method` (None:
    the model's reference kernel) and `half_pixel_centers` are the eval preprocessing's, as in
    `preprocess_for_eval`. Requests above `max_batch_size` images and images whose header claims
    more than `max_image_pixels` pixels are refused (InvalidArgument) before decoding.
    `class_names` go to export_info.json for `predict`.
    """
    check_destination(export_dir, overwrite)  # before the slow part
    size = model_image_size(model, image_size)
    num_classes = int(classifier_layer(model).units)
    apply_softmax = outputs_logits(model)
    if top_k < 1:
        raise ValueError(f"top_k={top_k}: must be >= 1.")
    if max_image_pixels < 1 or max_batch_size < 1:
        raise ValueError(f"max_image_pixels={max_image_pixels}, max_batch_size={max_batch_size}: "
                         "each must be >= 1.")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for a {num_classes}-class model.")
    resize_method = eval_resize_method(model, resize_method)
    network = fold_model(model, image_size=size) if fold_batch_norm else model
    module = ServingModule(network, apply_softmax=apply_softmax, image_size=size,
                           top_k=min(top_k, num_classes), resize_method=resize_method,
                           half_pixel_centers=half_pixel_centers,
                           max_image_pixels=max_image_pixels, max_batch_size=max_batch_size)
    info = {
        "format": "efficientnet_tf serving SavedModel",
        "model_name": config_name(model),
        "image_size": size,
        "num_classes": num_classes,
        "class_names": class_names,
        "top_k": min(top_k, num_classes),
        "batch_norm_folded": bool(fold_batch_norm),
        "resize_method": resize_method,
        "half_pixel_centers": bool(half_pixel_centers),
        "max_image_pixels": int(max_image_pixels),
        "max_batch_size": int(max_batch_size),
        "input_normalization": input_normalization(model),
        "label_offset": label_offset(model),
        "signatures": {
            SERVING_SIGNATURE: f"image_bytes: string [batch], encoded {IMAGE_FORMATS}; eval "
                               f"preprocessing (center crop, {resize_method} resize to {size}) "
                               "inside",
            IMAGES_SIGNATURE: f"images: float32 [batch, {size}, {size}, 3] RGB in [0, 255], "
                              "already cropped and resized",
        },
    }
    with atomic_directory(export_dir, overwrite) as tmp:
        # Inference only: no gradient functions (the hub export keeps them for fine-tuning).
        save(module, tmp, signatures={SERVING_SIGNATURE: module.serve_bytes,
                                      IMAGES_SIGNATURE: module.serve_images}, info=info,
             options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    logging.info("Exported %s (%d px, %d classes) to %s.", info["model_name"], size, num_classes,
                 export_dir)
    return os.fspath(export_dir)
