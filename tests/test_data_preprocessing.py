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


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_default_resize_samples_without_half_pixel_offset(method):
    # S=32 on 80x75: crop 64 at (8, 6); the reference's TF1 kernels map output (i, j) to input
    # (2i, 2j) exactly, so the result is the crop's even pixels, untouched.
    image = coordinate_image(80, 75)
    png = tf.constant(encode(image, "PNG"))
    out = pp.preprocess_for_eval(png, 32, resize_method=method)
    np.testing.assert_array_equal(out.numpy(), image[8:72:2, 6:70:2].astype(np.float32))
    # The TF2 (half-pixel) kernel interpolates between pixels instead.
    tf2 = pp.preprocess_for_eval(png, 32, resize_method=method, half_pixel_centers=True).numpy()
    assert np.abs(tf2 - image[8:72:2, 6:70:2]).max() > 1


def test_default_resize_is_unclipped_and_half_pixel_centers_clips():
    # A sharp 0/255 edge: bicubic (Keys a=-0.75) overshoots on both sides, as in the reference.
    image = np.zeros((30, 30, 3), np.uint8)
    image[:, 15:] = 255
    out = pp.resize(tf.constant(image), 23).numpy()
    assert out.min() < 0 and out.max() > 255
    clipped = pp.resize(tf.constant(image), 23, half_pixel_centers=True).numpy()
    assert clipped.min() == 0 and clipped.max() == 255


def test_unknown_resize_method_is_refused():
    image = tf.constant(coordinate_image(40, 40))
    with pytest.raises(ValueError, match="bicubic, bilinear"):
        pp.preprocess_for_eval(image, 16, resize_method="area")
    with pytest.raises(ValueError, match="bicubic, bilinear"):
        pp.preprocess_for_train(image, 16, tf.constant([0, 1], tf.int64), resize_method="nearest")


def test_jpeg_crop_window_decode_equals_full_decode_then_slice():
    jpeg = tf.constant(encode(natural_image(90, 120, seed=1), "JPEG"))
    # S=64: pad=9, crop = int(64/73 * 90) = 78, offsets ((90-78+1)//2, (120-78+1)//2) = (6, 21).
    window = pp.center_crop_window(tf.image.extract_jpeg_shape(jpeg), 64)
    assert window.numpy().tolist() == [6, 21, 78, 78]
    cropped = pp.decode_and_crop(jpeg, lambda shape: pp.center_crop_window(shape, 64)).numpy()
    full = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    np.testing.assert_allclose(cropped, full[6:84, 21:99], atol=2)
    expected = tf.raw_ops.ResizeBicubic(images=full[None, 6:84, 21:99], size=[64, 64],
                                        half_pixel_centers=False)[0]
    np.testing.assert_allclose(pp.preprocess_for_eval(jpeg, 64).numpy(), expected.numpy(), atol=2)


def test_train_crop_is_seeded():
    jpeg = tf.constant(encode(natural_image(120, 160, seed=2), "JPEG"))
    a = pp.preprocess_for_train(jpeg, 48, tf.constant([1, 2], tf.int64))
    b = pp.preprocess_for_train(jpeg, 48, tf.constant([1, 2], tf.int64))
    c = pp.preprocess_for_train(jpeg, 48, tf.constant([3, 4], tf.int64))
    assert a.shape == (48, 48, 3) and a.dtype == tf.float32
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    tf2 = pp.preprocess_for_train(jpeg, 48, tf.constant([1, 2], tf.int64), half_pixel_centers=True)
    assert 0.0 <= float(tf.reduce_min(tf2)) and float(tf.reduce_max(tf2)) <= 255.0


def test_augment_input_is_clipped_and_truncated_to_uint8():
    # Sharp edges (the coordinates wrap at 256): the unclipped bicubic overshoots both ways.
    image = tf.constant(coordinate_image(120, 160))
    seen = []

    def identity(image, seed):
        seen.append(image.dtype)
        return image

    seed = tf.constant([1, 2], tf.int64)
    plain = pp.preprocess_for_train(image, 48, seed).numpy()
    assert (plain < 0).any() and (plain > 255).any() and (plain % 1 != 0).any()
    out = pp.preprocess_for_train(image, 48, seed, augment=identity).numpy()
    assert seen == [tf.uint8]
    np.testing.assert_array_equal(out, np.floor(np.clip(plain, 0, 255)))


def test_preprocess_image_runs_the_pipeline_functions(monkeypatch):
    jpeg = tf.constant(encode(natural_image(120, 160, seed=2), "JPEG"))
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_array_equal(pp.preprocess_image(jpeg, image_size=48).numpy(),
                                  pp.preprocess_for_eval(jpeg, 48).numpy())
    np.testing.assert_array_equal(
        pp.preprocess_image(jpeg, True, 48, "bilinear", seed=seed).numpy(),
        pp.preprocess_for_train(jpeg, 48, seed, resize_method="bilinear").numpy())
    assert pp.preprocess_image(jpeg, is_training=True, image_size=48).shape == (48, 48, 3)

    made = []

    class FakeAugmenter:
        def __init__(self, name, *, num_layers, magnitude):
            made.append((name, num_layers, magnitude))

        def __call__(self, image, seed):
            return 255 - image

    monkeypatch.setattr(pp, "ImageAugmenter", FakeAugmenter)
    out = pp.preprocess_image(jpeg, True, 48, augment_name="randaugment", seed=seed).numpy()
    plain = pp.preprocess_for_train(jpeg, 48, seed).numpy()
    np.testing.assert_array_equal(out, 255 - np.floor(np.clip(plain, 0, 255)))
    pp.preprocess_image(jpeg, True, 48, None, "autoaugment", 3, 15, seed=seed)
    assert made == [("randaugment", 2, 10), ("autoaugment", 3, 15)]


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


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_train_falls_back_to_the_bicubic_center_crop_when_sampling_fails(method):
    # A 4x400 strip has no window with aspect in [3/4, 4/3] covering >= 8% of it.
    image = tf.constant(coordinate_image(4, 400))
    window = pp.random_crop_window(tf.shape(image), 16, tf.constant([0, 1]))
    assert window.numpy().tolist() == pp.center_crop_window(tf.shape(image), 16).numpy().tolist()
    out = pp.preprocess_for_train(image, 16, tf.constant([0, 1], tf.int64), resize_method=method)
    center = pp.preprocess_for_eval(image, 16).numpy()  # bicubic, as the reference's fallback
    assert np.array_equal(out.numpy(), center) or np.array_equal(out.numpy(), center[:, ::-1])


def test_fallback_needs_three_matching_dimensions():
    sampled = tf.constant([0, 0, 300, 400])
    assert pp.train_crop_window(tf.constant([300, 400, 3]), 224, sampled)[1]
    # A grayscale JPEG's header says 1 channel: the reference keeps the whole image.
    window, fallback = pp.train_crop_window(tf.constant([300, 400, 1]), 224, sampled)
    assert not fallback and window.numpy().tolist() == [0, 0, 300, 400]
    smaller = tf.constant([0, 0, 300, 399])
    assert not pp.train_crop_window(tf.constant([300, 400, 3]), 224, smaller)[1]
