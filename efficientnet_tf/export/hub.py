"""TF-Hub reusable SavedModels (`classification/`, `feature_vector/`) of a classifier: float32 RGB
[batch, S, S, 3] in [0, 1], the TF-Hub image convention (scaled by 255 inside), with the weights
trainable for fine-tuning.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging

from efficientnet_tf.export.saving import SERVING_SIGNATURE, save, tf_variables
from efficientnet_tf.files import atomic_directory
from efficientnet_tf.model import classifier_layer, config_name, model_image_size
from efficientnet_tf.training.regularization import l2_loss

HUB_VARIANTS = ("classification", "feature_vector")


class HubModule(tf.__internal__.tracking.AutoTrackable):
    """Reusable SavedModel API: `obj(images, training=False)`, `variables`,
    `trainable_variables`, `regularization_losses`; images float32 [batch, S, S, 3] in [0, 1].

    `training=True` runs BN on batch statistics (updating the moving averages), stochastic depth
    and, for `classification`, the dropout before the classifier; nothing is applied after the
    output. `call_training` is the same with training=True and a single argument, for
    `keras.layers.TFSMLayer(path, call_endpoint="__call__", call_training_endpoint=
    "call_training")`.
    """

    def __init__(self, model: keras.Model, variant: str, image_size: int, weight_decay: float):
        super().__init__()
        if variant not in HUB_VARIANTS:
            raise ValueError(f"variant={variant!r}: must be one of {HUB_VARIANTS}")
        dense = classifier_layer(model) if variant == "classification" else None
        backbone = keras.Model(model.inputs, model.get_layer("avg_pool").output,
                               name=f"{model.name}_features")
        dropout = next((layer for layer in model.layers
                        if isinstance(layer, keras.layers.Dropout)), None)

        # The Keras objects stay in this closure, out of the SavedModel's object graph (saving
        # them is slow and useless to a consumer); the variable lists keep the weights.
        def call(images, training=False):
            x = backbone(tf.cast(images, tf.float32) * 255.0, training=training)
            if dense is None:
                return x
            if dropout is not None:
                x = dropout(x, training=training)
            return tf.nn.bias_add(tf.matmul(x, dense.kernel), dense.bias)

        owner = model if dense is not None else backbone
        self.variables = tf_variables(owner.variables)
        self.trainable_variables = tf_variables(owner.trainable_variables)
        self.regularization_losses = [
            tf.function(lambda: l2_loss(owner, weight_decay), input_signature=[])]
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        self.__call__ = tf.function(call)
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training=training)
        # Both call the traced __call__ instead of tracing the Keras model again.
        self.call_training = tf.function(lambda images: self.__call__(images, training=True),
                                         input_signature=[spec])
        output_key = "logits" if dense is not None else "feature_vector"
        self.serve = tf.function(
            lambda images: {output_key: self.__call__(images, training=False)},
            input_signature=[spec])


def export_hub(model: keras.Model, export_dir: str, *, image_size: int | None = None,
               weight_decay: float = 1e-5, overwrite: bool = False) -> dict:
    """Write `export_dir/classification` (logits) and `export_dir/feature_vector` (pooled features).

    `model` is a `build_model(include_top=True)` classifier (its classifier activation does not
    matter: `classification` outputs logits). Input float32 [batch, S, S, 3] RGB in [0, 1].
    `regularization_losses[0]()` is the recipe's L2 term, weight_decay·Σw²/2 over the variant's
    weights except BN γ/β. Returns {variant: path}.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0.")
    classifier_layer(model)
    size = model_image_size(model, image_size)
    paths = {}
    with atomic_directory(export_dir, overwrite) as tmp:
        for variant in HUB_VARIANTS:
            module = HubModule(model, variant, size, weight_decay)
            info = {
                "format": f"efficientnet_tf TF-Hub reusable SavedModel ({variant})",
                "model_name": config_name(model),
                "image_size": size,
                "input": f"float32 [batch, {size}, {size}, 3] RGB in [0, 1] (TF-Hub image "
                         "convention; scaled by 255 inside)",
                "output": ("logits [batch, classes]" if variant == "classification"
                           else "pooled features [batch, channels], no dropout"),
                "weight_decay": weight_decay,
            }
            save(module, os.path.join(tmp, variant), signatures={SERVING_SIGNATURE: module.serve},
                 info=info)
            paths[variant] = os.path.join(os.fspath(export_dir), variant)
    logging.info("Exported TF-Hub SavedModels %s.", ", ".join(paths.values()))
    return paths
