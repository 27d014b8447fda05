"""EfficientNet-EdgeTPU and EfficientNet-CondConv: block strings, exact parameter counts from
first principles, the CondConv layer's math, and the network doing everything the B-series does
(train, fold for export, save/load)."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import config as cfg
from efficientnet_tf.export.folding import fold_model
from efficientnet_tf.layers import CondConv2D, MBConvBlock
from efficientnet_tf.model import build_feature_extractor, build_model

# The reference builders' totals (trainable + BN moving statistics): EdgeTPU with its 1001-class
# head, CondConv with 1000. Trainable: 5,439,673 / 6,900,777 / 10,591,249 and 13,314,116 /
# 24,013,284 / 39,715,968, the README's 13.3M, 24.0M and 39.7M.
EXPECTED_PARAMS = {
    "efficientnet-edgetpu-S": 5_491_113,
    "efficientnet-edgetpu-M": 6_968_585,
    "efficientnet-edgetpu-L": 10_683_457,
    "efficientnet-condconv-b0-4e": 13_356_132,
    "efficientnet-condconv-b0-8e": 24_055_300,
    "efficientnet-condconv-b0-8e-depth": 39_778_016,
}

EDGETPU_STRINGS = ("r1_k3_s11_e4_i24_o24_c1_noskip", "r2_k3_s22_e8_i24_o32_c1",
                   "r4_k3_s22_e8_i32_o48_c1", "r5_k5_s22_e8_i48_o96", "r4_k5_s11_e8_i96_o144",
                   "r2_k5_s22_e8_i144_o192")


def _count(name: str) -> int:
    """Parameters from the reference's rules, independently of the builder: BN has 4 vectors,
    convs no bias, SE convs and the routing dense have biases, CondConv multiplies a kernel by
    its experts; expansion and SE widths come from the block string's (scaled) input filters."""
    c = cfg.get_model_config(name)
    experts = c.condconv_num_experts or 1

    def rf(f):
        return cfg.round_filters(f, c.width_coefficient)

    stem = rf(32)
    total = 3 * 3 * 3 * stem + 4 * stem
    channels = stem
    for s in c.blocks:
        b = cfg.decode_block_string(s)
        for j in range(math.ceil(c.depth_coefficient * b.num_repeat)):
            declared = rf(b.input_filters) if j == 0 else rf(b.output_filters)
            out = rf(b.output_filters)
            k = experts if b.condconv else 1
            expanded = declared * b.expand_ratio if b.expand_ratio != 1 else channels
            if b.condconv:
                total += channels * experts + experts  # routing dense
            if b.conv_type == 1:
                total += k * 3 * 3 * channels * expanded + 4 * expanded
            else:
                if b.expand_ratio != 1:
                    total += k * channels * expanded + 4 * expanded
                total += k * b.kernel_size ** 2 * expanded + 4 * expanded
            if b.se_ratio:
                reduced = max(1, int(declared * b.se_ratio))
                total += expanded * reduced + reduced + reduced * expanded + expanded
            total += k * expanded * out + 4 * out
            channels = out
    head = rf(1280)
    return total + channels * head + 4 * head + head * c.num_classes + c.num_classes


def test_reference_block_strings_round_trip_and_decode():
    assert cfg.EDGETPU_BLOCKS == EDGETPU_STRINGS
    assert cfg.CONDCONV_BLOCKS[4:] == tuple(s + "_cc" for s in cfg.B0_BLOCKS[4:])
    for s in cfg.EDGETPU_BLOCKS + cfg.CONDCONV_BLOCKS:
        assert cfg.encode_block_string(cfg.decode_block_string(s)) == s
    first = cfg.decode_block_string(EDGETPU_STRINGS[0])
    assert (first.conv_type, first.id_skip, first.expand_ratio, first.condconv) == (1, False, 4,
                                                                                   False)
    assert cfg.decode_block_string(cfg.CONDCONV_BLOCKS[-1]).condconv


@pytest.mark.parametrize("bad", ["r1_k5_s11_e4_i24_o24_c1", "r1_k3_s11_e4_i24_o24_c1_se0.25",
                                 "r1_k3_s11_e1_i24_o24_c1", "r1_k3_s11_e4_i24_o24_c2",
                                 "r1_k3_s11_e4_i24_o24_c1_cc"])
def test_blocks_the_reference_cannot_build_are_refused(bad):
    with pytest.raises(cfg.ConfigError, match=bad):
        cfg.decode_block_string(bad)


def test_family_configs():
    s = cfg.get_model_config("efficientnet-edgetpu-S")
    assert (s.activation, s.num_classes, s.label_offset, s.condconv_num_experts) == (
        "relu", 1001, 1, None)
    assert s.input_normalization() == ((127.0,) * 3, (128.0,) * 3)
    assert cfg.reference_resize_method(s.name) == "bilinear"
    m, lg = cfg.get_model_config("efficientnet-edgetpu-M"), cfg.get_model_config(
        "efficientnet-edgetpu-L")
    assert (m.depth_coefficient, m.resolution, lg.width_coefficient, lg.resolution) == (
        1.1, 240, 1.2, 300)
    cc = cfg.get_model_config("efficientnet-condconv-b0-8e-depth")
    assert (cc.condconv_num_experts, cc.depth_coefficient, cc.resolution, cc.dropout_rate,
            cc.activation, cc.num_classes) == (8, 1.1, 224, 0.25, "swish", 1000)
    assert cfg.reference_resize_method(cc.name) == "bicubic"
    # Another head width is another label set: no background class unless asked for.
    assert cfg.get_model_config("efficientnet-edgetpu-S", num_classes=10).label_offset == 0
    assert s.with_classes(1001) is s
    with pytest.raises(cfg.ConfigError, match="condconv_num_experts"):
        cfg.get_model_config("efficientnet-b0", condconv_num_experts=4)
    with pytest.raises(cfg.ConfigError, match="condconv_num_experts"):
        cfg.get_model_config("efficientnet-condconv-b0-4e", condconv_num_experts=None)
    with pytest.raises(cfg.ConfigError, match="label_offset"):
        cfg.get_model_config("efficientnet-b0", label_offset=1000)


def test_edgetpu_s_param_count_by_hand():
    """EdgeTPU-S stage by stage (width 1, depth 1: the block strings as written)."""
    bn = 4
    stem = 3 * 3 * 3 * 32 + bn * 32                                   # 992
    # stage 1, c1 e4: 3x3 conv from the 32-channel stem to 24*4 = 96, project to 24
    s1 = 3 * 3 * 32 * 96 + bn * 96 + 96 * 24 + bn * 24                # 30,432
    # c1 stages: first block from c_in, then (r - 1) blocks from c_out, expansion 8

    def c1(c_in, c_out, r):
        def block(ci):
            return 3 * 3 * ci * 8 * ci + bn * 8 * ci + 8 * ci * c_out + bn * c_out
        return block(c_in) + (r - 1) * block(c_out)
    # MBConv stages without SE: expand 1x1, depthwise kxk, project 1x1

    def mb(c_in, c_out, r, k):
        def block(ci):
            e = 8 * ci
            return ci * e + bn * e + k * k * e + bn * e + e * c_out + bn * c_out
        return block(c_in) + (r - 1) * block(c_out)
    s2, s3 = c1(24, 32, 2), c1(32, 48, 4)
    s4, s5, s6 = mb(48, 96, 5, 5), mb(96, 144, 4, 5), mb(144, 192, 2, 5)
    head = 192 * 1280 + bn * 1280 + 1280 * 1001 + 1001                # 1,533,161
    assert (s2, s3, s4, s5, s6) == (131_584, 645_376, 761_088, 1_321_344, 1_067_136)
    total = stem + s1 + s2 + s3 + s4 + s5 + s6 + head
    assert total == EXPECTED_PARAMS["efficientnet-edgetpu-S"] == _count("efficientnet-edgetpu-S")


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_param_counts(name):
    model = build_model(model_name=name, input_shape=(64, 64, 3))
    assert model.count_params() == _count(name) == EXPECTED_PARAMS[name]


def test_condconv_layer_is_a_per_example_mixture_of_experts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 6, 5)).astype("float32")
    routing = rng.uniform(size=(3, 4)).astype("float32")
    for layer, shape in ((CondConv2D(7, 1, 4), (1, 1, 5, 7)),
                         (CondConv2D(7, 3, 4, strides=2), (3, 3, 5, 7)),
                         (CondConv2D(None, 3, 4, strides=2, depthwise=True), (3, 3, 5, 1))):
        y = layer(x, routing).numpy()
        experts = layer.kernel.numpy()
        assert experts.shape == (4, math.prod(shape))
        for b in range(3):  # the reference's arithmetic: one mixed kernel per example
            kernel = (routing[b] @ experts).reshape(shape)
            conv = tf.nn.depthwise_conv2d if layer.depthwise else tf.nn.conv2d
            strides = [1, layer.strides, layer.strides, 1]
            want = conv(x[b:b + 1], kernel, strides, "SAME").numpy()
            np.testing.assert_allclose(y[b:b + 1], want, atol=1e-5)
        assert tuple(layer.compute_output_shape(x.shape)) == y.shape
    # Each expert drawn like a plain conv kernel: std sqrt(2 / fan_out) per expert.
    big = CondConv2D(64, 3, 8)
    big.build((None, 8, 8, 32))
    std = big.kernel.numpy().std(axis=1)
    np.testing.assert_allclose(std, math.sqrt(2.0 / (3 * 3 * 64)), rtol=0.05)


def test_blocks_and_endpoints():
    edgetpu = build_model(model_name="efficientnet-edgetpu-S", input_shape=(64, 64, 3))
    first = edgetpu.get_layer("block1a")
    assert first.dwconv is None and first.se is None and not first.has_skip
    assert first.expand_conv.kernel.shape == (3, 3, 32, 96)  # 24 declared * 4, from 32 in
    assert isinstance(edgetpu.get_layer("block4a").dwconv, keras.layers.DepthwiseConv2D)
    cc = build_model(model_name="efficientnet-condconv-b0-4e", input_shape=(64, 64, 3))
    assert cc.get_layer("block4c").num_experts is None
    block = cc.get_layer("block5a")
    assert (block.routing.kernel.shape, block.dwconv.kernel.shape) == ((80, 4), (4, 5 * 5 * 480))
    features = build_feature_extractor(model_name="efficientnet-edgetpu-S",
                                       input_shape=(64, 64, 3))
    shapes = {k: tuple(v.shape[1:]) for k, v in features.output.items()}
    assert shapes == {"reduction_1": (32, 32, 24), "reduction_2": (16, 16, 32),
                      "reduction_3": (8, 8, 48), "reduction_4": (4, 4, 144),
                      "reduction_5": (2, 2, 192)}


@pytest.mark.parametrize("name", ["efficientnet-edgetpu-S", "efficientnet-condconv-b0-4e"])
def test_trains_folds_and_round_trips(tmp_path, name):
    keras.utils.set_random_seed(0)
    model = build_model(model_name=name, width_coefficient=0.25, depth_coefficient=0.3,
                        resolution=32, num_classes=5)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(4) % 5, epochs=1, verbose=0)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed)  # every weight, routing and expert kernels included, gets a gradient
    # Routing makes the outputs depend on the example through the kernels, not only the input.
    block = next(layer for layer in model.layers if getattr(layer, "num_experts", None))\
        if "condconv" in name else None
    if block is not None:
        inner = keras.Model(model.input, block.input)(x)
        routing = block.routing(np.mean(inner, axis=(1, 2)))
        assert float(np.ptp(routing.numpy(), axis=0).max()) > 1e-3
    folded = fold_model(model)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    assert isinstance(loaded.get_layer("block2a"), MBConvBlock)


def test_condconv_flops_are_b0s_plus_routing_and_expert_mixing():
    """A CondConv layer costs its plain conv plus mixing the experts for the example
    (experts x kernel size) and the routing dense: the reference's accounting (its README:
    CondConv-b0-4e +11M MADDs over B0)."""
    from efficientnet_tf.profile import count_flops

    b0 = count_flops(build_model(0))
    condconv = count_flops(build_model(model_name="efficientnet-condconv-b0-4e"))
    extra = 0
    for c_in, expanded, k, c_out, repeats in ((80, 480, 5, 112, 3), (112, 672, 5, 192, 4),
                                              (192, 1152, 3, 320, 1)):
        for j in range(repeats):
            c_in, expanded = (c_in, expanded) if j == 0 else (c_out, c_out * 6)
            extra += c_in * 4 + 4 * (c_in * expanded + k * k * expanded + expanded * c_out)
    assert condconv - b0 == extra == 10_699_136


def test_condconv_trains_and_exports_from_the_command_line(tmp_path):
    from conftest import run_main

    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    run_main("--mode=train_and_eval", "--model=efficientnet-condconv-b0-4e",
             "--width_coefficient=0.25", "--depth_coefficient=0.3", "--image_size=32",
             "--synthetic_train_size=32", "--synthetic_eval_size=16", "--train_batch_size=8",
             "--eval_batch_size=8", "--train_steps=2", "--steps_per_eval=2",
             f"--model_dir={model_dir}")
    run_main("--mode=export", f"--model_dir={model_dir}", f"--export_dir={export_dir}")
    served = tf.saved_model.load(str(export_dir)).signatures["serving_images"]
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    probabilities = served(images=tf.constant(x))["probabilities"].numpy()
    from efficientnet_tf.run_dir import load_trained_model

    expected = load_trained_model(str(model_dir))(x, training=False).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
