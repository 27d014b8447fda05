"""Official TF1 checkpoints of EfficientNet-EdgeTPU and EfficientNet-CondConv.

The test writes each checkpoint under the reference builders' own variable names, converts it with
the package, and compares the converted model's logits with a forward pass computed here from the
same named arrays with plain tf.nn ops, following the reference code's arithmetic
(efficientnet_model.MBConvBlock / MBConvBlockWithoutDepthwise, condconv_layers): the package's
layers are not used for the expected values.
"""
import math
import re

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import build_model
from efficientnet_tf import weights as W
from efficientnet_tf.config import ConfigError
from efficientnet_tf.data.testing import natural_image

from test_weights import _write_tf1_checkpoint

EDGETPU = "efficientnet-edgetpu-S"
CONDCONV = "efficientnet-condconv-b0-4e"

# The reference builders' block strings (edgetpu/efficientnet_edgetpu_builder.py,
# condconv/efficientnet_condconv_builder.py).
EDGETPU_STRINGS = (
    "r1_k3_s11_e4_i24_o24_c1_noskip", "r2_k3_s22_e8_i24_o32_c1", "r4_k3_s22_e8_i32_o48_c1",
    "r5_k5_s22_e8_i48_o96", "r4_k5_s11_e8_i96_o144", "r2_k5_s22_e8_i144_o192")
CONDCONV_STRINGS = (
    "r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25", "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25", "r3_k5_s11_e6_i80_o112_se0.25_cc",
    "r4_k5_s22_e6_i112_o192_se0.25_cc", "r1_k3_s11_e6_i192_o320_se0.25_cc")

# Small but complete: every stage, residual blocks in the 3x3-conv ('c1') stages and in the
# CondConv stages. Width 0.6 makes EdgeTPU's stem (24 channels) differ from the first block's
# declared input (16), which the first block's expansion kernel must follow.
FAMILIES = {
    EDGETPU: dict(strings=EDGETPU_STRINGS, activation="relu", use_se=False, experts=None,
                  overrides=dict(width_coefficient=0.6, depth_coefficient=0.4, resolution=64,
                                 num_classes=6)),
    CONDCONV: dict(strings=CONDCONV_STRINGS, activation="swish", use_se=True, experts=4,
                   overrides=dict(width_coefficient=0.5, depth_coefficient=0.4, resolution=64,
                                  num_classes=6)),
}
BN_EPS = 1e-3


# --- the reference architecture, spelled out independently of the package ---------------------

def _round_filters(filters, width, divisor=8):
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * filters else new)


def _decode(block_string):
    opts = dict(re.fullmatch(r"([a-z]+)(\d.*)", op).groups()
                for op in block_string.split("_") if re.fullmatch(r"[a-z]+\d.*", op))
    return dict(kernel=int(opts["k"]), repeats=int(opts["r"]), stride=int(opts["s"][0]),
                expand=int(opts["e"]), cin=int(opts["i"]), cout=int(opts["o"]),
                se=float(opts["se"]) if "se" in opts else None, c1=opts.get("c") == "1",
                skip="noskip" not in block_string, cc=block_string.endswith("_cc"))


def _blocks(family):
    """Every block as the reference's Model._build makes them (declared = scaled filters)."""
    spec, o = FAMILIES[family], FAMILIES[family]["overrides"]
    blocks = []
    for s in spec["strings"]:
        b = _decode(s)
        cin = _round_filters(b["cin"], o["width_coefficient"])
        cout = _round_filters(b["cout"], o["width_coefficient"])
        for r in range(int(math.ceil(o["depth_coefficient"] * b["repeats"]))):
            blocks.append({**b, "cin": cin if r == 0 else cout, "cout": cout,
                           "stride": b["stride"] if r == 0 else 1,
                           "se": b["se"] if spec["use_se"] else None})
    return blocks


def _keras_name(base, uid):
    return f"{base}_{uid}" if uid else base


def _block_names(family):
    """Per block: its TF1 names (without the model scope), as the reference creates them."""
    names, cc_index = [], 0
    for i, b in enumerate(_blocks(family)):
        p = f"blocks_{i}"
        if b["c1"]:  # MBConvBlockWithoutDepthwise (all of them expand here)
            names.append(dict(expand=f"{p}/conv2d/kernel", bn0=f"{p}/tpu_batch_normalization",
                              project=f"{p}/conv2d_1/kernel",
                              bn2=f"{p}/tpu_batch_normalization_1"))
            continue
        n = {}
        bns = iter(["tpu_batch_normalization", "tpu_batch_normalization_1",
                    "tpu_batch_normalization_2"])
        convs = iter(["conv2d", "conv2d_1"])
        if b["cc"]:
            # Keras layers of the whole model share one counter per class; three CondConv2D per
            # block (fused: never called, no variable; expand; project).
            c = cc_index
            n["routing"] = f"{p}/dense"
            n["expand"] = f"model/{p}/{_keras_name('cond_conv2d', 3 * c + 1)}/condconv_kernel"
            n["depthwise"] = (f"model/{p}/{_keras_name('depthwise_cond_conv2d', c)}/"
                              "depthwise_condconv_kernel")
            n["project"] = f"model/{p}/{_keras_name('cond_conv2d', 3 * c + 2)}/condconv_kernel"
            cc_index += 1
        if b["expand"] != 1:
            if not b["cc"]:
                n["expand"] = f"{p}/{next(convs)}/kernel"
            n["bn0"] = f"{p}/{next(bns)}"
        if not b["cc"]:
            n["depthwise"] = f"{p}/depthwise_conv2d/depthwise_kernel"
            n["project"] = f"{p}/{next(convs)}/kernel"
        n["bn1"], n["bn2"] = f"{p}/{next(bns)}", f"{p}/{next(bns)}"
        if b["se"]:
            n["se_reduce"], n["se_expand"] = f"{p}/se/conv2d", f"{p}/se/conv2d_1"
        names.append(n)
    return names


def _official_arrays(family, seed=0):
    """{TF1 name without scope: array} with random but well-conditioned values."""
    rng = np.random.default_rng(seed)
    spec, o = FAMILIES[family], FAMILIES[family]["overrides"]
    experts = spec["experts"]
    out = {}

    def f32(a):
        return np.asarray(a, "float32")

    def conv(name, shape):  # He-normal over the fan-in: activations stay O(1)
        fan_in = shape[0] * shape[1] * (1 if name.endswith("depthwise_kernel") else shape[2])
        out[name] = f32(rng.normal(0, math.sqrt(2.0 / fan_in), shape))

    def cond_conv(name, shape):  # [experts, prod(kernel shape)], each expert a whole kernel
        fan_in = shape[0] * shape[1] * (1 if "depthwise" in name else shape[2])
        out[name] = f32(rng.normal(0, math.sqrt(2.0 / fan_in), (experts, int(np.prod(shape)))))

    def bn(prefix, c, small=False):
        low, high = (0.05, 0.2) if small else (0.5, 1.5)
        out[f"{prefix}/gamma"] = f32(rng.uniform(low, high, c))
        out[f"{prefix}/beta"] = f32(rng.normal(0, 0.2, c))
        out[f"{prefix}/moving_mean"] = f32(rng.normal(0, 0.2, c))
        out[f"{prefix}/moving_variance"] = f32(rng.uniform(0.5, 1.5, c))

    channels = _round_filters(32, o["width_coefficient"])
    conv("stem/conv2d/kernel", (3, 3, 3, channels))
    bn("stem/tpu_batch_normalization", channels)
    for b, n in zip(_blocks(family), _block_names(family)):
        exp = b["cin"] * b["expand"]  # from the declared input filters
        k = b["kernel"]
        if b["c1"]:
            conv(n["expand"], (3, 3, channels, exp))  # from the actual input channels
        else:
            if b["cc"]:
                out[f"{n['routing']}/kernel"] = f32(rng.normal(0, 6 / math.sqrt(channels),
                                                               (channels, experts)))
                out[f"{n['routing']}/bias"] = f32(rng.normal(0, 0.5, experts))
            make = cond_conv if b["cc"] else conv
            if b["expand"] != 1:
                make(n["expand"], (1, 1, channels, exp))
            make(n["depthwise"], (k, k, exp, 1))
            bn(n["bn1"], exp)
            if b["se"]:
                reduced = max(1, int(b["cin"] * b["se"]))
                conv(f"{n['se_reduce']}/kernel", (1, 1, exp, reduced))
                out[f"{n['se_reduce']}/bias"] = f32(rng.normal(0, 0.2, reduced))
                conv(f"{n['se_expand']}/kernel", (1, 1, reduced, exp))
                out[f"{n['se_expand']}/bias"] = f32(rng.normal(0, 0.2, exp))
        if "bn0" in n:
            bn(n["bn0"], exp)
        (cond_conv if b["cc"] else conv)(n["project"], (1, 1, exp, b["cout"]))
        # A small gamma on a residual block's output keeps the deep random net from blowing up;
        # elsewhere it would shrink the image's signal away.
        bn(n["bn2"], b["cout"], small=b["skip"] and b["stride"] == 1 and b["cin"] == b["cout"])
        channels = b["cout"]
    head = _round_filters(1280, o["width_coefficient"])
    conv("head/conv2d/kernel", (1, 1, channels, head))
    bn("head/tpu_batch_normalization", head)
    out["head/dense/kernel"] = f32(rng.normal(0, 1 / math.sqrt(head), (head, o["num_classes"])))
    out["head/dense/bias"] = f32(rng.normal(0, 0.2, o["num_classes"]))
    return out


def _reference_forward(family, arrays, images, routing="per_example"):
    """The reference's eval forward pass from the named arrays, with tf.nn ops only.

    Returns (logits, [routing weights of each CondConv block]). routing='batch_mean' replaces
    each block's routing weights by their batch mean (to show that routing matters).
    """
    spec = FAMILIES[family]
    act = tf.nn.relu if spec["activation"] == "relu" else (lambda t: t * tf.sigmoid(t))

    def bn(t, prefix):
        g, b, m, v = (arrays[f"{prefix}/{k}"] for k in ("gamma", "beta", "moving_mean",
                                                       "moving_variance"))
        return (t - m) / np.sqrt(v + BN_EPS) * g + b

    def conv(t, kernel, stride=1):
        return tf.nn.conv2d(t, kernel, strides=stride, padding="SAME")

    def per_example(t, name, shape, r, depthwise=False, stride=1):
        """condconv_layers: kernel_b = routing_b @ condconv_kernel, reshaped row-major."""
        kernels = tf.matmul(r, arrays[name])
        outs = []
        for i in range(t.shape[0]):
            k = tf.reshape(kernels[i], shape)
            outs.append(tf.nn.depthwise_conv2d(t[i:i + 1], k, [1, stride, stride, 1], "SAME")
                        if depthwise else conv(t[i:i + 1], k, stride))
        return tf.concat(outs, 0)

    x = tf.constant((np.asarray(images, "float32") - 127.0) / 128.0)
    x = act(bn(conv(x, arrays["stem/conv2d/kernel"], 2), "stem/tpu_batch_normalization"))
    routings = []
    for b, n in zip(_blocks(family), _block_names(family)):
        inputs, s = x, b["stride"]
        exp = b["cin"] * b["expand"]
        if b["c1"]:
            x = act(bn(conv(x, arrays[n["expand"]], s), n["bn0"]))
            x = bn(conv(x, arrays[n["project"]]), n["bn2"])
            if b["skip"] and s == 1 and b["cin"] == b["cout"]:
                x = x + inputs
            continue
        if b["cc"]:
            r = tf.sigmoid(tf.reduce_mean(x, [1, 2]) @ arrays[f"{n['routing']}/kernel"]
                           + arrays[f"{n['routing']}/bias"])
            if routing == "batch_mean":
                r = tf.broadcast_to(tf.reduce_mean(r, 0, keepdims=True), r.shape)
            routings.append(r.numpy())
        cin = x.shape[-1]
        if b["expand"] != 1:
            x = (per_example(x, n["expand"], (1, 1, cin, exp), r) if b["cc"]
                 else conv(x, arrays[n["expand"]]))
            x = act(bn(x, n["bn0"]))
        k = b["kernel"]
        x = (per_example(x, n["depthwise"], (k, k, exp, 1), r, depthwise=True, stride=s)
             if b["cc"] else tf.nn.depthwise_conv2d(x, arrays[n["depthwise"]], [1, s, s, 1],
                                                    "SAME"))
        x = act(bn(x, n["bn1"]))
        if b["se"]:
            se = tf.reduce_mean(x, [1, 2], keepdims=True)
            se = act(conv(se, arrays[f"{n['se_reduce']}/kernel"])
                     + arrays[f"{n['se_reduce']}/bias"])
            se = conv(se, arrays[f"{n['se_expand']}/kernel"]) + arrays[f"{n['se_expand']}/bias"]
            x = tf.sigmoid(se) * x
        x = (per_example(x, n["project"], (1, 1, exp, b["cout"]), r) if b["cc"]
             else conv(x, arrays[n["project"]]))
        x = bn(x, n["bn2"])
        if b["skip"] and s == 1 and inputs.shape[-1] == x.shape[-1]:
            x = x + inputs
    x = act(bn(conv(x, arrays["head/conv2d/kernel"]), "head/tpu_batch_normalization"))
    x = tf.reduce_mean(x, [1, 2])
    return (x @ arrays["head/dense/kernel"] + arrays["head/dense/bias"]).numpy(), routings


def _images(family, n=3, seed=0):
    """Photo-like images, each with its own colour cast: their pooled features (the CondConv
    routing's input) then differ clearly."""
    size = FAMILIES[family]["overrides"]["resolution"]
    tints = np.array([[1.2, 0.6, 0.2], [0.3, 0.7, 1.2], [0.5, 0.3, 0.4]])[:n]
    photos = np.stack([natural_image(size, size, seed=seed + i) for i in range(n)])
    return (photos * tints[:, None, None, :]).astype("float32")


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# --- the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", [EDGETPU, CONDCONV])
def test_tf1_checkpoint_matches_reference_forward(tmp_path, family):
    overrides = FAMILIES[family]["overrides"]
    # The small configuration still has residual blocks of the family's own kind.
    special = "c1" if family == EDGETPU else "cc"
    assert any(b[special] and b["stride"] == 1 and b["cin"] == b["cout"] for b in _blocks(family))
    arrays = _official_arrays(family)
    prefix = _write_tf1_checkpoint(str(tmp_path / "model.ckpt-1234"), family, arrays)
    x = _images(family)
    expected, routings = _reference_forward(family, arrays, x)
    scale = float(np.max(np.abs(expected)))
    assert float(np.max(np.std(expected, axis=0))) > 0.05 * scale  # logits depend on the image
    tol = 1e-4 * max(1.0, scale)
    if family == CONDCONV:
        # The routing is per image and matters: with every block's routing replaced by its batch
        # mean the logits move far beyond the tolerance, so a routing mix-up cannot pass.
        assert len(routings) == sum(b["cc"] for b in _blocks(family)) == 5
        for i, j in ((0, 1), (0, 2), (1, 2)):
            assert max(_max_diff(r[i], r[j]) for r in routings) > 0.2, (i, j)
        mean_routed, _ = _reference_forward(family, arrays, x, routing="batch_mean")
        assert _max_diff(mean_routed, expected) > 100 * tol

    out = W.convert(family, prefix, str(tmp_path / "model.weights.h5"), overrides=overrides)
    model = build_model(model_name=family, classifier_activation=None, weights=out, **overrides)
    logits = model(x, training=False).numpy()
    assert logits.shape == expected.shape
    assert _max_diff(logits, expected) <= tol, (_max_diff(logits, expected), tol)
    # Batch independence: each image alone gives its own logits (per-example kernels).
    alone = np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(len(x))])
    assert _max_diff(alone, expected) <= tol

    # The direct import of the checkpoint equals the converted file.
    direct = build_model(model_name=family, classifier_activation=None, **overrides)
    W.load_weights(direct, prefix)
    np.testing.assert_allclose(direct(x, training=False).numpy(), logits, rtol=0, atol=1e-6)


def test_tf1_checkpoint_problems_name_the_variable(tmp_path):
    arrays = _official_arrays(CONDCONV)
    model = build_model(model_name=CONDCONV, **FAMILIES[CONDCONV]["overrides"])
    names = _block_names(CONDCONV)
    cc = [i for i, b in enumerate(_blocks(CONDCONV)) if b["cc"]]
    # An 8-expert kernel in a 4-expert model.
    kernel = names[cc[1]]["expand"]
    wrong = np.concatenate([arrays[kernel]] * 2)
    bad = _write_tf1_checkpoint(str(tmp_path / "shape"), CONDCONV, arrays,
                                replace={kernel: wrong})
    with pytest.raises(ConfigError, match=re.escape(f"{CONDCONV}/{kernel}")) as err:
        W.load_weights(model, bad)
    assert str(tuple(wrong.shape)) in str(err.value)

    routing, depthwise = f"{names[cc[2]]['routing']}/bias", names[cc[0]]["depthwise"]
    missing = _write_tf1_checkpoint(str(tmp_path / "missing"), CONDCONV, arrays,
                                    drop=(routing, depthwise))
    with pytest.raises(ConfigError) as err:
        W.load_weights(model, missing)
    assert f"{CONDCONV}/{routing}" in str(err.value)
    assert f"{CONDCONV}/{depthwise}" in str(err.value)

    # EdgeTPU: the first block's expansion kernel reads the stem's channels (24 here), not the
    # block's declared input filters (16); a kernel sized by the latter is refused.
    arrays = _official_arrays(EDGETPU)
    model = build_model(model_name=EDGETPU, **FAMILIES[EDGETPU]["overrides"])
    kernel = _block_names(EDGETPU)[0]["expand"]
    assert arrays[kernel].shape == (3, 3, 24, 64)
    bad = _write_tf1_checkpoint(str(tmp_path / "edgetpu"), EDGETPU, arrays,
                                replace={kernel: arrays[kernel][:, :, :16]})
    with pytest.raises(ConfigError, match=re.escape(f"{EDGETPU}/{kernel}")):
        W.load_weights(model, bad)
    missing = _write_tf1_checkpoint(str(tmp_path / "edgetpu_missing"), EDGETPU, arrays,
                                    drop=("blocks_1/tpu_batch_normalization_1/moving_variance",))
    with pytest.raises(ConfigError,
                       match=f"{EDGETPU}/blocks_1/tpu_batch_normalization_1/moving_variance"):
        W.load_weights(model, missing)


def test_condconv_kernels_pair_up_by_counter_whatever_their_numbers(tmp_path):
    """A graph that built other Keras layers first numbers the CondConv layers differently (and
    a builder outside a Keras Model has no `model/` level): within a block the kernels still pair
    up in counter order, expand before project."""
    arrays = _official_arrays(CONDCONV)

    def renumber(m):
        return f"{m[1]}/{m[2]}_{int(m[3] or 0) + 100}/"

    renamed = {re.sub(r"^model/(blocks_\d+)/(\w+?)(?:_(\d+))?/", renumber, n): a
               for n, a in arrays.items()}
    assert sum(n.startswith("blocks_") and "_cond_conv2d_10" in n for n in renamed) == 5
    assert len(set(renamed) - set(arrays)) == 15  # 5 blocks x (expand, depthwise, project)
    overrides = FAMILIES[CONDCONV]["overrides"]
    x = _images(CONDCONV)
    outputs = []
    for name, named in (("official", arrays), ("renamed", renamed)):
        prefix = _write_tf1_checkpoint(str(tmp_path / name / "model.ckpt"), CONDCONV, named)
        model = build_model(model_name=CONDCONV, classifier_activation=None, **overrides)
        W.load_weights(model, prefix)
        outputs.append(model(x, training=False).numpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
