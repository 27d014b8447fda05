"""Command-line flags for main.py (absl). The only place besides main.py that reads FLAGS.

Flags are turned into frozen config dataclasses here; everything downstream takes configs.
"""
from __future__ import annotations

from absl import flags

from efficientnet_tf import config as cfg

MODES = ("train", "eval", "train_and_eval", "prepare", "convert", "profile", "export", "predict",
         "scaling_search", "scaling_study", "cam")


def define_flags():
    flags.DEFINE_enum("mode", None, MODES, "What to do.")
    flags.mark_flag_as_required("mode")

    # Model selection (paper section 4). --model and --phi are alternatives.
    flags.DEFINE_string("model", None, "Named model: " + ", ".join(cfg.MODEL_NAMES) +
                        ". Default efficientnet-b0 unless --phi is given.")
    flags.DEFINE_float("phi", None, "Compound coefficient: integer 0..7 gives B0..B7, other values "
                       "the formula d=alpha^phi, w=beta^phi, r=gamma^phi. scaling_search: the "
                       "phi every candidate is scaled with (default 1, the paper's STEP 1).")
    flags.DEFINE_float("alpha", cfg.ALPHA, "Depth base for --phi and scaling_study's compound "
                       "line (paper: 1.2).")
    flags.DEFINE_float("beta", cfg.BETA, "Width base for --phi and scaling_study (paper: 1.1).")
    flags.DEFINE_float("gamma", cfg.GAMMA, "Resolution base for --phi and scaling_study "
                       "(paper: 1.15).")
    flags.DEFINE_float("width_coefficient", None, "Override the model's width multiplier.")
    flags.DEFINE_float("depth_coefficient", None, "Override the model's depth multiplier.")
    flags.DEFINE_integer("image_size", None, "Override the model's input resolution.")
    flags.DEFINE_float("dropout_rate", None, "Override the model's head dropout.")
    flags.DEFINE_float("survival_prob", None, "Stochastic-depth survival of the last block.")
    flags.DEFINE_integer("num_classes", None, "Number of classes (default: the dataset's, or 1000).")
    flags.DEFINE_bool("advprop_preprocessing", False, "Scale inputs to [-1, 1] (x * 2/255 - 1) "
                      "instead of the mean/std normalization: what AdvProp checkpoints expect.")
    flags.DEFINE_string("bn_group_size", None, "Replicas that share batch-norm statistics in "
                        "training. Default: the reference's rule (per replica up to 8 replicas, "
                        "groups of max(8, n/8) above); 'all' or 0: every replica; 1: per replica.")

    # Data (efficientnet_tf/data, docs/datasets.md).
    from efficientnet_tf.data.config import AUGMENT_NAMES, AUGMENT_OPS, DATASETS, DataConfig

    data_defaults = DataConfig()
    flags.DEFINE_enum("dataset", None, DATASETS, "Input source (see README). Default: imagenet "
                      "when --data_dir is given, else synthetic.")
    flags.DEFINE_string("data_dir", None, "ImageNet-format TFRecords (train-*/validation-*), a "
                        "TFDS data dir, or a folder tree (--dataset=folder).")
    flags.DEFINE_bool("tfds", None, "Read the TFDS builder (--tfds) or TFRecords (--notfds); "
                      "unset: TFRecords when data_dir holds train-*-of-* files, else TFDS.")
    flags.DEFINE_integer("holdout_shards", 0, "Evaluate on the first N train shards (minival) "
                         "and train on the rest.")
    flags.DEFINE_enum("augment_name", None, AUGMENT_NAMES, "Extra training augmentation.")
    flags.DEFINE_integer("randaug_num_layers", data_defaults.randaug_num_layers,
                         "RandAugment: ops per image.")
    flags.DEFINE_float("randaug_magnitude", data_defaults.randaug_magnitude,
                       "RandAugment magnitude (reference: 10; 17 for B5, 28 for B7).")
    flags.DEFINE_float("mixup_alpha", 0.0, "Mixup Beta(alpha, alpha); 0 disables.")
    flags.DEFINE_float("cutmix_alpha", 0.0, "CutMix alpha; 0 disables.")
    flags.DEFINE_enum("augment_ops", data_defaults.augment_ops, AUGMENT_OPS, "reference: the "
                      "AutoAugment/RandAugment ops exactly as the reference (Solarize's uint8 "
                      "wrap, Posterize's bit count, Contrast's mean); pil: PIL's definitions of "
                      "those three.")
    flags.DEFINE_enum("resize_method", None, cfg.RESIZE_METHODS, "Resize kernel of the train/eval "
                      "preprocessing. Default: the reference's for the model (bilinear for Lite "
                      "and EdgeTPU, bicubic otherwise).")
    flags.DEFINE_bool("half_pixel_centers", False, "Resize with TF2's half-pixel kernels and "
                      "clip to [0, 255]. Default: the reference's TF1 kernels, unclipped, which "
                      "the official checkpoints were trained and evaluated with.")
    flags.DEFINE_bool("deterministic", False, "Deterministic input order and augmentation.")
    flags.DEFINE_bool("cache", None, "Cache the encoded dataset in memory (default: only the small "
                      "datasets cifar10/100, oxford_flowers102, oxford_iiit_pet).")
    flags.DEFINE_integer("synthetic_train_size", data_defaults.synthetic_train_size,
                         "synthetic: training examples generated.")
    flags.DEFINE_integer("synthetic_eval_size", data_defaults.synthetic_eval_size,
                         "synthetic: eval examples generated.")

    flags.DEFINE_string("source_dir", None, "prepare: the extracted official dataset (layouts in "
                        "docs/datasets.md).")
    flags.DEFINE_bool("overwrite", False, "prepare/export: replace an existing conversion in "
                      "--data_dir or export in --export_dir.")

    # Training recipe (docs/fidelity.md). Defaults are the reference's.
    defaults = cfg.TrainConfig()
    flags.DEFINE_string("model_dir", None, "Checkpoints, config.json, TensorBoard logs, "
                        "eval_results.json and best.weights.h5 go here (local path or gs://).")
    flags.DEFINE_integer("train_batch_size", defaults.train_batch_size, "Global training batch.")
    flags.DEFINE_integer("eval_batch_size", defaults.eval_batch_size, "Global eval batch.")
    flags.DEFINE_integer("train_steps", None, "Total optimizer steps; takes precedence over "
                         "--train_epochs.")
    flags.DEFINE_float("train_epochs", defaults.train_epochs,
                       "Total epochs over the training split (paper: 350).")
    flags.DEFINE_integer("steps_per_eval", defaults.steps_per_eval,
                         "Checkpoint (and, in train_and_eval, evaluate) every this many steps.")
    flags.DEFINE_integer("steps_per_loop", defaults.steps_per_loop,
                         "Steps per compiled host loop (iterations per loop); also the logging "
                         "interval.")
    flags.DEFINE_float("base_learning_rate", defaults.base_learning_rate,
                       "Learning rate per 256 images; scaled linearly with the global batch.")
    flags.DEFINE_enum("lr_schedule", defaults.lr_schedule, cfg.LR_SCHEDULES,
                      "After the linear warmup.")
    flags.DEFINE_float("lr_warmup_epochs", defaults.lr_warmup_epochs, "Linear warmup length.")
    flags.DEFINE_float("lr_decay_epoch", defaults.lr_decay_epoch,
                       "exponential: multiply by --lr_decay_factor every this many epochs.")
    flags.DEFINE_float("lr_decay_factor", defaults.lr_decay_factor, "exponential decay factor.")
    flags.DEFINE_bool("lr_continuous_warmup", defaults.lr_continuous_warmup, "Count the decay "
                      "from the end of warmup, so the LR is continuous there. Default: the "
                      "reference, which counts it from step 0 (0.97^2 of the peak right after "
                      "5 warmup epochs).")
    flags.DEFINE_enum("optimizer", defaults.optimizer, cfg.OPTIMIZERS, "The reference's "
                      "optimizers, with its TF1 update rules and hyperparameters.")
    flags.DEFINE_float("lars_weight_decay", defaults.lars_weight_decay,
                       "--optimizer=lars: weight decay inside LARS (on top of --weight_decay).")
    flags.DEFINE_float("lars_epsilon", defaults.lars_epsilon, "--optimizer=lars: epsilon.")
    flags.DEFINE_float("moving_average_decay", defaults.moving_average_decay,
                       "EMA of weights and BN statistics used for eval/export; 0 disables.")
    flags.DEFINE_float("weight_decay", defaults.weight_decay,
                       "L2 coefficient on sum(w^2)/2 over all weights but BN gamma/beta.")
    flags.DEFINE_float("label_smoothing", defaults.label_smoothing, "Label smoothing.")
    flags.DEFINE_enum("mixed_precision", defaults.mixed_precision, cfg.MIXED_PRECISION,
                      "auto: bfloat16 on TPU, float16 with loss scaling on GPU, float32 on CPU.")
    flags.DEFINE_enum("strategy", defaults.strategy, cfg.STRATEGIES, "tf.distribute strategy.")
    flags.DEFINE_bool("use_tpu", False, "Train on Cloud TPU (same as --strategy=tpu).")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address ('local' on a TPU VM).")
    flags.DEFINE_string("tpu_zone", None, "GCE zone of the TPU (optional).")
    flags.DEFINE_string("gcp_project", None, "GCP project of the TPU (optional).")
    flags.DEFINE_integer("num_gpus", None, "GPUs to mirror over (default: all visible; 0: none, "
                         "run on the CPU).")
    flags.DEFINE_integer("num_cpu_devices", None, "Split the host CPU into this many logical "
                         "devices, to run multi-replica code without GPUs (debugging, tests).")
    flags.DEFINE_bool("freeze_backbone", False, "Fine-tuning: train only the classifier; the "
                      "frozen backbone's BN runs in inference mode.")
    flags.DEFINE_enum("bn_mode", defaults.bn_mode, cfg.BN_MODES,
                      "frozen: every BatchNormalization uses its moving statistics and keeps "
                      "gamma/beta fixed (small-batch fine-tuning).")
    flags.DEFINE_integer("keep_checkpoint_max", defaults.keep_checkpoint_max,
                         "Checkpoints kept in --model_dir (the best weights are kept apart).")
    flags.DEFINE_integer("seed", None, "Random seed for the input pipeline, synthetic data and --mode=prepare shuffling.")
    flags.DEFINE_string("weights", None, "Initialize (train) or evaluate (eval) from a converted "
                        ".weights.h5 file or an official checkpoint; a different --num_classes "
                        "replaces the classifier.")

    # Weights.
    flags.DEFINE_string("ckpt_path", None, "convert: source checkpoint (TF1 prefix or directory, "
                        "keras.applications .h5 or .weights.h5).")
    flags.DEFINE_string("output", None, "convert: destination .weights.h5 file; cam: the "
                        "overlay .png.")

    # Export and predict.
    flags.DEFINE_string("export_dir", None, "export: destination directory (written atomically).")
    flags.DEFINE_bool("hub_format", False, "export: TF-Hub-style reusable SavedModels "
                      "classification/ and feature_vector/ (input [0, 1]) instead of the serving "
                      "SavedModel.")
    flags.DEFINE_bool("tflite", False, "export: EXPORT_DIR/model.tflite instead of a SavedModel.")
    flags.DEFINE_enum("quantize", None, ["dynamic", "int8"], "export --tflite: post-training "
                      "quantization; int8 calibrates on --dataset/--data_dir training images.")
    from efficientnet_tf.data.image_header import MAX_IMAGE_PIXELS
    from efficientnet_tf.export import DEFAULT_MAX_BATCH_SIZE

    flags.DEFINE_integer("max_image_pixels", MAX_IMAGE_PIXELS, "export: the serving signature "
                         "refuses encoded images whose header claims more pixels (before "
                         "decoding; default PIL's bomb threshold, ~89.5 MP).")
    flags.DEFINE_integer("max_batch_size", DEFAULT_MAX_BATCH_SIZE, "export: the serving "
                         "signatures refuse requests with more images.")
    flags.DEFINE_string("saved_model", None, "predict: a serving SavedModel from --mode=export.")
    flags.DEFINE_list("image", None, "predict: image file(s), comma-separated; cam: one image.")
    flags.DEFINE_integer("top_k", 5, "predict: classes to report per image.")

    # Reports.
    flags.DEFINE_multi_string("models", None, "profile: models to report (repeatable or "
                              "comma-separated). Default: efficientnet-b0..b7, or --model.")
    flags.DEFINE_string("output_json", None, "profile/predict: also write the result as JSON here.")

    # Compound-scaling tools (efficientnet_tf/scaling.py). The base network is the model flags
    # (--model and overrides such as --width_coefficient); results go to --model_dir.
    from efficientnet_tf import scaling

    flags.DEFINE_integer("search_budget_steps", None, "scaling_search/scaling_study: training "
                         "steps for every network (default: --train_steps).")
    flags.DEFINE_string("alpha_grid", ",".join(map(str, scaling.DEFAULT_ALPHA_GRID)),
                        "scaling_search: depth bases alpha to try, comma-separated, each >= 1.")
    flags.DEFINE_string("beta_grid", ",".join(map(str, scaling.DEFAULT_BETA_GRID)),
                        "scaling_search: width bases beta to try.")
    flags.DEFINE_string("gamma_grid", ",".join(map(str, scaling.DEFAULT_GAMMA_GRID)),
                        "scaling_search: resolution bases gamma to try.")
    flags.DEFINE_float("search_tolerance", 0.1, "scaling_search: keep the triples with "
                       "|alpha*beta^2*gamma^2 - 2| <= this.")
    flags.DEFINE_list("study_k", ["1", "2"], "scaling_study: FLOPs targets, as the compound "
                      "model at phi=k (~2^k x the base) for each k.")
    flags.DEFINE_integer("study_repeats", 1, "scaling_study: training runs per network "
                         "(top-1 is their mean, with the standard deviation).")


def model_config_from_flags(FLAGS, use_phi: bool = True) -> cfg.ModelConfig:
    """--model or --phi, then explicit overrides. Unset flags leave the table's value.

    use_phi=False: --phi means something else (the scaling search's phi); --model picks the base.
    """
    if use_phi and FLAGS.model is not None and FLAGS.phi is not None:
        raise flags.ValidationError("Pass --model or --phi, not both.")
    overrides = {}
    for flag, field in (("width_coefficient", "width_coefficient"),
                        ("depth_coefficient", "depth_coefficient"),
                        ("image_size", "resolution"), ("dropout_rate", "dropout_rate"),
                        ("survival_prob", "survival_prob"), ("num_classes", "num_classes")):
        value = getattr(FLAGS, flag)
        if value is not None:
            overrides[field] = value
    overrides["advprop_preprocessing"] = FLAGS.advprop_preprocessing
    overrides["bn_group_size"] = parse_bn_group_size(FLAGS.bn_group_size)
    try:
        if use_phi and FLAGS.phi is not None:
            return cfg.config_for_phi(FLAGS.phi, FLAGS.alpha, FLAGS.beta, FLAGS.gamma, **overrides)
        return cfg.get_model_config(FLAGS.model or "efficientnet-b0", **overrides)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e


def parse_bn_group_size(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().lower() == "all":
        return 0
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise flags.ValidationError(f"--bn_group_size={value}: expected 'all', 0 (all replicas) "
                                    "or a group size >= 1.")
    return size


_MODEL = {"model", "phi", "alpha", "beta", "gamma", "width_coefficient", "depth_coefficient",
          "image_size", "dropout_rate", "survival_prob", "num_classes", "advprop_preprocessing"}
_DATA = {"dataset", "data_dir", "tfds", "holdout_shards", "cache", "seed", "synthetic_eval_size"}
_TRAIN_DATA = {"synthetic_train_size", "augment_name", "randaug_num_layers", "randaug_magnitude",
               "augment_ops", "mixup_alpha", "cutmix_alpha", "deterministic"}
_RESIZE = {"resize_method", "half_pixel_centers"}
_RUNTIME = {"model_dir", "mixed_precision", "strategy", "use_tpu", "tpu", "tpu_zone",
            "gcp_project", "num_gpus", "num_cpu_devices"}
_RECIPE = {"train_batch_size", "eval_batch_size", "train_steps", "train_epochs", "steps_per_eval",
           "steps_per_loop", "base_learning_rate", "lr_schedule", "lr_warmup_epochs",
           "lr_decay_epoch", "lr_decay_factor", "lr_continuous_warmup", "optimizer",
           "lars_weight_decay", "lars_epsilon", "moving_average_decay", "weight_decay",
           "label_smoothing", "freeze_backbone", "bn_mode", "keep_checkpoint_max", "weights",
           "bn_group_size"}
_TRAINING = _MODEL | _DATA | _TRAIN_DATA | _RESIZE | _RUNTIME | _RECIPE
_INFERENCE = {"model_dir", "weights"} | _MODEL | _RESIZE
MODE_FLAGS = {
    "train": _TRAINING,
    "train_and_eval": _TRAINING,
    "eval": _MODEL | _DATA | _RESIZE | _RUNTIME | {"weights", "eval_batch_size",
                                                   "moving_average_decay"},
    "prepare": {"dataset", "source_dir", "data_dir", "overwrite", "seed"},
    "convert": _MODEL | {"ckpt_path", "output"},
    "profile": {"model", "models", "output_json"},
    "export": _INFERENCE | _DATA | {"export_dir", "overwrite", "hub_format", "tflite",
                                    "quantize", "max_image_pixels", "max_batch_size"},
    "predict": _INFERENCE | {"saved_model", "image", "top_k", "output_json"},
    "cam": _INFERENCE | {"image", "output"},
    "scaling_search": _TRAINING | {"search_budget_steps", "alpha_grid", "beta_grid",
                                   "gamma_grid", "search_tolerance"},
    "scaling_study": _TRAINING | {"search_budget_steps", "study_k", "study_repeats"},
}


def unused_flags(FLAGS) -> list[str]:
    """The flags given on the command line that `--mode` would not use, each with the reason.

    A flag that is accepted must change something: silently ignoring `--image_size` on an
    export of a training run would export another model than the user asked for.
    """
    given = {f.name for f in FLAGS.get_flags_for_module(__name__) if f.present}
    mode = FLAGS.mode
    problems = [f"--{name} is not used by --mode={mode}"
                for name in sorted(given - MODE_FLAGS[mode] - {"mode"})]
    if mode in ("export", "predict", "cam") and FLAGS.model_dir:
        problems += [f"--{name} is not used with --model_dir: the run's config.json decides "
                     "the model" for name in sorted(given & _MODEL)]
    if mode == "predict" and FLAGS.saved_model:
        problems += [f"--{name} is not used with --saved_model: the export fixed it"
                     for name in sorted(given & (_INFERENCE - {"model_dir", "weights"}))]
    if mode == "export" and FLAGS.quantize != "int8":
        problems += [f"--{name} is only used by --quantize=int8 (calibration images)"
                     for name in sorted(given & _DATA)]
    return problems


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


def study_ks(FLAGS) -> list[int]:
    ks = [k.strip() for k in FLAGS.study_k or []]
    if not ks or not all(k.isdigit() and int(k) >= 1 for k in ks):
        raise flags.ValidationError(f"--study_k={','.join(FLAGS.study_k or [])}: expected "
                                    "integers >= 1, e.g. 1,2,3.")
    return [int(k) for k in ks]


def require(FLAGS, *names):
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) in (None, "")]
    if missing:
        raise flags.ValidationError(f"--mode={FLAGS.mode} needs {', '.join(missing)}.")


TRAIN_FLAG_FIELDS = (
    "model_dir", "train_batch_size", "eval_batch_size", "train_steps", "train_epochs",
    "steps_per_eval", "steps_per_loop", "base_learning_rate", "lr_schedule", "lr_warmup_epochs",
    "lr_decay_epoch", "lr_decay_factor", "lr_continuous_warmup", "optimizer", "lars_weight_decay",
    "lars_epsilon", "moving_average_decay", "weight_decay",
    "label_smoothing", "mixed_precision", "strategy", "use_tpu", "tpu", "tpu_zone",
    "gcp_project", "num_gpus", "weights", "freeze_backbone", "bn_mode", "keep_checkpoint_max",
    "seed",
)


def train_config_from_flags(FLAGS) -> cfg.TrainConfig:
    try:
        return cfg.TrainConfig(**{name: getattr(FLAGS, name) for name in TRAIN_FLAG_FIELDS})
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e


def data_config_from_flags(FLAGS):
    from efficientnet_tf.data.config import DataConfig

    dataset = FLAGS.dataset or ("imagenet" if FLAGS.data_dir else "synthetic")
    try:
        return DataConfig(
            dataset=dataset, data_dir=FLAGS.data_dir, tfds=FLAGS.tfds,
            holdout_shards=FLAGS.holdout_shards,
            num_classes=FLAGS.num_classes if dataset in ("synthetic", "folder") else None,
            augment_name=FLAGS.augment_name, randaug_num_layers=FLAGS.randaug_num_layers,
            randaug_magnitude=FLAGS.randaug_magnitude, mixup_alpha=FLAGS.mixup_alpha,
            cutmix_alpha=FLAGS.cutmix_alpha, augment_ops=FLAGS.augment_ops,
            resize_method=FLAGS.resize_method or cfg.reference_resize_method(
                FLAGS.model or "efficientnet-b0"),
            half_pixel_centers=FLAGS.half_pixel_centers,
            deterministic=FLAGS.deterministic, seed=FLAGS.seed or 0, cache=FLAGS.cache,
            synthetic_train_size=FLAGS.synthetic_train_size,
            synthetic_eval_size=FLAGS.synthetic_eval_size)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from e


def experiment_config_from_flags(FLAGS, use_phi: bool = True) -> cfg.ExperimentConfig:
    """Flags -> one frozen config. num_classes defaults to the dataset's."""
    from efficientnet_tf import data as data_lib

    data = data_config_from_flags(FLAGS)
    model = model_config_from_flags(FLAGS, use_phi)
    if FLAGS.num_classes is None:
        model = model.replace(num_classes=data_lib.get_dataset_info(data).num_classes)
    return cfg.ExperimentConfig(model=model, data=data, train=train_config_from_flags(FLAGS))
