"""The EfficientNet graph as a Keras functional model that carries its `ModelConfig`.

Apart from `model` so that the imports run one way: `weights` builds twins of a source's layout
here, and `model.build_model(weights=...)` loads through `weights`.
Input contract: float RGB in [0, 255]; normalization happens inside.
"""
from __future__ import annotations

import keras

from efficientnet_tf import config as cfg
from efficientnet_tf.layers import (
    CONV_KERNEL_INITIALIZER,
    DENSE_KERNEL_INITIALIZER,
    ImageNormalization,
    MBConvBlock,
    ReplicaDropout,
    batch_norm,
    get_activation,
)


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class EfficientNetModel(keras.Model):
    """A functional model whose config round-trips through get_config/from_config, so a `.keras`
    file (`model.save`, `keras.models.load_model`) still knows which network it holds."""

    def __init__(self, *args, efficientnet_config: cfg.ModelConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self._efficientnet_config = efficientnet_config

    def get_config(self):
        return {**super().get_config(),
                "efficientnet_config": self._efficientnet_config.to_dict()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = {**config, "efficientnet_config": cfg.ModelConfig.from_dict(
            config["efficientnet_config"])}
        return super().from_config(config, custom_objects)


def model_config(model) -> cfg.ModelConfig | None:
    """The ModelConfig `model` was built from; None for any other Keras model."""
    return model._efficientnet_config if isinstance(model, EfficientNetModel) else None


def resolve_config(phi=None, model_name=None, config=None, **overrides) -> cfg.ModelConfig:
    """Exactly one of phi / model_name / config picks the network (default: B0)."""
    given = [x is not None for x in (phi, model_name, config)]
    if sum(given) > 1:
        raise ValueError("Pass only one of phi, model_name or config.")
    if config is not None:
        if "num_classes" in overrides and "label_offset" not in overrides:
            config = config.with_classes(overrides.pop("num_classes"))
        return config.replace(**overrides) if overrides else config
    if phi is not None:
        return cfg.config_for_phi(phi, **overrides)
    return cfg.get_model_config(model_name or "efficientnet-b0", **overrides)


def block_name(stage: int, index: int) -> str:
    """keras.applications naming: block1a, block1b, ... (two letters past 26 repeats)."""
    suffix = chr(97 + index) if index < 26 else chr(96 + index // 26) + chr(97 + index % 26)
    return f"block{stage + 1}{suffix}"


def _backbone(config: cfg.ModelConfig, inputs):
    """Stem, MBConv stages and head conv. Returns the head output and the reduction endpoints."""
    act = get_activation(config.activation)

    def bn(name):
        return batch_norm(name, config.bn_momentum, config.bn_epsilon, config.bn_group_size)

    x = ImageNormalization(*config.input_normalization(), name="normalization")(inputs)
    x = keras.layers.Conv2D(cfg.stem_filters(config), 3, strides=2, padding="same", use_bias=False,
                            kernel_initializer=CONV_KERNEL_INITIALIZER, name="stem_conv")(x)
    x = bn("stem_bn")(x)
    x = keras.layers.Activation(act, name="stem_activation")(x)

    stages = cfg.stage_table(config)
    total_blocks = sum(s.num_repeat for s in stages)
    drop_connect_rate = 1.0 - config.survival_prob
    endpoints = {}
    reduction = 1
    block_index = 0
    for stage_idx, stage in enumerate(stages):
        for j in range(stage.num_repeat):
            strides = stage.strides if j == 0 else 1
            if strides > 1:
                endpoints[f"reduction_{reduction}"] = x
                reduction += 1
            actual = int(x.shape[-1])
            # Expansion and SE widths follow the block string's input filters, as in the
            # reference; they differ from the actual input only where the stem does.
            declared = stage.input_filters if j == 0 else stage.output_filters
            expanded = int(declared * stage.expand_ratio)
            reduced = max(1, int(declared * stage.se_ratio))
            x = MBConvBlock(
                input_filters=actual, output_filters=stage.output_filters,
                kernel_size=stage.kernel_size, strides=strides, expand_ratio=stage.expand_ratio,
                se_ratio=stage.se_ratio, id_skip=stage.id_skip,
                drop_rate=drop_connect_rate * block_index / total_blocks,
                activation=config.activation, bn_momentum=config.bn_momentum,
                bn_epsilon=config.bn_epsilon, bn_group_size=config.bn_group_size,
                expanded_filters=(None if stage.expand_ratio == 1
                                  or expanded == int(actual * stage.expand_ratio) else expanded),
                se_filters=None if reduced == max(1, int(actual * stage.se_ratio)) else reduced,
                conv_type=stage.conv_type,
                num_experts=config.condconv_num_experts if stage.condconv else None,
                name=block_name(stage_idx, j))(x)
            block_index += 1
    endpoints[f"reduction_{reduction}"] = x

    x = keras.layers.Conv2D(cfg.head_filters(config), 1, padding="same", use_bias=False,
                            kernel_initializer=CONV_KERNEL_INITIALIZER, name="top_conv")(x)
    x = bn("top_bn")(x)
    x = keras.layers.Activation(act, name="top_activation")(x)
    return x, endpoints


def _inputs(config, input_tensor, input_shape):
    if input_shape is None:
        input_shape = (config.resolution, config.resolution, 3)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape={input_shape}: expected (height, width, 3) RGB.")
    if input_tensor is not None:
        if keras.backend.is_keras_tensor(input_tensor):
            return input_tensor
        return keras.Input(tensor=input_tensor, shape=input_shape)
    return keras.Input(shape=input_shape, name="image")


def _is_mixed_precision() -> bool:
    policy = keras.mixed_precision.global_policy()
    return policy.compute_dtype != policy.variable_dtype


def build_network(config: cfg.ModelConfig, *, include_top=True, input_tensor=None,
                  input_shape=None, pooling=None, classifier_activation="softmax",
                  name=None) -> EfficientNetModel:
    """The classifier (or, include_top=False, the backbone with optional pooling) of `config`,
    randomly initialized; `model.build_model` documents the arguments."""
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling={pooling!r}: expected None, 'avg' or 'max'.")
    inputs = _inputs(config, input_tensor, input_shape)
    x, _ = _backbone(config, inputs)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if config.dropout_rate > 0:
            x = ReplicaDropout(config.dropout_rate, name="top_dropout")(x)
        # Logits/probabilities stay float32 under mixed precision.
        x = keras.layers.Dense(
            config.num_classes, activation=classifier_activation,
            kernel_initializer=DENSE_KERNEL_INITIALIZER, bias_initializer="zeros",
            dtype="float32" if _is_mixed_precision() else None, name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return EfficientNetModel(inputs, x, name=name or config.name, efficientnet_config=config)


def build_feature_network(config: cfg.ModelConfig, *, input_tensor=None, input_shape=None,
                          name=None) -> EfficientNetModel:
    """Backbone returning {'reduction_1'..'reduction_5'}: the last feature map at stride 2^k."""
    inputs = _inputs(config, input_tensor, input_shape)
    _, endpoints = _backbone(config, inputs)
    return EfficientNetModel(inputs, endpoints, name=name or f"{config.name}-features",
                             efficientnet_config=config)
