"""Learning-rate schedules of the reference recipe (docs/fidelity.md), computed as the reference
does.

`build_learning_rate` restates the reference's `utils.build_learning_rate` with the same float32
TF ops, so it reproduces the reference's learning rates (golden-tested). Its quirks are kept:
every decay counts from step 0, not from the end of warmup, so when warmup ends the exponential
schedule is already at peak · 0.97^floor(warmup/decay_steps); `poly` decays towards a hard-coded
0.1; cosine rises again past `total_steps`. `continuous_warmup=True` on `ReferenceLearningRate`
keeps this project's earlier preference instead: the decay starts at the end of warmup.

Bit-exactness: the reference ran as a TF1 graph, whose optimizer (Grappler) folds the constant
factors of `c1 * step / c2` into `step * (c1 / c2)`; the cosine angle and the warmup ramp are
written in that folded order, so the float32 results equal the reference's bit for bit (scalar
steps).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from efficientnet_tf.config import LR_SCHEDULES

REFERENCE_BATCH_SIZE = 256
POLY_END_LEARNING_RATE = 0.1  # hard-coded in the reference, whatever the peak


def _check_schedule_args(lr_decay_type, steps_per_epoch, total_steps, warmup_epochs,
                         decay_epochs, decay_factor):
    if lr_decay_type not in LR_SCHEDULES:
        raise ValueError(f"lr_decay_type={lr_decay_type!r}: expected one of "
                         f"{', '.join(LR_SCHEDULES)}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs={warmup_epochs}: must be >= 0")
    if lr_decay_type in ("exponential", "poly") or warmup_epochs:
        if steps_per_epoch is None:
            raise ValueError(f"lr_decay_type={lr_decay_type!r} with warmup_epochs="
                             f"{warmup_epochs} needs steps_per_epoch")
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch={steps_per_epoch}: must be > 0")
    if lr_decay_type in ("cosine", "poly"):
        if total_steps is None:
            raise ValueError(f"lr_decay_type={lr_decay_type!r} needs total_steps")
        if total_steps <= 0:
            raise ValueError(f"total_steps={total_steps}: must be > 0")
    if lr_decay_type == "exponential":
        if decay_epochs <= 0:
            raise ValueError(f"decay_epochs={decay_epochs}: must be > 0")
        if not 0.0 < decay_factor <= 1.0:
            raise ValueError(f"decay_factor={decay_factor}: must be in (0, 1]")


def build_learning_rate(initial_lr, global_step, steps_per_epoch=None,
                        lr_decay_type="exponential", decay_factor=0.97, decay_epochs=2.4,
                        total_steps=None, warmup_epochs=5):
    """The reference's learning rate at `global_step` (an integer step), a float32 scalar.

    exponential: initial_lr · decay_factor^floor(step / (steps_per_epoch · decay_epochs));
    cosine: ½ · initial_lr · (1 + cos(π · step / total_steps)); constant: initial_lr;
    poly: (initial_lr − 0.1) · (1 − p)² + 0.1, p = min(max(1, step − W), T − W + 1) / (T − W + 1).
    Then, for step < W = int(warmup_epochs · steps_per_epoch): initial_lr · step / W.
    `steps_per_epoch` may be fractional (the reference's num_train_images / batch).
    """
    _check_schedule_args(lr_decay_type, steps_per_epoch, total_steps, warmup_epochs,
                         decay_epochs, decay_factor)
    step = tf.cast(global_step, tf.int64)  # TF1's global step
    step_f = tf.cast(step, tf.float32)
    lr0 = tf.cast(initial_lr, tf.float32)
    if lr_decay_type == "exponential":
        decay_steps = tf.constant(steps_per_epoch * decay_epochs, tf.float32)
        lr = lr0 * tf.pow(tf.constant(decay_factor, tf.float32), tf.floor(step_f / decay_steps))
    elif lr_decay_type == "cosine":
        angle = step_f * (tf.constant(math.pi, tf.float32) / tf.constant(total_steps, tf.float32))
        lr = 0.5 * lr0 * (1.0 + tf.cos(angle))
    elif lr_decay_type == "poly":
        warmup_steps = int(steps_per_epoch * warmup_epochs)
        span = tf.constant(total_steps - warmup_steps + 1, tf.float32)
        t = tf.cast(tf.maximum(tf.constant(1, tf.int64), step - warmup_steps), tf.float32)
        end = tf.constant(POLY_END_LEARNING_RATE, tf.float32)
        lr = (lr0 - end) * tf.pow(1.0 - tf.minimum(t, span) / span, 2.0) + end
    else:
        lr = lr0
    if warmup_epochs:
        warmup_steps = int(warmup_epochs * steps_per_epoch)
        warmup_lr = step_f * (lr0 * tf.math.reciprocal(tf.constant(warmup_steps, tf.float32)))
        lr = tf.where(step < warmup_steps, warmup_lr, lr)
    return lr


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class ReferenceLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """`build_learning_rate` as a Keras schedule of the optimizer's step counter.

    continuous_warmup=False (default): exactly the reference. continuous_warmup=True: the same
    warmup, then the decay evaluated at step − W over total_steps − W, so lr(W) = initial_lr
    (no drop when warmup ends; `poly` already decays from W and is unchanged).
    """

    def __init__(self, initial_lr, steps_per_epoch=None, lr_decay_type="exponential",
                 decay_factor=0.97, decay_epochs=2.4, total_steps=None, warmup_epochs=5,
                 continuous_warmup=False):
        if initial_lr <= 0:
            raise ValueError(f"initial_lr={initial_lr}: must be > 0")
        _check_schedule_args(lr_decay_type, steps_per_epoch, total_steps, warmup_epochs,
                             decay_epochs, decay_factor)
        self.initial_lr = float(initial_lr)
        self.steps_per_epoch = None if steps_per_epoch is None else float(steps_per_epoch)
        self.lr_decay_type = lr_decay_type
        self.decay_factor = float(decay_factor)
        self.decay_epochs = float(decay_epochs)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.warmup_epochs = float(warmup_epochs)
        self.continuous_warmup = bool(continuous_warmup)

    def __call__(self, step):
        args = dict(steps_per_epoch=self.steps_per_epoch, decay_factor=self.decay_factor,
                    decay_epochs=self.decay_epochs)
        if not self.continuous_warmup:
            return build_learning_rate(self.initial_lr, step, lr_decay_type=self.lr_decay_type,
                                       total_steps=self.total_steps,
                                       warmup_epochs=self.warmup_epochs, **args)
        step = tf.cast(step, tf.int64)
        warmup_steps = int(self.warmup_epochs * (self.steps_per_epoch or 0))
        remaining = None if self.total_steps is None else max(1, self.total_steps - warmup_steps)
        decayed = build_learning_rate(self.initial_lr, tf.maximum(step - warmup_steps, 0),
                                      lr_decay_type=self.lr_decay_type, total_steps=remaining,
                                      warmup_epochs=0, **args)
        warmup = build_learning_rate(self.initial_lr, step, lr_decay_type="constant",
                                     warmup_epochs=self.warmup_epochs, **args)
        return tf.where(step < warmup_steps, warmup, decayed)

    def get_config(self):
        return {"initial_lr": self.initial_lr, "steps_per_epoch": self.steps_per_epoch,
                "lr_decay_type": self.lr_decay_type, "decay_factor": self.decay_factor,
                "decay_epochs": self.decay_epochs, "total_steps": self.total_steps,
                "warmup_epochs": self.warmup_epochs, "continuous_warmup": self.continuous_warmup}


def scale_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """Linear scaling rule: `base_learning_rate` is per 256 images, as the reference's main.py."""
    if base_learning_rate <= 0:
        raise ValueError(f"base_learning_rate={base_learning_rate}: must be > 0")
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size}: must be > 0")
    return base_learning_rate * (global_batch_size / REFERENCE_BATCH_SIZE)


def build_lr_schedule(name: str, base_learning_rate: float, global_batch_size: int,
                      steps_per_epoch: float, total_steps: int, warmup_epochs: float = 5,
                      decay_epochs: float = 2.4, decay_factor: float = 0.97,
                      continuous_warmup: bool = False) -> ReferenceLearningRate:
    """The schedule named by `--lr_schedule`, peaking at base_learning_rate × global_batch / 256.

    Pass steps_per_epoch = train_size / global_batch (a float, as the reference) and total_steps =
    the run's total steps.
    """
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={name!r}: expected one of {', '.join(LR_SCHEDULES)}")
    return ReferenceLearningRate(scale_learning_rate(base_learning_rate, global_batch_size),
                                 steps_per_epoch=steps_per_epoch, lr_decay_type=name,
                                 decay_factor=decay_factor, decay_epochs=decay_epochs,
                                 total_steps=total_steps, warmup_epochs=warmup_epochs,
                                 continuous_warmup=continuous_warmup)
