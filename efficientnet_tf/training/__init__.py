"""The reference training recipe as small units: optimizer, LR schedules, EMA, loss terms.

The names import their modules on first use, so `import efficientnet_tf.training` loads no
TensorFlow.
"""
from efficientnet_tf import _lazy_exports

_EXPORTS = {
    "ema": ("ExponentialMovingAverage", "ema_decay", "ema_source_variables"),
    "optimizer": ("LARS", "MomentumTF", "RMSpropTF", "build_optimizer"),
    "regularization": ("classification_loss", "l2_loss", "l2_variables"),
    "schedules": ("ReferenceLearningRate", "build_learning_rate", "build_lr_schedule",
                  "scale_learning_rate"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
