"""Parameter and FLOP counts, measured from the built graph and set against the paper's Table 2.

FLOPs here are multiply-accumulates (MACs), the unit of the paper's "FLOPS (multiply-adds)" column,
counted per image (batch 1) from the ops of the traced inference graph:

- Conv2D: H_out * W_out * C_out * kh * kw * C_in_per_group (the filter's input dimension): the
  stem, every expand/project 1x1 conv and the head conv.
- DepthwiseConv2dNative: H_out * W_out * C_in * multiplier * kh * kw.
- MatMul / BatchMatMul: batch * m * k * n: the classifier and the two 1x1 convs of each
  squeeze-and-excitation, which run as matmuls on the pooled vector (well under 1% in all), and
  CondConv's per-example mix of its experts (routing @ experts).
- Einsum (two operands): the product of every index's size: CondConv's 1x1 convs, which apply a
  per-example kernel.

Everything else is deliberately not counted, as in the paper: elementwise arithmetic (BatchNorm in
inference form, input normalization, activations, SE's sigmoid and gating multiply, residual adds),
bias adds, reductions (global average pooling, SE's squeeze), softmax, and graph bookkeeping. An op
type in neither list raises, so a new layer can never be silently left out of the count.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from efficientnet_tf import config as cfg

_CONV_OPS = {"Conv2D", "DepthwiseConv2dNative"}
_MATMUL_OPS = {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
_CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall"}
_UNCOUNTED_OPS = frozenset({
    # Graph bookkeeping.
    "Placeholder", "Const", "ReadVariableOp", "Identity", "IdentityN", "NoOp", "Cast",
    "Reshape", "Squeeze", "ExpandDims", "Shape", "Pack", "StridedSlice", "ConcatV2", "Pad",
    "Transpose", "StopGradient",
    # Elementwise arithmetic: BN (inference form), normalization, residual adds, SE gating.
    "Add", "AddV2", "Sub", "Mul", "RealDiv", "Neg", "Square", "Sqrt", "Rsqrt", "Maximum",
    "Minimum", "BiasAdd",
    # Activations.
    "Sigmoid", "Relu", "Relu6", "Elu", "Selu", "Tanh", "Erf", "Erfc", "Exp", "Softplus", "Softmax",
    "LogSoftmax",
    # Reductions: global pooling and SE's squeeze.
    "Mean", "Max", "Sum",
})

# Paper Table 2: (params, multiply-adds).
PAPER_TABLE2 = {
    "efficientnet-b0": (5.3e6, 0.39e9),
    "efficientnet-b1": (7.8e6, 0.70e9),
    "efficientnet-b2": (9.2e6, 1.0e9),
    "efficientnet-b3": (12e6, 1.8e9),
    "efficientnet-b4": (19e6, 4.2e9),
    "efficientnet-b5": (30e6, 9.9e9),
    "efficientnet-b6": (43e6, 19e9),
    "efficientnet-b7": (66e6, 37e9),
}

def _dims(tensor, op):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(f"Cannot count FLOPs of op {op.name!r} ({op.type}): tensor {tensor.name} "
                         f"has unknown shape {shape}; trace with a fully defined input shape.")
    return shape.as_list()


def _op_macs(op) -> int:
    if op.type in _CONV_OPS:
        out = _dims(op.outputs[0], op)
        kh, kw, c_in, mult = _dims(op.inputs[1], op)
        nhwc = op.get_attr("data_format").decode() == "NHWC"
        n, h, w = (out[0], out[1], out[2]) if nhwc else (out[0], out[2], out[3])
        # Conv2D's filter is [kh, kw, C_in/groups, C_out]; depthwise's [kh, kw, C_in, multiplier].
        return n * h * w * kh * kw * c_in * mult
    if op.type == "Einsum":
        inputs, _ = op.get_attr("equation").decode().split("->")
        sizes = {}
        for spec, tensor in zip(inputs.split(","), op.inputs):
            if "." in spec or len(op.inputs) != 2:
                raise ValueError(f"Cannot count FLOPs of einsum {op.name!r}: only two operands "
                                 "without ellipsis.")
            sizes.update(zip(spec, _dims(tensor, op)))
        return math.prod(sizes.values())  # one multiply-add per combination of all indices
    # Every output element is a dot product over the contracted dimension k.
    a = _dims(op.inputs[0], op)
    if op.type == "MatMul":
        k = a[0] if op.get_attr("transpose_a") else a[1]
    else:
        k = a[-2] if op.get_attr("adj_x") else a[-1]
    return math.prod(_dims(op.outputs[0], op)) * k


def _walk(graph):
    """All ops of `graph`, descending into called functions (Keras runs grouped convs in one)."""
    for op in graph.get_operations():
        if op.type in _CALL_OPS:
            yield from _walk(graph._get_function(op.get_attr("f").name).graph)
        else:
            yield op


def count_flops(model: keras.Model, input_shape=None) -> int:
    """Multiply-adds of one image through `model` in inference mode (see the module docstring).

    input_shape: (H, W, C) to trace at; defaults to the model's own input shape.
    """
    if len(model.inputs) != 1:
        raise ValueError(f"count_flops: model {model.name!r} has {len(model.inputs)} inputs; "
                         "only single-input models are supported.")
    if input_shape is None:
        input_shape = tuple(model.inputs[0].shape[1:])
    input_shape = tuple(input_shape)
    if any(d is None for d in input_shape):
        raise ValueError(f"count_flops: model {model.name!r} has input shape {input_shape} with "
                         "unknown dimensions; pass input_shape=(H, W, C).")
    spec = tf.TensorSpec((1,) + input_shape, dtype=model.inputs[0].dtype)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph

    ops = list(_walk(graph))
    unknown = sorted({op.type for op in ops} - _CONV_OPS - _MATMUL_OPS - _UNCOUNTED_OPS)
    if unknown:
        raise ValueError(f"count_flops: model {model.name!r} has op types {unknown} that are "
                         "neither counted nor known to be negligible; add them to "
                         "efficientnet_tf.profile.")
    return sum(_op_macs(op) for op in ops if op.type in _CONV_OPS or op.type in _MATMUL_OPS)


def count_params(model: keras.Model) -> tuple[int, int]:
    """(trainable, total) parameter counts; total adds BN moving statistics."""
    def size(weights):
        return sum(math.prod(w.shape) for w in weights)

    return size(model.trainable_weights), size(model.weights)


def _paper_values(config: cfg.ModelConfig, resolution: int):
    """Table 2 numbers, or None where the profiled network is not the one the paper measured."""
    if config.name not in PAPER_TABLE2:
        return None, None
    reference = cfg.get_model_config(config.name)
    if (config.replace(resolution=reference.resolution).architecture()
            != reference.architecture()):  # not the network the paper measured
        return None, None
    params, flops = PAPER_TABLE2[config.name]
    return params, (flops if resolution == reference.resolution else None)


def profile_model(name_or_config, resolution: int | None = None) -> dict:
    """Build the classifier (1000 classes unless the config says otherwise) and count it.

    name_or_config: a model name ('efficientnet-b0', ...) or a `ModelConfig`.
    resolution: input size to count FLOPs at; defaults to the model's native resolution.
    """
    from efficientnet_tf.model import build_model

    if isinstance(name_or_config, cfg.ModelConfig):
        config = name_or_config
    elif isinstance(name_or_config, str):
        config = cfg.get_model_config(name_or_config)
    else:
        raise TypeError(f"profile_model: expected a model name or ModelConfig, got "
                        f"{type(name_or_config).__name__}")
    if resolution is None:
        resolution = config.resolution
    if not isinstance(resolution, int) or resolution < 32:
        raise ValueError(f"profile_model: resolution={resolution!r} must be an integer >= 32.")

    model = build_model(config=config, input_shape=(resolution, resolution, 3))
    trainable, total = count_params(model)
    flops = count_flops(model)
    paper_params, paper_flops = _paper_values(config, resolution)
    del model
    keras.backend.clear_session()
    return {"model": config.name, "resolution": resolution, "params_trainable": trainable,
            "params_total": total, "flops": flops, "paper_params": paper_params,
            "paper_flops": paper_flops}


def profile_models(names) -> list[dict]:
    """`profile_model` for each name (or config), one model in memory at a time."""
    return [profile_model(name) for name in names]


def _fmt(value, scale, digits):
    return "-" if value is None else f"{value / scale:.{digits}f}"


def format_profile_table(rows) -> str:
    """Aligned text table: params (M) and multiply-adds (B), ours vs paper, and ours/paper ratio."""
    header = ("model", "res", "params(M)", "paper(M)", "total(M)", "MACs(B)", "paper(B)",
              "MACs/paper")
    lines = [header]
    for r in rows:
        ratio = "-" if not r["paper_flops"] else f"{r['flops'] / r['paper_flops']:.3f}"
        lines.append((r["model"], str(r["resolution"]), _fmt(r["params_trainable"], 1e6, 3),
                      _fmt(r["paper_params"], 1e6, 1), _fmt(r["params_total"], 1e6, 3),
                      _fmt(r["flops"], 1e9, 3), _fmt(r["paper_flops"], 1e9, 2), ratio))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [" ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(line, widths))) for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)
