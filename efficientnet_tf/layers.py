"""EfficientNet building blocks as Keras 3 layers (`keras.ops` only, serializable)."""
from __future__ import annotations

import math

import keras
from keras import ops

from efficientnet_tf.config import ConfigError

# As the reference: untruncated normal, std sqrt(2 / fan_out), fan_out = kh * kw * out_channels.
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
# Uniform in +-1/sqrt(num_classes): fan_out of the dense kernel is num_classes.
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
def swish(x):
    """x * sigmoid(x) as two plain ops: the backend fuses them into the preceding conv's
    epilogue more readily than the `silu` kernel (measured ~5% on batch-1 CPU latency)."""
    return x * ops.sigmoid(x)


def get_activation(name: str):
    if name == "swish":
        return swish
    return keras.activations.get(name)


def bn_group_size(num_replicas: int, group_size: int | None = None) -> int:
    """How many consecutive replicas share batch-norm statistics.

    None is the reference's rule (its TpuBatchNormalization): every replica on its own up to 8
    replicas, groups of max(8, n // 8) above that, so a pod never pays for a global all-reduce
    per layer. 0 means all replicas (global sync BN), 1 per replica, k groups of k.
    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas}: must be >= 1")
    if group_size is None:
        size = 1 if num_replicas <= 8 else max(8, num_replicas // 8)
    elif group_size == 0:
        size = num_replicas
    else:
        size = group_size
    if num_replicas % size:
        raise ConfigError(
            f"bn_group_size={group_size!r} gives groups of {size} replicas, which do not divide "
            f"the {num_replicas} replicas; pass --bn_group_size as a divisor of {num_replicas} "
            "(0 = all replicas, 1 = per replica).")
    return size


def _group_sum(context, x, group_size: int):
    """Sum of `x` over the replica's group, with one all-reduce of a [num_groups, ...] tensor.

    Each replica writes its value into its group's row and the all-reduce adds the rows up: plain
    `all_reduce` works under every tf.distribute strategy (Mirrored, MultiWorker, TPU), and with
    the default rule there are at most 8 groups, so the cost stays within 8x a global sync.
    """
    import tensorflow as tf

    num_replicas = context.num_replicas_in_sync
    if group_size == num_replicas:
        return context.all_reduce(tf.distribute.ReduceOp.SUM, x)
    group = context.replica_id_in_sync_group // group_size
    rows = ops.one_hot(group, num_replicas // group_size, dtype=x.dtype)
    rows = ops.reshape(rows, (-1,) + (1,) * len(x.shape))
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, rows * ops.expand_dims(x, 0))
    return ops.take(total, group, axis=0)


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class GroupBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose training statistics are averaged over groups of replicas.

    `group_size` as in `bn_group_size` (None: the reference's rule). Replicas average their
    per-replica mean and mean of squares, as the reference does (equal per-replica batches), so
    each group normalizes with its own statistics and keeps its own moving averages. Outside a
    distribution strategy, or with groups of 1, this is plain BatchNormalization.
    """

    def __init__(self, group_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if group_size is not None and (not isinstance(group_size, int) or group_size < 0):
            raise ValueError(f"group_size={group_size!r}: must be None or an integer >= 0")
        self.group_size = group_size

    def _moments(self, inputs, mask):
        mean, variance = super()._moments(inputs, mask)
        if keras.backend.backend() != "tensorflow" or mask is not None:
            return mean, variance  # replica groups are a tf.distribute concept
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None:
            return mean, variance
        size = bn_group_size(context.num_replicas_in_sync, self.group_size)
        if size == 1:
            return mean, variance
        stats = _group_sum(context, ops.stack([mean, variance + ops.square(mean)]), size) / size
        group_mean, group_mean_of_squares = stats[0], stats[1]
        return group_mean, group_mean_of_squares - ops.square(group_mean)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size}


def batch_norm(name, momentum, epsilon, group_size=None, dtype=None):
    return GroupBatchNormalization(group_size=group_size, momentum=momentum, epsilon=epsilon,
                                   dtype=dtype, name=name)


def conv_bn(x, conv, bn, training):
    """conv then BN; where BN uses its moving statistics, folded into one multiply-add.

    Keras runs inference BN as separate multiply and add passes over the activation. Folded, the
    scale goes where it is cheaper to apply on every call: into the kernel when the kernel is
    smaller than the output (early, high-resolution layers, large batches), onto the output
    otherwise (late layers at batch 1, where rescaling a 1152x320 kernel per call costs more than
    the 8x8 output). Same weights, same gradients: only the order of the arithmetic changes.
    """
    if training and bn.trainable:
        return bn(conv(x), training=training)
    scale = ops.cast(bn.gamma, "float32") * ops.rsqrt(
        ops.cast(bn.moving_variance, "float32") + bn.epsilon)
    offset = ops.cast(bn.beta, "float32") - ops.cast(bn.moving_mean, "float32") * scale
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    output_shape = conv.compute_output_shape(x.shape)
    kernel = ops.cast(conv.kernel, "float32")
    if None not in output_shape and math.prod(kernel.shape) > math.prod(output_shape):
        y = _conv(conv, x, ops.cast(kernel, x.dtype), depthwise)
        return y * ops.cast(scale, y.dtype) + ops.cast(offset, y.dtype)
    kernel = kernel * (ops.reshape(scale, (1, 1, -1, 1)) if depthwise else scale)
    y = _conv(conv, x, ops.cast(kernel, x.dtype), depthwise)
    return y + ops.cast(offset, y.dtype)


def _conv(conv, x, kernel, depthwise):
    if depthwise:
        return ops.depthwise_conv(x, kernel, strides=conv.strides, padding=conv.padding)
    return ops.conv(x, kernel, strides=conv.strides, padding=conv.padding)


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class ImageNormalization(keras.layers.Layer):
    """(x - mean) / std as one multiply-add with constants; no state to adapt or to get wrong."""

    def __init__(self, mean, stddev, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.stddev = tuple(float(s) for s in stddev)

    def scale_offset(self) -> tuple[list[float], list[float]]:
        """(1 / std, -mean / std) per channel: the layer is `x * scale + offset`."""
        return ([1.0 / s for s in self.stddev],
                [-m / s for m, s in zip(self.mean, self.stddev)])

    def call(self, inputs):
        scale, offset = self.scale_offset()
        return (inputs * ops.convert_to_tensor(scale, dtype=inputs.dtype)
                + ops.convert_to_tensor(offset, dtype=inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "stddev": list(self.stddev)}


class ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A SeedGenerator whose seeds differ between tf.distribute replicas.

    Under a strategy the state is a mirrored variable, so every replica would draw the same seed,
    hence the same dropout and stochastic-depth masks (the reference drew them independently per
    TPU core). Folding the replica id into the drawn seed gives each replica its own stream, still
    fixed by the one state, which advances as before. Outside a strategy, with one replica or on
    other backends, the seeds are exactly SeedGenerator's.
    """

    def next(self, ordered=True):
        seed = super().next(ordered=ordered)
        if keras.backend.backend() != "tensorflow":
            return seed  # replicas are a tf.distribute concept
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        # fold_in takes int32 seeds only under XLA (TPU); cast as Keras' TF backend casts seeds.
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        return tf.random.fold_in(seed, tf.cast(context.replica_id_in_sync_group, tf.int32))


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class ReplicaDropout(keras.layers.Dropout):
    """keras.layers.Dropout with an independent mask on each replica (`ReplicaSeedGenerator`).

    Still a Dropout (same config, and exporters drop it as the inference identity).
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(rate, noise_shape=noise_shape, seed=seed, **kwargs)
        if self.rate > 0:
            # Dropout has already made, tracked and locked in a plain SeedGenerator: retype it
            # rather than add a second one, so the layer keeps its one seed state variable.
            self.seed_generator.__class__ = ReplicaSeedGenerator


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class StochasticDepth(keras.layers.Layer):
    """Drops the whole residual branch per sample with probability `rate`, scaling survivors.

    Each replica draws its own samples' masks (`ReplicaSeedGenerator`), as the reference did.
    """

    def __init__(self, rate: float, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth rate={rate}: must be in [0, 1)")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = ReplicaSeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        mask = ops.floor(keep + noise)
        return inputs * (mask / keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class SqueezeExcite(keras.layers.Layer):
    """Channel gating: global mean -> 1x1 reduce (+bias, act) -> 1x1 expand (+bias) -> sigmoid."""

    def __init__(self, filters: int, reduced_filters: int, activation: str = "swish", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.reduced_filters = int(reduced_filters)
        self.activation = activation
        self.se_reduce = keras.layers.Conv2D(
            self.reduced_filters, 1, padding="same", use_bias=True,
            activation=get_activation(activation),
            kernel_initializer=CONV_KERNEL_INITIALIZER, dtype=self.dtype_policy, name="se_reduce")
        self.se_expand = keras.layers.Conv2D(
            self.filters, 1, padding="same", use_bias=True, activation="sigmoid",
            kernel_initializer=CONV_KERNEL_INITIALIZER, dtype=self.dtype_policy, name="se_expand")

    def build(self, input_shape):
        pooled = (input_shape[0], 1, 1, input_shape[-1])
        self.se_reduce.build(pooled)
        self.se_expand.build((input_shape[0], 1, 1, self.reduced_filters))
        self.built = True

    def call(self, inputs):
        # The 1x1 convs on a 1x1 map are matmuls; calling them as such skips conv dispatch.
        x = ops.mean(inputs, axis=(1, 2))
        reduce_kernel = ops.reshape(self.se_reduce.kernel, (self.filters, self.reduced_filters))
        x = self.se_reduce.activation(ops.matmul(x, reduce_kernel) + self.se_reduce.bias)
        expand_kernel = ops.reshape(self.se_expand.kernel, (self.reduced_filters, self.filters))
        x = ops.sigmoid(ops.matmul(x, expand_kernel) + self.se_expand.bias)
        return inputs * x[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "reduced_filters": self.reduced_filters, "activation": self.activation}


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class MBConvBlock(keras.layers.Layer):
    """Mobile inverted bottleneck (paper section 4, Table 1): expand -> depthwise -> SE ->
    project -> skip.

    Sub-layer names follow keras.applications (`<block>_expand_conv` there is
    `<block>/expand_conv` here) so weights map one to one.
    """

    def __init__(self, input_filters: int, output_filters: int, kernel_size: int = 3,
                 strides: int = 1, expand_ratio: float = 1, se_ratio: float = 0.0,
                 id_skip: bool = True, drop_rate: float = 0.0, activation: str = "swish",
                 bn_momentum: float = 0.99, bn_epsilon: float = 1e-3,
                 bn_group_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.input_filters = int(input_filters)
        self.output_filters = int(output_filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.expand_ratio = expand_ratio
        self.se_ratio = float(se_ratio)
        self.id_skip = bool(id_skip)
        self.drop_rate = float(drop_rate)
        self.activation = activation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.bn_group_size = bn_group_size

        act = get_activation(activation)
        policy = self.dtype_policy
        expanded = int(self.input_filters * expand_ratio)
        self.expanded_filters = expanded

        def bn(name):
            return batch_norm(name, bn_momentum, bn_epsilon, bn_group_size, policy)

        if expand_ratio != 1:
            self.expand_conv = keras.layers.Conv2D(
                expanded, 1, padding="same", use_bias=False,
                kernel_initializer=CONV_KERNEL_INITIALIZER, dtype=policy, name="expand_conv")
            self.expand_bn = bn("expand_bn")
        else:
            self.expand_conv = self.expand_bn = None
        self.dwconv = keras.layers.DepthwiseConv2D(
            self.kernel_size, strides=self.strides, padding="same", use_bias=False,
            depthwise_initializer=CONV_KERNEL_INITIALIZER, dtype=policy, name="dwconv")
        self.bn = bn("bn")
        self.act = act
        if 0.0 < self.se_ratio <= 1.0:
            self.se = SqueezeExcite(expanded, max(1, int(self.input_filters * self.se_ratio)),
                                    activation=activation, dtype=policy, name="se")
        else:
            self.se = None
        self.project_conv = keras.layers.Conv2D(
            self.output_filters, 1, padding="same", use_bias=False,
            kernel_initializer=CONV_KERNEL_INITIALIZER, dtype=policy, name="project_conv")
        self.project_bn = bn("project_bn")
        self.has_skip = (self.id_skip and self.strides == 1
                         and self.input_filters == self.output_filters)
        self.drop = (StochasticDepth(self.drop_rate, dtype=policy, name="drop")
                     if self.has_skip and self.drop_rate > 0 else None)

    def build(self, input_shape):
        if input_shape[-1] != self.input_filters:
            raise ValueError(f"{self.name}: expected {self.input_filters} input channels, "
                             f"got input shape {tuple(input_shape)}")
        shape = tuple(input_shape)
        if self.expand_conv is not None:
            self.expand_conv.build(shape)
            shape = shape[:-1] + (self.expanded_filters,)
            self.expand_bn.build(shape)
        self.dwconv.build(shape)
        shape = tuple(self.dwconv.compute_output_shape(shape))
        self.bn.build(shape)
        if self.se is not None:
            self.se.build(shape)
        self.project_conv.build(shape)
        self.project_bn.build(shape[:-1] + (self.output_filters,))
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        if self.expand_conv is not None:
            x = self.act(conv_bn(x, self.expand_conv, self.expand_bn, training))
        x = self.act(conv_bn(x, self.dwconv, self.bn, training))
        if self.se is not None:
            x = self.se(x)
        x = conv_bn(x, self.project_conv, self.project_bn, training)
        if self.has_skip:
            if self.drop is not None:
                x = self.drop(x, training=training)
            x = x + inputs
        return x

    def compute_output_shape(self, input_shape):
        shape = self.dwconv.compute_output_shape(tuple(input_shape)[:-1] + (self.expanded_filters,))
        return tuple(shape)[:-1] + (self.output_filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "input_filters": self.input_filters, "output_filters": self.output_filters,
            "kernel_size": self.kernel_size, "strides": self.strides,
            "expand_ratio": self.expand_ratio, "se_ratio": self.se_ratio,
            "id_skip": self.id_skip, "drop_rate": self.drop_rate, "activation": self.activation,
            "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
            "bn_group_size": self.bn_group_size,
        }
