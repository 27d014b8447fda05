"""AutoAugment/RandAugment ops and mixup against the reference's own outputs (shared/golden,
README sections 4 and 6): every stored key, with python and with tensor arguments."""
import re

import numpy as np
import pytest
import tensorflow as tf
from golden import load_golden

from efficientnet_tf.data import augment as A

KEY = re.compile(r"(?P<ra>ra_)?(?P<ns>ns_)?(?P<op>[A-Za-z]+)_L(?P<level>\d+)(?P<neg>_neg)?"
                 r"(?:_c(?P<row>\d+)_(?P<col>\d+))?")
GEOMETRIC_TOLERANT = ("Rotate", "ShearX", "ShearY")  # README: <= 0.5% boundary pixels may flip
PIL_OPS = ("Posterize", "Solarize", "Contrast")


def parse(key):
    """(op, level, input name, augment_op kwargs) from a key such as `ra_Cutout_L5_c20_44`."""
    m = KEY.fullmatch(key)
    assert m, key
    kwargs = dict(hparams="randaugment" if m["ra"] else "autoaugment", negate=bool(m["neg"]),
                  cutout_center=(int(m["row"]), int(m["col"])) if m["row"] else None)
    return m["op"], int(m["level"]), "image_ns" if m["ns"] else "image", kwargs


@pytest.fixture(scope="module")
def golden():
    arrays, _ = load_golden("augment_ops.npz")
    keys = [k for k in arrays if k not in ("image", "image_ns")]
    return arrays, keys


def assert_matches(op, got, want, key):
    differing = float(np.mean(np.asarray(got) != want))
    if op in GEOMETRIC_TOLERANT:
        assert differing <= 0.005, f"{key}: {differing:.2%} of values differ"
    else:
        assert differing == 0, f"{key}: {differing:.2%} of values differ"


@tf.function(reduce_retracing=True)
def tensor_op(image, level, negate, center, name, hparams):
    """How the policies call an op: level, sign and centre as tensors inside a graph."""
    return A.augment_op(image, name, level, hparams=hparams, negate=negate,
                        cutout_center=center)


def test_every_key_is_a_reference_op(golden):
    arrays, keys = golden
    assert len(keys) == 175
    assert {parse(k)[0] for k in keys} == set(A.RANDAUGMENT_OPS)


@pytest.mark.parametrize("op", A.RANDAUGMENT_OPS)
def test_op_equals_reference_output(golden, op):
    arrays, keys = golden
    cases = [k for k in keys if parse(k)[0] == op]
    assert cases
    for key in cases:
        _, level, source, kwargs = parse(key)
        assert_matches(op, A.augment_op(arrays[source], op, level, **kwargs), arrays[key], key)


@pytest.mark.parametrize("op", A.RANDAUGMENT_OPS)
def test_op_with_tensor_level_in_a_graph_equals_reference_output(golden, op):
    arrays, keys = golden
    for key in [k for k in keys if parse(k)[0] == op]:
        _, level, source, kwargs = parse(key)
        center = kwargs["cutout_center"] or (0, 0)
        got = tensor_op(tf.constant(arrays[source]), tf.constant(level, tf.float32),
                        tf.constant(kwargs["negate"]), tf.constant(center, tf.int32), op,
                        kwargs["hparams"])
        assert_matches(op, got, arrays[key], key)


def test_quirks_the_golden_readme_lists(golden):
    arrays, _ = golden
    image = arrays["image"].astype(np.int32)
    np.testing.assert_array_equal(arrays["Solarize_L10"], 255 - image)  # threshold 256 wraps to 0
    np.testing.assert_array_equal(arrays["Posterize_L0"], image & 0x80)  # shift 8 clamps to 7
    np.testing.assert_array_equal(arrays["Contrast_L5"], image)  # factor 1: input unchanged
    # Contrast's gray level is pixel_count / 256 = 16 for 64x64, not the mean.
    expected = np.clip(16 + np.float32(0.1) * (image.astype(np.float32) - 16), 0, 255)
    np.testing.assert_array_equal(arrays["Contrast_L0"], expected.astype(np.uint8))


def test_pil_ops_differ_from_reference_only_where_documented(golden):
    arrays, keys = golden
    image = arrays["image"]
    for key in keys:
        op, level, source, kwargs = parse(key)
        got = A.augment_op(arrays[source], op, level, ops="pil", **kwargs).numpy()
        if op not in PIL_OPS:
            assert_matches(op, got, arrays[key], key)
            continue
        pixels = image.astype(np.int32)
        if op == "Posterize":  # keeps 8 - int(level/10*4) bits
            mask = (0xFF << int(level / 10 * 4)) & 0xFF
            np.testing.assert_array_equal(got, pixels & mask)
        elif op == "Solarize":  # int32 threshold: no wrap of 256 to 0
            threshold = int(level / 10 * 256)
            np.testing.assert_array_equal(got, np.where(pixels < threshold, pixels, 255 - pixels))
        else:  # towards the mean gray level
            gray = np.float32(np.uint8(np.mean(tf.image.rgb_to_grayscale(image).numpy(),
                                               dtype=np.float32)))
            factor = np.float32(level / 10 * 1.8 + 0.1)
            expected = np.clip(gray + factor * (pixels.astype(np.float32) - gray), 0, 255)
            np.testing.assert_array_equal(got, expected.astype(np.uint8))
        assert np.array_equal(got, arrays[key]) == (
            (op, level) in {("Posterize", 10), ("Solarize", 0), ("Solarize", 2), ("Solarize", 5),
                            ("Solarize", 8), ("Contrast", 5)}), key


def test_mixup_equals_reference_output():
    arrays, meta = load_golden("mixup.npz")
    images, labels = A.mixup(arrays["images"], arrays["labels"], 0.2,
                             beta_sample=arrays["beta_sample"])
    np.testing.assert_allclose(images.numpy(), arrays["images_mix"], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(labels.numpy(), arrays["labels_mix"], rtol=1e-6, atol=1e-6)
