"""Model core: config table, rounding, layers, builder, serialization, mixed precision."""
import dataclasses
import math

import keras
import numpy as np
import pytest

from efficientnet_tf import config as cfg
from efficientnet_tf.layers import (
    ImageNormalization,
    MBConvBlock,
    ReplicaDropout,
    ReplicaSeedGenerator,
    SqueezeExcite,
    StochasticDepth,
)
from efficientnet_tf.model import build_feature_extractor, build_model
from efficientnet_tf.network import model_config

from conftest import TINY

# --- config -----------------------------------------------------------------------------------

def test_block_strings_round_trip():
    for s in cfg.B0_BLOCKS + cfg.LITE_BLOCKS + ("r1_k3_s11_e1.5_i8_o8_noskip",):
        assert cfg.encode_block_string(cfg.decode_block_string(s)) == s
    b = cfg.decode_block_string("r4_k5_s22_e6_i112_o192_se0.25")
    assert (b.num_repeat, b.kernel_size, b.strides, b.expand_ratio, b.input_filters,
            b.output_filters, b.se_ratio, b.id_skip) == (4, 5, 2, 6, 112, 192, 0.25, True)


@pytest.mark.parametrize("bad", ["r1_k3_s12_e1_i32_o16", "k3_s11_e1_i32_o16", "r1_k3_s11_e1_i32"])
def test_bad_block_string_is_named(bad):
    with pytest.raises(ValueError, match=bad):
        cfg.decode_block_string(bad)


def test_round_filters_and_repeats():
    assert cfg.round_filters(32, 2.0) == 64
    assert cfg.round_filters(1280, 2.0) == 2560
    assert cfg.round_filters(16, 1.1) == 16   # 17.6 -> 16 (>= 90%)
    assert cfg.round_filters(40, 1.1) == 48   # 44 -> 48 (nearest multiple of 8, ties up)
    assert cfg.round_filters(24, 1.4) == 32   # 33.6 -> 32
    assert cfg.round_filters(8, 0.1) == 8     # minimum depth
    assert cfg.round_filters(100, 0.93) == 96  # 93 -> 96
    assert cfg.round_repeats(3, 1.1) == 4
    assert cfg.round_repeats(1, 3.1) == 4
    assert cfg.round_repeats(4, 1.0) == 4


def _stages(name):
    return [(s.input_filters, s.output_filters, s.num_repeat)
            for s in cfg.stage_table(cfg.get_model_config(name))]


def test_stage_tables_match_spec():
    c = cfg.get_model_config("efficientnet-b0")
    assert cfg.stem_filters(c) == 32 and cfg.head_filters(c) == 1280
    assert _stages("efficientnet-b0") == [(32, 16, 1), (16, 24, 2), (24, 40, 2), (40, 80, 3),
                                          (80, 112, 3), (112, 192, 4), (192, 320, 1)]
    c = cfg.get_model_config("efficientnet-b7")
    assert cfg.stem_filters(c) == 64 and cfg.head_filters(c) == 2560
    assert _stages("efficientnet-b7") == [(64, 32, 4), (32, 48, 7), (48, 80, 7), (80, 160, 10),
                                          (160, 224, 10), (224, 384, 13), (384, 640, 4)]
    assert sum(r for _, _, r in _stages("efficientnet-b7")) == 55
    # Lite: fixed stem/head, first and last stage repeats unscaled.
    lite4 = cfg.get_model_config("efficientnet-lite4")
    assert cfg.stem_filters(lite4) == 32 and cfg.head_filters(lite4) == 1280
    stages = _stages("efficientnet-lite4")
    assert stages[0][2] == 1 and stages[-1][2] == 1 and stages[1][2] == 4


def test_scaling_table_and_phi():
    for i, (w, d, r, p) in enumerate([(1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2),
                                      (1.1, 1.2, 260, 0.3), (1.2, 1.4, 300, 0.3),
                                      (1.4, 1.8, 380, 0.4), (1.6, 2.2, 456, 0.4),
                                      (1.8, 2.6, 528, 0.5), (2.0, 3.1, 600, 0.5)]):
        c = cfg.config_for_phi(i)
        assert (c.name, c.width_coefficient, c.depth_coefficient, c.resolution,
                c.dropout_rate) == (f"efficientnet-b{i}", w, d, r, p)
    c = cfg.config_for_phi(2.5)
    assert math.isclose(c.depth_coefficient, 1.2 ** 2.5)
    assert math.isclose(c.width_coefficient, 1.1 ** 2.5)
    assert c.resolution == 8 * round(224 * 1.15 ** 2.5 / 8) and c.resolution % 8 == 0
    c = cfg.config_for_phi(8)
    assert c.name == "efficientnet-phi8" and math.isclose(c.depth_coefficient, 1.2 ** 8)
    assert c.dropout_rate == 0.5
    assert cfg.config_for_phi(0.5).resolution == 240
    # Paper constraint: alpha * beta^2 * gamma^2 ~= 2.
    assert abs(cfg.ALPHA * cfg.BETA ** 2 * cfg.GAMMA ** 2 - 2) < 0.1
    with pytest.raises(ValueError, match="phi"):
        cfg.config_for_phi(-1)


def test_config_is_frozen_validated_and_rejects_unknown_keys():
    c = cfg.get_model_config("efficientnet-b0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.resolution = 100
    with pytest.raises(ValueError, match="Unknown ModelConfig keys: \\['widht'\\]"):
        c.replace(widht=2.0)
    with pytest.raises(ValueError, match="Unknown ModelConfig keys"):
        cfg.ModelConfig.from_dict({**c.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="dropout_rate"):
        c.replace(dropout_rate=1.5)
    with pytest.raises(ValueError, match="efficientnet-b9"):
        cfg.get_model_config("efficientnet-b9")
    assert cfg.ModelConfig.from_dict(c.to_dict()) == c
    import json
    assert cfg.ModelConfig.from_dict(json.loads(c.to_json())) == c


# --- layers -----------------------------------------------------------------------------------

def test_image_normalization_is_mean_std():
    layer = ImageNormalization(cfg.IMAGENET_MEAN_RGB, cfg.IMAGENET_STDDEV_RGB)
    x = np.random.RandomState(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    want = (x - np.array(cfg.IMAGENET_MEAN_RGB)) / np.array(cfg.IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), want, rtol=1e-5, atol=1e-5)
    assert ImageNormalization.from_config(layer.get_config()).mean == layer.mean


def test_stochastic_depth_drops_whole_samples():
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((256, 2, 2, 3), "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(256, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(1) == per_sample.max(1))  # whole sample kept or dropped
    assert 0.3 < (per_sample[:, 0] > 0).mean() < 0.7
    with pytest.raises(ValueError, match="rate"):
        StochasticDepth(1.0)


def test_random_layers_draw_as_keras_outside_a_strategy():
    # Per-replica streams (test_replica_randomness.py) change nothing without replicas.
    x = np.ones((64, 1, 1, 1), "float32")
    drop_path = StochasticDepth(0.5, seed=3)
    keep = np.floor(0.5 + keras.ops.convert_to_numpy(
        keras.random.uniform((64, 1, 1, 1), seed=keras.random.SeedGenerator(3))))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(drop_path(x, training=True)),
                                  keep * 2)
    x = np.ones((4, 32), "float32")
    ours, theirs = ReplicaDropout(0.3, seed=5), keras.layers.Dropout(0.3, seed=5)
    for _ in range(2):  # the state advances as in keras.layers.Dropout
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours(x, training=True)),
                                      keras.ops.convert_to_numpy(theirs(x, training=True)))


def test_replica_dropout_is_a_dropout_with_one_seed_state():
    layer = ReplicaDropout(0.3, noise_shape=(None, 1), seed=5, name="top_dropout")
    assert isinstance(layer, keras.layers.Dropout)
    assert isinstance(layer.seed_generator, ReplicaSeedGenerator)
    assert [id(v) for v in layer.variables] == [id(layer.seed_generator.state)]
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is ReplicaDropout and clone.get_config() == layer.get_config()
    assert isinstance(StochasticDepth(0.1).seed_generator, ReplicaSeedGenerator)


def test_squeeze_excite_uses_block_input_channels():
    block = MBConvBlock(16, 24, kernel_size=3, strides=2, expand_ratio=6, se_ratio=0.25, name="b")
    out = block(np.zeros((1, 8, 8, 16), "float32"))
    assert tuple(out.shape) == (1, 4, 4, 24)
    assert isinstance(block.se, SqueezeExcite)
    assert block.se.reduced_filters == 4   # 16 * 0.25, not 96 * 0.25
    assert tuple(block.se.se_reduce.kernel.shape) == (1, 1, 96, 4)
    assert not block.has_skip and block.drop is None


def test_mbconv_block_config_round_trip_and_skip():
    block = MBConvBlock(8, 8, kernel_size=5, strides=1, expand_ratio=6, se_ratio=0.25,
                        drop_rate=0.1, name="block2b")
    x = np.random.RandomState(0).normal(size=(2, 6, 6, 8)).astype("float32")
    y = block(x, training=False)
    clone = MBConvBlock.from_config(block.get_config())
    clone.build(x.shape)
    clone.set_weights(block.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x, training=False)),
                               keras.ops.convert_to_numpy(y), atol=1e-6)
    assert block.has_skip and isinstance(block.drop, StochasticDepth)
    # Linear bottleneck with skip: zeroing the project BN's gamma/beta leaves the identity.
    block.project_bn.gamma.assign(np.zeros(8))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=False)), x, atol=1e-6)
    with pytest.raises(ValueError, match="expected 8 input channels"):
        MBConvBlock(8, 8, name="bad")(np.zeros((1, 4, 4, 3), "float32"))


# --- builder ----------------------------------------------------------------------------------

def test_b0_layer_names_and_param_count():
    model = build_model(0)
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["image", "normalization", "stem_conv", "stem_bn", "stem_activation"]
    assert names[-4:] == ["top_activation", "avg_pool", "top_dropout", "predictions"]
    blocks = [n for n in names if n.startswith("block")]
    assert blocks == ["block1a", "block2a", "block2b", "block3a", "block3b", "block4a", "block4b",
                      "block4c", "block5a", "block5b", "block5c", "block6a", "block6b", "block6c",
                      "block6d", "block7a"]
    assert model.count_params() == 5_330_564
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 5_288_548
    drops = [model.get_layer(n).drop_rate for n in blocks]
    assert drops[0] == 0.0 and math.isclose(drops[-1], 0.2 * 15 / 16)


def test_b0_endpoints_at_224():
    model = build_feature_extractor(model_name="efficientnet-b0")
    shapes = {k: tuple(v.shape[1:]) for k, v in model.output.items()}
    assert shapes == {"reduction_1": (112, 112, 16), "reduction_2": (56, 56, 24),
                      "reduction_3": (28, 28, 40), "reduction_4": (14, 14, 112),
                      "reduction_5": (7, 7, 320)}
    out = model(np.zeros((1, 224, 224, 3), "float32"))
    assert tuple(out["reduction_5"].shape) == (1, 7, 7, 320)


def test_backbone_pooling_and_classes():
    m = build_model(model_name="efficientnet-b0", include_top=False, pooling=None, **TINY)
    assert tuple(m.output.shape) == (None, 1, 1, 320)
    m = build_model(model_name="efficientnet-b0", include_top=False, pooling="avg", **TINY)
    assert tuple(m.output.shape) == (None, 320)
    m = build_model(model_name="efficientnet-b0", include_top=False, pooling="max",
                    input_shape=(None, None, 3), **TINY)
    assert tuple(m(np.zeros((1, 48, 64, 3), "float32")).shape) == (1, 320)
    m = build_model(model_name="efficientnet-b0", classes=7, classifier_activation=None, **TINY)
    assert tuple(m.output.shape) == (None, 7)
    with pytest.raises(ValueError, match="pooling"):
        build_model(0, include_top=False, pooling="sum")
    with pytest.raises(ValueError, match="--mode=convert"):
        build_model(0, weights="imagenet")
    with pytest.raises(ValueError, match="only one of"):
        build_model(1, model_name="efficientnet-b1")


def test_lite_uses_relu6_and_no_se():
    m = build_model(model_name="efficientnet-lite0", input_shape=(32, 32, 3))
    blocks = [layer for layer in m.layers if isinstance(layer, MBConvBlock)]
    assert all(b.se is None and b.activation == "relu6" for b in blocks)
    assert model_config(m).mean_rgb == (127.0,) * 3
    x = np.full((1, 32, 32, 3), 127.0, "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m.get_layer("normalization")(x)), 0)


def test_initializers_follow_reference():
    m = build_model(model_name="efficientnet-b0", classes=1000, input_shape=(32, 32, 3))
    kernel = keras.ops.convert_to_numpy(m.get_layer("top_conv").kernel)   # 1x1x320x1280
    assert abs(kernel.std() - math.sqrt(2.0 / 1280)) < 0.05 * math.sqrt(2.0 / 1280)
    assert abs(kernel.mean()) < 1e-3
    dense = keras.ops.convert_to_numpy(m.get_layer("predictions").kernel)
    bound = 1.0 / math.sqrt(1000)
    assert dense.max() <= bound and dense.min() >= -bound and dense.max() > 0.99 * bound
    assert not keras.ops.convert_to_numpy(m.get_layer("predictions").bias).any()
    dw = keras.ops.convert_to_numpy(m.get_layer("block6a").dwconv.kernel)  # 5x5x672x1
    assert abs(dw.std() - math.sqrt(2.0 / 25)) < 0.05 * math.sqrt(2.0 / 25)


def test_keras_save_load_round_trip(tmp_path):
    """A .keras file keeps the graph, the weights and the ModelConfig."""
    m = build_model(model_name="efficientnet-b0", classes=5, **TINY)
    x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-6)
    assert [lay.name for lay in loaded.layers] == [lay.name for lay in m.layers]
    assert type(loaded.get_layer("top_dropout")) is ReplicaDropout
    assert model_config(loaded) == model_config(m) == cfg.get_model_config(
        "efficientnet-b0", num_classes=5, **TINY)

    features = build_feature_extractor(model_name="efficientnet-lite0", **TINY)
    features.save(tmp_path / "features.keras")
    loaded = keras.models.load_model(tmp_path / "features.keras")
    assert model_config(loaded) == model_config(features) and loaded.name == features.name
    np.testing.assert_array_equal(loaded(x)["reduction_5"], features(x)["reduction_5"])
    assert model_config(keras.Model(m.inputs, m.outputs)) is None  # not built here


def test_bn_group_size_reaches_every_batch_norm():
    m = build_model(model_name="efficientnet-b0", bn_group_size=2, **TINY)
    bns = [m.get_layer("stem_bn"), m.get_layer("block1a").bn, m.get_layer("block2a").expand_bn,
           m.get_layer("top_bn")]
    assert all(bn.group_size == 2 and not bn.synchronized for bn in bns)
    assert all(bn.momentum == 0.99 and bn.epsilon == 1e-3 for bn in bns)
    assert m.get_layer("block1a").get_config()["bn_group_size"] == 2
    assert build_model(model_name="efficientnet-b0", **TINY).get_layer("top_bn").group_size is None


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_builds_trains_and_outputs_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        m = build_model(model_name="efficientnet-b0", classes=3, **TINY)
        assert m.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
        assert m.get_layer("stem_conv").kernel.dtype == "float32"
        assert m.output.dtype == "float32"
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        x = np.random.RandomState(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        before = [w.copy() for w in m.get_weights()]
        loss = m.train_on_batch(x, np.array([0, 1, 2, 0]))
        assert np.isfinite(loss)
        assert any(not np.array_equal(a, b) for a, b in zip(before, m.get_weights()))
        assert m.predict(x, verbose=0).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


# (2, 6, 6, 8): every kernel is smaller than its output, so BN's scale goes into the kernels;
# (1, 2, 2, 8): every kernel is larger than its output, so the scale goes onto the outputs.
@pytest.mark.parametrize("shape", [(2, 6, 6, 8), (1, 2, 2, 8)], ids=["into_kernel", "onto_output"])
def test_inference_bn_folding_matches_keras_batch_norm(shape):
    rng = np.random.RandomState(3)
    block = MBConvBlock(8, 8, kernel_size=3, expand_ratio=6, se_ratio=0.25, name="fold")
    x = rng.normal(size=shape).astype("float32")
    block(x)
    for bn in (block.expand_bn, block.bn, block.project_bn):
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, n))
        bn.beta.assign(rng.normal(size=n))
        bn.moving_mean.assign(rng.normal(size=n))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, n))
    act = block.act
    h = act(block.expand_bn(block.expand_conv(x), training=False))
    h = act(block.bn(block.dwconv(h), training=False))
    h = block.project_bn(block.project_conv(block.se(h)), training=False) + x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=False)),
                               keras.ops.convert_to_numpy(h), rtol=1e-5, atol=1e-5)
    # Frozen BN (trainable=False) runs in inference mode even when training: folded too.
    for bn in (block.expand_bn, block.bn, block.project_bn):
        bn.trainable = False
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x, training=True)),
                               keras.ops.convert_to_numpy(h), rtol=1e-5, atol=1e-5)
