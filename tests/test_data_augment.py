"""AutoAugment / RandAugment ops against hand-computed results, policies, mixup and cutmix.
(Bit-exactness against the reference's own outputs: test_golden_augment.py.)"""
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.data import augment as A
from efficientnet_tf.data.testing import natural_image

IMAGE = natural_image(48, 160, seed=3)
RAND = A.ImageAugmenter("randaugment", num_layers=2, magnitude=10)
PIL = A.ImageAugmenter("randaugment", num_layers=2, magnitude=10, ops="pil")


def op(name, image=IMAGE, level=10.0, seed=(1, 2), augmenter=RAND):
    return augmenter.apply_op(name, tf.constant(image), level, tf.constant(seed, tf.int64)).numpy()


def test_pixel_ops_match_their_definitions():
    img = IMAGE.astype(np.int32)
    np.testing.assert_array_equal(op("Invert"), 255 - img)
    np.testing.assert_array_equal(op("Posterize"), img & 0xF0)  # level 10 keeps 4 bits
    np.testing.assert_array_equal(op("Posterize", level=0), img & 0x80)  # 0 bits: shift clamps to 7
    np.testing.assert_array_equal(op("Posterize", level=0, augmenter=PIL), img)  # 8 bits
    np.testing.assert_array_equal(op("Solarize", level=10), 255 - img)  # threshold 256 wraps to 0
    np.testing.assert_array_equal(op("Solarize", level=10, augmenter=PIL), img)
    # RandAugment magnitudes past 10 keep the uint8 wraps: threshold 384 -> 128, shift -4 -> 7.
    np.testing.assert_array_equal(op("Solarize", level=15), op("Solarize", level=5))
    np.testing.assert_array_equal(op("Posterize", level=30), img & 0x80)
    np.testing.assert_array_equal(op("Solarize", level=5), np.where(img < 128, img, 255 - img))
    np.testing.assert_array_equal(op("SolarizeAdd"),
                                  np.where(img < 128, np.minimum(img + 110, 255), img))
    np.testing.assert_array_equal(op("Brightness"), np.minimum(img * 1.9, 255).astype(np.uint8))


def test_enhance_ops_on_degenerate_images():
    flat = np.full((20, 20, 3), 90, np.uint8)
    gray = np.repeat(natural_image(20, 20, seed=4)[..., :1], 3, axis=-1)
    np.testing.assert_array_equal(op("Contrast", flat, augmenter=PIL), flat)
    # The reference's Contrast target is pixel_count / 256 = 1 here, not the mean (90).
    np.testing.assert_array_equal(op("Contrast", flat), np.full_like(flat, int(1 + 1.9 * 89)))
    np.testing.assert_array_equal(op("Sharpness", flat), flat)
    np.testing.assert_allclose(op("Color", gray), gray, atol=1)


def test_sharpness_keeps_border_pixels():
    out = op("Sharpness")
    np.testing.assert_array_equal(out[0], IMAGE[0])
    np.testing.assert_array_equal(out[:, -1], IMAGE[:, -1])
    assert not np.array_equal(out[1:-1, 1:-1], IMAGE[1:-1, 1:-1])


def test_translate_shifts_by_the_reference_pixels_with_gray_fill():
    # RandAugment translate_const = 100 px at level 10; the sign is random per seed.
    signs = set()
    for seed in range(6):
        out = op("TranslateX", seed=(seed, 0))
        if np.array_equal(out[:, :60], IMAGE[:, 100:]):
            signs.add(+1)
            assert (out[:, 60:] == 128).all()
        else:
            np.testing.assert_array_equal(out[:, 100:], IMAGE[:, :60])
            assert (out[:, :100] == 128).all()
            signs.add(-1)
    assert signs == {1, -1}


def test_geometric_ops_keep_their_fixed_points():
    out = op("ShearX")  # x' = x + level * y: row 0 does not move
    np.testing.assert_array_equal(out[0], IMAGE[0])
    square = natural_image(41, 41, seed=5)
    rotated = op("Rotate", square)  # 30 degrees about the center: center kept, corners filled
    np.testing.assert_array_equal(rotated[20, 20], square[20, 20])
    assert (rotated[0, 0] == 128).all() and (rotated[-1, -1] == 128).all()


def test_cutout_is_a_gray_square_of_the_reference_size():
    image = np.zeros((120, 120, 3), np.uint8)
    for seed in range(4):
        mask = (op("Cutout", image, seed=(seed, 9)) == 128).all(-1)
        rows, cols = np.nonzero(mask)
        assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert rows.max() - rows.min() + 1 <= 80 and cols.max() - cols.min() + 1 <= 80  # 2 * 40


def test_equalize_and_autocontrast_stretch_a_narrow_range():
    narrow = (100 + natural_image(30, 30, seed=6) // 5).astype(np.uint8)
    for name in ("Equalize", "AutoContrast"):
        out = op(name, narrow)
        assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("name", ["autoaugment", "randaugment"])
def test_policies_are_seeded_and_keep_shape(name):
    augmenter = A.ImageAugmenter(name, num_layers=2, magnitude=10)
    image = tf.constant(IMAGE)
    outs = [augmenter(image, tf.constant([s, 0], tf.int64)).numpy() for s in (1, 1, 2, 3, 4, 5)]
    assert all(o.shape == IMAGE.shape and o.dtype == np.uint8 for o in outs)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert len({o.tobytes() for o in outs}) >= 3


@pytest.mark.parametrize("name", ["autoaugment", "randaugment"])
def test_policies_in_a_tf_data_map_are_deterministic_per_seed(name):
    augmenter = A.ImageAugmenter(name, num_layers=2, magnitude=10)
    images = np.stack([natural_image(32, 32, seed=i) for i in range(12)])

    def run():
        ds = tf.data.Dataset.from_tensor_slices(images).enumerate().map(
            lambda i, image: augmenter(image, tf.stack([i, tf.constant(7, tf.int64)])),
            num_parallel_calls=4, deterministic=True)
        return np.stack([out.numpy() for out in ds])

    first = run()
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, run())
    assert (first != images).any(axis=(1, 2, 3)).sum() >= 6


def test_apply_op_is_augment_op_with_a_seeded_sign():
    image = tf.constant(IMAGE)
    signed = {negate: A.augment_op(image, "Rotate", 7, hparams="randaugment", negate=negate).numpy()
              for negate in (False, True)}
    seen = set()
    for seed in range(8):
        out = op("Rotate", level=tf.constant(7.0), seed=(seed, 3))
        seen.update(k for k, v in signed.items() if np.array_equal(out, v))
    assert seen == {False, True}


def test_invalid_arguments_name_the_problem():
    with pytest.raises(ValueError, match="ops='pillow'"):
        A.ImageAugmenter("randaugment", ops="pillow")
    with pytest.raises(ValueError, match="'Blur'"):
        A.augment_op(IMAGE, "Blur", 5)
    with pytest.raises(ValueError, match="'Rotate'.*hparams='v0'"):
        A.augment_op(IMAGE, "Rotate", 5, hparams="v0")


def test_policy_v0_uses_only_known_ops():
    assert len(A.POLICY_V0) == 25
    names = {n for sub in A.POLICY_V0 for n, _, _ in sub}
    assert names <= set(A.RANDAUGMENT_OPS) and len(A.RANDAUGMENT_OPS) == 16


@pytest.mark.parametrize("mixup, cutmix", [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_label_mixer_mixes_images_and_labels_consistently(mixup, cutmix):
    images = tf.constant(np.stack([np.full((16, 16, 3), 10.0 * i) for i in range(8)]), tf.float32)
    labels = tf.one_hot(tf.range(8), 8)
    mixer = A.LabelMixer(mixup, cutmix, seed=3)
    mixed_images, mixed_labels = mixer(images, labels)
    np.testing.assert_allclose(mixed_labels.numpy().sum(1), 1.0, atol=1e-5)
    assert mixed_images.shape == images.shape
    # Each image mixes two constant images, so its mean equals the label-weighted class mean.
    np.testing.assert_allclose(tf.reduce_mean(mixed_images, [1, 2, 3]).numpy(),
                               mixed_labels.numpy() @ (10.0 * np.arange(8)), atol=0.05)
    with pytest.raises(ValueError, match="mixup_alpha > 0 or cutmix_alpha > 0"):
        A.LabelMixer(0.0, 0.0)


def test_mixup_pairs_each_example_with_the_reversed_batch():
    images = tf.constant(np.stack([np.full((4, 4, 3), 10.0 * i) for i in range(6)]), tf.float32)
    labels = tf.one_hot(tf.range(6), 6)
    mixed_images, mixed_labels = A.mixup(images, labels, 0.2, seed=5)
    own = np.diag(mixed_labels.numpy())
    partner = mixed_labels.numpy()[np.arange(6), np.arange(6)[::-1]]
    assert (own >= 0.5).all()
    np.testing.assert_allclose(own + partner, 1.0, atol=1e-6)
    expected = 10.0 * (own * np.arange(6) + partner * np.arange(6)[::-1])
    np.testing.assert_allclose(mixed_images.numpy()[:, 0, 0, 0], expected, atol=1e-4)
    np.testing.assert_array_equal(A.mixup(images, labels, 0.2, seed=5)[1], mixed_labels)


def test_label_mixer_is_deterministic_per_seed():
    images = tf.random.stateless_uniform([4, 4, 8, 8, 3], (1, 2), maxval=255.0)
    labels = tf.one_hot(tf.reshape(tf.range(16) % 5, [4, 4]), 5)

    def run(seed):
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).map(A.LabelMixer(0.2, 1.0, seed))
        return np.concatenate([y.numpy() for _, y in ds])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
