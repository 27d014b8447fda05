"""EfficientNet (Tan & Le, 2019) for TensorFlow 2 / Keras 3: models, weights, data, training, export."""
from efficientnet_tf.config import (MODEL_NAMES, ModelConfig, config_for_phi, get_model_config,
                                    round_filters, round_repeats)
from efficientnet_tf.layers import ImageNormalization, MBConvBlock, SqueezeExcite, StochasticDepth
from efficientnet_tf.model import build_feature_extractor, build_model

__version__ = "0.1.0"

__all__ = [
    "MODEL_NAMES", "ModelConfig", "config_for_phi", "get_model_config", "round_filters",
    "round_repeats", "ImageNormalization", "MBConvBlock", "SqueezeExcite", "StochasticDepth",
    "build_feature_extractor", "build_model",
]
