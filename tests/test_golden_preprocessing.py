"""Preprocessing against the official reference's own outputs (golden README sections 2 and 3)."""
import numpy as np
import pytest
import tensorflow as tf
from golden import load_golden

from efficientnet_tf.data import preprocessing as pp

EVAL_CASES = ["chelsea_S224_bilinear", "chelsea_S224_default", "camera_S224_default",
              "coffee_S240_default", "astronaut_S300_default"]
TOL = 1e-3  # on the 0..255 scale; the same TF kernels give 0.0


def eval_case(key):
    arrays, meta = load_golden("preprocess_eval.npz")
    case = {c["key"]: c for c in meta["cases"]}[key]
    jpeg = tf.constant(arrays[case["jpeg_key"]].tobytes())
    method = None if case["resize"] == "default" else case["resize"]
    return arrays, case, jpeg, method


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=TOL)


def assert_close_up_to_flip(actual, expected):
    actual = np.asarray(actual)
    flipped = np.abs(actual - expected[:, ::-1]).max() <= TOL
    assert flipped or np.abs(actual - expected).max() <= TOL


@pytest.mark.parametrize("key", EVAL_CASES)
def test_eval_matches_reference(key):
    arrays, case, jpeg, method = eval_case(key)
    size = case["image_size"]
    window = pp.center_crop_window(tf.image.extract_jpeg_shape(jpeg), size)
    np.testing.assert_array_equal(window.numpy(), arrays[key + "_crop_window"])
    assert_close(pp.preprocess_image(jpeg, is_training=False, image_size=size,
                                     resize_method=method), arrays[key])
    # In a tf.data map, as the pipeline runs it: no static shape, graph mode.
    ds = tf.data.Dataset.from_tensors(jpeg).map(
        lambda b: pp.preprocess_image(b, image_size=size, resize_method=method))
    assert_close(next(iter(ds)), arrays[key])


@pytest.mark.parametrize("key", EVAL_CASES)
def test_half_pixel_centers_is_tf2_resize_clipped_and_not_the_reference(key):
    arrays, case, jpeg, method = eval_case(key)
    size, method = case["image_size"], method or "bicubic"
    out = pp.preprocess_for_eval(jpeg, size, resize_method=method, half_pixel_centers=True).numpy()
    crop = pp.decode_and_crop(jpeg, lambda shape: pp.center_crop_window(shape, size))
    expected = tf.clip_by_value(tf.image.resize(crop, [size, size], method=method), 0, 255)
    np.testing.assert_array_equal(out, expected.numpy())
    diff = np.abs(out - arrays[key]).max()
    # The README's TF2-vs-reference max (unclipped TF2), e.g. 116.7 on camera_S224_default.
    assert diff > 10 and diff == pytest.approx(case["tf2_resize_vs_reference_maxabs"], rel=0.1)


def test_png_is_decoded_unlike_the_reference():
    # Deliberate difference: the reference raises on PNG (extract_jpeg_shape); we decode any
    # format tf.io.decode_image reads and take the same center crop.
    arrays, meta = load_golden("preprocess_eval.npz")
    case = meta["png"][0]
    out = pp.preprocess_image(tf.constant(arrays[case["input"]].tobytes()),
                              image_size=case["image_size"])
    assert out.shape == (case["image_size"],) * 2 + (3,) and out.dtype == tf.float32


def train_golden():
    arrays, meta = load_golden("preprocess_train_deterministic.npz")
    return arrays, meta, tf.constant(arrays["jpeg"].tobytes())


def inject_sampled_window(monkeypatch, window):
    """Replace the random sampler of the training path by a fixed window."""
    monkeypatch.setattr(pp, "sample_crop_window", lambda shape, seed: tf.constant(window, tf.int32))


@pytest.mark.parametrize("key", ["crop0_S224_default", "crop1_S224_bilinear"])
def test_train_crop_and_resize_match_reference(key, monkeypatch):
    arrays, meta, jpeg = train_golden()
    case = {c["key"]: c for c in meta["cases"]}[key]
    size, window = case["image_size"], arrays[key + "_window"]
    method = "bicubic" if case["resize"] == "default" else case["resize"]
    crop = pp.decode_and_crop(jpeg, lambda shape: tf.constant(window))
    assert_close(pp.resize(crop, size, method), arrays[key])
    inject_sampled_window(monkeypatch, window)
    out = pp.preprocess_for_train(jpeg, size, tf.constant([5, 6], tf.int64), resize_method=method)
    assert_close_up_to_flip(out, arrays[key])


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_train_fallback_is_the_bicubic_center_crop(method, monkeypatch):
    # The sampler returning the whole image -> the reference's _decode_and_center_crop, bicubic
    # whatever resize_method (efficientnet-lite trains bilinear but falls back bicubic).
    arrays, _, jpeg = train_golden()
    height, width, _ = arrays["jpeg_shape"]
    inject_sampled_window(monkeypatch, [0, 0, height, width])
    for seed in ([1, 2], [3, 4]):
        out = pp.preprocess_for_train(jpeg, 224, tf.constant(seed, tf.int64), resize_method=method)
        assert_close_up_to_flip(out, arrays["center_crop_fallback_S224"])


def test_grayscale_jpeg_never_falls_back(monkeypatch):
    # The reference compares extract_jpeg_shape (channels 1 for grayscale) with the crop's shape
    # (channels 3): only 2 entries match, so the whole image is resized instead of center-cropped.
    arrays, _ = load_golden("preprocess_eval.npz")
    jpeg = tf.constant(arrays["camera_jpeg"].tobytes())
    shape = tf.image.extract_jpeg_shape(jpeg).numpy()
    assert shape[2] == 1
    inject_sampled_window(monkeypatch, [0, 0, shape[0], shape[1]])
    out = pp.preprocess_for_train(jpeg, 224, tf.constant([1, 2], tf.int64)).numpy()
    whole = tf.raw_ops.ResizeBicubic(images=tf.io.decode_jpeg(jpeg, channels=3)[None],
                                     size=[224, 224], half_pixel_centers=False)[0].numpy()
    assert_close_up_to_flip(out, whole)
    _, fallback = pp.train_crop_window(tf.constant(shape), 224, tf.constant([0, 0, *shape[:2]]))
    assert not fallback


def test_random_crop_sampler_uses_the_references_parameters():
    _, params = load_golden("preprocess_train_random_crop.json")
    assert pp.MIN_OBJECT_COVERED == params["min_object_covered"]
    np.testing.assert_allclose(pp.ASPECT_RATIO_RANGE, params["aspect_ratio_range"], rtol=1e-12)
    assert tuple(pp.AREA_RANGE) == tuple(params["area_range"])
    assert pp.MAX_ATTEMPTS == params["max_attempts"]
