"""The command line's flags (absl) and their translation into frozen configs.

With `cli/main.py`, the only module that reads FLAGS. The recipe, runtime and data flags are
derived from the config dataclasses' fields (`config.setting`: name, type, default, help,
choices), so a new field is a new flag with nothing else to keep in sync. Importing this module
does not import TensorFlow: `--help` is instant.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing

from absl import flags

from efficientnet_tf import config as cfg
from efficientnet_tf.data.config import DataConfig

# The command line's modes: name -> what it does (the order `--help` shows).
MODES = {
    "train": "Train a model in --model_dir (checkpoints, config.json, TensorBoard logs).",
    "train_and_eval": "Train, evaluating at every checkpoint and keeping the best EMA weights.",
    "eval": "Evaluate a training run's latest checkpoint (EMA) or --weights.",
    "prepare": "Convert an official dataset archive into ImageNet-format TFRecords.",
    "convert": "Convert an official or keras.applications checkpoint to .weights.h5.",
    "profile": "Parameters and multiply-adds of the named models, against the paper.",
    "export": "Export a serving SavedModel, TF-Hub-style SavedModels or TFLite.",
    "predict": "Classify image files with a run, a weights file or an exported SavedModel.",
    "cam": "Class activation map of one image, written as a PNG overlay.",
    "scaling_search": "The paper's STEP 1 grid search for alpha, beta, gamma.",
    "scaling_study": "Width vs depth vs resolution vs compound scaling at matched FLOPs.",
}

# Flag name -> group; groups decide the modes that use a flag and how --help lists it.
GROUP_OF: dict[str, str] = {}
GROUP_TITLES = {
    "model": "Model (--model or --phi, then overrides)",
    "data": "Data",
    "train_input": "Training input",
    "resize": "Preprocessing",
    "recipe": "Training recipe (defaults: the reference's ImageNet recipe)",
    "runtime": "Runtime: devices, precision, output directory, loop sizes",
    "prepare": "prepare",
    "convert": "convert",
    "export": "export",
    "predict": "predict and cam",
    "profile": "profile",
    "scaling": "scaling_search and scaling_study",
}
# Config fields whose flag is spelled differently.
FLAG_FOR_FIELD = {"resolution": "image_size"}


def _define(group: str, definer, name: str, default, help_text: str, **kwargs):
    GROUP_OF[name] = group
    definer(name, default, help=help_text, **kwargs)


def _define_from_fields(group: str, config_cls, skip=(), defaults=None):
    """One flag per field that has help text, typed from the field's annotation."""
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if "help" not in field.metadata or field.name in skip:
            continue
        default = (defaults or {}).get(field.name, field.default)
        kind = hints[field.name]
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        help_text = field.metadata["help"]
        if "choices" in field.metadata:
            _define(group, flags.DEFINE_enum, field.name, default, help_text,
                    enum_values=list(field.metadata["choices"]))
        else:
            definer = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                       float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
            _define(group, definer, field.name, default, help_text)


def _field_values(FLAGS, config_cls, skip=()) -> dict:
    return {f.name: FLAGS[f.name].value for f in dataclasses.fields(config_cls)
            if "help" in f.metadata and f.name not in skip}


# DataConfig fields only training reads, and the resize fields inference reads too.
_TRAIN_INPUT_FIELDS = ("augment_name", "randaug_num_layers", "randaug_magnitude", "mixup_alpha",
                       "cutmix_alpha", "augment_ops", "deterministic", "synthetic_train_size")
_RESIZE_FIELDS = ("resize_method", "half_pixel_centers")


def define_flags():
    _define("mode", flags.DEFINE_enum, "mode", None, "What to do: " + ", ".join(MODES) + ".",
            enum_values=list(MODES))
    flags.mark_flag_as_required("mode")

    model = lambda *a, **k: _define("model", *a, **k)  # noqa: E731
    model(flags.DEFINE_string, "model", None, "Named model: " + ", ".join(cfg.MODEL_NAMES) +
          ". Default efficientnet-b0 unless --phi is given.")
    model(flags.DEFINE_float, "phi", None, "Compound coefficient: integer 0..7 gives B0..B7, "
          "other values the formula d=alpha^phi, w=beta^phi, r=gamma^phi. scaling_search: the "
          "phi every candidate is scaled with (default 1, the paper's STEP 1).")
    model(flags.DEFINE_float, "alpha", cfg.ALPHA, "Depth base for --phi and scaling_study's "
          "compound line (paper: 1.2).")
    model(flags.DEFINE_float, "beta", cfg.BETA, "Width base for --phi and scaling_study "
          "(paper: 1.1).")
    model(flags.DEFINE_float, "gamma", cfg.GAMMA, "Resolution base for --phi and scaling_study "
          "(paper: 1.15).")
    model(flags.DEFINE_float, "width_coefficient", None, "Override the model's width "
          "multiplier.")
    model(flags.DEFINE_float, "depth_coefficient", None, "Override the model's depth "
          "multiplier.")
    model(flags.DEFINE_integer, "image_size", None, "Override the model's input resolution.")
    model(flags.DEFINE_float, "dropout_rate", None, "Override the model's head dropout.")
    model(flags.DEFINE_float, "survival_prob", None, "Stochastic-depth survival of the last "
          "block.")
    model(flags.DEFINE_integer, "num_classes", None, "Number of classes (default: the "
          "dataset's, or 1000).")
    model(flags.DEFINE_bool, "advprop_preprocessing", False, "Scale inputs to [-1, 1] "
          "(x * 2/255 - 1) instead of the mean/std normalization: what AdvProp checkpoints "
          "expect.")
    _define("recipe", flags.DEFINE_string, "bn_group_size", None, "Replicas that share "
            "batch-norm statistics in training. Default: the reference's rule (per replica up "
            "to 8 replicas, groups of max(8, n/8) above); 'all' or 0: every replica; 1: per "
            "replica.")

    data_fields = {f.name for f in dataclasses.fields(DataConfig)}
    _define_from_fields("data", DataConfig, skip=_TRAIN_INPUT_FIELDS + _RESIZE_FIELDS,
                        defaults={"dataset": None})
    _define_from_fields("train_input", DataConfig, skip=data_fields - set(_TRAIN_INPUT_FIELDS))
    _define_from_fields("resize", DataConfig, skip=data_fields - set(_RESIZE_FIELDS),
                        defaults={"resize_method": None})
    _define_from_fields("recipe", cfg.RecipeConfig)
    _define_from_fields("runtime", cfg.RuntimeConfig)

    _define("prepare", flags.DEFINE_string, "source_dir", None, "prepare: the extracted "
            "official dataset (layouts in docs/datasets.md).")
    _define("prepare", flags.DEFINE_bool, "overwrite", False, "prepare/export: replace an "
            "existing conversion in --data_dir or export in --export_dir.")
    _define("convert", flags.DEFINE_string, "ckpt_path", None, "convert: source checkpoint "
            "(TF1 prefix or directory, keras.applications .h5 or .weights.h5).")
    _define("convert", flags.DEFINE_string, "output", None, "convert: destination .weights.h5 "
            "file; cam: the overlay .png.")
    _define("convert", flags.DEFINE_string, "published", None, "convert: the published "
            "checkpoint --ckpt_path holds (a name from --list): sets the architecture, "
            "resolution and input normalization it was trained with. The output records them "
            "(with the resize kernel and crop), and eval/export/predict with --weights use them.")
    _define("convert", flags.DEFINE_bool, "list", False, "convert: list the published "
            "checkpoints (architecture, preprocessing, published ImageNet top-1) and exit.")
    _define("export", flags.DEFINE_string, "export_dir", None, "export: destination directory "
            "(written atomically).")
    _define("export", flags.DEFINE_bool, "hub_format", False, "export: TF-Hub-style reusable "
            "SavedModels classification/ and feature_vector/ (input [0, 1]) instead of the "
            "serving SavedModel.")
    _define("export", flags.DEFINE_bool, "tflite", False, "export: EXPORT_DIR/model.tflite "
            "instead of a SavedModel.")
    _define("export", flags.DEFINE_enum, "quantize", None, "export --tflite: post-training "
            "quantization; int8 calibrates on --dataset/--data_dir training images.",
            enum_values=["dynamic", "int8"])
    _define("export", flags.DEFINE_integer, "max_image_pixels", cfg.MAX_IMAGE_PIXELS,
            "export: the serving signature refuses encoded images whose header claims more "
            "pixels (before decoding; default PIL's bomb threshold, ~89.5 MP).")
    _define("export", flags.DEFINE_integer, "max_batch_size", cfg.MAX_SERVING_BATCH_SIZE,
            "export: the serving signatures refuse requests with more images.")
    _define("predict", flags.DEFINE_string, "saved_model", None, "predict: a serving "
            "SavedModel from --mode=export.")
    _define("predict", flags.DEFINE_list, "image", None, "predict: image file(s), "
            "comma-separated; cam: one image.")
    _define("predict", flags.DEFINE_integer, "top_k", 5, "predict: classes to report per "
            "image.")
    _define("profile", flags.DEFINE_multi_string, "models", None, "profile: models to report "
            "(repeatable or comma-separated). Default: efficientnet-b0..b7, or --model.")
    _define("profile", flags.DEFINE_string, "output_json", None, "profile/predict: also write "
            "the result as JSON here.")

    from efficientnet_tf import scaling

    scale = lambda *a, **k: _define("scaling", *a, **k)  # noqa: E731
    scale(flags.DEFINE_integer, "search_budget_steps", None, "scaling_search/scaling_study: "
          "training steps for every network (default: --train_steps).")
    scale(flags.DEFINE_string, "alpha_grid", ",".join(map(str, scaling.DEFAULT_ALPHA_GRID)),
          "scaling_search: depth bases alpha to try, comma-separated, each >= 1.")
    scale(flags.DEFINE_string, "beta_grid", ",".join(map(str, scaling.DEFAULT_BETA_GRID)),
          "scaling_search: width bases beta to try.")
    scale(flags.DEFINE_string, "gamma_grid", ",".join(map(str, scaling.DEFAULT_GAMMA_GRID)),
          "scaling_search: resolution bases gamma to try.")
    scale(flags.DEFINE_float, "search_tolerance", 0.1, "scaling_search: keep the triples with "
          "|alpha*beta^2*gamma^2 - 2| <= this.")
    scale(flags.DEFINE_list, "study_k", ["1", "2"], "scaling_study: FLOPs targets, as the "
          "compound model at phi=k (~2^k x the base) for each k.")
    scale(flags.DEFINE_integer, "study_repeats", 1, "scaling_study: training runs per network "
          "(top-1 is their mean, with the standard deviation).")


# --- which flags each mode uses ----------------------------------------------------------------

def _group(name: str) -> frozenset:
    return frozenset(f for f, g in GROUP_OF.items() if g == name)


def _data_flags() -> frozenset:
    """What selects a dataset (the seed also seeds synthetic data and shuffles)."""
    return _group("data") | {"seed"}


def mode_flags() -> dict[str, frozenset]:
    """Mode -> the flags it reads. A flag outside its mode's set is refused (`unused_flags`)."""
    model, data, resize = _group("model"), _data_flags(), _group("resize")
    recipe, runtime = _group("recipe"), _group("runtime")
    training = model | data | _group("train_input") | resize | recipe | runtime
    inference = {"model_dir", "weights"} | model | resize
    return {
        "train": training,
        "train_and_eval": training,
        "eval": model | data | resize | {"weights", "moving_average_decay"}
        | (runtime - {"steps_per_eval", "steps_per_loop", "keep_checkpoint_max", "profile_steps"}),
        "prepare": {"dataset", "source_dir", "data_dir", "overwrite", "seed"},
        "convert": model | resize | {"ckpt_path", "output", "published", "list"},
        "profile": {"model", "models", "output_json"},
        "export": inference | data | {"export_dir", "overwrite", "hub_format", "tflite",
                                      "quantize", "max_image_pixels", "max_batch_size"},
        "predict": inference | {"saved_model", "image", "top_k", "output_json"},
        "cam": inference | {"image", "output"},
        "scaling_search": training | {"search_budget_steps", "alpha_grid", "beta_grid",
                                      "gamma_grid", "search_tolerance"},
        "scaling_study": training | {"search_budget_steps", "study_k", "study_repeats"},
    }


def unused_flags(FLAGS) -> list[str]:
    """The flags given on the command line that `--mode` would not use, each with the reason.

    A flag that is accepted must change something: silently ignoring `--image_size` on an
    export of a training run would export another model than the user asked for.
    """
    given = {name for name in GROUP_OF if FLAGS[name].present}
    mode = FLAGS.mode
    uses = mode_flags()
    model = _group("model")
    problems = [f"--{name} is not used by --mode={mode}"
                for name in sorted(given - uses[mode] - {"mode"})]
    if mode in ("export", "predict", "cam") and FLAGS.model_dir:
        problems += [f"--{name} is not used with --model_dir: the run's config.json decides "
                     "the model" for name in sorted(given & model)]
    if mode == "predict" and FLAGS.saved_model:
        problems += [f"--{name} is not used with --saved_model: the export fixed it"
                     for name in sorted(given & (model | _group("resize")))]
    if mode == "export" and FLAGS.quantize != "int8":
        problems += [f"--{name} is only used by --quantize=int8 (calibration images)"
                     for name in sorted(given & _data_flags())]
    return problems


# --- --help ---------------------------------------------------------------------------------

def help_text(FLAGS, program: str) -> str:
    """This project's flags grouped by what they configure, each group with the modes using it."""
    uses = mode_flags()
    lines = [f"usage: {program} --mode=MODE [--flag=value ...]", "", "Modes:"]
    lines += [f"  {name:<16}{text}" for name, text in MODES.items()]
    for group, title in GROUP_TITLES.items():
        names = sorted(_group(group))
        modes = [m for m in MODES if any(n in uses[m] for n in names)]
        lines += ["", f"{title} [{', '.join(modes)}]:"]
        for name in names:
            flag = FLAGS[name]
            text = flag.help
            choices = getattr(flag.parser, "enum_values", None)
            if choices:  # absl prefixes enum help with "<a|b>: "
                text = text.split(">: ", 1)[-1] + f" One of: {', '.join(choices)}."
            if flag.default is not None:
                default = flag.default
                text += f" (default: {','.join(default) if isinstance(default, list) else default})"
            own = [m for m in modes if name in uses[m]]
            if own != modes:
                text += f" [{', '.join(own)}]"
            lines.append(f"  --{name}: {text}")
    lines += ["", "Boolean flags: --name or --noname. Docs: README.md and docs/."]
    return "\n".join(lines)


# --- flags -> configs ------------------------------------------------------------------------

def _validated(build):
    """Build a config; its errors name the flag the user typed."""
    try:
        return build()
    except cfg.ConfigError as e:
        raise flags.ValidationError(flag_spelling(str(e))) from e


def flag_spelling(message: str) -> str:
    """'RecipeConfig.lr_decay_epoch=0: ...' or 'search_tolerance=-1: ...' -> '--flag=...'."""
    m = re.match(r"^(?:[A-Z]\w*Config\.)?(\w+)([=:])", message)
    if not m:
        return message
    name = FLAG_FOR_FIELD.get(m.group(1), m.group(1))
    if name not in GROUP_OF:
        return message
    return f"--{name}{m.group(2)}{message[m.end():]}"


def model_config_from_flags(FLAGS, use_phi: bool = True) -> cfg.ModelConfig:
    """--model or --phi, then explicit overrides. Unset flags leave the table's value.

    use_phi=False: --phi means something else (the scaling search's phi); --model picks the base.
    With a --weights file that records its network (`weights.read_record`), that network is the
    base instead, and the explicit overrides are announced.
    """
    record = weights_record(FLAGS)
    if record is not None:
        return _recorded_model_config(FLAGS, record, use_phi)
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
    if use_phi and FLAGS.phi is not None:
        return _validated(lambda: cfg.config_for_phi(FLAGS.phi, FLAGS.alpha, FLAGS.beta,
                                                     FLAGS.gamma, **overrides))
    return _validated(lambda: cfg.get_model_config(FLAGS.model or "efficientnet-b0",
                                                   **overrides))


def weights_record(FLAGS) -> dict | None:
    """The preprocessing record of --weights (a converted file or a run's best weights)."""
    if FLAGS.mode == "convert" or not FLAGS["weights"].value:
        return None
    return _read_record(FLAGS["weights"].value)


@functools.lru_cache(maxsize=4)
def _read_record(path: str) -> dict | None:
    """Read once per command: the model, data and resize settings all consult it."""
    from efficientnet_tf.weights import read_record

    return read_record(path)


def _recorded_model_config(FLAGS, record: dict, use_phi: bool) -> cfg.ModelConfig:
    """The recorded network; flags may change how it is fed or trained, not what it is."""
    config, path = record["model_config"], FLAGS.weights
    fixed = {"model": config.name, "width_coefficient": config.width_coefficient,
             "depth_coefficient": config.depth_coefficient}
    if use_phi:
        fixed["phi"] = None
    for flag, recorded in fixed.items():
        if FLAGS[flag].present and FLAGS[flag].value != recorded:
            raise flags.ValidationError(
                f"--{flag}={FLAGS[flag].value}: --weights={path} holds {config.name} (width "
                f"{config.width_coefficient:g}, depth {config.depth_coefficient:g}), as recorded "
                f"there; drop --{flag}.")
    overrides, notes = {}, []
    for flag, field in (("image_size", "resolution"), ("advprop_preprocessing",
                                                       "advprop_preprocessing"),
                        ("dropout_rate", "dropout_rate"), ("survival_prob", "survival_prob")):
        recorded = getattr(config, field)
        if FLAGS[flag].present and FLAGS[flag].value != recorded:
            overrides[field] = FLAGS[flag].value
            notes.append(f"--{flag}={FLAGS[flag].value} overrides the recorded {recorded}")
    config = _validated(lambda: config.replace(
        bn_group_size=parse_bn_group_size(FLAGS.bn_group_size), **overrides))
    if FLAGS.num_classes is not None and FLAGS.num_classes != config.num_classes:
        notes.append(f"--num_classes={FLAGS.num_classes} replaces the recorded "
                     f"{config.num_classes}-class classifier")
        config = _validated(lambda: config.with_classes(FLAGS.num_classes))
    from efficientnet_tf.weights import describe_preprocessing

    pre = record["preprocessing"]
    print(f"--weights={path}: {describe_preprocessing(config, pre, FLAGS.resize_method)}; "
          + ("; ".join(notes) if notes else "as recorded") + ".", flush=True)
    if FLAGS.resize_method and FLAGS.resize_method != pre["resize_method"]:
        print(f"--resize_method={FLAGS.resize_method} overrides the recorded "
              f"{pre['resize_method']}.", flush=True)
    return config


def published_model_config(FLAGS) -> cfg.ModelConfig:
    """convert --published=NAME: the network and input normalization NAME was trained with;
    only the classifier width may be changed (--num_classes), nothing that would mislabel it."""
    from efficientnet_tf.published import get_published

    checkpoint = _validated(lambda: get_published(FLAGS.published))
    config = checkpoint.model_config()
    clashing = [f"--{name}" for name in ("phi", "width_coefficient", "depth_coefficient",
                                         "image_size", "advprop_preprocessing", "dropout_rate",
                                         "survival_prob")
                if FLAGS[name].present]
    if FLAGS.model is not None and FLAGS.model != config.name:
        clashing.append(f"--model={FLAGS.model}")
    if clashing:
        raise flags.ValidationError(
            f"--published={FLAGS.published} sets the architecture and preprocessing "
            f"({config.name}, {config.resolution} px); drop {', '.join(clashing)}.")
    return config


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


def recipe_config_from_flags(FLAGS) -> cfg.RecipeConfig:
    return _validated(lambda: cfg.RecipeConfig(**_field_values(FLAGS, cfg.RecipeConfig)))


def runtime_config_from_flags(FLAGS) -> cfg.RuntimeConfig:
    return _validated(lambda: cfg.RuntimeConfig(**_field_values(FLAGS, cfg.RuntimeConfig)))


def data_config_from_flags(FLAGS) -> DataConfig:
    values = _field_values(FLAGS, DataConfig)
    dataset = FLAGS.dataset or ("imagenet" if FLAGS.data_dir else "synthetic")
    recorded = (weights_record(FLAGS) or {}).get("preprocessing", {})
    values.update(
        dataset=dataset,
        num_classes=FLAGS.num_classes if dataset in ("synthetic", "folder") else None,
        resize_method=FLAGS.resize_method or recorded.get("resize_method")
        or cfg.reference_resize_method(FLAGS.model or "efficientnet-b0"),
        seed=FLAGS.seed or 0)
    if recorded and not FLAGS["half_pixel_centers"].present:
        values["half_pixel_centers"] = recorded["half_pixel_centers"]
    return _validated(lambda: DataConfig(**values))


def experiment_config_from_flags(FLAGS, use_phi: bool = True):
    """Flags -> one frozen config. num_classes defaults to the dataset's."""
    from efficientnet_tf import data as data_lib
    from efficientnet_tf.experiment import ExperimentConfig

    data = data_config_from_flags(FLAGS)
    model = model_config_from_flags(FLAGS, use_phi)
    if FLAGS.num_classes is None:
        classes = data_lib.get_dataset_info(data).num_classes
        if model.num_classes - model.label_offset != classes:
            model = model.with_classes(classes)  # a background class stays with its head
    return ExperimentConfig(model=model, data=data, recipe=recipe_config_from_flags(FLAGS),
                            runtime=runtime_config_from_flags(FLAGS))


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
