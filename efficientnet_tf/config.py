"""Model configuration: block strings, the scaling table, rounding rules and `ModelConfig`.

Everything here is pure Python so it can be validated and serialized before TensorFlow is touched.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping

# Paper Table 1, as compact block strings (paper Table 1).
B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)
# Lite drops squeeze-and-excitation (mobile accelerators handle it poorly).
LITE_BLOCKS = tuple(b.replace("_se0.25", "") for b in B0_BLOCKS)
# EfficientNet-EdgeTPU (the reference's edgetpu builder): `_c1` stages replace expand + depthwise
# with one 3x3 expansion conv (faster on the Edge TPU), no SE, ReLU.
EDGETPU_BLOCKS = (
    "r1_k3_s11_e4_i24_o24_c1_noskip",
    "r2_k3_s22_e8_i24_o32_c1",
    "r4_k3_s22_e8_i32_o48_c1",
    "r5_k5_s22_e8_i48_o96",
    "r4_k5_s11_e8_i96_o144",
    "r2_k5_s22_e8_i144_o192",
)
# EfficientNet-CondConv (the reference's condconv builder): B0 whose last three stages (`_cc`)
# use per-example mixtures of expert kernels.
CONDCONV_BLOCKS = B0_BLOCKS[:4] + tuple(b + "_cc" for b in B0_BLOCKS[4:])

IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Lite, EdgeTPU and CondConv: (x - 127) / 128.
LITE_MEAN_RGB = (127.0, 127.0, 127.0)
LITE_STDDEV_RGB = (128.0, 128.0, 128.0)
# AdvProp checkpoints were trained on x * 2/255 - 1, i.e. (x - 127.5) / 127.5: inputs in [-1, 1].
ADVPROP_MEAN_RGB = (127.5, 127.5, 127.5)
ADVPROP_STDDEV_RGB = (127.5, 127.5, 127.5)

# name: (width, depth, resolution, dropout)  -- paper section 4
SCALING_TABLE = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
    "efficientnet-b8": (2.2, 3.6, 672, 0.5),
    "efficientnet-l2": (4.3, 5.3, 800, 0.5),
    "efficientnet-lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet-lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet-lite4": (1.4, 1.8, 300, 0.3),
    "efficientnet-edgetpu-S": (1.0, 1.0, 224, 0.2),
    "efficientnet-edgetpu-M": (1.0, 1.1, 240, 0.2),
    "efficientnet-edgetpu-L": (1.2, 1.4, 300, 0.3),
    "efficientnet-condconv-b0-4e": (1.0, 1.0, 224, 0.25),
    "efficientnet-condconv-b0-8e": (1.0, 1.0, 224, 0.25),
    "efficientnet-condconv-b0-8e-depth": (1.0, 1.1, 224, 0.25),
}
# Experts per CondConv layer of the condconv models.
CONDCONV_EXPERTS = {
    "efficientnet-condconv-b0-4e": 4,
    "efficientnet-condconv-b0-8e": 8,
    "efficientnet-condconv-b0-8e-depth": 8,
}
MODEL_NAMES = tuple(SCALING_TABLE)

# Paper section 3.3: grid search at phi=1 under alpha * beta^2 * gamma^2 ~= 2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
BASE_RESOLUTION = 224

_BLOCK_RE = re.compile(r"^r(\d+)_k(\d+)_s(\d)(\d)_e(\d+(?:\.\d+)?)_i(\d+)_o(\d+)(?:_c(\d))?"
                       r"(?:_se(\d+(?:\.\d+)?))?(_noskip)?(_cc)?$")


class ConfigError(ValueError):
    """A setting, file or request the user can fix. The CLI prints it as one line, with a
    leading `Config.field=value` spelled as the flag; every other exception keeps its
    traceback."""


def _check_known_keys(cls, d: Mapping[str, Any]):
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"Unknown {cls.__name__} keys: {unknown}")


def setting(default, help_text: str, choices: tuple | None = None):
    """A config field with the help text (and allowed values) its command-line flag shows."""
    metadata = {"help": help_text}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


class ConfigMixin:
    """replace/to_dict/to_json/from_dict for the frozen config dataclasses; unknown keys fail."""

    def _require(self, ok: bool, field: str, msg: str):
        if not ok:
            name = type(self).__name__
            raise ConfigError(f"{name}.{field}={getattr(self, field)!r}: {msg}")

    def _require_choice(self, field: str):
        choices = next(f for f in dataclasses.fields(self) if f.name == field).metadata["choices"]
        self._require(getattr(self, field) in choices, field,
                      f"must be one of {', '.join(map(str, choices))}")

    def replace(self, **overrides):
        _check_known_keys(type(self), overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        _check_known_keys(cls, d)
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks, as decoded from a block string."""

    num_repeat: int
    kernel_size: int
    strides: int
    expand_ratio: float
    input_filters: int
    output_filters: int
    se_ratio: float = 0.0
    id_skip: bool = True
    conv_type: int = 0  # 1: the reference's block without depthwise conv (`_c1`, EdgeTPU)
    condconv: bool = False  # `_cc`: CondConv expand, depthwise and project convs


def decode_block_string(block_string: str) -> BlockArgs:
    m = _BLOCK_RE.match(block_string)
    if not m:
        raise ConfigError(
            f"Invalid block string {block_string!r}: expected "
            "'rR_kK_sSS_eE_iI_oO[_c1][_seX][_noskip][_cc]', e.g. 'r1_k3_s11_e1_i32_o16_se0.25'.")
    r, k, s1, s2, e, i, o, conv_type, se, noskip, cc = m.groups()

    def invalid(why):
        return ConfigError(f"Invalid block string {block_string!r}: {why}.")

    if s1 != s2:
        raise invalid("only square strides are supported")
    conv_type = int(conv_type or 0)
    if conv_type not in (0, 1):
        raise invalid("conv type must be c0 (MBConv) or c1 (3x3 expansion conv, no depthwise)")
    expand = float(e)
    if conv_type == 1 and (int(k) != 3 or se or cc or expand == 1):
        # The reference's c1 block hard-codes a 3x3 kernel and has no SE, CondConv or e1 form.
        raise invalid("a c1 block needs k3, an expand ratio != 1, and no SE or CondConv")
    return BlockArgs(
        num_repeat=int(r), kernel_size=int(k), strides=int(s1),
        expand_ratio=int(expand) if expand.is_integer() else expand,
        input_filters=int(i), output_filters=int(o),
        se_ratio=float(se) if se else 0.0, id_skip=not noskip, conv_type=conv_type,
        condconv=bool(cc))


def encode_block_string(args: BlockArgs) -> str:
    e = args.expand_ratio
    e = int(e) if float(e).is_integer() else e
    s = (f"r{args.num_repeat}_k{args.kernel_size}_s{args.strides}{args.strides}_e{e}"
         f"_i{args.input_filters}_o{args.output_filters}")
    if args.conv_type:
        s += f"_c{args.conv_type}"
    if args.se_ratio:
        s += f"_se{args.se_ratio:g}"
    if not args.id_skip:
        s += "_noskip"
    if args.condconv:
        s += "_cc"
    return s


def round_filters(filters: int, width_coefficient: float, divisor: int = 8,
                  min_depth: int | None = None) -> int:
    """Scale channels by width and round to the nearest multiple of `divisor`, never 10% below."""
    scaled = filters * width_coefficient
    min_depth = min_depth or divisor
    new = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    return int(math.ceil(depth_coefficient * repeats))


def compound_coefficients(phi: float, alpha: float = ALPHA, beta: float = BETA,
                          gamma: float = GAMMA, base_resolution: int = BASE_RESOLUTION):
    """Paper eq. 3: depth alpha^phi, width beta^phi, resolution gamma^phi (rounded to a multiple
    of 8)."""
    depth = alpha ** phi
    width = beta ** phi
    resolution = int(round(base_resolution * gamma ** phi / 8.0)) * 8
    return width, depth, resolution


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigMixin):
    """Everything that defines an EfficientNet graph. Frozen; build variants with `replace`."""

    name: str = "efficientnet-b0"
    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    resolution: int = 224
    dropout_rate: float = 0.2
    survival_prob: float = 0.8
    blocks: tuple = B0_BLOCKS
    stem_filters: int = 32
    head_filters: int = 1280
    fix_head_stem: bool = False
    activation: str = "swish"
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    depth_divisor: int = 8
    min_depth: int | None = None
    num_classes: int = 1000
    mean_rgb: tuple = IMAGENET_MEAN_RGB
    stddev_rgb: tuple = IMAGENET_STDDEV_RGB
    advprop_preprocessing: bool = False
    bn_group_size: int | None = None
    condconv_num_experts: int | None = None
    label_offset: int = 0

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple(self.blocks))
        object.__setattr__(self, "mean_rgb", tuple(float(v) for v in self.mean_rgb))
        object.__setattr__(self, "stddev_rgb", tuple(float(v) for v in self.stddev_rgb))
        self.validate()

    def validate(self):
        check = self._require
        check(self.width_coefficient > 0, "width_coefficient", "must be > 0")
        check(self.depth_coefficient > 0, "depth_coefficient", "must be > 0")
        check(isinstance(self.resolution, int) and self.resolution >= 32, "resolution",
              "must be an integer >= 32")
        check(0.0 <= self.dropout_rate < 1.0, "dropout_rate", "must be in [0, 1)")
        check(0.0 < self.survival_prob <= 1.0, "survival_prob", "must be in (0, 1]")
        check(0.0 <= self.bn_momentum < 1.0, "bn_momentum", "must be in [0, 1)")
        check(self.bn_epsilon > 0, "bn_epsilon", "must be > 0")
        check(self.activation in ACTIVATIONS, "activation", f"must be one of {sorted(ACTIVATIONS)}")
        check(self.num_classes >= 1, "num_classes", "must be >= 1")
        check(len(self.mean_rgb) == 3 and len(self.stddev_rgb) == 3 and min(self.stddev_rgb) > 0,
              "stddev_rgb", "mean_rgb/stddev_rgb need 3 values, stddev > 0")
        check(self.bn_group_size is None or (isinstance(self.bn_group_size, int)
                                             and self.bn_group_size >= 0),
              "bn_group_size", "must be None (the reference's rule), 0 (all replicas) or a "
              "group size >= 1")
        check(len(self.blocks) > 0, "blocks", "needs at least one stage")
        condconv = any(decode_block_string(b).condconv for b in self.blocks)
        check(self.condconv_num_experts is None if not condconv
              else isinstance(self.condconv_num_experts, int) and self.condconv_num_experts >= 1,
              "condconv_num_experts", "must be an integer >= 1 when a block string has '_cc', "
              "None otherwise")
        check(isinstance(self.label_offset, int) and 0 <= self.label_offset < self.num_classes,
              "label_offset", "must be an integer in [0, num_classes): the classifier's index of "
              "dataset label 0 (1 for a background class 0)")

    @property
    def block_args(self) -> tuple[BlockArgs, ...]:
        return tuple(decode_block_string(b) for b in self.blocks)

    def input_normalization(self) -> tuple[tuple, tuple]:
        """(mean, stddev) per RGB channel that the model applies to its [0, 255] input."""
        if self.advprop_preprocessing:
            return ADVPROP_MEAN_RGB, ADVPROP_STDDEV_RGB
        return self.mean_rgb, self.stddev_rgb

    def with_classes(self, num_classes: int) -> "ModelConfig":
        """This network with a `num_classes` head: another width is another label set, so its
        labels start at 0 (the background class of a 1001-class head stays with that head)."""
        if num_classes == self.num_classes:
            return self
        return self.replace(num_classes=num_classes, label_offset=0)

    def backbone(self) -> dict:
        """What the backbone's variables depend on: equal for two configs when a checkpoint of
        one loads into the other whatever their input size, head or input normalization."""
        return {k: v for k, v in self.architecture().items() if k in BACKBONE_FIELDS}

    def architecture(self) -> dict:
        """The network a checkpoint belongs to, the one test of "same network": every field but
        the training-only regularization and how replicas share BN statistics (same weights and
        same inference function either way)."""
        return {k: v for k, v in json.loads(json.dumps(self.to_dict())).items()
                if k not in TRAINING_ONLY_FIELDS}


ACTIVATIONS = ("swish", "relu6", "relu", "gelu")
# ModelConfig fields that decide the backbone's graph and so its variables.
BACKBONE_FIELDS = ("width_coefficient", "depth_coefficient", "blocks", "stem_filters",
                   "head_filters", "fix_head_stem", "depth_divisor", "min_depth", "activation",
                   "condconv_num_experts")
# ModelConfig fields that change training, not the network: fine-tuning with another dropout
# continues the same model.
TRAINING_ONLY_FIELDS = ("dropout_rate", "survival_prob", "bn_group_size", "bn_momentum")


def get_model_config(name: str, **overrides) -> ModelConfig:
    """The named variant from the scaling table, with optional overrides (unknown keys rejected)."""
    if name not in SCALING_TABLE:
        raise ConfigError(f"Unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    width, depth, resolution, dropout = SCALING_TABLE[name]
    base = dict(name=name, width_coefficient=width, depth_coefficient=depth,
                resolution=resolution, dropout_rate=dropout)
    if "-lite" in name:
        base.update(blocks=LITE_BLOCKS, activation="relu6", fix_head_stem=True,
                    mean_rgb=LITE_MEAN_RGB, stddev_rgb=LITE_STDDEV_RGB)
    elif "-edgetpu-" in name:
        # The reference's EdgeTPU checkpoints classify 1001 classes, background first.
        base.update(blocks=EDGETPU_BLOCKS, activation="relu", num_classes=1001, label_offset=1,
                    mean_rgb=LITE_MEAN_RGB, stddev_rgb=LITE_STDDEV_RGB)
    elif "-condconv-" in name:
        base.update(blocks=CONDCONV_BLOCKS, condconv_num_experts=CONDCONV_EXPERTS[name],
                    mean_rgb=LITE_MEAN_RGB, stddev_rgb=LITE_STDDEV_RGB)
    config = ModelConfig(**base)
    if "num_classes" in overrides and "label_offset" not in overrides:
        config = config.with_classes(overrides.pop("num_classes"))
    return config.replace(**overrides)


def dropout_for_phi(phi: float) -> float:
    """Dropout for the formula models: reproduces the table's 0.2, 0.2, 0.3, 0.3, ..., 0.5 steps."""
    return min(0.5, 0.2 + 0.1 * math.floor(max(phi, 0.0) / 2))


def config_for_phi(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
                   **overrides) -> ModelConfig:
    """Integer phi 0..7 gives the published B0..B7; any other phi the compound-scaling formula."""
    if float(phi).is_integer() and 0 <= phi <= 7 and (alpha, beta, gamma) == (ALPHA, BETA, GAMMA):
        return get_model_config(f"efficientnet-b{int(phi)}", **overrides)
    if phi < 0:
        raise ConfigError(f"phi={phi}: must be >= 0")
    if min(alpha, beta, gamma) < 1.0:
        raise ConfigError(f"alpha, beta, gamma = {alpha}, {beta}, {gamma}: each must be >= 1")
    width, depth, resolution = compound_coefficients(phi, alpha, beta, gamma)
    return ModelConfig(name=f"efficientnet-phi{phi:g}", width_coefficient=width,
                       depth_coefficient=depth, resolution=resolution,
                       dropout_rate=dropout_for_phi(phi)).replace(**overrides)


def stage_table(config: ModelConfig) -> list[BlockArgs]:
    """The scaled stages (filters and repeats after rounding), as the builder lays them out.

    input_filters is the block string's, scaled, as the reference's builder keeps it: it sets
    the expansion and SE widths of the stage's first block. The block's actual input (the stem
    for stage 0) can differ: Lite fixes its stem at 32, EdgeTPU declares 24 after a 32 stem.
    """
    stages = []
    n = len(config.block_args)
    for idx, args in enumerate(config.block_args):
        fixed = config.fix_head_stem and idx in (0, n - 1)
        stages.append(dataclasses.replace(
            args,
            input_filters=scaled_filters(config, args.input_filters),
            output_filters=scaled_filters(config, args.output_filters),
            num_repeat=args.num_repeat if fixed else round_repeats(args.num_repeat,
                                                                   config.depth_coefficient)))
    return stages


def scaled_filters(config: ModelConfig, filters: int) -> int:
    return round_filters(filters, config.width_coefficient, config.depth_divisor, config.min_depth)


def stem_filters(config: ModelConfig) -> int:
    return (config.stem_filters if config.fix_head_stem
            else scaled_filters(config, config.stem_filters))


def head_filters(config: ModelConfig) -> int:
    return (config.head_filters if config.fix_head_stem
            else scaled_filters(config, config.head_filters))


# Serving limits of exported models: PIL's decompression-bomb threshold (pixels an encoded image's
# header may claim) and the images one request may hold.
MAX_IMAGE_PIXELS = 89_478_485
MAX_SERVING_BATCH_SIZE = 256

LR_SCHEDULES = ("exponential", "cosine", "poly", "constant")
OPTIMIZERS = ("rmsprop", "sgd", "momentum", "lars")
RESIZE_METHODS = ("bicubic", "bilinear")
MIXED_PRECISION = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_COMPILE = ("auto", "on", "off")
STRATEGIES = ("auto", "tpu", "mirrored", "multi_worker_mirrored", "one_device")
BN_MODES = ("train", "frozen")


def reference_resize_method(model_name: str) -> str:
    """The reference's resize kernel for a model: bilinear for Lite and EdgeTPU (kinder to
    post-training quantization), bicubic for everything else."""
    if model_name.startswith(("efficientnet-lite", "efficientnet-edgetpu")):
        return "bilinear"
    return "bicubic"


@dataclasses.dataclass(frozen=True)
class RecipeConfig(ConfigMixin):
    """How a model is trained: everything its results depend on besides the model and the data
    (docs/recipe.md). Defaults are the reference's ImageNet recipe."""

    train_batch_size: int = setting(2048, "Global training batch.")
    train_steps: int | None = setting(None, "Total optimizer steps; takes precedence over "
                                      "--train_epochs.")
    train_epochs: float | None = setting(350.0, "Total epochs over the training split "
                                         "(paper: 350).")
    base_learning_rate: float = setting(0.016, "Learning rate per 256 images; scaled linearly "
                                        "with the global batch.")
    lr_schedule: str = setting("exponential", "After the linear warmup.", LR_SCHEDULES)
    lr_warmup_epochs: float = setting(5.0, "Linear warmup length.")
    lr_decay_epoch: float = setting(2.4, "exponential: multiply by --lr_decay_factor every "
                                    "this many epochs.")
    lr_decay_factor: float = setting(0.97, "exponential decay factor.")
    lr_continuous_warmup: bool = setting(
        False, "Count the decay from the end of warmup, so the LR is continuous there. "
        "Default: the reference, which counts it from step 0 (0.97^2 of the peak right after "
        "5 warmup epochs).")
    optimizer: str = setting("rmsprop", "The reference's optimizers, with its TF1 update rules "
                             "and hyperparameters.", OPTIMIZERS)
    lars_weight_decay: float = setting(1e-5, "--optimizer=lars: weight decay inside LARS (on "
                                       "top of --weight_decay).")
    lars_epsilon: float = setting(0.0, "--optimizer=lars: epsilon.")
    moving_average_decay: float = setting(0.9999, "EMA of weights and BN statistics used for "
                                          "eval/export; 0 disables.")
    weight_decay: float = setting(1e-5, "L2 coefficient on sum(w^2)/2 over all weights but BN "
                                  "gamma/beta.")
    label_smoothing: float = setting(0.1, "Label smoothing.")
    weights: str | None = setting(None, "Initialize (train) or evaluate (eval) from a converted "
                                  ".weights.h5 file or an official checkpoint; a different "
                                  "--num_classes replaces the classifier.")
    freeze_backbone: bool = setting(False, "Fine-tuning: train only the classifier; the frozen "
                                    "backbone's BN runs in inference mode.")
    bn_mode: str = setting("train", "frozen: every BatchNormalization uses its moving "
                           "statistics and keeps gamma/beta fixed (small-batch fine-tuning).",
                           BN_MODES)
    seed: int | None = setting(None, "Random seed: initialization, dropout and stochastic "
                               "depth, the input pipeline, synthetic data and --mode=prepare "
                               "shuffling.")

    def __post_init__(self):
        check = self._require
        check(self.train_batch_size >= 1, "train_batch_size", "must be >= 1")
        check(self.train_steps is None or self.train_steps >= 1, "train_steps", "must be >= 1")
        check(self.train_epochs is None or self.train_epochs > 0, "train_epochs", "must be > 0")
        check(self.base_learning_rate > 0, "base_learning_rate", "must be > 0")
        self._require_choice("lr_schedule")
        check(self.lr_warmup_epochs >= 0, "lr_warmup_epochs", "must be >= 0")
        check(self.lr_decay_epoch > 0, "lr_decay_epoch", "must be > 0")
        check(0 < self.lr_decay_factor <= 1, "lr_decay_factor", "must be in (0, 1]")
        self._require_choice("optimizer")
        check(self.lars_weight_decay >= 0, "lars_weight_decay", "must be >= 0")
        check(self.lars_epsilon >= 0, "lars_epsilon", "must be >= 0")
        check(0 <= self.moving_average_decay < 1, "moving_average_decay",
              "must be in [0, 1) (0 disables the EMA)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        self._require_choice("bn_mode")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(ConfigMixin):
    """Where and how a run executes: devices, precision policy, output directory and loop
    sizes. Changing these resumes the same run."""

    model_dir: str | None = setting(None, "Checkpoints, config.json, TensorBoard logs, "
                                    "eval_results.json and best.weights.h5 go here (local path "
                                    "or gs://).")
    eval_batch_size: int = setting(1024, "Global eval batch.")
    steps_per_eval: int = setting(6255, "Checkpoint (and, in train_and_eval, evaluate) every "
                                  "this many steps.")
    steps_per_loop: int = setting(100, "Steps per compiled host loop (iterations per loop); "
                                  "also the logging interval.")
    keep_checkpoint_max: int = setting(5, "Checkpoints kept in --model_dir (the best weights "
                                       "are kept apart).")
    mixed_precision: str = setting("auto", "auto: bfloat16 on TPU, float16 with loss scaling on "
                                   "GPU, float32 on CPU.", MIXED_PRECISION)
    strategy: str = setting("auto", "tf.distribute strategy.", STRATEGIES)
    use_tpu: bool = setting(False, "Train on Cloud TPU (same as --strategy=tpu).")
    tpu: str | None = setting(None, "TPU name or grpc:// address ('local' on a TPU VM).")
    tpu_zone: str | None = setting(None, "GCE zone of the TPU (optional).")
    gcp_project: str | None = setting(None, "GCP project of the TPU (optional).")
    num_gpus: int | None = setting(None, "GPUs to mirror over (default: all visible; 0: none, "
                                   "run on the CPU).")
    num_cpu_devices: int | None = setting(None, "Split the host CPU into this many logical "
                                          "devices, to run multi-replica code without GPUs "
                                          "(debugging, tests).")
    jit_compile: str = setting("auto", "XLA-compile the train and eval steps. auto: on for GPU, "
                               "off on CPU; TPU always compiles.", JIT_COMPILE)
    profile_steps: str | None = setting(
        None, "START,END: a TensorBoard profiler trace of training steps START..END (1-based, "
        "inclusive) in MODEL_DIR/train/plugins/profile.")

    def __post_init__(self):
        check = self._require
        check(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        check(self.steps_per_eval >= 1, "steps_per_eval", "must be >= 1")
        check(self.steps_per_loop >= 1, "steps_per_loop", "must be >= 1")
        check(self.keep_checkpoint_max >= 1, "keep_checkpoint_max", "must be >= 1")
        self._require_choice("mixed_precision")
        self._require_choice("strategy")
        check(self.num_gpus is None or self.num_gpus >= 0, "num_gpus",
              "must be >= 0 (0: no GPU, the CPU; unset: every visible GPU)")
        check(self.num_cpu_devices is None or self.num_cpu_devices >= 1, "num_cpu_devices",
              "must be >= 1")
        self._require_choice("jit_compile")
        self.profile_range()  # validates profile_steps

    def profile_range(self) -> tuple[int, int] | None:
        """(START, END) of `profile_steps`, or None when no trace is asked for."""
        if self.profile_steps is None:
            return None
        parts = self.profile_steps.split(",")
        valid = len(parts) == 2 and all(p.strip().isdigit() for p in parts)
        start, end = (int(p) for p in parts) if valid else (0, 0)
        self._require(valid and 1 <= start <= end, "profile_steps",
                      "expected START,END with 1 <= START <= END, e.g. 10,20")
        return start, end
