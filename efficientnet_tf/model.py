"""`build_model`: the compound-scaled EfficientNet, keras.applications style, and what a built
model answers about itself (input size, classifier, name, eval resize).

Input contract (every artifact built here): float RGB in [0, 255]; normalization happens inside.
"""
from __future__ import annotations

import keras

from efficientnet_tf.config import ConfigError, reference_resize_method
from efficientnet_tf.network import (
    build_feature_network,
    build_network,
    model_config,
    resolve_config,
)
from efficientnet_tf.weights import load_weights


def build_model(phi=None, *, model_name=None, config=None, include_top=True, weights=None,
                input_tensor=None, input_shape=None, pooling=None, classes=None,
                classifier_activation="softmax", name=None,
                **overrides) -> keras.Model:
    """Build EfficientNet. Arguments follow keras.applications.EfficientNetB*.

    phi: integer 0..7 gives B0..B7 from the paper's table; any other value uses compound scaling.
    model_name: 'efficientnet-b0' ... 'efficientnet-l2', 'efficientnet-lite0' ... 'lite4'.
    config: a `ModelConfig` (overrides apply on top).
    weights: None (random init) or the path of a converted `.weights.h5` file.
    pooling: with include_top=False, None (4D features), 'avg' or 'max'.
    classes: number of classes (defaults to the config's num_classes, 1000).
    overrides: any `ModelConfig` field (width_coefficient, dropout_rate, survival_prob, ...).
    """
    if classes is not None:
        overrides["num_classes"] = classes
    config = resolve_config(phi, model_name, config, **overrides)
    if weights == "imagenet":
        raise ConfigError(
            "weights='imagenet' needs a download, which this package never does. Convert a "
            "checkpoint once with `python main.py --mode=convert --model=NAME --ckpt_path=SRC "
            "--output=DST.weights.h5` and pass weights=DST.weights.h5.")
    model = build_network(config, include_top=include_top, input_tensor=input_tensor,
                          input_shape=input_shape, pooling=pooling,
                          classifier_activation=classifier_activation, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def build_feature_extractor(phi=None, *, model_name=None, config=None, input_shape=None,
                            input_tensor=None, weights=None, name=None, **overrides) -> keras.Model:
    """Backbone returning {'reduction_1'..'reduction_5'}: the last feature map at stride 2^k."""
    config = resolve_config(phi, model_name, config, **overrides)
    model = build_feature_network(config, input_tensor=input_tensor, input_shape=input_shape,
                                  name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def model_image_size(model: keras.Model, image_size: int | None = None) -> int:
    """The square input size S of `model`: its fixed input shape, or `image_size` (required when
    the shape is not fixed, and checked against it when it is)."""
    shape = tuple(model.input_shape)
    height, width = shape[1], shape[2]
    if image_size is None:
        if height is None or height != width:
            raise ValueError(f"{model.name}: input shape {shape} has no fixed square size; pass "
                             "image_size.")
        return int(height)
    if height is not None and (height, width) != (image_size, image_size):
        raise ValueError(f"image_size={image_size} does not match {model.name}'s input shape "
                         f"{shape}.")
    return int(image_size)


def classifier_layer(model: keras.Model) -> keras.layers.Dense:
    """The classifier (`predictions`) of a `build_model(include_top=True)` network."""
    layer = model.layers[-1]
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(f"{model.name} has no classifier (last layer {layer.name!r} is "
                         f"{type(layer).__name__}); build it with include_top=True.")
    return layer


def outputs_logits(model: keras.Model) -> bool:
    """True when the classifier outputs logits, False for softmax probabilities."""
    activation = classifier_layer(model).activation
    if activation is keras.activations.linear:
        return True
    if activation is keras.activations.softmax:
        return False
    raise ValueError(f"{model.name}: classifier activation {activation.__name__!r} is neither "
                     "softmax nor linear (logits); class probabilities are undefined.")


def config_name(model: keras.Model) -> str:
    """The network's name ('efficientnet-b0', ...) for a model built here, else its Keras name."""
    config = model_config(model)
    return config.name if config is not None else model.name


def input_normalization(model: keras.Model) -> dict | None:
    """{"mean", "stddev"} of the (x - mean) / stddev the network applies to its [0, 255] input;
    None when the model was not built here."""
    config = model_config(model)
    if config is None:
        return None
    mean, stddev = config.input_normalization()
    return {"mean": list(mean), "stddev": list(stddev)}


def label_offset(model: keras.Model) -> int:
    """The classifier index of dataset label 0: 1 behind a background class (EdgeTPU's 1001-class
    heads), else 0."""
    config = model_config(model)
    return config.label_offset if config is not None else 0


def eval_resize_method(model: keras.Model, resize_method: str | None = None) -> str:
    """`resize_method`, or when None the kernel the reference evaluates this model with."""
    return resize_method or reference_resize_method(config_name(model))
