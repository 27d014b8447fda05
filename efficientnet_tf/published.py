"""The official reference's published checkpoints, and how each must be fed.

Most accuracy lost with these weights comes from evaluating them with another resolution, crop,
interpolation or normalization than they were trained with; the checkpoints do not say. Here
each one does: `--mode=convert --published=NAME` builds the right network and records its
preprocessing in the converted file (`weights.read_record`), which eval, export and predict then
use. Top-1 is the reference's published ImageNet accuracy (its READMEs), for a sanity check of a
conversion, not something this package measured.
Pure Python: `--mode=convert --list` needs no TensorFlow.
"""
from __future__ import annotations

import dataclasses

from efficientnet_tf import config as cfg
from efficientnet_tf.config import ConfigError

_BUCKET = "https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet"
CROP_FRACTION = 0.875  # every published model is evaluated on a center crop of 87.5%


@dataclasses.dataclass(frozen=True)
class PublishedCheckpoint:
    name: str  # family/model as listed, e.g. "advprop/efficientnet-b0"
    model: str  # the architecture (a config.MODEL_NAMES entry)
    top_1: float  # the reference's published ImageNet top-1, percent
    url: str
    resolution: int | None = None  # None: the architecture's
    advprop: bool = False  # trained on x * 2/255 - 1 instead of mean/std

    @property
    def family(self) -> str:
        return self.name.split("/", 1)[0]

    def model_config(self, **overrides) -> cfg.ModelConfig:
        base = {"advprop_preprocessing": self.advprop}
        if self.resolution is not None:
            base["resolution"] = self.resolution
        return cfg.get_model_config(self.model, **{**base, **overrides})


def _family(family, folder, models, accuracies, stem="{}", **kwargs):
    return [PublishedCheckpoint(f"{family}/{model}", model, top_1,
                                f"{_BUCKET}/{folder}{stem.format(model)}.tar.gz", **kwargs)
            for model, top_1 in zip(models, accuracies)]


def _b(*indices):
    return [f"efficientnet-b{i}" for i in indices]


CHECKPOINTS = {c.name: c for c in [
    *_family("baseline", "ckpts/", _b(0, 1, 2, 3, 4, 5), (76.7, 78.7, 79.8, 81.1, 82.5, 83.1)),
    *_family("autoaugment", "ckptsaug/", _b(*range(8)),
             (77.1, 79.1, 80.1, 81.6, 82.9, 83.6, 84.0, 84.3)),
    *_family("randaugment", "randaug/", _b(5, 7), (83.7, 84.7), stem="{}-randaug"),
    *_family("advprop", "advprop/", _b(*range(9)),
             (77.6, 79.6, 80.5, 81.9, 83.3, 84.3, 84.8, 85.2, 85.5), advprop=True),
    *_family("noisy_student", "noisystudent/", _b(*range(8)),
             (78.8, 81.5, 82.4, 84.1, 85.3, 86.1, 86.4, 86.9), stem="noisy_student_{}"),
    PublishedCheckpoint("noisy_student/efficientnet-l2-475", "efficientnet-l2", 88.2,
                        f"{_BUCKET}/noisystudent/noisy_student_efficientnet-l2_475.tar.gz",
                        resolution=475),
    PublishedCheckpoint("noisy_student/efficientnet-l2", "efficientnet-l2", 88.4,
                        f"{_BUCKET}/noisystudent/noisy_student_efficientnet-l2.tar.gz"),
    *_family("lite", "lite/", [f"efficientnet-lite{i}" for i in range(5)],
             (75.1, 76.7, 77.6, 79.8, 81.5)),
    *_family("edgetpu", "", [f"efficientnet-edgetpu-{s}" for s in "SML"],
             (77.23, 78.69, 80.62)),
    *_family("condconv", "condconv/", [f"efficientnet-condconv-b0-{e}" for e in
                                      ("4e", "8e", "8e-depth")], (77.8, 78.3, 79.5)),
]}


def get_published(name: str) -> PublishedCheckpoint:
    if name not in CHECKPOINTS:
        raise ConfigError(f"--published={name}: unknown; `--mode=convert --list` lists the "
                          f"published checkpoints ({', '.join(CHECKPOINTS)}).")
    return CHECKPOINTS[name]


def normalization_text(config: cfg.ModelConfig) -> str:
    if config.advprop_preprocessing:
        return "[-1, 1] (x * 2/255 - 1)"
    mean, std = config.input_normalization()
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return f"(x - {mean[0]:g}) / {std[0]:g}"
    return "ImageNet mean/std" if (mean, std) == (cfg.IMAGENET_MEAN_RGB,
                                                  cfg.IMAGENET_STDDEV_RGB) else f"{mean} / {std}"


def format_table() -> str:
    """The `--mode=convert --list` table: one row per published checkpoint."""
    rows = [("name", "architecture", "size", "resize", "normalization", "classes", "top-1")]
    for c in CHECKPOINTS.values():
        config = c.model_config()
        classes = str(config.num_classes) + (" (background 0)" if config.label_offset else "")
        rows.append((c.name, c.model, str(config.resolution),
                     cfg.reference_resize_method(c.model), normalization_text(config), classes,
                     f"{c.top_1:.2f}%" if round(c.top_1, 1) != c.top_1 else f"{c.top_1:.1f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ["", f"Every model: center crop {CROP_FRACTION:g} of the short side, "
                              "then resize. Download the url of a name, untar, then "
                              "`--mode=convert --published=NAME --ckpt_path=DIR "
                              "--output=FILE.weights.h5`."])
