"""BN folding: an inference-only copy of a `build_model` network, every BatchNormalization folded
into the convolution before it (conv + BN -> conv with bias; depthwise too) and the input
normalization folded into the stem convolution. Faster on CPU and the base of the TFLite export.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from efficientnet_tf.layers import (
    CondConv2D,
    ImageNormalization,
    MBConvBlock,
    SqueezeExcite,
    mix_experts,
)
from efficientnet_tf.model import model_image_size

# Folded vs Keras probabilities; a structural folding bug is orders of magnitude above this.
FOLD_CHECK_TOLERANCE = 1e-4


def _fold_bn(kernel, bias, bn, channel_axis):
    """kernel·γ/√(σ²+ε) along `channel_axis`; bias (b − μ)·γ/√(σ²+ε) + β. float64 in, out."""
    if bn is None:
        return kernel, bias
    if bn.axis not in (-1, 3):
        raise ValueError(f"{bn.name}: cannot fold a BatchNormalization over axis {bn.axis}.")
    variance = np.asarray(bn.moving_variance.numpy(), np.float64)
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.gamma is not None:
        scale = scale * np.asarray(bn.gamma.numpy(), np.float64)
    shape = [1] * kernel.ndim
    shape[channel_axis] = -1
    bias = (bias - np.asarray(bn.moving_mean.numpy(), np.float64)) * scale
    if bn.beta is not None:
        bias = bias + np.asarray(bn.beta.numpy(), np.float64)
    return kernel * scale.reshape(shape), bias


def _swish(x):
    # tf.nn.silu's values without its custom-gradient wrapper, useless in an inference graph.
    return x * tf.sigmoid(x)


def _inference_activation(activation):
    if activation is None or activation is keras.activations.linear:
        return None
    return _swish if activation is keras.activations.silu else activation


def _constant_variable(value, name):
    return tf.Variable(np.asarray(value, np.float32), trainable=False, name=name)


def _pad_same(x, value, kernel_size, strides):
    """TF's 'SAME' padding of NHWC `x`, filled with the per-channel `value` (tf.pad takes a
    scalar only): constant strips concatenated on the sides 'SAME' pads."""
    for axis, kernel, stride in zip((1, 2), kernel_size, strides):
        size = x.shape[axis]
        if size is None:
            raise ValueError("The folded input normalization needs a static image size; export "
                             "with a fixed image_size.")
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        before, after = total // 2, total - total // 2

        def strip(width, axis=axis, x=x):
            shape = [tf.shape(x)[i] if x.shape[i] is None else x.shape[i] for i in range(4)]
            shape[axis] = width
            return tf.broadcast_to(tf.cast(value, x.dtype), tf.stack(shape))
        parts = ([strip(before)] if before else []) + [x] + ([strip(after)] if after else [])
        x = tf.concat(parts, axis=axis) if len(parts) > 1 else x
    return x


class FoldedConv(tf.Module):
    """Conv2D or DepthwiseConv2D with the following BN folded in, plus its activation."""

    def __init__(self, conv, bn=None, activation=None, input_scale=None, input_offset=None,
                 name=None):
        super().__init__(name=name or conv.name)
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        if not isinstance(conv, keras.layers.Conv2D) and not depthwise:
            raise ValueError(f"{conv.name}: expected Conv2D or DepthwiseConv2D, got "
                             f"{type(conv).__name__}.")
        if conv.data_format != "channels_last" or tuple(conv.dilation_rate) != (1, 1) or (
                not depthwise and conv.groups != 1):
            raise ValueError(f"{conv.name}: only channels_last, undilated, ungrouped convolutions "
                             "can be folded.")
        kernel = np.asarray(conv.kernel.numpy(), np.float64)
        out_channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
        bias = (np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias
                else np.zeros(out_channels, np.float64))
        if depthwise:  # [k, k, C, M]: output channel c·M + m
            flat = kernel.reshape(kernel.shape[:2] + (out_channels,))
            flat, bias = _fold_bn(flat, bias, bn, 2)
            kernel = flat.reshape(kernel.shape)
        else:
            kernel, bias = _fold_bn(kernel, bias, bn, 3)
        self.pad_value = None
        if input_scale is not None:
            # conv_W(pad0(x·s + o)) == conv_{W·s}(pad_p(x)) + Σ W·o with p = -o/s, the raw value
            # that normalizes to 0: exact at the border too, and no op over the whole input (an
            # input-sized ADD costs int8 TFLite more than the stem conv itself).
            scale = np.asarray(input_scale, np.float64)
            bias = bias + np.einsum("hwio,i->o", kernel, np.asarray(input_offset, np.float64))
            kernel = kernel * scale.reshape(1, 1, -1, 1)
            self.pad_value = _constant_variable(-np.asarray(input_offset, np.float64) / scale,
                                                "pad_value")
        self.kernel = _constant_variable(kernel, "kernel")
        self.bias = _constant_variable(bias, "bias")
        self.depthwise = depthwise
        self.kernel_size = tuple(conv.kernel_size)
        self.strides = (1,) + tuple(conv.strides) + (1,)
        self.padding = conv.padding.upper()
        self.activation = _inference_activation(activation if activation is not None
                                                else conv.activation)

    def __call__(self, x):
        padding = self.padding
        if self.pad_value is not None:
            x, padding = _pad_same(x, self.pad_value, self.kernel_size, self.strides[1:3]), "VALID"
        if self.depthwise:
            x = tf.nn.depthwise_conv2d(x, self.kernel, self.strides, padding)
        else:
            x = tf.nn.conv2d(x, self.kernel, self.strides, padding)
        x = tf.nn.bias_add(x, self.bias)
        return self.activation(x) if self.activation is not None else x


class FoldedDense(tf.Module):
    """A Dense layer (or a 1x1 conv applied to a pooled vector) as matmul + bias + activation."""

    def __init__(self, layer):
        super().__init__(name=layer.name)
        kernel = layer.kernel.numpy()
        self.kernel = _constant_variable(kernel.reshape(kernel.shape[-2:]), "kernel")
        self.bias = _constant_variable(layer.bias.numpy() if layer.use_bias
                                       else np.zeros(kernel.shape[-1]), "bias")
        self.activation = _inference_activation(layer.activation)

    def __call__(self, x):
        x = tf.nn.bias_add(tf.matmul(x, self.kernel), self.bias)
        return self.activation(x) if self.activation is not None else x


class FoldedSqueezeExcite(tf.Module):
    """SE on the pooled vector with matmuls (1x1 convs on a 1x1 map are matmuls)."""

    def __init__(self, se: SqueezeExcite):
        super().__init__(name=se.name)
        self.reduce = FoldedDense(se.se_reduce)
        self.expand = FoldedDense(se.se_expand)

    def __call__(self, x):
        gate = self.expand(self.reduce(tf.reduce_mean(x, axis=[1, 2])))
        return x * gate[:, None, None, :]


class FoldedCondConv(tf.Module):
    """A CondConv2D with the following BN folded into every expert (the mix is linear in the
    kernel, so scaling each expert scales the mixed kernel), plus a bias and activation."""

    def __init__(self, conv: CondConv2D, bn, activation):
        super().__init__(name=conv.name)
        experts = np.asarray(conv.kernel.numpy(), np.float64)
        shape = (experts.shape[0],) + conv.expert_shape
        channels = shape[3] if conv.depthwise else shape[4]
        kernel, bias = _fold_bn(experts.reshape(shape[:3] + (-1,)) if conv.depthwise
                                else experts.reshape(shape), np.zeros(channels), bn, -1)
        self.experts = _constant_variable(kernel.reshape(experts.shape), "experts")
        self.bias = _constant_variable(bias, "bias")
        self.expert_shape = conv.expert_shape
        self.strides = conv.strides
        self.depthwise = conv.depthwise
        self.activation = _inference_activation(activation)

    def __call__(self, x, routing):
        x = mix_experts(x, routing, self.experts, self.expert_shape, self.strides,
                        self.depthwise)
        x = tf.nn.bias_add(x, self.bias)
        return self.activation(x) if self.activation is not None else x


class FoldedMBConv(tf.Module):
    def __init__(self, block: MBConvBlock):
        super().__init__(name=block.name)
        fold = FoldedCondConv if block.num_experts else FoldedConv
        self.routing = FoldedDense(block.routing) if block.routing is not None else None
        self.expand = (fold(block.expand_conv, block.expand_bn, block.act)
                       if block.expand_conv is not None else None)
        self.depthwise = (fold(block.dwconv, block.bn, block.act)
                          if block.dwconv is not None else None)
        self.se = FoldedSqueezeExcite(block.se) if block.se is not None else None
        self.project = fold(block.project_conv, block.project_bn, keras.activations.linear)
        self.has_skip = block.has_skip  # stochastic depth is the identity at inference

    def __call__(self, inputs):
        if self.routing is not None:
            routing = self.routing(tf.reduce_mean(inputs, axis=[1, 2]))

            def conv(step, x):
                return step(x, routing)
        else:
            def conv(step, x):
                return step(x)
        x = conv(self.expand, inputs) if self.expand is not None else inputs
        x = conv(self.depthwise, x) if self.depthwise is not None else x
        if self.se is not None:
            x = self.se(x)
        x = conv(self.project, x)
        return x + inputs if self.has_skip else x


class FoldedNetwork(tf.Module):
    """Inference-only twin of a `build_model` network: same float [0, 255] input, same output.

    Works on the layer chain `build_model` produces (normalization, stem, MBConv blocks, head,
    pooling, dropout, dense); anything else is rejected rather than guessed at.
    """

    def __init__(self, model: keras.Model):
        super().__init__(name="folded_" + model.name.replace("-", "_"))
        self.steps = []
        norm = None
        pending = None  # a conv waiting for its BN / activation

        def flush():
            nonlocal pending, norm
            if pending is not None:
                conv, bn, act = pending
                scale, offset = norm.scale_offset() if norm is not None else (None, None)
                norm = None
                self.steps.append(FoldedConv(conv, bn, act, scale, offset))
                pending = None

        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            if isinstance(layer, ImageNormalization):
                flush()
                norm = layer
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
                flush()
                if norm is not None and (isinstance(layer, keras.layers.DepthwiseConv2D)
                                         or layer.padding != "same"):
                    raise ValueError(f"{layer.name}: the input normalization folds only into a "
                                     "'same'-padded Conv2D.")
                pending = [layer, None, None]
            elif isinstance(layer, keras.layers.BatchNormalization):
                if pending is None or pending[1] is not None or pending[2] is not None:
                    raise ValueError(f"{layer.name}: BatchNormalization not directly after a "
                                     "convolution; cannot fold it.")
                pending[1] = layer
            elif isinstance(layer, keras.layers.Activation):
                if pending is None or pending[2] is not None or (
                        pending[0].activation is not keras.activations.linear):
                    raise ValueError(f"{layer.name}: activation not after a convolution.")
                pending[2] = layer.activation
            elif not isinstance(layer, keras.layers.Dropout):  # the identity at inference
                flush()
                self.steps.append(self._fold_layer(layer))
        flush()
        if norm is not None:
            raise ValueError(f"{model.name}: the input normalization is not followed by a conv.")

    @staticmethod
    def _fold_layer(layer):
        if isinstance(layer, MBConvBlock):
            return FoldedMBConv(layer)
        if isinstance(layer, keras.layers.GlobalAveragePooling2D) and not layer.keepdims:
            return GlobalPool(tf.reduce_mean, layer.name)
        if isinstance(layer, keras.layers.GlobalMaxPooling2D) and not layer.keepdims:
            return GlobalPool(tf.reduce_max, layer.name)
        if isinstance(layer, keras.layers.Dense):
            return FoldedDense(layer)
        raise ValueError(f"Cannot fold layer {layer.name!r} ({type(layer).__name__}): only "
                         "networks from efficientnet_tf.model.build_model are supported.")

    def __call__(self, images):
        """The Keras model's output (probabilities for a softmax classifier)."""
        x = tf.cast(images, tf.float32)
        for step in self.steps:
            x = step(x)
        return x


class GlobalPool(tf.Module):
    def __init__(self, reduce_fn, name):
        super().__init__(name=name)
        self.reduce_fn = reduce_fn

    def __call__(self, x):
        return self.reduce_fn(x, axis=[1, 2])


def fold_model(model: keras.Model, *, image_size: int | None = None) -> FoldedNetwork:
    """The folded inference network, checked against `model` on a random batch of
    `image_size` images (needed when the model's input size is not fixed)."""
    folded = FoldedNetwork(model)
    size = model_image_size(model, image_size)
    x = tf.random.stateless_uniform([2, size, size, 3], seed=[1, 2], maxval=255.0)
    delta = float(tf.reduce_max(tf.abs(
        tf.cast(model(x, training=False), tf.float32) - folded(x))))
    tolerance = FOLD_CHECK_TOLERANCE if model.compute_dtype == "float32" else 5e-2
    if not delta <= tolerance:
        raise RuntimeError(f"BN folding of {model.name} changed its output by {delta:.3g} "
                           f"(tolerance {tolerance:g}); export it with fold_batch_norm=False.")
    return folded
