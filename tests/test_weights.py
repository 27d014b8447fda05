"""Weight import: keras.applications parity (B0..B7), legacy .h5, official TF1 checkpoints."""
import logging
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import build_feature_extractor, build_model, get_model_config
from efficientnet_tf import weights as W
from efficientnet_tf.network import model_config

from conftest import TINY

IMAGENET_MEAN_01 = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD_01 = np.array([0.229, 0.224, 0.225], "float32")


def _images(size, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def _randomize(layers, seed=0):
    """Non-trivial BN statistics and biases, so neither is an identity that hides a mix-up.

    The block outputs (project_bn) get a small gamma: a deep random net is otherwise chaotic, and
    float32 rounding differences between two correct implementations grow to O(1) over B7's 55
    blocks. Each block still moves the output by far more than the 1e-4 tolerance.
    """
    rng = np.random.default_rng(seed)
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape
            low, high = (0.05, 0.2) if layer.name.endswith("project_bn") else (0.5, 1.5)
            layer.set_weights([rng.uniform(low, high, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 1.5, c)])
        elif getattr(layer, "use_bias", False) and layer.weights:
            layer.bias.assign(rng.normal(0, 0.2, layer.bias.shape))


def _keras_applications(i, size, include_top=True, pooling=None, classes=1000):
    """keras.applications EfficientNetB{i} normalizing exactly like our constants."""
    model = getattr(keras.applications, f"EfficientNetB{i}")(
        weights=None, include_top=include_top, pooling=pooling, classes=classes,
        input_shape=(size, size, 3), classifier_activation=None)
    # weights=None builds no extra Rescaling(1/sqrt(std)) (that one exists only for
    # weights='imagenet'), so variance = std^2 gives (x/255 - mean) / std.
    assert sum(isinstance(layer, keras.layers.Rescaling) for layer in model.layers) == 1
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt_mean.assign(IMAGENET_MEAN_01)
    norm.adapt_variance.assign(IMAGENET_STD_01 ** 2)
    norm.finalize_state()  # assigning the variables alone changes nothing
    _randomize(model.layers, seed=i)
    return model


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# --- keras.applications ---------------------------------------------------------------------------

def _with_block_outputs(ours, ref):
    """Both models, also returning every block's output: a mix-up in an early block must show
    even where later blocks wash it out of the logits."""
    blocks = [layer.name for layer in ours.layers if layer.name.startswith("block")]
    ref_names = {layer.name for layer in ref.layers}
    ref_ends = [f"{b}_add" if f"{b}_add" in ref_names else f"{b}_project_bn" for b in blocks]
    return (keras.Model(ours.input, [ours.get_layer(b).output for b in blocks] + [ours.output]),
            keras.Model(ref.input, [ref.get_layer(n).output for n in ref_ends] + [ref.output]),
            blocks + ["logits"])


@pytest.mark.parametrize("phi,size", [
    (0, 32), (1, 32), (2, 32), (3, 32),
    pytest.param(4, 32, marks=pytest.mark.slow), pytest.param(5, 32, marks=pytest.mark.slow),
    pytest.param(6, 32, marks=pytest.mark.slow), pytest.param(7, 32, marks=pytest.mark.slow)])
def test_keras_applications_weights_h5_parity(tmp_path, phi, size):
    ref = _keras_applications(phi, size)
    x = _images(size, seed=phi)
    # The normalization really is the ImageNet one: it matches ours applied by hand.
    norm = next(layer for layer in ref.layers if isinstance(layer, keras.layers.Normalization))
    np.testing.assert_allclose(norm(x / 255.0), (x / 255.0 - IMAGENET_MEAN_01) / IMAGENET_STD_01,
                               atol=1e-5)
    path = str(tmp_path / f"b{phi}.weights.h5")
    ref.save_weights(path)

    ours = build_model(phi, input_shape=(size, size, 3), classifier_activation=None, weights=path)
    ours, ref, labels = _with_block_outputs(ours, ref)
    out, ref_out = ours(x, training=False), ref(x, training=False)
    assert float(np.std(ref_out[-1])) > 1e-2  # a real signal, not a vanishing one
    for a, b, label in zip(out, ref_out, labels):
        assert _max_diff(a, b) <= 1e-4, label
    if phi == 0:
        with pytest.raises(ValueError, match="EfficientNetB0..B7 only"):
            build_model(model_name="efficientnet-b0", weights=path, **TINY)


def _write_keras2_h5(model, path):
    """The layout of the published efficientnetb0.h5: groups keyed by layer name (Keras 2)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.4.0"
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = []
            for w in layer.weights:
                short = ("depthwise_kernel" if isinstance(layer, keras.layers.DepthwiseConv2D)
                         else w.name)
                names.append(f"{layer.name}/{short}:0")
                group.create_dataset(names[-1], data=w.numpy())
            group.attrs["weight_names"] = np.array([n.encode() for n in names])


def test_legacy_h5_import(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="absl")
    ref = _keras_applications(0, 32)
    x = _images(32)
    ref_out = ref(x, training=False)
    keras2 = str(tmp_path / "efficientnetb0.h5")
    _write_keras2_h5(ref, keras2)
    keras3 = str(tmp_path / "saved_by_keras3.h5")
    ref.save(keras3)  # Keras 3 writes .h5 in the legacy layout, under 'model_weights'
    for path in (keras2, keras3):
        assert W.inspect_source(path) == W.SourceInfo(W.LEGACY_H5, path, 1000)
        ours = build_model(0, input_shape=(32, 32, 3), classifier_activation=None, weights=path)
        assert _max_diff(ours(x, training=False), ref_out) <= 1e-4, path
    assert "normalization layer" not in caplog.text

    # A source whose normalization differs from ours (an un-adapted layer: x/255) is reported.
    norm = next(layer for layer in ref.layers if isinstance(layer, keras.layers.Normalization)).name
    with h5py.File(keras2, "r+") as f:
        f[f"{norm}/{norm}/mean:0"][...] = 0.0
        f[f"{norm}/{norm}/variance:0"][...] = 1.0
    W.load_weights(ours, keras2)
    assert "its normalization layer has mean [0.0, 0.0, 0.0], variance [1.0, 1.0, 1.0]" \
        in caplog.text


def test_legacy_notop_h5_to_backbone_file(tmp_path):
    ref = _keras_applications(0, 32, include_top=False, pooling="avg")
    src = str(tmp_path / "efficientnetb0_notop.h5")
    _write_keras2_h5(ref, src)
    out = W.convert("efficientnet-b0", src, str(tmp_path / "b0_notop.weights.h5"))
    with h5py.File(out) as f:
        assert "layers/dense" not in f  # no classifier in the source: a backbone file
    x = _images(32)
    ours = build_model(0, include_top=False, pooling="avg", input_shape=(32, 32, 3), weights=out)
    assert _max_diff(ours(x, training=False), ref(x, training=False)) <= 1e-4
    with pytest.raises(ValueError, match="missing.*predictions"):
        build_model(0, input_shape=(32, 32, 3), weights=out)


# --- official TF1 checkpoints -------------------------------------------------------------------

def _official_names(model):
    """{TF1 name without scope: array}, from the official names, independently of weights.py."""
    def bn(prefix, layer):
        return dict(zip([f"{prefix}/gamma", f"{prefix}/beta", f"{prefix}/moving_mean",
                         f"{prefix}/moving_variance"], layer.get_weights()))

    get = model.get_layer
    out = {"stem/conv2d/kernel": get("stem_conv").get_weights()[0],
           **bn("stem/tpu_batch_normalization", get("stem_bn")),
           "head/conv2d/kernel": get("top_conv").get_weights()[0],
           **bn("head/tpu_batch_normalization", get("top_bn"))}
    if "predictions" in [layer.name for layer in model.layers]:
        kernel, bias = get("predictions").get_weights()
        out.update({"head/dense/kernel": kernel, "head/dense/bias": bias})
    blocks = [layer for layer in model.layers if layer.name.startswith("block")]
    for i, blk in enumerate(blocks):
        p = f"blocks_{i}"
        if blk.expand_conv is not None:
            out[f"{p}/conv2d/kernel"] = blk.expand_conv.kernel.numpy()
            out.update(bn(f"{p}/tpu_batch_normalization", blk.expand_bn))
            bn_dw, project, bn_project = ("tpu_batch_normalization_1", "conv2d_1",
                                          "tpu_batch_normalization_2")
        else:
            bn_dw, project, bn_project = "tpu_batch_normalization", "conv2d", \
                "tpu_batch_normalization_1"
        out[f"{p}/depthwise_conv2d/depthwise_kernel"] = blk.dwconv.kernel.numpy()
        out.update(bn(f"{p}/{bn_dw}", blk.bn))
        out[f"{p}/{project}/kernel"] = blk.project_conv.kernel.numpy()
        out.update(bn(f"{p}/{bn_project}", blk.project_bn))
        if blk.se is not None:
            for name, conv in (("conv2d", blk.se.se_reduce), ("conv2d_1", blk.se.se_expand)):
                out[f"{p}/se/{name}/kernel"], out[f"{p}/se/{name}/bias"] = conv.get_weights()
    return out


def _write_tf1_checkpoint(prefix, scope, ema, *, raw_only=(), drop=(), replace=None, extra=None):
    """Raw variables = EMA + 1 (so using the wrong one shows), EMA shadows, RMSProp slots, step."""
    tensors = {"global_step": np.array(1234, "int64")}
    for name, value in ema.items():
        full = f"{scope}/{name}"
        if name in drop:
            continue
        value = (replace or {}).get(name, value)
        tensors[full] = value + 1.0
        if name not in raw_only:
            tensors[f"{full}/ExponentialMovingAverage"] = value
        tensors[f"{full}/RMSProp"] = np.ones_like(value)
        tensors[f"{full}/RMSProp_1"] = np.zeros_like(value)
    tensors.update(extra or {})
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


def _source_model(name, classes=5):
    config = get_model_config(name, width_coefficient=0.25, depth_coefficient=0.2, resolution=32)
    model = build_model(config=config, classes=classes, classifier_activation=None)
    _randomize(W.weight_layers(model).values(), seed=1)
    return model


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0"])
def test_tf1_checkpoint_convert_prefers_ema(tmp_path, name, caplog):
    src = _source_model(name)
    ema = _official_names(src)
    raw_only = "blocks_1/conv2d/kernel"  # no shadow for this one: the raw value must be used
    prefix = _write_tf1_checkpoint(str(tmp_path / "model.ckpt-1234"), name, ema,
                                   raw_only=(raw_only,))
    assert W.inspect_source(prefix) == W.SourceInfo(W.TF1_CHECKPOINT, prefix, 5)
    overrides = dict(width_coefficient=0.25, depth_coefficient=0.2, resolution=32)

    caplog.set_level(logging.INFO, logger="absl")
    out = W.convert(name, prefix, str(tmp_path / "out" / "model.weights.h5"), overrides=overrides)
    assert os.listdir(tmp_path / "out") == ["model.weights.h5"]  # the temp file was renamed
    assert f"{len(ema) - 1} of {len(ema)} variables from ExponentialMovingAverage" in caplog.text
    assert f"{name}/{raw_only}" in caplog.text

    loaded = build_model(model_name=name, classes=5, classifier_activation=None, weights=out,
                         **overrides)
    blk = loaded.get_layer("block2a")
    np.testing.assert_array_equal(blk.expand_conv.kernel.numpy(), ema[raw_only] + 1.0)
    np.testing.assert_array_equal(blk.bn.moving_variance.numpy(),
                                  ema["blocks_1/tpu_batch_normalization_1/moving_variance"])
    if name.endswith("lite0"):
        assert blk.se is None and model_config(loaded).activation == "relu6"
    else:
        np.testing.assert_array_equal(loaded.get_layer("block1a").se.se_expand.bias.numpy(),
                                      ema["blocks_0/se/conv2d_1/bias"])
    # Everything except the raw-only kernel is the EMA value, so outputs differ from src only
    # through that kernel: put it back and they are identical.
    blk.expand_conv.kernel.assign(ema[raw_only])
    x = _images(32)
    np.testing.assert_allclose(loaded(x, training=False), src(x, training=False), atol=1e-5)

    # In-memory import of the same checkpoint (a directory this time) == the converted file.
    tf.compat.v1.train.update_checkpoint_state(str(tmp_path), prefix)
    direct = build_model(model_name=name, classes=5, classifier_activation=None, **overrides)
    W.load_weights(direct, str(tmp_path))
    from_file = build_model(model_name=name, classes=5, classifier_activation=None, weights=out,
                            **overrides)
    np.testing.assert_array_equal(direct(x, training=False), from_file(x, training=False))


def test_tf1_checkpoint_problems_are_listed(tmp_path):
    src = _source_model("efficientnet-b0")
    ema = _official_names(src)
    kw = dict(model_name="efficientnet-b0", classes=5, width_coefficient=0.25,
              depth_coefficient=0.2, resolution=32)
    model = build_model(**kw)
    before = [w.numpy() for w in model.weights]

    bad_shape = _write_tf1_checkpoint(
        str(tmp_path / "shape"), "efficientnet-b0", ema,
        replace={"blocks_2/conv2d_1/kernel": np.zeros((1, 1, 7, 3), "float32")})
    with pytest.raises(ValueError, match=r"block3a/project_conv expects \[\(1, 1, \d+, \d+\)\], "
                                         r"got efficientnet-b0/blocks_2/conv2d_1/kernel/"
                                         r"ExponentialMovingAverage \(1, 1, 7, 3\)"):
        W.load_weights(model, bad_shape)

    missing = _write_tf1_checkpoint(
        str(tmp_path / "missing"), "efficientnet-b0", ema,
        drop=("blocks_3/se/conv2d/bias", "head/tpu_batch_normalization/beta"),
        extra={"efficientnet-b0/blocks_99/conv2d/kernel": np.zeros((1, 1, 8, 8), "float32")})
    with pytest.raises(ValueError) as err:
        W.load_weights(model, missing)
    msg = str(err.value)
    assert "missing (2): efficientnet-b0/blocks_3/se/conv2d/bias; " \
           "efficientnet-b0/head/tpu_batch_normalization/beta" in msg
    assert "unexpected (1): efficientnet-b0/blocks_99/conv2d/kernel" in msg
    # Nothing was touched: no partial load.
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)

    with pytest.raises(FileNotFoundError, match="no-such-ckpt"):
        W.load_weights(model, str(tmp_path / "no-such-ckpt"))
    with pytest.raises(FileNotFoundError, match="without a 'checkpoint' file"):
        W.load_weights(model, str(tmp_path))


# --- our own files: backbones, feature extractors, other class counts, bad input ----------------

@pytest.fixture
def tiny_file(tmp_path):
    src = _source_model("efficientnet-b0", classes=7)
    prefix = _write_tf1_checkpoint(str(tmp_path / "ckpt"), "efficientnet-b0", _official_names(src))
    out = W.convert(None, prefix, str(tmp_path / "tiny.weights.h5"),
                    config=get_model_config("efficientnet-b0", **TINY))
    return src, out


def test_backbone_feature_extractor_and_other_classes(tiny_file, caplog):
    src, path = tiny_file
    x = _images(32)
    kw = dict(model_name="efficientnet-b0", input_shape=(32, 32, 3), **TINY)

    backbone = build_model(include_top=False, pooling="avg", weights=path, **kw)
    ref = keras.Model(src.input, src.get_layer("avg_pool").output)
    np.testing.assert_allclose(backbone(x, training=False), ref(x, training=False), atol=1e-6)

    features = build_feature_extractor(weights=path, **kw)
    ref = keras.Model(src.input, src.get_layer("block7a").output)
    np.testing.assert_allclose(features(x, training=False)["reduction_5"], ref(x, training=False),
                               atol=1e-6)

    caplog.set_level(logging.INFO, logger="absl")
    other = build_model(classes=3, weights=path, **kw)
    assert "classifier has 7 classes, the model 3: not loading 'predictions'" in caplog.text
    np.testing.assert_array_equal(other.get_layer("top_conv").kernel.numpy(),
                                  src.get_layer("top_conv").kernel.numpy())


def test_bad_sources_and_outputs(tiny_file, tmp_path):
    _, path = tiny_file
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        build_model(model_name="efficientnet-b0", weights=str(tmp_path / "missing.weights.h5"),
                    **TINY)
    # Another architecture: the file does not fit, and the error says so.
    with pytest.raises(ValueError, match="tiny.weights.h5"):
        build_model(model_name="efficientnet-lite0", weights=path, **TINY)
    with pytest.raises(ValueError, match="tiny.weights.h5"):
        build_model(model_name="efficientnet-b0", weights=path,
                    **{**TINY, "depth_coefficient": 0.4})
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5: not a weights source"):
        W.convert("efficientnet-b0", str(junk), str(tmp_path / "x.weights.h5"), overrides=TINY)
    with pytest.raises(ValueError, match=r"must end with '\.weights\.h5'"):
        W.convert("efficientnet-b0", path, str(tmp_path / "x.h5"), overrides=TINY)
    with pytest.raises(ValueError, match="model_name='efficientnet-b1' contradicts"):
        W.convert("efficientnet-b1", path, str(tmp_path / "x.weights.h5"),
                  config=get_model_config("efficientnet-b0", **TINY))
    # A failed conversion leaves neither the output nor a temp file behind.
    assert sorted(p.name for p in tmp_path.iterdir() if "weights.h5" in p.name) == [
        "tiny.weights.h5"]
    # Re-converting our own file works (e.g. to change the class count).
    again = W.convert("efficientnet-b0", path, str(tmp_path / "again.weights.h5"), overrides=TINY,
                      num_classes=4)
    with h5py.File(again) as f:
        assert f["layers/dense/vars/0"].shape[-1] == 4


def test_save_weights_atomic_writes_through_tf_filesystems():
    """Keras saves .weights.h5 to local paths only; gs:// model dirs go through tf.io.gfile
    (ram:// stands in for gs:// here), leaving just the finished file."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    out = W.save_weights_atomic(model, "ram://weights_test/run/best.weights.h5")
    assert tf.io.gfile.listdir("ram://weights_test/run/") == ["best.weights.h5"]
    with tf.io.gfile.GFile(out, "rb") as f:
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"  # a whole HDF5 file
