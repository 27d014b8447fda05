"""Class activation maps (Zhou et al. 2016; paper Figure 7) for the EfficientNet classifiers.

The head is global average pooling then one dense layer, so a class logit is the spatial mean of
sum_c w[c, k] * F[y, x, c] plus a bias, with F the last feature map (`top_activation`). That sum,
before the mean, is the class's map: ReLU, upsample to the input size, normalize to [0, 1].
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from efficientnet_tf.config import ConfigError
from efficientnet_tf.data.preprocessing import preprocess_for_eval
from efficientnet_tf.files import write_bytes_atomic
from efficientnet_tf.model import (
    classifier_layer,
    eval_resize_method,
    model_image_size,
    outputs_logits,
)

FEATURE_LAYER = "top_activation"
OVERLAY_ALPHA = 0.5


def cam_model(model: keras.Model) -> keras.Model:
    """image -> (last feature map, classifier output) of a `build_model(include_top=True)` net."""
    try:
        features = model.get_layer(FEATURE_LAYER).output
    except ValueError:
        raise ValueError(f"{model.name} has no {FEATURE_LAYER!r} layer: class activation maps "
                         "need an EfficientNet classifier from build_model.") from None
    classifier_layer(model)
    return keras.Model(model.inputs, [features, model.outputs[0]], name=f"{model.name}-cam")


def class_activation_map(model: keras.Model, image, class_index: int | None = None):
    """(map float32 [H, W] in [0, 1], class index, class probability) for one image.

    image: float [H, W, 3] in [0, 255] at the model's input size (eval-preprocessed).
    class_index: the class to explain; default the top-1 class.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    if image.shape.rank != 3 or image.shape[-1] != 3:
        raise ValueError(f"class_activation_map: expected one [H, W, 3] image, got shape "
                         f"{image.shape}.")
    features, outputs = cam_model(model)(image[None], training=False)
    features = tf.cast(features[0], tf.float32)
    outputs = tf.cast(outputs[0], tf.float32)
    probs = tf.nn.softmax(outputs) if outputs_logits(model) else outputs
    num_classes = int(probs.shape[-1])
    if class_index is None:
        class_index = int(tf.argmax(probs))
    elif not 0 <= class_index < num_classes:
        raise ValueError(f"class_index={class_index}: the model has {num_classes} classes.")
    weights = tf.cast(classifier_layer(model).kernel[:, class_index], tf.float32)
    cam = tf.nn.relu(tf.tensordot(features, weights, axes=[[2], [0]]))
    cam = tf.image.resize(cam[..., None], tf.shape(image)[:2], method="bilinear")[..., 0]
    low, high = tf.reduce_min(cam), tf.reduce_max(cam)
    cam = tf.math.divide_no_nan(cam - low, high - low)
    return cam.numpy(), class_index, float(probs[class_index])


def jet(values) -> np.ndarray:
    """The 'jet' colormap (blue -> cyan -> yellow -> red) of values in [0, 1], as uint8 RGB."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0)
    return np.round(255.0 * rgb).astype(np.uint8)


def overlay(image, cam, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """uint8 [H, W, 3]: the map's heat colours blended over the image with weight `alpha`."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 255.0)
    cam = np.asarray(cam, np.float32)
    if image.shape[:2] != cam.shape:
        raise ValueError(f"overlay: image {image.shape[:2]} and map {cam.shape} differ in size.")
    blended = (1.0 - alpha) * image + alpha * jet(cam).astype(np.float32)
    return np.round(blended).astype(np.uint8)


def write_png(path: str, image) -> str:
    """Encode uint8 [H, W, 3] as PNG at `path` atomically (temp sibling, then rename)."""
    path = os.fspath(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"write_png: expected a uint8 [H, W, 1|3|4] image, got {image.dtype} "
                         f"{image.shape}.")
    write_bytes_atomic(path, tf.io.encode_png(image).numpy())
    return path


def cam_for_image_file(model: keras.Model, image_path: str, output_path: str, *,
                       class_index: int | None = None, resize_method: str | None = None,
                       half_pixel_centers: bool = False) -> dict:
    """CAM of an image file (eval preprocessing at the model's size), written as a PNG overlay.

    Returns {"image", "output", "class_index", "probability", "peak": [row, col]} where peak is
    the map's maximum in the preprocessed image's pixel coordinates.
    """
    from efficientnet_tf.predict import read_image_file

    if not str(output_path).lower().endswith(".png"):
        raise ConfigError(f"output={output_path}: the overlay is written as PNG; use a .png path.")
    size = model_image_size(model)
    image = preprocess_for_eval(tf.constant(read_image_file(image_path)), size,
                                resize_method=eval_resize_method(model, resize_method),
                                half_pixel_centers=half_pixel_centers)
    cam, index, probability = class_activation_map(model, image, class_index)
    write_png(output_path, overlay(image.numpy(), cam))
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return {"image": str(image_path), "output": str(output_path), "class_index": index,
            "probability": probability, "peak": [int(peak[0]), int(peak[1])]}
