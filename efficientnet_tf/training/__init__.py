"""The reference training recipe as small units: optimizer, LR schedules, EMA, loss terms."""
from efficientnet_tf.training.ema import ExponentialMovingAverage, ema_decay, ema_source_variables
from efficientnet_tf.training.optimizer import RMSpropTF, build_optimizer
from efficientnet_tf.training.regularization import classification_loss, l2_loss, l2_variables
from efficientnet_tf.training.schedules import (WarmupConstant, WarmupCosineDecay,
                                                WarmupExponentialDecay, build_lr_schedule,
                                                scale_learning_rate)

__all__ = [
    "ExponentialMovingAverage", "ema_decay", "ema_source_variables", "RMSpropTF",
    "build_optimizer", "classification_loss", "l2_loss", "l2_variables", "WarmupConstant",
    "WarmupCosineDecay", "WarmupExponentialDecay", "build_lr_schedule", "scale_learning_rate",
]
