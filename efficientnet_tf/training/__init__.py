"""The reference training recipe as small units: optimizer, LR schedules, EMA, loss terms."""
from efficientnet_tf.training.ema import ExponentialMovingAverage, ema_decay, ema_source_variables
from efficientnet_tf.training.optimizer import LARS, MomentumTF, RMSpropTF, build_optimizer
from efficientnet_tf.training.regularization import classification_loss, l2_loss, l2_variables
from efficientnet_tf.training.schedules import (ReferenceLearningRate, build_learning_rate,
                                                build_lr_schedule, scale_learning_rate)

__all__ = [
    "ExponentialMovingAverage", "ema_decay", "ema_source_variables", "LARS", "MomentumTF",
    "RMSpropTF", "build_optimizer", "classification_loss", "l2_loss", "l2_variables",
    "ReferenceLearningRate", "build_learning_rate", "build_lr_schedule", "scale_learning_rate",
]
