"""Optimizers with the TF1 semantics of the reference's `build_optimizer` (docs/fidelity.md).

The reference trains with `tf.compat.v1.train` optimizers; Keras 3's differ in ways that change the
trajectory, so each is restated here.

RMSProp: Keras 3.15's `keras.optimizers.RMSprop` starts the mean-square accumulator at zeros, so
its first steps divide by sqrt(0.1·g² + eps) instead of sqrt(0.9 + 0.1·g² + eps): steps up to ~3x
larger early in training. `RMSpropTF` starts it at ones, as `tf.compat.v1.train.RMSPropOptimizer`,
and follows the TF1 kernel's operation order (bit-equal to the reference's golden steps).

Momentum: TF1 accumulates the raw gradient and scales by the CURRENT learning rate
(accum = m·accum + g; var −= lr·accum); Keras SGD accumulates lr·g (v = m·v − lr·g), which
differs whenever the learning rate changes (warmup, decay).
"""
from __future__ import annotations

import keras
from keras import ops

from efficientnet_tf.config import OPTIMIZERS

LARS_SKIP_LIST = ("batch_normalization", "bias", "beta", "gamma")


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class RMSpropTF(keras.optimizers.Optimizer):
    """ms += (g² − ms)·(1−rho);  mom = momentum·mom + lr·g/sqrt(ms + eps);  var −= mom.

    `ms` starts at ONES and `mom` at zeros. Defaults are the reference's (rho 0.9, momentum 0.9,
    epsilon 1e-3). Wrap in `keras.optimizers.LossScaleOptimizer` for float16 training.
    """

    def __init__(self, learning_rate=0.016, rho=0.9, momentum=0.9, epsilon=1e-3,
                 name="RMSpropTF", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"RMSpropTF rho={rho}: must be in [0, 1)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"RMSpropTF momentum={momentum}: must be in [0, 1)")
        if epsilon <= 0.0:
            raise ValueError(f"RMSpropTF epsilon={epsilon}: must be > 0")
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._mean_squares = self.add_optimizer_variables(var_list, "rms", initializer="ones")
        self._momentums = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        ms = self._mean_squares[index]
        mom = self._momentums[index]
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        # The TF1 kernel's operation order, 1 − rho taken in float32.
        dtype = variable.dtype
        one_minus_rho = ops.subtract(ops.cast(1.0, dtype), ops.cast(self.rho, dtype))
        self.assign(ms, ops.add(ms, ops.multiply(ops.subtract(ops.square(gradient), ms),
                                                 one_minus_rho)))
        step = ops.divide(ops.multiply(gradient, lr), ops.sqrt(ops.add(ms, self.epsilon)))
        self.assign(mom, ops.add(ops.multiply(mom, self.momentum), step))
        self.assign_sub(variable, mom)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class MomentumTF(keras.optimizers.Optimizer):
    """accum = momentum·accum + g;  var −= lr·accum (`tf.compat.v1.train.MomentumOptimizer`)."""

    def __init__(self, learning_rate=0.016, momentum=0.9, name="MomentumTF", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"{name} momentum={momentum}: must be in [0, 1)")
        self.momentum = float(momentum)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._accumulators = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        accum = self._accumulators[self._get_variable_index(variable)]
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        self.assign(accum, ops.add(ops.multiply(self.momentum, accum), gradient))
        self.assign_sub(variable, ops.multiply(lr, accum))

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class LARS(MomentumTF):
    """The reference's LARSOptimizer: layer-wise trust ratio, then a TF1 momentum step.

    For variables whose path contains none of `skip_list` (by default BN gamma/beta and every
    bias): scaled_lr = lr · eeta·‖w‖ / (‖g‖ + wd·‖w‖ + epsilon) (ratio 1 when ‖w‖ or ‖g‖ is 0) and
    g ← g + wd·w. Skipped variables keep lr and g (no decay). Then accum = m·accum + g·scaled_lr;
    var −= accum. `lars_weight_decay` is not named `weight_decay`: Keras' own decoupled weight
    decay would be applied on top.
    """

    def __init__(self, learning_rate=0.016, momentum=0.9, lars_weight_decay=1e-5, eeta=0.001,
                 epsilon=0.0, skip_list=LARS_SKIP_LIST, name="LARS", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        if lars_weight_decay < 0:
            raise ValueError(f"LARS lars_weight_decay={lars_weight_decay}: must be >= 0")
        self.lars_weight_decay = float(lars_weight_decay)
        self.eeta = float(eeta)
        self.epsilon = float(epsilon)
        self.skip_list = tuple(skip_list)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # Decided by Keras path ("block1a/bn/gamma", "predictions/bias"): update_step only sees
        # the backend variable.
        self._skipped = [any(s in getattr(v, "path", v.name) for s in self.skip_list)
                         for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if not self._skipped[self._get_variable_index(variable)]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            ratio = ops.where(
                w_norm > 0,
                ops.where(g_norm > 0, self.eeta * w_norm / (
                    g_norm + self.lars_weight_decay * w_norm + self.epsilon), 1.0),
                1.0)
            lr = lr * ratio
            gradient = gradient + self.lars_weight_decay * variable
        super().update_step(gradient * lr, variable, 1.0)

    def get_config(self):
        return {**super().get_config(), "lars_weight_decay": self.lars_weight_decay,
                "eeta": self.eeta, "epsilon": self.epsilon, "skip_list": list(self.skip_list)}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class CrossReplicaLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, deciding "finite" from every replica's gradients.

    Keras 3.15 checks each replica's local gradients before they are all-reduced and then takes
    replica 0's answer, so an inf on another replica is applied (and the scale even grows). Here
    the replicas sum their non-finite flags first, so every replica takes the same decision, the
    one the all-reduced gradients call for (a sum of finite float32 gradients is finite).
    """

    def check_finite(self, grads):
        import tensorflow as tf

        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
        return bad == 0.0


def build_optimizer(learning_rate, *, optimizer="rmsprop", mixed_precision="float32", rho=0.9,
                    momentum=0.9, epsilon=1e-3, lars_weight_decay=1e-5,
                    lars_epsilon=0.0) -> keras.optimizers.Optimizer:
    """The reference's optimizer `optimizer`; under `mixed_float16` wrapped in loss scaling.

    rmsprop (rho, momentum, epsilon), sgd (plain gradient descent), momentum (TF1 rule), lars
    (momentum, lars_weight_decay, lars_epsilon). bfloat16 has float32's exponent range, so
    `mixed_bfloat16` needs no loss scaling.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if mixed_precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"mixed_precision={mixed_precision!r}: expected 'float32', "
                         "'mixed_float16' or 'mixed_bfloat16' (resolve 'auto' first with "
                         "distribute.resolve_mixed_precision).")
    if optimizer == "rmsprop":
        opt = RMSpropTF(learning_rate=learning_rate, rho=rho, momentum=momentum, epsilon=epsilon)
    elif optimizer == "sgd":
        opt = keras.optimizers.SGD(learning_rate=learning_rate)  # var −= lr·g, as TF1
    elif optimizer == "momentum":
        opt = MomentumTF(learning_rate=learning_rate, momentum=momentum)
    else:
        opt = LARS(learning_rate=learning_rate, momentum=momentum,
                   lars_weight_decay=lars_weight_decay, epsilon=lars_epsilon)
    if mixed_precision == "mixed_float16":
        return CrossReplicaLossScaleOptimizer(opt)
    return opt
