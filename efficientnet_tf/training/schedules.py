"""Learning-rate schedules of the reference recipe (SPEC 2): linear warmup, then decay.

Warmup: lr = peak · step / warmup_steps for step < warmup_steps (step 0 → 0, as the reference).
Decay counts from the END of warmup, so the schedule is continuous: lr(warmup_steps) = peak.
(The reference counts its exponential decay from step 0 and so drops by 0.97^(5/2.4) at the end
of warmup; we deliberately do not copy that jump.)
"""
from __future__ import annotations

import math

import keras
from keras import ops

from efficientnet_tf.config import LR_SCHEDULES

REFERENCE_BATCH_SIZE = 256


class _WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_learning_rate` over `warmup_steps`, then `_decayed`."""

    def __init__(self, peak_learning_rate: float, warmup_steps: int = 0):
        if peak_learning_rate <= 0:
            raise ValueError(f"peak_learning_rate={peak_learning_rate}: must be > 0")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps}: must be >= 0")
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)

    def _decayed(self, steps_after_warmup):
        raise NotImplementedError

    def __call__(self, step):
        step = ops.cast(step, "float32")
        decayed = self._decayed(ops.maximum(step - self.warmup_steps, 0.0))
        if self.warmup_steps == 0:
            return decayed
        warmup = self.peak_learning_rate * step / float(self.warmup_steps)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class WarmupExponentialDecay(_WarmupSchedule):
    """peak · decay_factor^floor(t / decay_steps), t = steps since the end of warmup."""

    def __init__(self, peak_learning_rate, decay_steps, decay_factor=0.97, warmup_steps=0,
                 staircase=True):
        super().__init__(peak_learning_rate, warmup_steps)
        if decay_steps <= 0:
            raise ValueError(f"decay_steps={decay_steps}: must be > 0")
        if not 0.0 < decay_factor <= 1.0:
            raise ValueError(f"decay_factor={decay_factor}: must be in (0, 1]")
        self.decay_steps = float(decay_steps)
        self.decay_factor = float(decay_factor)
        self.staircase = bool(staircase)

    def _decayed(self, t):
        exponent = t / self.decay_steps
        if self.staircase:
            exponent = ops.floor(exponent)
        return self.peak_learning_rate * ops.power(self.decay_factor, exponent)

    def get_config(self):
        return {**super().get_config(), "decay_steps": self.decay_steps,
                "decay_factor": self.decay_factor, "staircase": self.staircase}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class WarmupCosineDecay(_WarmupSchedule):
    """peak · ½(1 + cos(π·t/T)), T = total_steps − warmup_steps; 0 from total_steps on."""

    def __init__(self, peak_learning_rate, total_steps, warmup_steps=0):
        super().__init__(peak_learning_rate, warmup_steps)
        if total_steps <= 0:
            raise ValueError(f"total_steps={total_steps}: must be > 0")
        self.total_steps = int(total_steps)

    def _decayed(self, t):
        span = float(max(1, self.total_steps - self.warmup_steps))
        progress = ops.minimum(t / span, 1.0)
        return 0.5 * self.peak_learning_rate * (1.0 + ops.cos(math.pi * progress))

    def get_config(self):
        return {**super().get_config(), "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class WarmupConstant(_WarmupSchedule):
    """peak after warmup."""

    def _decayed(self, t):
        return ops.full_like(t, self.peak_learning_rate)


def scale_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """Linear scaling rule: `base_learning_rate` is per 256 images (SPEC 2)."""
    if base_learning_rate <= 0:
        raise ValueError(f"base_learning_rate={base_learning_rate}: must be > 0")
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size={global_batch_size}: must be > 0")
    return base_learning_rate * global_batch_size / REFERENCE_BATCH_SIZE


def build_lr_schedule(name: str, base_learning_rate: float, global_batch_size: int,
                      steps_per_epoch: int, total_steps: int, warmup_epochs: float = 5,
                      decay_epochs: float = 2.4,
                      decay_factor: float = 0.97) -> keras.optimizers.schedules.LearningRateSchedule:
    """The schedule named by `--lr_schedule`, peaking at base_learning_rate × global_batch / 256."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={name!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch={steps_per_epoch}: must be > 0")
    if warmup_epochs < 0:
        raise ValueError(f"lr_warmup_epochs={warmup_epochs}: must be >= 0")
    peak = scale_learning_rate(base_learning_rate, global_batch_size)
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if name == "exponential":
        if decay_epochs <= 0:
            raise ValueError(f"lr_decay_epochs={decay_epochs}: must be > 0")
        return WarmupExponentialDecay(peak, decay_steps=decay_epochs * steps_per_epoch,
                                      decay_factor=decay_factor, warmup_steps=warmup_steps)
    if name == "cosine":
        return WarmupCosineDecay(peak, total_steps=total_steps, warmup_steps=warmup_steps)
    return WarmupConstant(peak, warmup_steps=warmup_steps)
