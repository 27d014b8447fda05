"""FLOP and parameter counting: hand-computed cases, exact parameter counts, paper Table 2."""
import keras
import pytest

from efficientnet_tf import config as cfg
from efficientnet_tf import profile
from efficientnet_tf.model import build_model

from conftest import TINY, run_python

# Exact (trainable, total) with 1000 classes.
EXACT_PARAMS = {
    "efficientnet-b0": (5_288_548, 5_330_564),
    "efficientnet-b1": (7_794_184, 7_856_232),
    "efficientnet-b2": (9_109_994, 9_177_562),
    "efficientnet-b3": (12_233_232, 12_320_528),
    "efficientnet-b4": (19_341_616, 19_466_816),
    "efficientnet-b5": (30_389_784, 30_562_520),
    "efficientnet-b6": (43_040_704, 43_265_136),
    "efficientnet-b7": (66_347_960, 66_658_680),
    "efficientnet-b8": (87_413_142, 87_793_174),
    "efficientnet-l2": (480_309_308, 481_399_996),
    "efficientnet-lite0": (4_652_008, 4_694_024),
    "efficientnet-lite1": (5_416_680, 5_470_344),
    "efficientnet-lite2": (6_092_072, 6_150_168),
    "efficientnet-lite3": (8_197_096, 8_273_768),
    "efficientnet-lite4": (13_006_568, 13_118_936),
}
B_MODELS = [f"efficientnet-b{i}" for i in range(8)]


def test_count_flops_hand_computed():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # 4*4*4 * 3*3*3 = 1728
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(x)  # 4*4*8 * 9 = 1152
    x = keras.layers.BatchNormalization()(x)  # not counted
    x = keras.layers.Conv2D(4, 1, groups=2, activation="swish")(x)  # 4*4*4 * 8/2 = 256
    seq = keras.layers.Dense(6)(keras.layers.Reshape((16, 4))(x))  # 16 * 4*6 = 384
    x = keras.layers.GlobalAveragePooling2D()(x)  # not counted
    x = keras.layers.Dense(5, activation="softmax")(x)  # 4*5 = 20
    model = keras.Model(inputs, [x, seq])
    assert profile.count_flops(model) == 1728 + 1152 + 256 + 384 + 20
    # A model taking any input size is counted at the size asked for: (8*8*4 * 3*3*3) + 4*5.
    assert profile.count_flops(_any_size_model(), input_shape=(16, 16, 3)) == 8 * 8 * 4 * 27 + 20


def _any_size_model():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    return keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x)))


def test_count_flops_rejects_unknown_ops_and_shapes():
    inputs = keras.Input((4, 4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv3D(2, 3)(inputs))
    with pytest.raises(ValueError, match="Conv3D"):
        profile.count_flops(model)
    with pytest.raises(ValueError, match="unknown dimensions"):
        profile.count_flops(_any_size_model())


def _analytic_macs(config: cfg.ModelConfig) -> int:
    """Independent count from the stage table, to check the graph walk."""
    size = -(-config.resolution // 2)
    c_stem = cfg.stem_filters(config)
    macs = size * size * c_stem * 3 * 3 * 3
    for stage in cfg.stage_table(config):
        for j in range(stage.num_repeat):
            c_in = stage.input_filters if j == 0 else stage.output_filters
            stride = stage.strides if j == 0 else 1
            c_exp = int(c_in * stage.expand_ratio)
            if stage.expand_ratio != 1:
                macs += size * size * c_in * c_exp
            size = -(-size // stride)
            macs += size * size * c_exp * stage.kernel_size ** 2
            if stage.se_ratio:
                macs += 2 * c_exp * max(1, int(c_in * stage.se_ratio))
            macs += size * size * c_exp * stage.output_filters
    c_last = cfg.stage_table(config)[-1].output_filters
    head = cfg.head_filters(config)
    return macs + size * size * c_last * head + head * config.num_classes


@pytest.mark.parametrize("overrides", [TINY, dict(TINY, activation="gelu", resolution=33)])
def test_graph_count_matches_analytic_count(overrides):
    config = cfg.get_model_config("efficientnet-b0", **overrides)
    assert profile.count_flops(build_model(config=config)) == _analytic_macs(config)


@pytest.mark.slow
def test_b0_to_b7_params_exact_and_flops_match_paper():
    rows = profile.profile_models(B_MODELS)
    for name, row in zip(B_MODELS, rows):
        config = cfg.get_model_config(name)
        assert set(row) == {"model", "resolution", "params_trainable", "params_total", "flops",
                            "paper_params", "paper_flops"}
        assert (row["model"], row["resolution"]) == (name, config.resolution)
        assert (row["params_trainable"], row["params_total"]) == EXACT_PARAMS[name]
        assert row["flops"] == pytest.approx(row["paper_flops"], rel=0.05), name
        assert row["paper_params"] == pytest.approx(row["params_trainable"], rel=0.05)
    assert rows[0]["flops"] == _analytic_macs(cfg.get_model_config("efficientnet-b0"))
    table = profile.format_profile_table(rows)
    assert len(table.splitlines()) == len(rows) + 2
    b7_line = table.splitlines()[-1].split()
    assert b7_line[0] == "efficientnet-b7" and b7_line[-2] == "37.00"
    assert float(b7_line[-1]) == pytest.approx(rows[-1]["flops"] / 37e9, abs=1e-3)


@pytest.mark.slow
def test_params_exact_for_b8_l2_and_lite():
    # Parameter counts do not depend on resolution: build at 32x32 to keep tracing cheap. L2 alone
    # holds ~2 GB of weights, so run in a fresh process that gives the memory back.
    names = [n for n in EXACT_PARAMS if n not in B_MODELS]
    out = run_python(
        "import keras\n"
        "from efficientnet_tf.model import build_model\n"
        "from efficientnet_tf.profile import count_params\n"
        f"for name in {names!r}:\n"
        "    print(name, *count_params(build_model(model_name=name, input_shape=(32, 32, 3))))\n"
        "    keras.backend.clear_session()\n")
    counts = {n: (int(t), int(a)) for n, t, a in (ln.split() for ln in out.stdout.splitlines())}
    assert counts == {n: EXACT_PARAMS[n] for n in names}


def test_profile_model_paper_values_only_for_the_papers_network():
    row = profile.profile_model("efficientnet-lite0", resolution=64)
    assert (row["params_trainable"], row["params_total"]) == EXACT_PARAMS["efficientnet-lite0"]
    assert row["paper_params"] is None and row["paper_flops"] is None
    row = profile.profile_model("efficientnet-b0", resolution=64)
    assert row["resolution"] == 64 and row["paper_params"] == 5.3e6 and row["paper_flops"] is None
    assert row["flops"] == _analytic_macs(cfg.get_model_config("efficientnet-b0", resolution=64))
    row = profile.profile_model(cfg.get_model_config("efficientnet-b0", num_classes=10,
                                                     resolution=64))
    assert row["paper_params"] is None
    assert row["params_trainable"] == EXACT_PARAMS["efficientnet-b0"][0] - 990 * 1281
    assert "-" in profile.format_profile_table([row])


def test_profile_model_rejects_bad_input():
    with pytest.raises(ValueError, match="efficientnet-b9"):
        profile.profile_model("efficientnet-b9")
    with pytest.raises(ValueError, match="resolution=16"):
        profile.profile_model("efficientnet-b0", resolution=16)
    with pytest.raises(TypeError, match="int"):
        profile.profile_model(0)

