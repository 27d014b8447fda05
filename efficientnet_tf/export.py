"""Export: TF Serving SavedModel, TF-Hub reusable SavedModels and TFLite, with BN folded for speed.

One input contract per artifact (README, "Export and predict"), also written to `assets.extra/export_info.json`:
- serving SavedModel: `serving_default` takes encoded images (`image_bytes`, string [batch]) and
  runs the eval preprocessing inside; `serving_images` takes float32 RGB [batch, S, S, 3] in
  [0, 255], already cropped and resized to the model resolution S.
- TF-Hub SavedModels (`classification/`, `feature_vector/`): float32 RGB [batch, S, S, 3] in
  [0, 1], the TF-Hub image convention; they scale by 255 inside.
- TFLite: float32 RGB [1, S, S, 3] in [0, 255].

Every directory is written next to its destination and renamed into place, so an interrupted
export leaves nothing at the destination. An existing destination is refused unless
`overwrite=True` (then it is replaced whole). The rename is atomic on local filesystems only.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from efficientnet_tf.config import reference_resize_method
from efficientnet_tf.data.image_header import MAX_IMAGE_PIXELS, image_dimensions, too_large
from efficientnet_tf.data.preprocessing import preprocess_for_eval
from efficientnet_tf.files import write_bytes_atomic
from efficientnet_tf.layers import ImageNormalization, MBConvBlock, SqueezeExcite
from efficientnet_tf.training.regularization import l2_loss

EXPORT_INFO_FILE = os.path.join("assets.extra", "export_info.json")
SERVING_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"
HUB_VARIANTS = ("classification", "feature_vector")
QUANTIZE_MODES = (None, "dynamic", "int8")
# What tf.io.decode_image reads and image_header can size (JPEG XL has no readable size there).
IMAGE_FORMATS = "JPEG, PNG, GIF, BMP or WebP"
DEFAULT_MAX_BATCH_SIZE = 256
# Folded vs Keras probabilities; a structural folding bug is orders of magnitude above this.
FOLD_CHECK_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# BN folding: an inference-only copy of the network with every BatchNormalization folded into the
# convolution before it (conv + BN -> conv with bias; depthwise too) and the input normalization
# folded into the stem convolution.


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

        def strip(width, axis=axis):
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


class FoldedMBConv(tf.Module):
    def __init__(self, block: MBConvBlock):
        super().__init__(name=block.name)
        self.expand = (FoldedConv(block.expand_conv, block.expand_bn, block.act)
                       if block.expand_conv is not None else None)
        self.depthwise = FoldedConv(block.dwconv, block.bn, block.act)
        self.se = FoldedSqueezeExcite(block.se) if block.se is not None else None
        self.project = FoldedConv(block.project_conv, block.project_bn, keras.activations.linear)
        self.has_skip = block.has_skip  # stochastic depth is the identity at inference

    def __call__(self, inputs):
        x = self.expand(inputs) if self.expand is not None else inputs
        x = self.depthwise(x)
        if self.se is not None:
            x = self.se(x)
        x = self.project(x)
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


# ---------------------------------------------------------------------------------------------
# Helpers shared by every artifact.


def model_image_size(model: keras.Model, image_size: int | None) -> int:
    shape = tuple(model.input_shape)
    height, width = shape[1], shape[2]
    if image_size is None:
        if height is None or height != width:
            raise ValueError(f"{model.name}: input shape {shape} has no fixed square size; pass "
                             "image_size.")
        return int(height)
    if height is not None and (height, width) != (image_size, image_size):
        raise ValueError(f"image_size={image_size} does not match {model.name}'s input shape "
                         f"{shape}.")
    return int(image_size)


def classifier_layer(model: keras.Model) -> keras.layers.Dense:
    """The classifier (`predictions`) of a `build_model(include_top=True)` network."""
    layer = model.layers[-1]
    if not isinstance(layer, keras.layers.Dense):
        raise ValueError(f"{model.name} has no classifier (last layer {layer.name!r} is "
                         f"{type(layer).__name__}); build it with include_top=True.")
    return layer


def outputs_logits(model: keras.Model) -> bool:
    """True when the classifier outputs logits, False for softmax probabilities."""
    activation = classifier_layer(model).activation
    if activation is keras.activations.linear:
        return True
    if activation is keras.activations.softmax:
        return False
    raise ValueError(f"{model.name}: classifier activation {activation.__name__!r} is neither "
                     "softmax nor linear (logits); class probabilities are undefined.")


def _check_destination(path: str, overwrite: bool) -> str:
    path = os.fspath(path).rstrip("/")
    if not path:
        raise ValueError("The export path is empty.")
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another export path or pass "
                              "overwrite=True (--overwrite) to replace it.")
    return path


@contextlib.contextmanager
def _atomic_output(path: str, overwrite: bool):
    """Yield a sibling temporary path; on success move it to `path`, on failure delete it."""
    path = _check_destination(path, overwrite)
    parent, base = os.path.split(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = os.path.join(parent, f".{base}.tmp-{tag}")
    try:
        yield tmp
        old = None
        if tf.io.gfile.exists(path):
            old = os.path.join(parent, f".{base}.old-{tag}")
            tf.io.gfile.rename(path, old)
        tf.io.gfile.rename(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path):
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def _write_export_info(saved_model_dir: str, info: dict):
    path = os.path.join(saved_model_dir, EXPORT_INFO_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(info, indent=2))


def read_export_info(saved_model_dir: str) -> dict | None:
    """The `export_info.json` an export from this module wrote, or None for other SavedModels."""
    path = os.path.join(saved_model_dir, EXPORT_INFO_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _tf_variables(variables) -> list:
    """The tf.Variables behind Keras variables. Saving Keras variable wrappers costs a traced
    save/restore function each; the SavedModel and its consumers only need the tf.Variables."""
    out = [v.value if isinstance(v, keras.Variable) else v for v in variables]
    if not all(isinstance(v, tf.Variable) for v in out):
        raise TypeError("Export needs the TensorFlow backend's variables.")
    return out


def _model_name(model) -> str:
    config = getattr(model, "efficientnet_config", None)
    return config.name if config is not None else model.name


def _input_normalization(model) -> dict | None:
    """The (x - mean) / stddev the network applies to its [0, 255] input, for export_info."""
    config = getattr(model, "efficientnet_config", None)
    if config is None:
        return None
    mean, stddev = config.input_normalization()
    return {"mean": list(mean), "stddev": list(stddev)}


def eval_resize_method(model, resize_method: str | None = None) -> str:
    """`resize_method`, or when None the kernel the reference evaluates this model with."""
    return resize_method or reference_resize_method(_model_name(model))


# ---------------------------------------------------------------------------------------------
# TF Serving SavedModel.


def check_image_bytes(image_bytes):
    """Assertions (InvalidArgument) naming the batch entries that are empty or not in one of
    the IMAGE_FORMATS.

    The decoders' own errors do not say which element of a batch failed.
    """
    padded = tf.strings.join([image_bytes, b"\0" * 12])  # substr fails past the end

    def starts_with(prefix, pos=0):
        return tf.equal(tf.strings.substr(padded, pos, len(prefix)), prefix)

    known = tf.reduce_any(tf.stack([
        starts_with(b"\xff\xd8\xff"), starts_with(b"\x89PNG"), starts_with(b"GIF"),
        starts_with(b"BM"), tf.logical_and(starts_with(b"RIFF"), starts_with(b"WEBP", 8))]),
        axis=0)
    empty = tf.equal(tf.strings.length(image_bytes), 0)
    return [
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(empty)), [
            "image_bytes: empty string(s) at batch indices", tf.where(empty)[:, 0],
            "; expected encoded JPEG or PNG bytes."], summarize=16),
        tf.debugging.Assert(tf.reduce_all(tf.logical_or(known, empty)), [
            f"image_bytes: not a {IMAGE_FORMATS} image at batch indices",
            tf.where(tf.logical_not(tf.logical_or(known, empty)))[:, 0]], summarize=16),
    ]


def check_image_sizes(image_bytes, max_pixels: int):
    """An assertion (InvalidArgument) naming the batch entries whose header claims more than
    `max_pixels` pixels (or no readable size), with those sizes: before anything is decoded."""
    dimensions = tf.map_fn(image_dimensions, image_bytes,
                           fn_output_signature=tf.TensorSpec([2], tf.int64))
    bad = tf.where(too_large(dimensions, max_pixels))[:, 0]
    return tf.debugging.Assert(tf.equal(tf.size(bad), 0), [
        f"image_bytes: image(s) above max_image_pixels={max_pixels} (or of unreadable size) at "
        "batch indices", bad, "; header height, width:", tf.gather(dimensions, bad)],
        summarize=16)


def check_batch_size(batch, max_batch_size: int):
    return tf.debugging.Assert(batch <= max_batch_size, [
        f"batch of more than max_batch_size={max_batch_size} images:", batch])


class ServingModule(tf.__internal__.tracking.AutoTrackable):
    """The object saved as the serving SavedModel; its tf.functions are the signatures.

    Requests above `max_batch_size` images, and encoded images above `max_image_pixels`, are
    refused with InvalidArgument before any decoding: one request must not be able to take the
    server's memory (a 1 MB PNG can decode to 1.2 GB).
    """

    def __init__(self, network, *, apply_softmax: bool, image_size: int, top_k: int,
                 resize_method: str, half_pixel_centers: bool,
                 max_image_pixels: int = MAX_IMAGE_PIXELS,
                 max_batch_size: int = DEFAULT_MAX_BATCH_SIZE):
        super().__init__()
        if isinstance(network, keras.Model):
            # Only the weights enter the object graph; saving Keras objects is slow and useless.
            self.variables = _tf_variables(network.variables)
            self._run = lambda images: network(images, training=False)
        else:
            self.network = network
            self._run = network.__call__
        self._apply_softmax = apply_softmax
        self._image_size = image_size
        self._top_k = top_k
        self._resize = dict(resize_method=resize_method, half_pixel_centers=half_pixel_centers,
                            max_pixels=max_image_pixels)
        self._max_image_pixels = int(max_image_pixels)
        self._max_batch_size = int(max_batch_size)
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
        self.serve_bytes = tf.function(
            self._serve_bytes, input_signature=[tf.TensorSpec([None], tf.string)])

    def _serve_images(self, images):
        with tf.control_dependencies([check_batch_size(tf.shape(images)[0],
                                                       self._max_batch_size)]):
            images = tf.identity(images)
        out = tf.cast(self._run(images), tf.float32)
        probs = tf.nn.softmax(out) if self._apply_softmax else out
        top = tf.math.top_k(probs, k=self._top_k)
        return {"probabilities": probs,
                "classes": tf.argmax(probs, axis=-1, output_type=tf.int64),
                "top_k_classes": tf.cast(top.indices, tf.int64),
                "top_k_probabilities": top.values}

    def preprocess(self, image_bytes):
        with tf.control_dependencies([check_batch_size(tf.size(image_bytes),
                                                       self._max_batch_size)]):
            with tf.control_dependencies(check_image_bytes(image_bytes)):
                with tf.control_dependencies([check_image_sizes(image_bytes,
                                                                self._max_image_pixels)]):
                    image_bytes = tf.identity(image_bytes)
        size = self._image_size
        return tf.map_fn(
            lambda b: preprocess_for_eval(b, size, **self._resize),
            image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))

    def _serve_bytes(self, image_bytes):
        return self.serve_images(self.preprocess(image_bytes))


def export_saved_model(model: keras.Model, export_dir: str, *, image_size: int | None = None,
                       class_names=None, top_k: int = 5, fold_batch_norm: bool = True,
                       resize_method: str | None = None, half_pixel_centers: bool = False,
                       max_image_pixels: int = MAX_IMAGE_PIXELS,
                       max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                       overwrite: bool = False) -> str:
    """Write the TF Serving SavedModel of a classifier from `build_model` (see module docstring).

    Signatures: `serving_default` (`image_bytes`) and `serving_images` (`images`), both with
    outputs `probabilities` float32 [batch, classes], `classes` int64 [batch], `top_k_classes`
    int64 [batch, k], `top_k_probabilities` float32 [batch, k]. `fold_batch_norm` serves the
    folded network (faster on CPU, same output within float32 rounding). `resize_method` (None:
    the model's reference kernel) and `half_pixel_centers` are the eval preprocessing's, as in
    `preprocess_for_eval`. Requests above `max_batch_size` images and images whose header claims
    more than `max_image_pixels` pixels are refused (InvalidArgument) before decoding.
    `class_names` go to export_info.json for `predict`.
    """
    _check_destination(export_dir, overwrite)  # before the slow part
    size = model_image_size(model, image_size)
    num_classes = int(classifier_layer(model).units)
    apply_softmax = outputs_logits(model)
    if top_k < 1:
        raise ValueError(f"top_k={top_k}: must be >= 1.")
    if max_image_pixels < 1 or max_batch_size < 1:
        raise ValueError(f"max_image_pixels={max_image_pixels}, max_batch_size={max_batch_size}: "
                         "each must be >= 1.")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for a {num_classes}-class model.")
    resize_method = eval_resize_method(model, resize_method)
    network = fold_model(model, image_size=size) if fold_batch_norm else model
    module = ServingModule(network, apply_softmax=apply_softmax, image_size=size,
                           top_k=min(top_k, num_classes), resize_method=resize_method,
                           half_pixel_centers=half_pixel_centers,
                           max_image_pixels=max_image_pixels, max_batch_size=max_batch_size)
    info = {
        "format": "efficientnet_tf serving SavedModel",
        "model_name": _model_name(model),
        "image_size": size,
        "num_classes": num_classes,
        "class_names": class_names,
        "top_k": min(top_k, num_classes),
        "batch_norm_folded": bool(fold_batch_norm),
        "resize_method": resize_method,
        "half_pixel_centers": bool(half_pixel_centers),
        "max_image_pixels": int(max_image_pixels),
        "max_batch_size": int(max_batch_size),
        "input_normalization": _input_normalization(model),
        "signatures": {
            SERVING_SIGNATURE: f"image_bytes: string [batch], encoded {IMAGE_FORMATS}; eval "
                               f"preprocessing (center crop, {resize_method} resize to {size}) inside",
            IMAGES_SIGNATURE: f"images: float32 [batch, {size}, {size}, 3] RGB in [0, 255], "
                              "already cropped and resized",
        },
    }
    with _atomic_output(export_dir, overwrite) as tmp:
        # Inference only: no gradient functions (the hub export keeps them for fine-tuning).
        tf.saved_model.save(module, tmp, signatures={SERVING_SIGNATURE: module.serve_bytes,
                                                     IMAGES_SIGNATURE: module.serve_images},
                            options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
        _write_export_info(tmp, info)
    logging.info("Exported %s (%d px, %d classes) to %s.", info["model_name"], size, num_classes,
                 export_dir)
    return os.fspath(export_dir)


# ---------------------------------------------------------------------------------------------
# TF-Hub Reusable SavedModels.


class HubModule(tf.__internal__.tracking.AutoTrackable):
    """Reusable SavedModel API: `obj(images, training=False)`, `variables`,
    `trainable_variables`, `regularization_losses`; images float32 [batch, S, S, 3] in [0, 1].

    `training=True` runs BN on batch statistics (updating the moving averages), stochastic depth
    and, for `classification`, the dropout before the classifier; nothing is applied after the
    output. `call_training` is the same with training=True and a single argument, for
    `keras.layers.TFSMLayer(path, call_endpoint="__call__", call_training_endpoint=
    "call_training")`.
    """

    def __init__(self, model: keras.Model, variant: str, image_size: int, weight_decay: float):
        super().__init__()
        if variant not in HUB_VARIANTS:
            raise ValueError(f"variant={variant!r}: must be one of {HUB_VARIANTS}")
        dense = classifier_layer(model) if variant == "classification" else None
        backbone = keras.Model(model.inputs, model.get_layer("avg_pool").output,
                               name=f"{model.name}_features")
        dropout = next((layer for layer in model.layers
                        if isinstance(layer, keras.layers.Dropout)), None)

        # The Keras objects stay in this closure, out of the SavedModel's object graph (saving
        # them is slow and useless to a consumer); the variable lists keep the weights.
        def call(images, training=False):
            x = backbone(tf.cast(images, tf.float32) * 255.0, training=training)
            if dense is None:
                return x
            if dropout is not None:
                x = dropout(x, training=training)
            return tf.nn.bias_add(tf.matmul(x, dense.kernel), dense.bias)

        owner = model if dense is not None else backbone
        self.variables = _tf_variables(owner.variables)
        self.trainable_variables = _tf_variables(owner.trainable_variables)
        self.regularization_losses = [
            tf.function(lambda: l2_loss(owner, weight_decay), input_signature=[])]
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        self.__call__ = tf.function(call)
        for training in (False, True):
            self.__call__.get_concrete_function(spec, training=training)
        # Both call the traced __call__ instead of tracing the Keras model again.
        self.call_training = tf.function(lambda images: self.__call__(images, training=True),
                                         input_signature=[spec])
        output_key = "logits" if dense is not None else "feature_vector"
        self.serve = tf.function(
            lambda images: {output_key: self.__call__(images, training=False)},
            input_signature=[spec])


def export_hub(model: keras.Model, export_dir: str, *, image_size: int | None = None,
               weight_decay: float = 1e-5, overwrite: bool = False) -> dict:
    """Write `export_dir/classification` (logits) and `export_dir/feature_vector` (pooled features).

    `model` is a `build_model(include_top=True)` classifier (its classifier activation does not
    matter: `classification` outputs logits). Input float32 [batch, S, S, 3] RGB in [0, 1].
    `regularization_losses[0]()` is the recipe's L2 term, weight_decay·Σw²/2 over the variant's
    weights except BN γ/β. Returns {variant: path}.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}: must be >= 0.")
    classifier_layer(model)
    size = model_image_size(model, image_size)
    paths = {}
    with _atomic_output(export_dir, overwrite) as tmp:
        for variant in HUB_VARIANTS:
            module = HubModule(model, variant, size, weight_decay)
            out = os.path.join(tmp, variant)
            tf.saved_model.save(module, out, signatures={SERVING_SIGNATURE: module.serve})
            _write_export_info(out, {
                "format": f"efficientnet_tf TF-Hub reusable SavedModel ({variant})",
                "model_name": _model_name(model),
                "image_size": size,
                "input": f"float32 [batch, {size}, {size}, 3] RGB in [0, 1] (TF-Hub image "
                         "convention; scaled by 255 inside)",
                "output": ("logits [batch, classes]" if variant == "classification"
                           else "pooled features [batch, channels], no dropout"),
                "weight_decay": weight_decay,
            })
            paths[variant] = os.path.join(os.fspath(export_dir), variant)
    logging.info("Exported TF-Hub SavedModels %s.", ", ".join(paths.values()))
    return paths


# ---------------------------------------------------------------------------------------------
# TFLite.


def calibration_images(data_config, image_size: int, num_images: int = 200,
                       batch_size: int = 32):
    """Yield float32 [S, S, 3] training images for int8 calibration (e.g. from --data_dir).

    The training pipeline (shuffled crops and flips) with AutoAugment/RandAugment and
    mixup/cutmix off: calibration should see the real input distribution, not augmented
    extremes.
    """
    from efficientnet_tf.data import build_dataset

    config = data_config.replace(augment_name=None, mixup_alpha=0.0, cutmix_alpha=0.0)
    ds = build_dataset(config, "train", min(batch_size, num_images), image_size=image_size)
    count = 0
    for images, _ in ds:
        for image in images.numpy():
            if count >= num_images:
                return
            count += 1
            yield image


def _representative_dataset(representative_images, size: int, limit: int):
    """Yield [1, S, S, 3] float32 from an iterable of images [S, S, 3] or batches [B, S, S, 3]."""
    count = 0
    for item in representative_images:
        batch = np.asarray(item, np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"representative_images: got an array of shape {batch.shape}; "
                             f"expected [{size}, {size}, 3] or [batch, {size}, {size}, 3] RGB "
                             "in [0, 255] at the model resolution.")
        for image in batch:
            if count >= limit:
                return
            count += 1
            yield [image[None]]
    if count == 0:
        raise ValueError("representative_images is empty; int8 calibration needs images.")


def export_tflite(model: keras.Model, path: str, *, quantize: str | None = None,
                  representative_images=None, max_calibration_images: int = 200,
                  image_size: int | None = None, overwrite: bool = False) -> str:
    """Write a TFLite flatbuffer of the BN-folded network: float32 RGB [1, S, S, 3] in [0, 255]
    -> the model's output (probabilities for a softmax classifier, features for a backbone).
    Float32 output equals the Keras model's up to float32 rounding (tested: |Δp| <= 1e-5).

    quantize: None (float32), "dynamic" (int8 weights, float activations) or "int8" (integer
    weights and activations, calibrated on up to `max_calibration_images` of
    `representative_images`; input and output stay float32).
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize={quantize!r}: must be one of {QUANTIZE_MODES}.")
    if quantize == "int8" and representative_images is None:
        raise ValueError("quantize='int8' needs representative_images (e.g. a few hundred "
                         "preprocessed training images, from --data_dir).")
    if quantize != "int8" and representative_images is not None:
        raise ValueError(f"representative_images are only used with quantize='int8', not "
                         f"{quantize!r}.")
    if not os.fspath(path).endswith(".tflite"):
        raise ValueError(f"path={path!r}: must end with '.tflite'.")
    _check_destination(path, overwrite)
    size = model_image_size(model, image_size)
    folded = fold_model(model, image_size=size)
    fn = tf.function(folded.__call__, input_signature=[
        tf.TensorSpec([1, size, size, 3], tf.float32, name="images")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], folded)
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        converter.representative_dataset = lambda: _representative_dataset(
            representative_images, size, max_calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()
    write_bytes_atomic(os.fspath(path), flatbuffer)  # the destination was checked above
    logging.info("Wrote %s (%s, %.1f MB).", path, quantize or "float32", len(flatbuffer) / 2**20)
    return os.fspath(path)
