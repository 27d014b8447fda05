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


def conv_bn(x, conv, bn, training, routing=None):
    """conv then BN; where BN uses its moving statistics, folded into one multiply-add.

    Keras runs inference BN as separate multiply and add passes over the activation. Folded, the
    scale goes where it is cheaper to apply on every call: into the kernel when the kernel is
    smaller than the output (early, high-resolution layers, large batches), onto the output
    otherwise (late layers at batch 1, where rescaling a 1152x320 kernel per call costs more than
    the 8x8 output). Same weights, same gradients: only the order of the arithmetic changes.
    CondConv layers (`routing` given) mix their kernels per example: the scale goes on the output.
    """
    if routing is not None:
        y = conv(x, routing)
        if training and bn.trainable:
            return bn(y, training=training)
        scale, offset = _bn_scale_offset(bn)
        return y * ops.cast(scale, y.dtype) + ops.cast(offset, y.dtype)
    if training and bn.trainable:
        return bn(conv(x), training=training)
    scale, offset = _bn_scale_offset(bn)
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    output_shape = conv.compute_output_shape(x.shape)
    kernel = ops.cast(conv.kernel, "float32")
    if None not in output_shape and math.prod(kernel.shape) > math.prod(output_shape):
        y = _conv(conv, x, ops.cast(kernel, x.dtype), depthwise)
        return y * ops.cast(scale, y.dtype) + ops.cast(offset, y.dtype)
    kernel = kernel * (ops.reshape(scale, (1, 1, -1, 1)) if depthwise else scale)
    y = _conv(conv, x, ops.cast(kernel, x.dtype), depthwise)
    return y + ops.cast(offset, y.dtype)


def _bn_scale_offset(bn):
    scale = ops.cast(bn.gamma, "float32") * ops.rsqrt(
        ops.cast(bn.moving_variance, "float32") + bn.epsilon)
    return scale, ops.cast(bn.beta, "float32") - ops.cast(bn.moving_mean, "float32") * scale


def _conv(conv, x, kernel, depthwise):
    if depthwise:
        return ops.depthwise_conv(x, kernel, strides=conv.strides, padding=conv.padding)
    return ops.conv(x, kernel, strides=conv.strides, padding=conv.padding)


def condconv_initializer(expert_shape):
    """The reference's CondConv init: each expert drawn as a plain conv kernel of `expert_shape`
    (normal, std sqrt(2 / fan_out)), flattened into one row of the [num_experts, params] table."""
    base = keras.initializers.get(CONV_KERNEL_INITIALIZER)

    def initialize(shape, dtype=None):
        return ops.stack([ops.reshape(base(expert_shape, dtype=dtype), (-1,))
                          for _ in range(shape[0])])
    return initialize


def mix_experts(x, routing, experts, expert_shape, strides, depthwise):
    """The CondConv convolution: each example convolved with sum_e routing[b, e] * expert_e.

    `experts` is the reference's [num_experts, prod(expert_shape)] table (HWIO, or [k, k, C, 1]
    for depthwise), row-major. As the reference, the kernels are mixed per example first (one
    matmul), then applied with the cost of one plain conv and no per-example loop: a 1x1 conv as
    a batched matmul; a depthwise conv with the batch folded into the channels (each example's
    channels then have their own filters). A kxk conv (no published model has one) applies every
    expert and mixes the outputs: the same sum, since the conv is linear in its kernel.
    """
    kh, kw, cin, cout = expert_shape
    num_experts = experts.shape[0]
    if depthwise:
        kernels = ops.reshape(ops.matmul(routing, experts), (-1, kh, kw, cin))
        kernels = ops.reshape(ops.transpose(kernels, (1, 2, 0, 3)), (kh, kw, -1, 1))
        height, width = x.shape[1], x.shape[2]
        folded = ops.reshape(ops.transpose(x, (1, 2, 0, 3)), (1, height, width, -1))
        y = ops.depthwise_conv(folded, kernels, strides=strides, padding="same")
        y = ops.reshape(y, (y.shape[1], y.shape[2], -1, cin))
        return ops.transpose(y, (2, 0, 1, 3))
    if (kh, kw, strides) == (1, 1, 1):
        kernels = ops.reshape(ops.matmul(routing, experts), (-1, cin, cout))
        return ops.einsum("bhwi,bio->bhwo", x, kernels)
    kernel = ops.reshape(ops.transpose(ops.reshape(experts, (num_experts, kh, kw, cin, cout)),
                                       (1, 2, 3, 0, 4)), (kh, kw, cin, num_experts * cout))
    y = ops.conv(x, kernel, strides=strides, padding="same")
    y = ops.reshape(y, (-1, y.shape[1], y.shape[2], num_experts, cout))
    return ops.einsum("bhwec,be->bhwc", y, routing)


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class CondConv2D(keras.layers.Layer):
    """Conditionally parameterized convolution (CondConv, Yang et al. 2019) without bias:
    `num_experts` kernels, mixed per example by the routing weights passed to `call`.

    Kernel layout as the reference's CondConv2D / DepthwiseCondConv2D (`condconv_kernel`
    [num_experts, k*k*Cin*Cout], depthwise [num_experts, k*k*C]), so checkpoints map 1:1.
    """

    def __init__(self, filters: int | None, kernel_size: int, num_experts: int, strides: int = 1,
                 depthwise: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"{self.name}: num_experts={num_experts}, need at least one.")
        if depthwise == (filters is not None):
            raise ValueError(f"{self.name}: pass filters for a conv, None for a depthwise conv.")
        self.filters = filters
        self.kernel_size = int(kernel_size)
        self.num_experts = int(num_experts)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)

    def build(self, input_shape):
        cin = int(input_shape[-1])
        k = self.kernel_size
        self.expert_shape = (k, k, cin, 1 if self.depthwise else self.filters)
        size = k * k * cin * self.expert_shape[-1]
        self.kernel = self.add_weight(
            name="depthwise_condconv_kernel" if self.depthwise else "condconv_kernel",
            shape=(self.num_experts, size), initializer=condconv_initializer(self.expert_shape))

    def call(self, inputs, routing):
        return mix_experts(inputs, ops.cast(routing, inputs.dtype),
                           ops.cast(self.kernel, inputs.dtype), self.expert_shape, self.strides,
                           self.depthwise)

    def compute_output_shape(self, input_shape, routing_shape=None):
        size = [None if d is None else -(-d // self.strides) for d in input_shape[1:3]]
        channels = input_shape[-1] if self.depthwise else self.filters
        return (input_shape[0], *size, channels)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "num_experts": self.num_experts,
                "strides": self.strides, "depthwise": self.depthwise}


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
    `<block>/expand_conv` here) so weights map one to one. Two variants of the reference:
    conv_type=1 (EdgeTPU's `_c1`) replaces expand + depthwise by one 3x3 expansion conv;
    num_experts (CondConv's `_cc`) makes expand, depthwise and project CondConv layers, mixed
    by a per-example `routing` (sigmoid of a dense layer on the pooled block input).
    expanded_filters / se_filters: widths the reference derives from the block string's input
    filters, which can differ from the actual input (EdgeTPU's first block: 24 declared, 32 in);
    None derives them from input_filters.
    """

    def __init__(self, input_filters: int, output_filters: int, kernel_size: int = 3,
                 strides: int = 1, expand_ratio: float = 1, se_ratio: float = 0.0,
                 id_skip: bool = True, drop_rate: float = 0.0, activation: str = "swish",
                 bn_momentum: float = 0.99, bn_epsilon: float = 1e-3,
                 bn_group_size: int | None = None, expanded_filters: int | None = None,
                 se_filters: int | None = None, conv_type: int = 0,
                 num_experts: int | None = None, **kwargs):
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
        self.conv_type = int(conv_type)
        self.num_experts = num_experts
        if self.conv_type not in (0, 1):
            raise ValueError(f"{self.name}: conv_type={conv_type}, expected 0 or 1.")
        if self.conv_type == 1 and (expand_ratio == 1 or num_experts or self.se_ratio):
            raise ValueError(f"{self.name}: a conv_type=1 block needs expand_ratio != 1 and no "
                             "SE or CondConv (as the reference's).")

        act = get_activation(activation)
        policy = self.dtype_policy
        expanded = (self.input_filters if expand_ratio == 1
                    else int(expanded_filters or self.input_filters * expand_ratio))
        self.expanded_filters = expanded
        self._expanded_arg = expanded_filters
        self._se_arg = se_filters

        def bn(name):
            return batch_norm(name, bn_momentum, bn_epsilon, bn_group_size, policy)

        def conv(filters, kernel_size, name, strides=1):
            if num_experts:
                return CondConv2D(filters, kernel_size, num_experts, strides=strides,
                                  dtype=policy, name=name)
            return keras.layers.Conv2D(
                filters, kernel_size, strides=strides, padding="same", use_bias=False,
                kernel_initializer=CONV_KERNEL_INITIALIZER, dtype=policy, name=name)

        self.routing = (keras.layers.Dense(num_experts, activation="sigmoid", dtype=policy,
                                           name="routing") if num_experts else None)
        if self.conv_type == 1:
            self.expand_conv = conv(expanded, 3, "expand_conv", strides=self.strides)
            self.expand_bn = bn("expand_bn")
        elif expand_ratio != 1:
            self.expand_conv = conv(expanded, 1, "expand_conv")
            self.expand_bn = bn("expand_bn")
        else:
            self.expand_conv = self.expand_bn = None
        if self.conv_type == 1:
            self.dwconv = self.bn = None
        elif num_experts:
            self.dwconv = CondConv2D(None, self.kernel_size, num_experts, strides=self.strides,
                                     depthwise=True, dtype=policy, name="dwconv")
            self.bn = bn("bn")
        else:
            self.dwconv = keras.layers.DepthwiseConv2D(
                self.kernel_size, strides=self.strides, padding="same", use_bias=False,
                depthwise_initializer=CONV_KERNEL_INITIALIZER, dtype=policy, name="dwconv")
            self.bn = bn("bn")
        self.act = act
        if 0.0 < self.se_ratio <= 1.0:
            reduced = se_filters or max(1, int(self.input_filters * self.se_ratio))
            self.se = SqueezeExcite(expanded, reduced, activation=activation, dtype=policy,
                                    name="se")
        else:
            self.se = None
        self.project_conv = conv(self.output_filters, 1, "project_conv")
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
        if self.routing is not None:
            self.routing.build((shape[0], self.input_filters))
        if self.expand_conv is not None:
            self.expand_conv.build(shape)
            shape = tuple(self.expand_conv.compute_output_shape(shape))
            self.expand_bn.build(shape)
        if self.dwconv is not None:
            self.dwconv.build(shape)
            shape = tuple(self.dwconv.compute_output_shape(shape))
            self.bn.build(shape)
        if self.se is not None:
            self.se.build(shape)
        self.project_conv.build(shape)
        self.project_bn.build(shape[:-1] + (self.output_filters,))
        self.built = True

    def call(self, inputs, training=None):
        routing = (self.routing(ops.mean(inputs, axis=(1, 2)))
                   if self.routing is not None else None)
        x = inputs
        if self.expand_conv is not None:
            x = self.act(conv_bn(x, self.expand_conv, self.expand_bn, training, routing))
        if self.dwconv is not None:
            x = self.act(conv_bn(x, self.dwconv, self.bn, training, routing))
        if self.se is not None:
            x = self.se(x)
        x = conv_bn(x, self.project_conv, self.project_bn, training, routing)
        if self.has_skip:
            if self.drop is not None:
                x = self.drop(x, training=training)
            x = x + inputs
        return x

    def compute_output_shape(self, input_shape):
        size = [None if d is None else -(-d // self.strides) for d in tuple(input_shape)[1:3]]
        return (input_shape[0], *size, self.output_filters)

    def get_config(self):
        return {
            **super().get_config(),
            "input_filters": self.input_filters, "output_filters": self.output_filters,
            "kernel_size": self.kernel_size, "strides": self.strides,
            "expand_ratio": self.expand_ratio, "se_ratio": self.se_ratio,
            "id_skip": self.id_skip, "drop_rate": self.drop_rate, "activation": self.activation,
            "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
            "bn_group_size": self.bn_group_size, "expanded_filters": self._expanded_arg,
            "se_filters": self._se_arg, "conv_type": self.conv_type,
            "num_experts": self.num_experts,
        }
