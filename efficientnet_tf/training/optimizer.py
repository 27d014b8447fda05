"""RMSProp with the TF1 semantics the reference was trained with (SPEC 2).

Keras 3.15's `keras.optimizers.RMSprop` applies the same update (epsilon inside the square root,
plain momentum) but starts the mean-square accumulator at zeros, so its first steps divide by
sqrt(0.1·g² + eps) instead of sqrt(0.9 + 0.1·g² + eps): steps up to ~3x larger early in training.
This class starts it at ones, as `tf.compat.v1.train.RMSPropOptimizer` does.
"""
from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class RMSpropTF(keras.optimizers.Optimizer):
    """ms = rho·ms + (1−rho)·g²;  mom = momentum·mom + lr·g/sqrt(ms + eps);  var −= mom.

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
        self.assign(ms, ops.add(ops.multiply(self.rho, ms),
                                ops.multiply(1.0 - self.rho, ops.square(gradient))))
        step = ops.divide(ops.multiply(lr, gradient), ops.sqrt(ops.add(ms, self.epsilon)))
        self.assign(mom, ops.add(ops.multiply(self.momentum, mom), step))
        self.assign_sub(variable, mom)

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon}


def build_optimizer(learning_rate, *, mixed_precision="float32", rho=0.9, momentum=0.9,
                    epsilon=1e-3) -> keras.optimizers.Optimizer:
    """The reference optimizer; under `mixed_float16` wrapped in dynamic loss scaling.

    bfloat16 has float32's exponent range, so `mixed_bfloat16` needs no loss scaling.
    """
    optimizer = RMSpropTF(learning_rate=learning_rate, rho=rho, momentum=momentum,
                          epsilon=epsilon)
    if mixed_precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    if mixed_precision not in ("float32", "mixed_bfloat16"):
        raise ValueError(f"mixed_precision={mixed_precision!r}: expected 'float32', "
                         "'mixed_float16' or 'mixed_bfloat16' (resolve 'auto' first with "
                         "distribute.resolve_mixed_precision).")
    return optimizer
