"""Command-line flags for main.py (absl). The only place besides main.py that reads FLAGS.

Flags are turned into frozen config dataclasses here; everything downstream takes configs.
"""
from __future__ import annotations

from absl import flags

from efficientnet_tf import config as cfg

MODES = ("convert", "profile")


def define_flags():
    flags.DEFINE_enum("mode", None, MODES, "What to do.")
    flags.mark_flag_as_required("mode")

    # Model selection (SPEC 1.2). --model and --phi are alternatives.
    flags.DEFINE_string("model", None, "Named model: " + ", ".join(cfg.MODEL_NAMES) +
                        ". Default efficientnet-b0 unless --phi is given.")
    flags.DEFINE_float("phi", None, "Compound coefficient: integer 0..7 gives B0..B7, other values "
                       "the formula d=alpha^phi, w=beta^phi, r=gamma^phi.")
    flags.DEFINE_float("alpha", cfg.ALPHA, "Depth base for --phi (paper: 1.2).")
    flags.DEFINE_float("beta", cfg.BETA, "Width base for --phi (paper: 1.1).")
    flags.DEFINE_float("gamma", cfg.GAMMA, "Resolution base for --phi (paper: 1.15).")
    flags.DEFINE_float("width_coefficient", None, "Override the model's width multiplier.")
    flags.DEFINE_float("depth_coefficient", None, "Override the model's depth multiplier.")
    flags.DEFINE_integer("image_size", None, "Override the model's input resolution.")
    flags.DEFINE_float("dropout_rate", None, "Override the model's head dropout.")
    flags.DEFINE_float("survival_prob", None, "Stochastic-depth survival of the last block.")
    flags.DEFINE_integer("num_classes", None, "Number of classes (default: the dataset's, or 1000).")

    # Weights.
    flags.DEFINE_string("ckpt_path", None, "convert: source checkpoint (TF1 prefix or directory, "
                        "keras.applications .h5 or .weights.h5).")
    flags.DEFINE_string("output", None, "convert: destination .weights.h5 file.")

    # Reports.
    flags.DEFINE_multi_string("models", None, "profile: models to report (repeatable or "
                              "comma-separated). Default: efficientnet-b0..b7, or --model.")
    flags.DEFINE_string("output_json", None, "profile: also write the rows as JSON here.")


def model_config_from_flags(FLAGS) -> cfg.ModelConfig:
    """--model or --phi, then explicit overrides. Unset flags leave the table's value."""
    if FLAGS.model is not None and FLAGS.phi is not None:
        raise flags.ValidationError("Pass --model or --phi, not both.")
    overrides = {}
    for flag, field in (("width_coefficient", "width_coefficient"),
                        ("depth_coefficient", "depth_coefficient"),
                        ("image_size", "resolution"), ("dropout_rate", "dropout_rate"),
                        ("survival_prob", "survival_prob"), ("num_classes", "num_classes")):
        value = getattr(FLAGS, flag)
        if value is not None:
            overrides[field] = value
    try:
        if FLAGS.phi is not None:
            return cfg.config_for_phi(FLAGS.phi, FLAGS.alpha, FLAGS.beta, FLAGS.gamma, **overrides)
        return cfg.get_model_config(FLAGS.model or "efficientnet-b0", **overrides)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e


def profile_model_names(FLAGS) -> list[str]:
    names = []
    for entry in FLAGS.models or ([FLAGS.model] if FLAGS.model else []):
        names.extend(n.strip() for n in entry.split(",") if n.strip())
    names = names or [f"efficientnet-b{i}" for i in range(8)]
    unknown = [n for n in names if n not in cfg.SCALING_TABLE]
    if unknown:
        raise flags.ValidationError(f"--models: unknown model(s) {unknown}; choose from "
                                    + ", ".join(cfg.MODEL_NAMES))
    return names


def require(FLAGS, *names):
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) in (None, "")]
    if missing:
        raise flags.ValidationError(f"--mode={FLAGS.mode} needs {', '.join(missing)}.")
