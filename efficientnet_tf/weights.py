"""Weight import: converted files, keras.applications files and official TF1 checkpoints.

Every source is first read into one form -- {our layer path: [(source name, array), ...]} with
paths like `stem_conv`, `block2a/expand_conv`, `block2a/se/se_reduce`, `predictions` -- and then
copied by `_assign`, which checks everything before it touches a variable: anything missing,
unexpected or mis-shaped is reported together in one ValueError, never as a partial load.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from efficientnet_tf import config as cfg
from efficientnet_tf.config import ConfigError
from efficientnet_tf.files import copy_atomic
from efficientnet_tf.layers import MBConvBlock
from efficientnet_tf.network import (
    build_feature_network,
    build_network,
    model_config,
    resolve_config,
)

# Source kinds.
TF1_CHECKPOINT = "tf1_checkpoint"
LEGACY_H5 = "keras_applications_legacy_h5"
KERAS_APPLICATIONS_H5 = "keras_applications_weights_h5"
EFFICIENTNET_TF_H5 = "efficientnet_tf_weights_h5"

# Layers a headless target (backbone, feature extractor) may leave unused.
_CLASSIFIER = "predictions"
_HEAD_ONLY = ("top_conv", "top_bn", _CLASSIFIER)

_KA_BLOCK_RE = re.compile(r"^(block\d+[a-z]+)_(expand_conv|expand_bn|dwconv|bn|se_reduce|se_expand"
                          r"|project_conv|project_bn)$")
_KA_TOP_LEVEL = ("stem_conv", "stem_bn", "top_conv", "top_bn", _CLASSIFIER)
# keras.applications normalizes with a stateful, auto-named layer; ours is constant ops.
_KA_NORMALIZATION_RE = re.compile(r"^normalization(_\d+)?$")

_EMA_SUFFIX = "/ExponentialMovingAverage"
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a weights source is, found from its header alone (no arrays read)."""

    kind: str
    path: str  # the file, or the TF1 checkpoint prefix
    classes: int | None  # classifier width; None when the source has no classifier
    has_head: bool = True  # False only for our own feature-extractor files


@dataclasses.dataclass
class _Source:
    origin: str
    weights: dict  # layer path -> [(source name, np.ndarray), ...]
    missing: list = dataclasses.field(default_factory=list)  # source names
    unexpected: list = dataclasses.field(default_factory=list)  # source names
    incomplete: set = dataclasses.field(default_factory=set)  # paths already reported missing


def inspect_source(path) -> SourceInfo:
    """Detect the format of `path`: a TF1 checkpoint (prefix or directory) or an h5 layout."""
    path = os.fspath(path)
    prefix = _tf1_prefix(path)
    if prefix is not None:
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
        dense = [n for n in shapes if n.endswith("/head/dense/kernel")]
        return SourceInfo(TF1_CHECKPOINT, prefix, shapes[dense[0]][-1] if dense else None)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights source not found: {path}")
    if not h5py.is_hdf5(path):
        raise ConfigError(
            f"{path}: not a weights source this package reads. Expected a TF1 checkpoint (prefix "
            "or directory with a 'checkpoint' file), a keras.applications EfficientNet .h5 or "
            ".weights.h5 file, or a file written by `convert`.")
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            names = [_text(n) for n in root.attrs["layer_names"]]
            classes = None
            if _CLASSIFIER in names and root[_CLASSIFIER].attrs["weight_names"].size:
                kernel = root[_CLASSIFIER][_text(root[_CLASSIFIER].attrs["weight_names"][0])]
                classes = kernel.shape[-1]
            return SourceInfo(LEGACY_H5, path, classes)
        if "layers" in f:
            classes = f["layers/dense/vars/0"].shape[-1] if "layers/dense/vars/0" in f else None
            if "layers/mb_conv_block" in f:
                return SourceInfo(EFFICIENTNET_TF_H5, path, classes,
                                  has_head="layers/conv2d_1" in f)
            if "layers/depthwise_conv2d" in f and "layers/normalization" in f:
                return SourceInfo(KERAS_APPLICATIONS_H5, path, classes)
    raise ConfigError(
        f"{path}: an HDF5 file, but neither the legacy Keras layout (root attribute 'layer_names') "
        "nor a Keras 3 .weights.h5 of an EfficientNet (ours or keras.applications).")


def load_weights(model: keras.Model, path) -> None:
    """Load a converted file, a keras.applications .h5/.weights.h5 or an official TF1 checkpoint
    into a model from build_model/build_feature_extractor.

    Headless targets skip the source's head; a classifier of another width is skipped (logged).
    """
    config = _target_config(model)
    _assign(model, _read_source(inspect_source(path), config, model))


def convert(model_name, ckpt_path, output, *, num_classes=None, overrides=None,
            config=None, resize_method=None, published=None) -> str:
    """Import `ckpt_path` into our model and write it to `output` (.weights.h5), atomically.

    The architecture comes from `config`, or `model_name` plus `overrides`. The classifier width
    is `num_classes` when given, else the source's (config.num_classes is not used for it). A source
    without a classifier (e.g. `efficientnetb0_notop.h5`) gives a backbone file (include_top=False).
    The file records its preprocessing (`read_record`): the config's resolution, normalization
    and classes, `resize_method` (default: the model's reference kernel) and the 0.875 crop;
    `published` names the published checkpoint it came from (`published.CHECKPOINTS`).
    """
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ConfigError(f"output={output!r}: must end with '.weights.h5'.")
    if config is not None and model_name not in (None, config.name):
        raise ConfigError(f"model_name={model_name!r} contradicts config.name={config.name!r}.")
    config = resolve_config(model_name=None if config else model_name, config=config,
                            **(overrides or {}))
    info = inspect_source(ckpt_path)
    classes = num_classes if num_classes is not None else info.classes
    if classes is None:
        logging.info("%s has no classifier: writing a backbone (include_top=False).", info.path)
    model = build_network(config if classes is None else config.with_classes(classes),
                          include_top=classes is not None)
    _assign(model, _read_source(info, config, model))
    record = preprocessing_record(model_config(model), include_top=classes is not None,
                                  resize_method=resize_method, published=published,
                                  source=info.path)
    save_weights_atomic(model, output, record=record)
    logging.info("Converted %s (%s) to %s.", info.path, info.kind, output)
    return output


# A converted file's record: a JSON root attribute of the .weights.h5 (Keras ignores it), so the
# file cannot lose it. One source of truth, the ModelConfig ("model"); "preprocessing" spells
# out for a reader what that config and the eval resize imply, and must agree with them.
RECORD_ATTRIBUTE = "efficientnet_tf_record"


def preprocessing_record(config: cfg.ModelConfig, *, include_top: bool = True,
                         resize_method: str | None = None, half_pixel_centers: bool = False,
                         published: str | None = None, source: str | None = None) -> dict:
    """What a weights file needs to be fed correctly: its network and eval preprocessing."""
    from efficientnet_tf.published import CROP_FRACTION, get_published

    mean, stddev = config.input_normalization()
    resize_method = resize_method or cfg.reference_resize_method(config.name)
    if resize_method not in cfg.RESIZE_METHODS:
        raise ConfigError(f"resize_method={resize_method!r}: must be one of "
                          f"{', '.join(cfg.RESIZE_METHODS)}.")
    return {
        "model": config.to_dict(),
        "preprocessing": {
            "resolution": config.resolution, "crop_fraction": CROP_FRACTION,
            "resize_method": resize_method, "half_pixel_centers": bool(half_pixel_centers),
            "mean_rgb": list(mean), "stddev_rgb": list(stddev),
            "input_range": "[-1, 1]" if config.advprop_preprocessing else "mean/stddev",
            "num_classes": config.num_classes if include_top else None,
            "label_offset": config.label_offset if include_top else 0,
        },
        "published": published,
        "published_top_1": get_published(published).top_1 if published else None,
        "source": source,
    }


def describe_preprocessing(config: cfg.ModelConfig, preprocessing: dict,
                           resize_method: str | None = None) -> str:
    """One line on how a weights file is fed: `config` (the record's, or with overrides) and
    the record's preprocessing, with `resize_method` overriding its resize kernel."""
    from efficientnet_tf.published import normalization_text

    text = (f"{config.name} at {config.resolution} px, center crop "
            f"{preprocessing['crop_fraction']:g}, "
            f"{resize_method or preprocessing['resize_method']} resize, input "
            f"{normalization_text(config)}")
    if preprocessing["num_classes"] is None:
        return text + ", no classifier"
    text += f", {config.num_classes} classes"
    if config.label_offset == 1:
        text += " (class 0 is background)"
    elif config.label_offset:
        text += f" (classes 0..{config.label_offset - 1} are background)"
    return text


def read_record(path) -> dict | None:
    """The record of a file written by `convert` (or a run's best weights); None for any other
    source. Checked: a record whose preprocessing contradicts its model is refused."""
    path = os.fspath(path)
    if not (os.path.isfile(path) and h5py.is_hdf5(path)):
        return None
    with h5py.File(path, "r") as f:
        text = f.attrs.get(RECORD_ATTRIBUTE)
    if text is None:
        return None
    try:
        record = json.loads(_text(text))
        config = cfg.ModelConfig.from_dict(record["model"])
        stated = record["preprocessing"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: unreadable preprocessing record ({e}).") from e
    expected = preprocessing_record(config, include_top=stated.get("num_classes") is not None,
                                    resize_method=stated.get("resize_method"),
                                    half_pixel_centers=stated.get("half_pixel_centers") is True
                                    )["preprocessing"]
    if stated != expected:
        wrong = sorted(k for k in set(stated) | set(expected) if stated.get(k) != expected.get(k))
        raise ConfigError(f"{path}: its preprocessing record contradicts its model config in "
                          f"{wrong} (edited by hand?); this package evaluates with "
                          f"{ {k: expected[k] for k in wrong} }.")
    return {**record, "model_config": config}


def save_weights_atomic(model: keras.Model, output, record: dict | None = None) -> str:
    """Keras writes .weights.h5 in place and to local paths only: write a local temp file (with
    its `record`, see `preprocessing_record`), then copy it so that `output` (local or gs://)
    never holds half a file."""
    output = os.fspath(output)
    if not output.endswith(".weights.h5"):
        raise ConfigError(f"output={output!r}: must end with '.weights.h5'.")
    with tempfile.TemporaryDirectory(prefix="efficientnet_tf-") as tmp_dir:
        local = os.path.join(tmp_dir, "model.weights.h5")
        model.save_weights(local)
        if record is not None:
            with h5py.File(local, "a") as f:
                f.attrs[RECORD_ATTRIBUTE] = json.dumps({k: v for k, v in record.items()
                                                        if k != "model_config"}, sort_keys=True)
        copy_atomic(local, output)
    return output


def weight_layers(model: keras.Model) -> dict:
    """{layer path: layer} for every layer that owns weights, MBConv sub-layers included."""
    out = {}
    for layer in model.layers:
        if isinstance(layer, MBConvBlock):
            for sub in (layer.routing, layer.expand_conv, layer.expand_bn, layer.dwconv,
                        layer.bn, layer.project_conv, layer.project_bn):
                if sub is not None:
                    out[f"{layer.name}/{sub.name}"] = sub
            if layer.se is not None:
                for sub in (layer.se.se_reduce, layer.se.se_expand):
                    out[f"{layer.name}/se/{sub.name}"] = sub
        elif layer.weights:
            out[layer.name] = layer
    return out


def _target_config(model) -> cfg.ModelConfig:
    config = model_config(model)
    if config is None:
        raise ValueError(f"load_weights: model {model.name!r} has no ModelConfig; build it with "
                         "build_model or build_feature_extractor.")
    return config


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _tf1_prefix(path: str) -> str | None:
    """The checkpoint prefix when `path` names a TF1 checkpoint, else None."""
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "checkpoint")):
            raise FileNotFoundError(f"{path}: a directory without a 'checkpoint' file; pass the "
                                    f"checkpoint prefix (e.g. {path}/model.ckpt-12345) instead.")
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise FileNotFoundError(f"{path}/checkpoint names no checkpoint whose files exist.")
        return prefix
    if path.endswith(".index") and os.path.exists(path):
        return path[: -len(".index")]
    if os.path.exists(path + ".index"):
        return path
    return None


def _read_source(info: SourceInfo, config: cfg.ModelConfig, target: keras.Model) -> _Source:
    if info.kind == TF1_CHECKPOINT:
        return _read_tf1(info.path, target)
    if info.kind == LEGACY_H5:
        return _from_keras_applications(_read_legacy_h5(info.path), info.path, config)
    if info.kind == KERAS_APPLICATIONS_H5:
        return _read_keras_applications_h5(info, config)
    return _read_efficientnet_tf_h5(info, config)


def _assign(model: keras.Model, source: _Source) -> None:
    """Check every layer first, then copy; one ValueError lists all problems."""
    targets = weight_layers(model)
    missing = list(source.missing)
    missing += [p for p in targets if p not in source.weights and p not in source.incomplete]
    unexpected = list(source.unexpected)
    mismatched, not_in_model, skip_classifier = [], [], False
    for path, arrays in source.weights.items():
        layer = targets.get(path)
        if layer is None:
            if path in _HEAD_ONLY:
                not_in_model.append(path)
            else:
                unexpected += [name for name, _ in arrays]
            continue
        want = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for _, a in arrays]
        if want == got:
            continue
        if path == _CLASSIFIER and len(got) == 2 and got[0][:-1] == want[0][:-1]:
            logging.info("%s: classifier has %d classes, the model %d: not loading %r.",
                         source.origin, got[0][-1], want[0][-1], path)
            skip_classifier = True
            continue
        mismatched.append(f"{path} expects {want}, got "
                          + ", ".join(f"{name} {tuple(a.shape)}" for name, a in arrays))
    if missing or unexpected or mismatched:
        parts = [f"{label} ({len(items)}): " + "; ".join(items)
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("shape mismatch", mismatched)) if items]
        raise ConfigError(f"Cannot load {source.origin} into model {model.name!r}: "
                         + " | ".join(parts))
    for path, layer in targets.items():
        if not (skip_classifier and path == _CLASSIFIER):
            layer.set_weights([np.asarray(a, dtype=w.dtype)
                               for (_, a), w in zip(source.weights[path], layer.weights)])
    if not_in_model:
        logging.info("%s: model %r has no %s; not loading them.", source.origin, model.name,
                     not_in_model)
    logging.info("Loaded %d layers from %s into %r.", len(targets) - skip_classifier,
                 source.origin, model.name)


# --- official TF1 checkpoints ---------------------------------------------------------------

def _tf1_layer_names(target: keras.Model, with_classifier: bool) -> dict:
    """{our path: [TF1 names without scope]} in Keras variable order; blocks_i in build order.

    The reference names tf.layers variables by call order within each block's scope (`conv2d`,
    `conv2d_1`, ...). Its CondConv layers are Keras layers: their names carry a model-wide
    counter (an unused fused conv per block takes one too) under an extra `model/` level.
    """
    def bn(prefix):
        return [f"{prefix}/{v}" for v in _BN_VARS]

    names = {"stem_conv": ["stem/conv2d/kernel"], "stem_bn": bn("stem/tpu_batch_normalization")}
    blocks = [layer for layer in target.layers if isinstance(layer, MBConvBlock)]
    condconv_index = 0
    for i, block in enumerate(blocks):
        p, b = f"blocks_{i}", block.name
        bns = iter(bn(f"{p}/tpu_batch_normalization{s}") for s in ("", "_1", "_2"))
        if block.num_experts:
            c = condconv_index
            condconv_index += 1
            names[f"{b}/routing"] = [f"{p}/dense/kernel", f"{p}/dense/bias"]
            convs = iter(f"model/{p}/{_keras_name('cond_conv2d', n)}/condconv_kernel"
                         for n in (3 * c + 1, 3 * c + 2))
            depthwise = (f"model/{p}/{_keras_name('depthwise_cond_conv2d', c)}"
                         "/depthwise_condconv_kernel")
        else:
            convs = iter(f"{p}/{_keras_name('conv2d', n)}/kernel" for n in (0, 1))
            depthwise = f"{p}/depthwise_conv2d/depthwise_kernel"
        if block.expand_conv is not None:
            names[f"{b}/expand_conv"] = [next(convs)]
            names[f"{b}/expand_bn"] = next(bns)
        if block.dwconv is not None:
            names[f"{b}/dwconv"] = [depthwise]
            names[f"{b}/bn"] = next(bns)
        names[f"{b}/project_conv"] = [next(convs)]
        names[f"{b}/project_bn"] = next(bns)
        if block.se is not None:
            names[f"{b}/se/se_reduce"] = [f"{p}/se/conv2d/kernel", f"{p}/se/conv2d/bias"]
            names[f"{b}/se/se_expand"] = [f"{p}/se/conv2d_1/kernel", f"{p}/se/conv2d_1/bias"]
    names["top_conv"] = ["head/conv2d/kernel"]
    names["top_bn"] = bn("head/tpu_batch_normalization")
    if with_classifier:
        names[_CLASSIFIER] = ["head/dense/kernel", "head/dense/bias"]
    return names


def _keras_name(base: str, n: int) -> str:
    return base if n == 0 else f"{base}_{n}"


_CONDCONV_RE = re.compile(r"^(?:model/)?(blocks_\d+)/(cond_conv2d|depthwise_cond_conv2d)(?:_(\d+))?"
                          r"/(?:depthwise_)?condconv_kernel$")


def _condconv_aliases(expected, available, scope: str) -> dict:
    """{reference name: checkpoint name} for CondConv kernels whose counters or `model/` level
    differ from a fresh reference graph's (e.g. a graph that built another model first). Within
    a block, kernels of one kind pair up in counter order: expand, then project."""
    def by_block(names, prefix=""):
        groups = {}
        for name in names:
            m = _CONDCONV_RE.match(name[len(prefix):])
            if m and name.startswith(prefix):
                groups.setdefault(m.group(1, 2), []).append((int(m.group(3) or 0), name))
        return {key: [n for _, n in sorted(entries)] for key, entries in groups.items()}

    found = by_block(available, f"{scope}/")
    aliases = {}
    for key, names in by_block(expected).items():
        if len(found.get(key, ())) == len(names):
            aliases.update(zip(names, (n[len(scope) + 1:] for n in found[key])))
    return aliases


def _is_tf1_ignored(name: str) -> bool:
    """Optimizer slots and the step counter carry no model state."""
    return name == "global_step" or any(part.startswith("RMSProp") for part in name.split("/"))


def _read_tf1(prefix: str, target: keras.Model) -> _Source:
    reader = tf.train.load_checkpoint(prefix)
    available = {n for n in reader.get_variable_to_shape_map() if not _is_tf1_ignored(n)}
    config = _target_config(target)
    scopes = sorted({n.split("/", 1)[0] for n in available})
    if config.name in scopes:
        scope = config.name
    else:
        candidates = [s for s in scopes if s.startswith("efficientnet")]
        if len(candidates) != 1:
            raise ConfigError(f"{prefix}: expected one 'efficientnet-*' variable scope, found "
                              f"{scopes}.")
        scope = candidates[0]
        logging.warning("%s: checkpoint scope %r, model %r: mapping by structure.", prefix, scope,
                        config.name)
    with_classifier = f"{scope}/head/dense/kernel" in available
    source = _Source(origin=f"TF1 checkpoint {prefix}", weights={})
    used, raw = set(), []
    expected = _tf1_layer_names(target, with_classifier)
    aliases = _condconv_aliases([n for names in expected.values() for n in names], available,
                                scope)
    for path, names in expected.items():
        arrays = []
        for short in names:
            name = f"{scope}/{aliases.get(short, short)}"
            used.update((name, name + _EMA_SUFFIX))
            if name + _EMA_SUFFIX in available:
                arrays.append((name + _EMA_SUFFIX, reader.get_tensor(name + _EMA_SUFFIX)))
            elif name in available:
                arrays.append((name, reader.get_tensor(name)))
                raw.append(name)
            else:
                source.missing.append(name)
        if len(arrays) == len(names):
            source.weights[path] = arrays
        else:
            source.incomplete.add(path)
    source.unexpected = sorted(available - used)
    total = sum(len(a) for a in source.weights.values())
    logging.info("%s: %d of %d variables from ExponentialMovingAverage shadows.", prefix,
                 total - len(raw), total)
    if raw:
        logging.info("%s: no EMA shadow, raw values used for: %s", prefix, raw)
    return source


# --- keras.applications files -----------------------------------------------------------------

def _read_legacy_h5(path: str) -> dict:
    """{keras layer name: [(weight name, array)]} from the Keras 2 layer-name keyed layout."""
    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer_name in (_text(n) for n in root.attrs["layer_names"]):
            group = root[layer_name]
            names = [_text(n) for n in group.attrs.get("weight_names", [])]
            if names:
                out[layer_name] = [(n, np.asarray(group[n])) for n in names]
    return out


def _keras_applications_variant(config: cfg.ModelConfig) -> int:
    """i such that keras.applications.EfficientNetB{i} has the graph of `config`."""
    for i in range(8):
        ref = cfg.get_model_config(f"efficientnet-b{i}")
        if config.backbone() == ref.backbone():
            return i
    raise ConfigError(f"keras.applications provides EfficientNetB0..B7 only; model {config.name!r} "
                      f"(width {config.width_coefficient}, depth {config.depth_coefficient}) is "
                      "none of them.")


@contextlib.contextmanager
def _as_weights_h5(path: str):
    """Keras 3 loads only names ending in '.weights.h5'; link other names to one."""
    if path.endswith(".weights.h5"):
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "source.weights.h5")
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:
            shutil.copyfile(path, link)
        yield link


def _load_keras_h5_strict(model: keras.Model, path: str, what: str) -> None:
    """Keras 3 `load_weights`, plus the check it lacks: no arrays left unused in the file."""
    with h5py.File(path, "r") as f:
        arrays = []
        f.visititems(lambda n, o: arrays.append(n) if isinstance(o, h5py.Dataset) else None)
    if len(arrays) != len(model.weights):
        raise ConfigError(f"{path}: holds {len(arrays)} arrays, {what} has {len(model.weights)} "
                          "variables; the file is from another architecture.")
    try:
        with _as_weights_h5(path) as loadable:
            model.load_weights(loadable)
    except ValueError as e:
        raise ConfigError(f"{path}: does not match {what}: {e}") from e


def _read_keras_applications_h5(info: SourceInfo, config: cfg.ModelConfig) -> _Source:
    """Keras 3 files name arrays by position, so load into a keras.applications twin first."""
    i = _keras_applications_variant(config)
    twin = getattr(keras.applications, f"EfficientNetB{i}")(
        weights=None, include_top=info.classes is not None, classes=info.classes or 1000)
    _load_keras_h5_strict(twin, info.path, f"keras.applications.EfficientNetB{i}")
    named = {layer.name: [(f"{layer.name}/{w.name}", np.asarray(w.numpy())) for w in layer.weights]
             for layer in twin.layers if layer.weights}
    return _from_keras_applications(named, info.path, config)


def _from_keras_applications(named: dict, origin: str, config: cfg.ModelConfig) -> _Source:
    """Rename `block1a_se_reduce` to `block1a/se/se_reduce` etc.; check the normalization."""
    source = _Source(origin=origin, weights={})
    for layer_name, arrays in named.items():
        if _KA_NORMALIZATION_RE.match(layer_name):
            _check_normalization(arrays, origin, config)
            continue
        m = _KA_BLOCK_RE.match(layer_name)
        if m:
            block, sub = m.groups()
            path = f"{block}/se/{sub}" if sub.startswith("se_") else f"{block}/{sub}"
        elif layer_name in _KA_TOP_LEVEL:
            path = layer_name
        else:
            source.unexpected += [n for n, _ in arrays]
            continue
        source.weights[path] = arrays
    return source


def _check_normalization(arrays, origin: str, config: cfg.ModelConfig) -> None:
    """Warn when the source normalized differently from our constants.

    keras.applications' imagenet files store stddev as the variance (and add a Rescaling layer to
    compensate); a correctly set layer stores stddev^2. Both match our (x - mean) / std.
    """
    mean, variance = (np.ravel(a) for _, a in arrays[:2])
    config_mean, config_std = config.input_normalization()
    want_mean = np.asarray(config_mean) / 255.0
    std = np.asarray(config_std) / 255.0
    imagenet_file = np.allclose(variance, std, atol=1e-4)
    if np.allclose(mean, want_mean, atol=1e-4) and (imagenet_file
                                                    or np.allclose(variance, std ** 2, atol=1e-5)):
        return
    logging.warning(
        "%s: its normalization layer has mean %s, variance %s (on [0, 1]); this model normalizes "
        "with mean %s, std %s. Outputs will differ from the source model's.", origin,
        np.round(mean, 4).tolist(), np.round(variance, 4).tolist(), np.round(want_mean, 4).tolist(),
        np.round(std, 4).tolist())


# --- files written by this package ------------------------------------------------------------

def _read_efficientnet_tf_h5(info: SourceInfo, config: cfg.ModelConfig) -> _Source:
    """Build the file's own structure for `config`, load it, then hand out arrays by path."""
    if not info.has_head:
        twin = build_feature_network(config)
    else:
        twin = build_network(config.with_classes(info.classes or config.num_classes),
                             include_top=info.classes is not None)
    _load_keras_h5_strict(twin, info.path, f"{config.name} ({twin.name})")
    weights = {path: [(f"{path}/{w.name}", np.asarray(w.numpy())) for w in layer.weights]
               for path, layer in weight_layers(twin).items()}
    return _Source(origin=info.path, weights=weights)
