"""Loss terms of the reference recipe: L2 weight decay and label-smoothed cross-entropy
(docs/fidelity.md)."""
from __future__ import annotations

import keras
from keras import ops


def _all_layers(model: keras.Layer):
    # Keras 3 has no public recursive walk; MBConv sub-layers (BN, SE convs) are nested.
    return model._flatten_layers(include_self=True, recursive=True)


def l2_variables(model: keras.Layer) -> list:
    """Trainable weights that the reference decays: all of them except BatchNorm gamma/beta.

    Selected by layer type, not by name, so conv, depthwise, SE kernels and biases and the dense
    kernel and bias are covered whatever they are called. Frozen (non-trainable) weights are
    skipped, as the reference only decays `tf.trainable_variables()`.
    """
    excluded = set()
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            excluded.update(id(v) for v in (layer.gamma, layer.beta) if v is not None)
    return [v for v in model.trainable_weights if id(v) not in excluded]


def l2_loss(model: keras.Layer, weight_decay: float):
    """weight_decay · Σ w²/2 over `l2_variables(model)`, in float32 (= Keras L2(weight_decay/2)).

    Under a multi-replica strategy the gradients are summed over replicas, so add
    `l2_loss(...) / strategy.num_replicas_in_sync` to each replica's loss.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0")
    variables = l2_variables(model)
    if weight_decay == 0 or not variables:
        return ops.zeros((), dtype="float32")
    total = ops.sum(ops.stack([ops.sum(ops.square(ops.cast(v, "float32"))) for v in variables]))
    return weight_decay * 0.5 * total


def classification_loss(labels, predictions, num_classes: int, label_smoothing: float = 0.0,
                        from_logits: bool = True):
    """Per-example softmax cross-entropy with label smoothing, shape [batch].

    labels: integer class ids ([batch] or [batch, 1]) or float targets [batch, num_classes]
    (one-hot or mixup-blended). Smoothing is y·(1−s) + s/num_classes, as the reference's
    `softmax_cross_entropy(label_smoothing=s)`. Average it over the GLOBAL batch
    (`tf.nn.compute_average_loss`) under a distribution strategy.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}: must be in [0, 1)")
    predictions = ops.cast(predictions, "float32")
    if predictions.shape[-1] not in (None, num_classes):
        raise ValueError(f"predictions have {predictions.shape[-1]} classes in their last "
                         f"dimension, expected num_classes={num_classes}")
    labels = ops.convert_to_tensor(labels)
    if "int" in keras.backend.standardize_dtype(labels.dtype):
        if len(labels.shape) == 2 and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
        if len(labels.shape) != 1:
            raise ValueError(f"integer labels must have shape [batch] or [batch, 1], got "
                             f"{tuple(labels.shape)}")
        targets = ops.one_hot(labels, num_classes, dtype="float32")
    else:
        if labels.shape[-1] not in (None, num_classes):
            raise ValueError(f"float labels must be [batch, num_classes={num_classes}] targets, "
                             f"got shape {tuple(labels.shape)}")
        targets = ops.cast(labels, "float32")
    return keras.losses.categorical_crossentropy(targets, predictions, from_logits=from_logits,
                                                 label_smoothing=label_smoothing)
