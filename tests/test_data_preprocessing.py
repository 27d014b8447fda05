"""Reference preprocessing: eval crop checked by hand on known images, train crop properties."""
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.data import preprocessing as pp
from efficientnet_tf.data.testing import encode, natural_image


def coordinate_image(height, width):
    """Each pixel encodes its own position, so a crop can be identified exactly."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([ys * 2 % 256, xs * 3 % 256, (ys + 5 * xs) % 256], -1).astype(np.uint8)


def test_eval_padding_table():
    table = {224: 32, 240: 34, 260: 37, 300: 43, 380: 54, 456: 65, 528: 75, 600: 86}
    assert {s: pp.eval_crop_padding(s) for s in table} == table


@pytest.mark.parametrize("image_format", ["PNG", "raw"])
def test_eval_center_crop_matches_hand_computed_crop(image_format):
    # S=32: pad=5, crop = int(32/37 * 38) = 32, offsets ((60-32+1)//2, (38-32+1)//2) = (14, 3).
    image = coordinate_image(60, 38)
    source = tf.constant(encode(image, "PNG")) if image_format == "PNG" else tf.constant(image)
    out = pp.preprocess_for_eval(source, 32).numpy()
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)
    np.testing.assert_array_equal(out, image[14:46, 3:35].astype(np.float32))


def test_reference_bicubic_samples_without_half_pixel_offset():
    # S=32 on 80x75: crop 64 at (8, 6); the TF1 kernel maps output (i, j) to input (2i, 2j)
    # exactly, so the result is the crop's even pixels, untouched.
    image = coordinate_image(80, 75)
    out = pp.preprocess_for_eval(tf.constant(encode(image, "PNG")), 32, reference_bicubic=True)
    np.testing.assert_array_equal(out.numpy(), image[8:72:2, 6:70:2].astype(np.float32))
    # The TF2 (half-pixel) kernel interpolates between pixels instead.
    default = pp.preprocess_for_eval(tf.constant(encode(image, "PNG")), 32).numpy()
    assert np.abs(default - image[8:72:2, 6:70:2]).max() > 1


def test_jpeg_crop_window_decode_equals_full_decode_then_slice():
    jpeg = tf.constant(encode(natural_image(90, 120, seed=1), "JPEG"))
    # S=64: pad=9, crop = int(64/73 * 90) = 78, offsets ((90-78+1)//2, (120-78+1)//2) = (6, 21).
    window = pp.center_crop_window(tf.image.extract_jpeg_shape(jpeg), 64)
    assert window.numpy().tolist() == [6, 21, 78, 78]
    cropped = pp.decode_and_crop(jpeg, lambda shape: pp.center_crop_window(shape, 64)).numpy()
    full = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    np.testing.assert_allclose(cropped, full[6:84, 21:99], atol=2)
    expected = tf.clip_by_value(tf.image.resize(full[6:84, 21:99], [64, 64], method="bicubic"), 0, 255)
    np.testing.assert_allclose(pp.preprocess_for_eval(jpeg, 64).numpy(), expected.numpy(), atol=2)


def test_train_crop_is_seeded_and_in_range():
    jpeg = tf.constant(encode(natural_image(120, 160, seed=2), "JPEG"))
    a = pp.preprocess_for_train(jpeg, 48, tf.constant([1, 2], tf.int64))
    b = pp.preprocess_for_train(jpeg, 48, tf.constant([1, 2], tf.int64))
    c = pp.preprocess_for_train(jpeg, 48, tf.constant([3, 4], tf.int64))
    assert a.shape == (48, 48, 3) and a.dtype == tf.float32
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 255.0


def test_random_crop_window_follows_the_inception_constraints():
    shape = tf.constant([300, 400, 3])
    areas = []
    for i in range(40):
        top, left, h, w = pp.random_crop_window(shape, 224, tf.constant([i, 7])).numpy()
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        if (h, w) != (262, 262):  # the fallback center crop
            assert 0.75 * 0.99 <= w / h <= 4 / 3 * 1.01
            areas.append(h * w / (300 * 400))
    assert areas and min(areas) >= 0.08 * 0.95 and len(set(areas)) > 10


def test_train_falls_back_to_the_center_crop_when_sampling_fails():
    # A 4x400 strip has no window with aspect in [3/4, 4/3] covering >= 8% of it.
    image = tf.constant(coordinate_image(4, 400))
    window = pp.random_crop_window(tf.shape(image), 16, tf.constant([0, 1]))
    assert window.numpy().tolist() == pp.center_crop_window(tf.shape(image), 16).numpy().tolist()
    out = pp.preprocess_for_train(image, 16, tf.constant([0, 1], tf.int64)).numpy()
    center = pp.preprocess_for_eval(image, 16).numpy()
    assert np.array_equal(out, center) or np.array_equal(out, center[:, ::-1])
