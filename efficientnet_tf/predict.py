"""Predict mode: top-k classes of image files, from a Keras model or an exported SavedModel.

Labels: the given class names; else ImageNet (synset and name, from the shipped
`resources/imagenet_classes.tsv`) for a 1000-class model; else `class_<i>`.
"""
from __future__ import annotations

import functools
import importlib.resources
import os

import numpy as np
import tensorflow as tf
from absl import logging

from efficientnet_tf.config import MAX_IMAGE_PIXELS, ConfigError
from efficientnet_tf.data.image_header import image_dimensions, too_large
from efficientnet_tf.export.saved_model import ServingModule
from efficientnet_tf.export.saving import SERVING_SIGNATURE, read_export_info
from efficientnet_tf.model import (
    eval_resize_method,
    label_offset,
    model_image_size,
    outputs_logits,
)

IMAGENET_NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """((synset, name), ...) in class-index order: sorted synsets, as the standard ImageNet
    conversion."""
    text = importlib.resources.files("efficientnet_tf").joinpath(
        "resources", "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line]
    if len(rows) != IMAGENET_NUM_CLASSES or any(int(r[0]) != i for i, r in enumerate(rows)):
        raise RuntimeError("efficientnet_tf/resources/imagenet_classes.tsv is damaged: expected "
                           f"{IMAGENET_NUM_CLASSES} rows indexed 0..999.")
    return tuple((synset, name) for _, synset, name in rows)


def class_labels(num_classes: int, class_names=None, label_offset: int = 0) -> list[dict]:
    """One {"label": str[, "synset": str]} per class index (see the module docstring); the
    first `label_offset` indices are background classes (EdgeTPU's 1001-class head)."""
    if label_offset:
        return ([{"label": "background"}] * label_offset
                + class_labels(num_classes - label_offset, class_names))
    imagenet = imagenet_classes()
    synsets = [s for s, _ in imagenet]
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for a model with {num_classes} "
                              "classes.")
        if class_names != synsets:  # TFDS imagenet2012 names its classes by synset
            return [{"label": name} for name in class_names]
    if class_names is not None or num_classes == IMAGENET_NUM_CLASSES:
        return [{"label": name, "synset": synset} for synset, name in imagenet]
    return [{"label": f"class_{i}"} for i in range(num_classes)]


def class_names_for_run(model_dir: str):
    """Class names of a training run's dataset, or None when they cannot be known.

    ImageNet needs no data access (its class order is the sorted synsets); other datasets ask
    the data module, which reads the run's data_dir. When that is gone, the fallback (None:
    ImageNet names for 1000 classes, `class_<i>` otherwise) is logged as a warning.
    """
    from efficientnet_tf.data import get_dataset_info
    from efficientnet_tf.run_dir import read_experiment

    data = read_experiment(model_dir).data
    if data.dataset == "imagenet":
        return [s for s, _ in imagenet_classes()]
    try:
        return get_dataset_info(data).class_names
    except (FileNotFoundError, ValueError) as e:
        logging.warning("No class names for %s: its dataset is not readable (%s); labels fall "
                        "back to generic names.", model_dir, e)
        return None


def read_image_file(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> bytes:
    """The encoded bytes of an image file, checked to decode (errors name the file).

    The size its header claims is checked first: a decompression bomb is refused, not decoded.
    """
    path = str(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Image {path!r} does not exist.")
    if tf.io.gfile.isdir(path):
        raise ConfigError(f"Image {path!r} is a directory, not an image file.")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if not data:
        raise ConfigError(f"Image {path!r} is an empty file.")
    try:
        dimensions = image_dimensions(data)
        if too_large(dimensions, max_pixels):
            height, width = dimensions.numpy().tolist()
            raise ConfigError(f"Image {path!r}: its header claims {height} x {width} pixels, "
                              f"above the limit of {max_pixels} (or a size that cannot be read); "
                              "not decoded.")
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
        raise ConfigError(f"Image {path!r} cannot be decoded: {e.message.strip()}") from None
    return data


def _batches(items, batch_size):
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def _load_serving(saved_model_dir):
    if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{saved_model_dir!r} is not a SavedModel directory (no "
                                "saved_model.pb).")
    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures.get(SERVING_SIGNATURE)
    inputs = signature.structured_input_signature[1] if signature is not None else {}
    outputs = signature.structured_outputs if signature is not None else {}
    if set(inputs) != {"image_bytes"} or "probabilities" not in outputs:
        raise ConfigError(
            f"{saved_model_dir}: its {SERVING_SIGNATURE!r} signature takes "
            f"{sorted(inputs)} and returns {sorted(outputs)}; predict needs an image_bytes input "
            "and a probabilities output (a SavedModel from export_saved_model / --mode=export).")
    return loaded, signature


def predict_images(paths, *, model=None, saved_model_dir=None, image_size=None, top_k: int = 5,
                   class_names=None, resize_method: str | None = None,
                   half_pixel_centers: bool = False, batch_size: int = 32) -> dict:
    """{"predictions": [{"image": PATH, "top_k": [{"index", "label", "probability"[, "synset"]}]}]}.

    Exactly one of `model` (a Keras classifier from build_model; images get the eval
    preprocessing at `image_size`, default the model's input size) or `saved_model_dir` (a
    serving export, which preprocesses inside; its export_info.json supplies class names).
    """
    if (model is None) == (saved_model_dir is None):
        raise ValueError("Pass exactly one of model or saved_model_dir.")
    paths = [str(p) for p in ([paths] if isinstance(paths, str) else paths)]
    if not paths:
        raise ValueError("No images to predict.")
    if top_k < 1:
        raise ValueError(f"top_k={top_k}: must be >= 1.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1.")
    encoded = [read_image_file(p) for p in paths]
    offset = label_offset(model) if model is not None else 0
    if model is not None:
        # The export's own bytes -> eval preprocessing -> probabilities path, unsaved.
        serve = ServingModule(
            model, apply_softmax=outputs_logits(model), top_k=1,
            image_size=model_image_size(model, image_size),
            resize_method=eval_resize_method(model, resize_method),
            half_pixel_centers=half_pixel_centers).serve_bytes
    else:
        if image_size is not None or resize_method is not None or half_pixel_centers:
            raise ValueError("image_size, resize_method and half_pixel_centers are fixed inside "
                             "a SavedModel export; do not pass them with saved_model_dir.")
        _, serve = _load_serving(saved_model_dir)
        info = read_export_info(saved_model_dir) or {}
        if class_names is None:
            class_names = info.get("class_names")
        offset = info.get("label_offset", 0)
    probs = np.concatenate([serve(image_bytes=tf.constant(batch))["probabilities"].numpy()
                            for batch in _batches(encoded, batch_size)])
    labels = class_labels(probs.shape[-1], class_names, offset)
    k = min(top_k, probs.shape[-1])
    predictions = []
    for path, p in zip(paths, probs):
        order = np.argsort(-p, kind="stable")[:k]
        predictions.append({"image": path, "top_k": [
            {"index": int(i), **labels[i], "probability": float(p[i])} for i in order]})
    return {"predictions": predictions}


def format_predictions(result: dict) -> str:
    """Human-readable top-k lines per image."""
    lines = []
    for entry in result["predictions"]:
        lines.append(entry["image"])
        for rank, item in enumerate(entry["top_k"], 1):
            synset = f" {item['synset']}" if "synset" in item else ""
            lines.append(f"  {rank}. {item['probability']:.4f}  [{item['index']}]{synset} "
                         f"{item['label']}")
    return "\n".join(lines)
