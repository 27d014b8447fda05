"""`DataConfig`: everything that selects and shapes an input pipeline, except per-call sizes.

Batch sizes and the image size are passed per call (they differ between train and eval, and the
resolution belongs to the model), so one `DataConfig` serves every pipeline of a run.
Pure Python: validated and serialized before TensorFlow is touched.
"""
from __future__ import annotations

import dataclasses

from efficientnet_tf.config import RESIZE_METHODS, ConfigMixin, setting

# Sources whose data comes from TFDS builders (name in this project -> TFDS builder name).
TFDS_BUILDERS = {
    "imagenet": "imagenet2012",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "oxford_flowers102": "oxford_flowers102",
    "oxford_iiit_pet": "oxford_iiit_pet",
    "food101": "food101",
    "stanford_cars": "cars196",
}
# Converted by `prepare` from the official archives into ImageNet-format TFRecords.
PREPARE_DATASETS = ("stanford_cars", "fgvc_aircraft", "birdsnap", "folder")
DATASETS = ("imagenet", "cifar10", "cifar100", "oxford_flowers102", "oxford_iiit_pet", "food101",
            "stanford_cars", "fgvc_aircraft", "birdsnap", "folder", "synthetic")
AUGMENT_NAMES = ("autoaugment", "randaugment")
AUGMENT_OPS = ("reference", "pil")
MAX_RANDAUG_MAGNITUDE = 30.0


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigMixin):
    """Input-pipeline settings. Frozen; build variants with `replace`.

    tfds: True reads the TFDS builder, False ImageNet-format TFRecords, None decides from what
      `data_dir` holds (`train-*-of-*` files -> TFRecords, otherwise the TFDS builder).
    holdout_shards: hold out the first N `train-*` shards as the eval split ("minival").
    cache: cache encoded records in memory; None = only for the small datasets in
      `sources.CACHE_BY_DEFAULT` (read from TFDS or TFRecords).
    resize_method: "bicubic" (the reference's for B-series) or "bilinear" (its choice for Lite
      and EdgeTPU); `config.reference_resize_method(model_name)` gives the model's.
    half_pixel_centers: False (the reference, and what the official checkpoints saw) resizes
      with the TF1 kernels and keeps the bicubic overshoot outside [0, 255]; True uses TF2's
      half-pixel kernels and clips.
    augment_ops: "reference" applies the AutoAugment/RandAugment ops exactly as the reference
      (Solarize's uint8 wrap, Posterize's bit count, Contrast's histogram mean included);
      "pil" follows PIL's definitions for those three instead.
    num_classes: overrides the dataset's class count (required for TFRecords without metadata
      in the `folder` dataset); for `synthetic`, the number of classes generated (default 10).
    seed: seeds synthetic data and, with `deterministic`, every shuffle and augmentation.
    """

    dataset: str = setting("synthetic", "Input source (docs/datasets.md). Default: imagenet "
                           "when --data_dir is given, else synthetic.", DATASETS)
    data_dir: str | None = setting(None, "ImageNet-format TFRecords (train-*/validation-*), a "
                                   "TFDS data dir, or a folder tree (--dataset=folder).")
    tfds: bool | None = setting(None, "Read the TFDS builder (--tfds) or TFRecords (--notfds); "
                                "unset: TFRecords when data_dir holds train-*-of-* files, else "
                                "TFDS.")
    holdout_shards: int = setting(0, "Evaluate on the first N train shards (minival) and train "
                                  "on the rest.")
    num_classes: int | None = None
    augment_name: str | None = setting(None, "Extra training augmentation.", AUGMENT_NAMES)
    randaug_num_layers: int = setting(2, "RandAugment: ops per image.")
    randaug_magnitude: float = setting(10.0, "RandAugment magnitude (reference: 10; 17 for B5, "
                                       "28 for B7).")
    mixup_alpha: float = setting(0.0, "Mixup Beta(alpha, alpha); 0 disables.")
    cutmix_alpha: float = setting(0.0, "CutMix alpha; 0 disables.")
    augment_ops: str = setting("reference", "reference: the AutoAugment/RandAugment ops exactly "
                               "as the reference (Solarize's uint8 wrap, Posterize's bit count, "
                               "Contrast's mean); pil: PIL's definitions of those three.",
                               AUGMENT_OPS)
    resize_method: str = setting("bicubic", "Resize kernel of the train/eval preprocessing. "
                                 "Default: the reference's for the model (bilinear for Lite and "
                                 "EdgeTPU, bicubic otherwise).", RESIZE_METHODS)
    half_pixel_centers: bool = setting(False, "Resize with TF2's half-pixel kernels and clip to "
                                       "[0, 255]. Default: the reference's TF1 kernels, "
                                       "unclipped, which the official checkpoints were trained "
                                       "and evaluated with.")
    deterministic: bool = setting(False, "Deterministic input order and augmentation.")
    seed: int = 0
    cache: bool | None = setting(None, "Cache the encoded dataset in memory (default: only the "
                                 "small datasets cifar10/100, oxford_flowers102, "
                                 "oxford_iiit_pet).")
    shuffle_buffer_size: int = 10_000
    synthetic_train_size: int = setting(2048, "synthetic: training examples generated.")
    synthetic_eval_size: int = setting(512, "synthetic: eval examples generated.")
    synthetic_image_size: int = 64

    def __post_init__(self):
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", str(self.data_dir))
        object.__setattr__(self, "randaug_magnitude", float(self.randaug_magnitude))
        object.__setattr__(self, "mixup_alpha", float(self.mixup_alpha))
        object.__setattr__(self, "cutmix_alpha", float(self.cutmix_alpha))
        self.validate()

    def validate(self):
        check = self._require

        check(self.dataset in DATASETS, "dataset", f"must be one of {', '.join(DATASETS)}")
        if self.dataset == "synthetic":
            check(self.data_dir is None, "data_dir",
                  "the synthetic dataset is generated in memory; do not pass a data_dir")
        else:
            check(bool(self.data_dir), "data_dir", f"dataset {self.dataset!r} needs a data_dir")
        check(self.tfds is None or isinstance(self.tfds, bool), "tfds",
              "must be True, False or None")
        if self.tfds:
            check(self.dataset in TFDS_BUILDERS, "tfds",
                  f"dataset {self.dataset!r} has no TFDS builder; TFDS sources: "
                  f"{', '.join(TFDS_BUILDERS)}")
        check(isinstance(self.holdout_shards, int) and self.holdout_shards >= 0, "holdout_shards",
              "must be an integer >= 0")
        if self.holdout_shards:
            check(self.dataset != "synthetic" and not self.tfds, "holdout_shards",
                  "holds out TFRecord shards; not available for TFDS or synthetic data")
        check(self.num_classes is None or (isinstance(self.num_classes, int)
                                           and self.num_classes >= 2),
              "num_classes", "must be None or an integer >= 2")
        check(self.augment_name is None or self.augment_name in AUGMENT_NAMES, "augment_name",
              f"must be None or one of {', '.join(AUGMENT_NAMES)}")
        check(isinstance(self.randaug_num_layers, int) and self.randaug_num_layers >= 1,
              "randaug_num_layers", "must be an integer >= 1")
        check(0.0 <= self.randaug_magnitude <= MAX_RANDAUG_MAGNITUDE, "randaug_magnitude",
              f"must be in [0, {MAX_RANDAUG_MAGNITUDE:g}] "
              "(the reference uses 10, 17 for B5, 28 for B7)")
        check(self.augment_ops in AUGMENT_OPS, "augment_ops",
              f"must be one of {', '.join(AUGMENT_OPS)}")
        check(self.resize_method in RESIZE_METHODS, "resize_method",
              f"must be one of {', '.join(RESIZE_METHODS)}")
        check(isinstance(self.half_pixel_centers, bool), "half_pixel_centers",
              "must be True or False")
        check(self.mixup_alpha >= 0.0, "mixup_alpha", "must be >= 0 (0 disables mixup)")
        check(self.cutmix_alpha >= 0.0, "cutmix_alpha", "must be >= 0 (0 disables cutmix)")
        check(self.cache is None or isinstance(self.cache, bool), "cache",
              "must be True, False or None")
        check(isinstance(self.shuffle_buffer_size, int) and self.shuffle_buffer_size >= 1,
              "shuffle_buffer_size", "must be an integer >= 1")
        check(isinstance(self.seed, int), "seed", "must be an integer")
        for field in ("synthetic_train_size", "synthetic_eval_size"):
            check(isinstance(getattr(self, field), int) and getattr(self, field) >= 1, field,
                  "must be an integer >= 1")
        check(isinstance(self.synthetic_image_size, int) and self.synthetic_image_size >= 8,
              "synthetic_image_size", "must be an integer >= 8")

    @property
    def mixes_labels(self) -> bool:
        """Mixup/cutmix produce soft labels, so the training pipeline then yields one-hot labels."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

