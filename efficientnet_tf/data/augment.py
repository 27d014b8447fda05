"""AutoAugment (policy v0), RandAugment and mixup exactly as the reference computes them; cutmix.

The reference is tensorflow/tpu's EfficientNet (`autoaugment.py`, `imagenet_input.py`); its
augmentation trained the published checkpoints, so by default (`ops="reference"`) every op
reproduces its numbers bit for bit on uint8 [H, W, 3] images, quirks included (checked against
the reference's own outputs in tests/test_golden_augment.py):
- level -> argument as the reference's python `level_to_arg` (float64, `int()` truncation);
- blend: float32 `image1 + factor * (image2 - image1)`, clipped, truncated to uint8;
- Solarize compares against the threshold converted to uint8, which wraps: threshold 256
  (level 10) becomes 0 and inverts the whole image;
- Posterize shifts by 8 - int(level/10*4) as uint8; TF clamps shifts to 7, so 0 bits (level < 2.5)
  keeps x & 0x80;
- Contrast blends towards the constant pixel_count / 256 (the histogram's sum / 256), not the mean;
- Color uses `rgb_to_grayscale` (truncating `convert_image_dtype`); Equalize and AutoContrast are
  the reference's histogram / min-max algorithms;
- Rotate/Shear/Translate: TF1 contrib `transform` semantics (output -> input map built in
  float32, nearest, 0 outside) on the image plus an all-ones 4th channel, pixels whose 4th
  channel reads 0 filled with 128 (the reference's wrap/unwrap);
- Cutout: a 128 square [c - pad, c + pad) clipped to the image, centre uniform over the image.
`ops="pil"` keeps this project's earlier fixes, which follow PIL's semantics (the reference's
docstrings claim PIL equivalence) and differ from the reference in three ops only:
- Posterize keeps 8 - int(level/10*4) bits clamped to [1, 8] (the reference keeps int(level/10*4):
  both 4 at level 10, but fewer bits at lower levels, down to x & 0x80 below level 2.5);
- Solarize compares in int32 (threshold 256 leaves the image unchanged);
- Contrast blends towards the mean gray level.
The policies draw their random choices statelessly from a seed, so pipelines are deterministic;
the distributions are the reference's.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from efficientnet_tf.data.config import AUGMENT_NAMES, AUGMENT_OPS

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
# The reference's RandAugment op list; its order numbers the ops in both policies here.
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
# The reference's hparams per policy: (cutout_const, translate_const), in pixels at level 10.
HPARAMS = {"autoaugment": (100, 250), "randaugment": (40, 100)}


def _check_ops(ops):
    if ops not in AUGMENT_OPS:
        raise ValueError(f"augment ops={ops!r}: must be one of {', '.join(AUGMENT_OPS)}")


def blend(image1, image2, factor):
    """image1 + factor * (image2 - image1) in float32, clipped, truncated to uint8.

    The reference branches in python: an input unchanged at factor 0 or 1, no clip for
    0 < factor < 1. On integer pixels this expression gives exactly those numbers (factor 0 or 1
    reproduces an input exactly in float32; an interpolation never leaves [0, 255]), so it
    serves tensor factors without a branch.
    """
    image1 = tf.cast(image1, tf.float32)
    mixed = image1 + factor * (tf.cast(image2, tf.float32) - image1)
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def autocontrast(image):
    """Each channel stretched to [0, 255] in float32, clipped, truncated; flat channels kept."""
    pixels = tf.cast(image, tf.float32)
    lo = tf.reduce_min(pixels, axis=[0, 1])
    hi = tf.reduce_max(pixels, axis=[0, 1])
    scale = 255.0 / tf.maximum(hi - lo, 1.0)  # hi - lo >= 1 wherever the result is used
    stretched = tf.cast(tf.clip_by_value(pixels * scale + -lo * scale, 0.0, 255.0), tf.uint8)
    return tf.where(hi > lo, stretched, image)


def equalize(image):
    """PIL's equalize as the reference writes it, per channel: a lookup table from the
    cumulative histogram in steps of (pixels - count of the last non-empty bin) // 255;
    a channel whose step is 0 is kept."""
    channels = []
    for c in range(3):
        values = tf.cast(image[:, :, c], tf.int32)
        histo = tf.histogram_fixed_width(values, [0, 255], nbins=256)
        # Bins are pixel values, so the last non-empty bin is the maximum's.
        step = (tf.reduce_sum(histo) - tf.gather(histo, tf.reduce_max(values))) // 255
        lut = (tf.cumsum(histo) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        channels.append(tf.where(step > 0, tf.gather(lut, values), values))
    return tf.cast(tf.stack(channels, -1), tf.uint8)


def invert(image):
    return 255 - image


def posterize(image, bits):
    """Keep the top `bits` bits. The shift 8 - bits is converted to uint8 (wrapping, as TF1 built
    the reference's python int) and TF clamps shifts to 7: bits 0 keeps x & 0x80."""
    shift = tf.cast(8 - bits, tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
    """Invert pixels >= threshold, the threshold converted to uint8 (256 wraps to 0) as the
    reference's `image < threshold` does."""
    return tf.where(image < tf.cast(threshold, tf.uint8), image, 255 - image)


def solarize_pil(image, threshold):
    """Solarize compared in int32, as PIL: a threshold of 256 leaves the image unchanged."""
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)


def color(image, factor):
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(gray, image, factor)


def contrast(image, factor):
    """Blend with a constant gray image of value pixel_count / 256 (clipped, truncated): the
    reference divides its histogram's sum (not the weighted sum) by 256."""
    pixels = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float32)
    gray = tf.cast(tf.clip_by_value(pixels / 256.0, 0.0, 255.0), tf.uint8)
    return blend(tf.fill(tf.shape(image), gray), image, factor)


def contrast_pil(image, factor):
    """Blend with a constant image of the mean gray level (truncated), as PIL."""
    mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
    return blend(tf.fill(tf.shape(image), tf.cast(mean, tf.uint8)), image, factor)


def brightness(image, factor):
    return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with PIL's 3x3 smoothing of the image; border pixels keep their original value.
    On the CPU, as the reference: the truncation makes results kernel-sensitive."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    with tf.device("/cpu:0"):
        smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                        padding="VALID")[0]
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def cutout(image, pad_size, center):
    """Gray square [c - pad_size, c + pad_size) around center (row, col), clipped to the image."""
    rows = tf.range(tf.shape(image)[0])[:, None]
    cols = tf.range(tf.shape(image)[1])[None, :]
    inside = ((rows >= center[0] - pad_size) & (rows < center[0] + pad_size)
              & (cols >= center[1] - pad_size) & (cols < center[1] + pad_size))
    return tf.where(inside[..., None], tf.constant(FILL_VALUE, tf.uint8), image)


def transform(image, matrix):
    """TF1 contrib `image.transform`: output pixel (x, y) reads the input at the projective map
    [a0, a1, a2, b0, b1, b2, c0, c1] of (x, y), nearest, 0 outside; applied to the image plus an
    all-ones channel, pixels where that channel reads 0 get 128 (the reference's wrap/unwrap)."""
    wrapped = tf.concat([image, tf.ones_like(image[:, :, :1])], -1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=wrapped[None], transforms=tf.stack(matrix)[None],
        output_shape=tf.shape(image)[:2], fill_value=0.0, interpolation="NEAREST",
        fill_mode="CONSTANT")[0]
    return tf.where(out[:, :, 3:] == 0, tf.constant(FILL_VALUE, tf.uint8), out[:, :, :3])


def rotate(image, degrees):
    """Rotation about the image centre (contrib `angles_to_projective_transforms`, float32)."""
    radians = degrees * tf.constant(math.pi / 180.0, tf.float32)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    return transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def shear_x(image, level):
    return transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level):
    return transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0])


def translate_x(image, pixels):
    """The reference's contrib translate(image, [-pixels, 0]): the map x -> x + pixels."""
    return transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0])


def translate_y(image, pixels):
    return transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0])


def _random_center(image, seed):
    """Uniform (row, col): stateless from `seed`, or the global generator (as the reference)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if seed is None:
        return (tf.random.uniform([], 0, height, tf.int32),
                tf.random.uniform([], 0, width, tf.int32))
    row_seed, col_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    return (tf.random.stateless_uniform([], row_seed, 0, height, tf.int32),
            tf.random.stateless_uniform([], col_seed, 0, width, tf.int32))


def augment_op(image, name, level, *, hparams="autoaugment", negate=False, cutout_center=None,
               seed=None, ops="reference"):
    """The reference's NAME_TO_FUNC[name] on a uint8 [H, W, 3] image at policy level `level`.

    level: python number or scalar tensor; mapped to the op's argument in float64 as the
      reference's python `level_to_arg` (then float32, or int32 truncated as `int()`).
    hparams: "autoaugment" or "randaugment", the policy's (cutout, translate) constants.
    negate: bool or bool tensor, negates the argument of Rotate/ShearX/ShearY/Translate*.
    cutout_center: (row, col) for Cutout; None draws it uniformly (statelessly from `seed`, an
      int64 [2] tensor, when given). ops: "reference" or "pil" (see the module docstring).
    """
    _check_ops(ops)
    if hparams not in HPARAMS:
        raise ValueError(f"augment_op({name!r}): hparams={hparams!r} must be one of "
                         f"{', '.join(HPARAMS)}")
    if name not in RANDAUGMENT_OPS:
        raise ValueError(f"Unknown augmentation op {name!r}: must be one of "
                         f"{', '.join(RANDAUGMENT_OPS)}")
    cutout_const, translate_const = HPARAMS[hparams]
    image = tf.convert_to_tensor(image, tf.uint8)
    fraction = tf.cast(level, tf.float64) / MAX_LEVEL

    def scaled(scale, dtype=tf.float32):  # (level / 10) * scale, as float32 or int()
        return tf.cast(fraction * scale, dtype)

    def signed(scale):
        value = scaled(scale)
        return tf.where(negate, -value, value)

    enhance = tf.cast(fraction * 1.8 + 0.1, tf.float32)
    if name == "AutoContrast":
        return autocontrast(image)
    if name == "Equalize":
        return equalize(image)
    if name == "Invert":
        return invert(image)
    if name == "Rotate":
        return rotate(image, signed(30.0))
    if name == "Posterize":
        bits = scaled(4, tf.int32)
        return posterize(image, bits if ops == "reference" else tf.clip_by_value(8 - bits, 1, 8))
    if name == "Solarize":
        return (solarize if ops == "reference" else solarize_pil)(image, scaled(256, tf.int32))
    if name == "SolarizeAdd":
        return solarize_add(image, scaled(110, tf.int32))
    if name == "Color":
        return color(image, enhance)
    if name == "Contrast":
        return (contrast if ops == "reference" else contrast_pil)(image, enhance)
    if name == "Brightness":
        return brightness(image, enhance)
    if name == "Sharpness":
        return sharpness(image, enhance)
    if name == "ShearX":
        return shear_x(image, signed(0.3))
    if name == "ShearY":
        return shear_y(image, signed(0.3))
    if name == "TranslateX":
        return translate_x(image, signed(float(translate_const)))
    if name == "TranslateY":
        return translate_y(image, signed(float(translate_const)))
    center = _random_center(image, seed) if cutout_center is None else cutout_center
    return cutout(image, scaled(cutout_const, tf.int32), center)


class ImageAugmenter:
    """AutoAugment policy v0 or RandAugment; call as `augmenter(uint8 image, seed) -> uint8 image`.

    `seed` (int64 [2]) drives every random choice statelessly (the reference used stateful ops;
    the distributions are the same). ops: "reference" (default) or "pil", see the module docstring.
    """

    def __init__(self, name: str, *, num_layers: int = 2, magnitude: float = 10.0,
                 ops: str = "reference"):
        if name not in AUGMENT_NAMES:
            raise ValueError(f"augment_name={name!r}: must be one of {', '.join(AUGMENT_NAMES)}")
        _check_ops(ops)
        self.name = name
        self.num_layers = num_layers
        self.magnitude = float(magnitude)
        self.ops = ops

    def __call__(self, image, seed):
        if self.name == "autoaugment":
            return self._autoaugment(image, seed)
        return self._randaugment(image, seed)

    def apply_op(self, name: str, image, level, seed):
        """`augment_op` with this policy's hparams and ops; `seed` draws the sign of the signed
        ops (negative with probability 1/2) and the cutout centre."""
        sign_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
        negate = tf.random.stateless_uniform([], sign_seed) < 0.5
        return augment_op(image, name, level, hparams=self.name, negate=negate, seed=op_seed,
                          ops=self.ops)

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
        """num_layers ops, each chosen uniformly and always applied at the fixed magnitude."""
        seeds = tf.random.experimental.stateless_split(seed, num=2 * self.num_layers)
        for layer in range(self.num_layers):
            index = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(RANDAUGMENT_OPS),
                                                dtype=tf.int32)
            image = self._apply_selected(index, image, self.magnitude, seeds[2 * layer + 1])
        return image


def mixup(images, labels, alpha, *, beta_sample=None, seed=None):
    """The reference's mixup of a (per-replica) batch with the same batch reversed.

    w = max(s, 1 - s) for s ~ Beta(alpha, alpha) of shape [B, 1] (`beta_sample` if given, else
    drawn with `seed`: an int, a `keras.random.SeedGenerator` or None); images and labels become
    x * w + x[::-1] * (1 - w). Not clipped, as the reference.
    """
    if beta_sample is None:
        beta_sample = keras.random.beta((tf.shape(images)[0], 1), alpha, alpha, seed=seed)
    weight = tf.maximum(beta_sample, 1.0 - beta_sample)
    image_weight = tf.reshape(tf.cast(weight, images.dtype), [-1, 1, 1, 1])
    label_weight = tf.cast(weight, labels.dtype)
    return (images * image_weight + images[::-1] * (1.0 - image_weight),
            labels * label_weight + labels[::-1] * (1.0 - label_weight))


class LabelMixer:
    """Batch-level mixup and/or cutmix on (float images [B, S, S, 3], one-hot labels [B, K]).

    Mixup is the reference's (`mixup`). Cutmix (not in the reference) is written here:
    `keras.layers.CutMix` weights the labels by the continuous box area while pasting whole
    pixels, so its labels disagree with its pixels (by ~10% at 16 px); here the label weight is
    the pasted pixel fraction, as in the CutMix paper (box centered uniformly, side
    sqrt(1 - lambda) of the image, clipped at the border). With both alphas set, each batch gets
    one of the two, chosen with probability 1/2. Draws come from one seed generator: a given
    seed gives the same sequence of batches when mapped sequentially.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, seed: int | None = None):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("LabelMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self._generator = keras.random.SeedGenerator(seed)

    def mixup(self, images, labels):
        return mixup(images, labels, self.mixup_alpha, seed=self._generator)

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
        if self.mixup_alpha <= 0:
            return self.cutmix(images, labels)
        use_mixup = keras.random.uniform((), seed=self._generator) < 0.5
        return tf.cond(use_mixup, lambda: self.mixup(images, labels),
                       lambda: self.cutmix(images, labels))
