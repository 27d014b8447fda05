"""AutoAugment (policy v0), RandAugment, mixup and cutmix, as in the reference implementation.

Image ops work on one uint8 [H, W, 3] image with the reference's semantics: a fixed magnitude
level in [0, 10] (RandAugment may go higher) mapped to each op's argument, geometric ops with
nearest interpolation and gray (128) fill, translations and cutout sizes in absolute pixels.
Keras 3 is used where it implements the same operation: `keras.layers.Equalization`,
`keras.layers.AutoContrast`, `keras.ops.image.affine_transform` (rotate, shear, translate) and
`keras.layers.MixUp`. Written here: Keras' RandAugment samples its magnitudes, has 11 different
ops and bilinear fill; its photometric layers draw their factors at random within bounds that
exclude the reference's fixed factors (e.g. 1.9); its Solarization adds before thresholding (not
SolarizeAdd); its RandomSharpness zero-pads the border; cutmix: see `LabelMixer`.
Deliberate departures from the reference (bugs, not recipe):
- Contrast blends towards the mean gray level; the reference used pixel count / 256.
- Posterize keeps 8 - int(level/10*4) bits, clamped to [1, 8]: 4 bits at the default magnitude 10
  as in the reference, but never the reference's 0 bits (an all-black image, at level < 2.5) nor
  its negative shifts (level > 20).
"""
from __future__ import annotations

import keras
import tensorflow as tf

from efficientnet_tf.data.config import AUGMENT_NAMES

MAX_LEVEL = 10.0
FILL_VALUE = 128

# policy_v0 of the reference (AutoAugment paper, found on reduced ImageNet): (op, prob, level).
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
# Absolute pixel constants of the reference: (cutout half-size, translation) at level 10.
AUTOAUGMENT_CONSTS = (100, 250)
RANDAUGMENT_CONSTS = (40, 100)


def blend(image1, image2, factor):
    """image1 + factor * (image2 - image1), clipped: factor > 1 extrapolates past image2."""
    image1 = tf.cast(image1, tf.float32)
    mixed = image1 + factor * (tf.cast(image2, tf.float32) - image1)
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def invert(image):
    return 255 - image


def posterize(image, bits):
    shift = tf.cast(8 - bits, image.dtype)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def color(image, factor):
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor):
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return blend(tf.fill(tf.shape(image), tf.cast(mean, tf.uint8)), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with a 3x3 smoothed copy; border pixels keep their original value."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                    padding="VALID")[0]
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def cutout(image, half_size, seed):
    """Gray square of side up to 2*half_size at a uniformly random center (clipped to the image)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    center = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy, cx = center[0] % height, center[1] % width
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = ((rows >= cy - half_size) & (rows < cy + half_size)
              & (cols >= cx - half_size) & (cols < cx + half_size))
    return tf.where(inside[..., None], tf.constant(FILL_VALUE, tf.uint8), image)


def _affine(image, transform):
    """Projective transform [a0, a1, a2, b0, b1, b2, 0, 0] (output -> input), gray fill."""
    out = keras.ops.image.affine_transform(
        tf.cast(image, tf.float32), tf.cast(tf.stack(transform), tf.float32),
        interpolation="nearest", fill_mode="constant", fill_value=FILL_VALUE,
        data_format="channels_last")
    return tf.cast(out, tf.uint8)


def rotate(image, degrees):
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    radians = degrees * (3.141592653589793 / 180.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return _affine(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image, level):
    return _affine(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level):
    return _affine(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image, pixels):
    return _affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, pixels):
    return _affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


class ImageAugmenter:
    """AutoAugment policy v0 or RandAugment; call as `augmenter(uint8 image, seed) -> uint8 image`."""

    def __init__(self, name: str, *, num_layers: int = 2, magnitude: float = 10.0):
        if name not in AUGMENT_NAMES:
            raise ValueError(f"augment_name={name!r}: must be one of {', '.join(AUGMENT_NAMES)}")
        self.name = name
        self.num_layers = num_layers
        self.magnitude = float(magnitude)
        self.cutout_const, self.translate_const = (
            AUTOAUGMENT_CONSTS if name == "autoaugment" else RANDAUGMENT_CONSTS)
        self._equalize = keras.layers.Equalization(value_range=(0, 255))
        self._auto_contrast = keras.layers.AutoContrast(value_range=(0, 255))

    def __call__(self, image, seed):
        if self.name == "autoaugment":
            return self._autoaugment(image, seed)
        return self._randaugment(image, seed)

    def _keras_layer(self, layer, image):
        return tf.cast(tf.round(layer(tf.cast(image, tf.float32))), tf.uint8)

    def apply_op(self, name: str, image, level, seed):
        """One op at magnitude `level` (a float or scalar tensor); `seed` draws the random sign
        and the cutout position. Integer arguments truncate, as the reference's int()."""
        sign_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
        fraction = tf.cast(level, tf.float32) / MAX_LEVEL
        enhance = fraction * 1.8 + 0.1

        def scaled_int(scale):
            return tf.cast(tf.floor(fraction * scale), tf.int32)

        if name == "AutoContrast":
            return self._keras_layer(self._auto_contrast, image)
        if name == "Equalize":
            return self._keras_layer(self._equalize, image)
        if name == "Invert":
            return invert(image)
        if name == "Rotate":
            return rotate(image, sign * fraction * 30.0)
        if name == "Posterize":
            return posterize(image, tf.clip_by_value(8 - scaled_int(4), 1, 8))
        if name == "Solarize":
            return solarize(image, scaled_int(256))
        if name == "SolarizeAdd":
            return solarize_add(image, scaled_int(110))
        if name == "Color":
            return color(image, enhance)
        if name == "Contrast":
            return contrast(image, enhance)
        if name == "Brightness":
            return brightness(image, enhance)
        if name == "Sharpness":
            return sharpness(image, enhance)
        if name == "ShearX":
            return shear_x(image, sign * fraction * 0.3)
        if name == "ShearY":
            return shear_y(image, sign * fraction * 0.3)
        if name == "TranslateX":
            return translate_x(image, sign * fraction * self.translate_const)
        if name == "TranslateY":
            return translate_y(image, sign * fraction * self.translate_const)
        if name == "Cutout":
            return cutout(image, scaled_int(self.cutout_const), op_seed)
        raise ValueError(f"Unknown augmentation op {name!r}")

    def _apply_selected(self, index, image, level, seed):
        """The op RANDAUGMENT_OPS[index]: one graph branch per op, whatever the policy."""
        branches = [lambda name=name: self.apply_op(name, image, level, seed)
                    for name in RANDAUGMENT_OPS]
        return tf.ensure_shape(tf.switch_case(index, branches), image.shape)

    def _autoaugment(self, image, seed):
        """Pick one of the 25 sub-policies; apply each of its two ops with its probability."""
        seeds = tf.random.experimental.stateless_split(seed, num=5)
        choice = tf.random.stateless_uniform([], seeds[0], 0, len(POLICY_V0), dtype=tf.int32)
        ops = tf.constant([[RANDAUGMENT_OPS.index(n) for n, _, _ in sub] for sub in POLICY_V0])
        probs = tf.constant([[p for _, p, _ in sub] for sub in POLICY_V0], tf.float32)
        levels = tf.constant([[lv for _, _, lv in sub] for sub in POLICY_V0], tf.float32)
        for slot in range(2):
            apply = tf.random.stateless_uniform([], seeds[1 + 2 * slot]) < probs[choice, slot]
            image = tf.cond(apply, lambda img=image, s=slot: self._apply_selected(
                ops[choice, s], img, levels[choice, s], seeds[2 + 2 * s]), lambda img=image: img)
        return image

    def _randaugment(self, image, seed):
        """num_layers ops, each chosen uniformly and applied at the fixed magnitude."""
        seeds = tf.random.experimental.stateless_split(seed, num=2 * self.num_layers)
        for layer in range(self.num_layers):
            index = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(RANDAUGMENT_OPS),
                                                dtype=tf.int32)
            image = self._apply_selected(index, image, self.magnitude, seeds[2 * layer + 1])
        return image


class LabelMixer:
    """Batch-level mixup and/or cutmix on (float images [B, S, S, 3], one-hot labels [B, K]).

    Mixup is `keras.layers.MixUp` (per-example Beta(alpha, alpha) weights, a shuffled partner).
    Cutmix is written here: `keras.layers.CutMix` weights the labels by the continuous box area
    while pasting whole pixels, so its labels disagree with its pixels (by ~10% at 16 px); here
    the label weight is the pasted pixel fraction, as in the CutMix paper (box centered uniformly,
    side sqrt(1 - lambda) of the image, clipped at the border). With both alphas set, each batch
    gets one of the two, chosen with probability 1/2.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, seed: int | None = None):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("LabelMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self._mixup = keras.layers.MixUp(alpha=mixup_alpha, seed=seed) if mixup_alpha > 0 else None
        self.cutmix_alpha = cutmix_alpha
        self._generator = keras.random.SeedGenerator(seed)

    def mixup(self, images, labels):
        out = self._mixup({"images": images, "labels": labels})
        return tf.clip_by_value(out["images"], 0.0, 255.0), out["labels"]  # float rounding

    def cutmix(self, images, labels):
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        lam = keras.random.beta((batch,), self.cutmix_alpha, self.cutmix_alpha,
                                seed=self._generator)
        side = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(side * tf.cast(height, tf.float32), tf.int32)
        cut_w = tf.cast(side * tf.cast(width, tf.float32), tf.int32)
        center = keras.random.uniform((batch, 2), seed=self._generator)
        cy = tf.cast(center[:, 0] * tf.cast(height, tf.float32), tf.int32)
        cx = tf.cast(center[:, 1] * tf.cast(width, tf.float32), tf.int32)
        y0, y1 = tf.maximum(cy - cut_h // 2, 0), tf.minimum(cy + cut_h // 2, height)
        x0, x1 = tf.maximum(cx - cut_w // 2, 0), tf.minimum(cx + cut_w // 2, width)
        rows = tf.range(height)[None, :, None]
        cols = tf.range(width)[None, None, :]
        inside = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
                  & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
        partner = keras.random.shuffle(tf.range(batch), seed=self._generator)
        images = tf.where(inside[..., None], tf.gather(images, partner), images)
        pasted = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(height * width, tf.float32)
        labels = (1.0 - pasted)[:, None] * labels + pasted[:, None] * tf.gather(labels, partner)
        return images, labels

    def __call__(self, images, labels):
        if self.cutmix_alpha <= 0:
            return self.mixup(images, labels)
        if self._mixup is None:
            return self.cutmix(images, labels)
        use_mixup = keras.random.uniform((), seed=self._generator) < 0.5
        return tf.cond(use_mixup, lambda: self.mixup(images, labels),
                       lambda: self.cutmix(images, labels))
