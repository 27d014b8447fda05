"""TFLite flatbuffers of the BN-folded network: float32 RGB [1, S, S, 3] in [0, 255], float32 or
post-training quantized (dynamic range, or int8 calibrated on training images).
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from efficientnet_tf.config import ConfigError
from efficientnet_tf.export.folding import fold_model
from efficientnet_tf.export.saving import without_capture_rename_log
from efficientnet_tf.files import check_destination, write_bytes_atomic
from efficientnet_tf.model import model_image_size

QUANTIZE_MODES = (None, "dynamic", "int8")


def calibration_images(data_config, image_size: int, num_images: int = 200,
                       batch_size: int = 32):
    """Yield float32 [S, S, 3] training images for int8 calibration (e.g. from --data_dir).

    The training pipeline (shuffled crops and flips) with AutoAugment/RandAugment and
    mixup/cutmix off: calibration should see the real input distribution, not augmented
    extremes.
    """
    from efficientnet_tf.data import build_dataset

    config = data_config.replace(augment_name=None, mixup_alpha=0.0, cutmix_alpha=0.0)
    ds = build_dataset(config, "train", min(batch_size, num_images), image_size=image_size)
    count = 0
    for images, _ in ds:
        for image in images.numpy():
            if count >= num_images:
                return
            count += 1
            yield image


def _representative_dataset(representative_images, size: int, limit: int):
    """Yield [1, S, S, 3] float32 from an iterable of images [S, S, 3] or batches [B, S, S, 3]."""
    count = 0
    for item in representative_images:
        batch = np.asarray(item, np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"representative_images: got an array of shape {batch.shape}; "
                             f"expected [{size}, {size}, 3] or [batch, {size}, {size}, 3] RGB "
                             "in [0, 255] at the model resolution.")
        for image in batch:
            if count >= limit:
                return
            count += 1
            yield [image[None]]
    if count == 0:
        raise ValueError("representative_images is empty; int8 calibration needs images.")


def export_tflite(model: keras.Model, path: str, *, quantize: str | None = None,
                  representative_images=None, max_calibration_images: int = 200,
                  image_size: int | None = None, overwrite: bool = False) -> str:
    """Write a TFLite flatbuffer of the BN-folded network: float32 RGB [1, S, S, 3] in [0, 255]
    -> the model's output (probabilities for a softmax classifier, features for a backbone).
    Float32 output equals the Keras model's up to float32 rounding (tested: |Δp| <= 1e-5).

    quantize: None (float32), "dynamic" (int8 weights, float activations) or "int8" (integer
    weights and activations, calibrated on up to `max_calibration_images` of
    `representative_images`; input and output stay float32).
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize={quantize!r}: must be one of {QUANTIZE_MODES}.")
    if quantize == "int8" and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (e.g. a few hundred "
                         "preprocessed training images, from --data_dir).")
    if quantize != "int8" and representative_images is not None:
        raise ValueError(f"representative_images are only used with quantize='int8', not "
                         f"{quantize!r}.")
    if not os.fspath(path).endswith(".tflite"):
        raise ConfigError(f"path={path!r}: must end with '.tflite'.")
    check_destination(path, overwrite)
    size = model_image_size(model, image_size)
    folded = fold_model(model, image_size=size)
    fn = tf.function(folded.__call__, input_signature=[
        tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], folded)
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        converter.representative_dataset = lambda: _representative_dataset(
            representative_images, size, max_calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with without_capture_rename_log():  # the converter saves a SavedModel first
        flatbuffer = converter.convert()
    write_bytes_atomic(os.fspath(path), flatbuffer)  # the destination was checked above
    logging.info("Wrote %s (%s, %.1f MB).", path, quantize or "float32", len(flatbuffer) / 2**20)
    return os.fspath(path)
