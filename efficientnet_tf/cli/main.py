"""`efficientnet-tf --mode=MODE [flags]` (from a checkout: `python main.py ...`); see README.md.

Errors the user can fix (`ConfigError`, bad flags, missing or existing files, unreadable data)
print as one `error:` line and exit 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from efficientnet_tf.cli import flags as cli_flags
from efficientnet_tf.config import ConfigError

FLAGS = flags.FLAGS


def _strategy():
    from efficientnet_tf import distribute

    return distribute.strategy_for(cli_flags.runtime_config_from_flags(FLAGS))


def _trainer(training: bool = True):
    from efficientnet_tf.training.trainer import Trainer

    cli_flags.require(FLAGS, "model_dir")
    strategy = _strategy()
    experiment = cli_flags.experiment_config_from_flags(FLAGS)
    print(f"{experiment.model.name} at {experiment.model.resolution}px on "
          f"{experiment.data.dataset} ({strategy.num_replicas_in_sync} replica(s), "
          f"{type(strategy).__name__})", flush=True)
    return Trainer(experiment, strategy, training=training)


def run_train(evaluate=False):
    from efficientnet_tf.run_dir import BEST_WEIGHTS_FILE

    trainer = _trainer()
    result = trainer.train(evaluate_every_checkpoint=evaluate)
    print(f"Trained to step {result['step']}. Checkpoints, config.json and TensorBoard logs in "
          f"{trainer.model_dir}")
    if evaluate and "top_1" in result:
        _print_eval(result, trainer)
        print(f"Best EMA weights: {os.path.join(trainer.model_dir, BEST_WEIGHTS_FILE)}")


def run_train_and_eval():
    run_train(evaluate=True)


def run_eval():
    from efficientnet_tf.files import write_json_atomic
    from efficientnet_tf.run_dir import EVAL_RESULTS_FILE

    trainer = _trainer(training=False)
    source = trainer.restore_for_eval()
    print(f"Evaluating {source}", flush=True)
    result = trainer.evaluate()
    write_json_atomic(os.path.join(trainer.model_dir, EVAL_RESULTS_FILE), result)
    _print_eval(result, trainer)


def _print_eval(result, trainer):
    from efficientnet_tf.run_dir import EVAL_RESULTS_FILE

    chance = 1.0 / trainer.num_classes
    print(f"Eval at step {result['step']}: top_1={result['top_1']:.4f} "
          f"top_5={result['top_5']:.4f} over {result['num_examples']} examples "
          f"(chance {chance:.4f}). Results: "
          f"{os.path.join(trainer.model_dir, EVAL_RESULTS_FILE)}")


def run_prepare():
    from efficientnet_tf.data import prepare

    cli_flags.require(FLAGS, "dataset", "source_dir", "data_dir")
    summary = prepare(FLAGS.dataset, FLAGS.source_dir, FLAGS.data_dir, overwrite=FLAGS.overwrite,
                      seed=FLAGS.seed or 0)
    print(json.dumps(summary, indent=2))
    print(f"Wrote {FLAGS.data_dir}: train with --dataset={FLAGS.dataset} "
          f"--data_dir={FLAGS.data_dir}")


def _inference_model():
    """(model, class_names) from --model_dir (EMA weights) or --weights + model flags."""
    from efficientnet_tf import predict, weights
    from efficientnet_tf.model import build_model
    from efficientnet_tf.run_dir import load_trained_model

    if bool(FLAGS.model_dir) == bool(FLAGS.weights):
        raise flags.ValidationError(f"--mode={FLAGS.mode} needs exactly one of --model_dir (a "
                                    "training run) or --weights (a weights file).")
    if FLAGS.model_dir:
        return load_trained_model(FLAGS.model_dir), predict.class_names_for_run(FLAGS.model_dir)
    config = cli_flags.model_config_from_flags(FLAGS)
    if FLAGS.num_classes is None:
        classes = weights.inspect_source(FLAGS.weights).classes
        if classes is None:
            raise ConfigError(f"--weights={FLAGS.weights} has no classifier; export and "
                              "predict need one.")
        config = config.with_classes(classes)
    return build_model(config=config, weights=FLAGS.weights), None


def _eval_resize() -> dict:
    """The eval resize of export/predict/cam: explicit flags, else the training run's (with
    --model_dir) or the one --weights records, else the model's reference kernel
    (resize_method None)."""
    from efficientnet_tf.run_dir import read_experiment

    if FLAGS.model_dir:
        recorded = read_experiment(FLAGS.model_dir).data.to_dict()
    else:
        recorded = (cli_flags.weights_record(FLAGS) or {}).get("preprocessing")
    method = FLAGS.resize_method or (recorded["resize_method"] if recorded else None)
    half = (FLAGS.half_pixel_centers if recorded is None or FLAGS["half_pixel_centers"].present
            else recorded["half_pixel_centers"])
    return {"resize_method": method, "half_pixel_centers": half}


def run_export():
    from efficientnet_tf import export
    from efficientnet_tf.model import model_image_size

    cli_flags.require(FLAGS, "export_dir")
    if FLAGS.hub_format and FLAGS.tflite:
        raise flags.ValidationError("Pass --hub_format or --tflite, not both.")
    if FLAGS.quantize and not FLAGS.tflite:
        raise flags.ValidationError("--quantize applies to --tflite exports only.")
    model, class_names = _inference_model()
    if FLAGS.hub_format:
        paths = export.export_hub(model, FLAGS.export_dir, overwrite=FLAGS.overwrite)
        print("Wrote " + ", ".join(paths.values()))
    elif FLAGS.tflite:
        calibration = None
        if FLAGS.quantize == "int8":
            calibration = export.calibration_images(cli_flags.data_config_from_flags(FLAGS),
                                                    model_image_size(model))
        path = export.export_tflite(model, os.path.join(FLAGS.export_dir, "model.tflite"),
                                    quantize=FLAGS.quantize, representative_images=calibration,
                                    overwrite=FLAGS.overwrite)
        print(f"Wrote {path}")
    else:
        path = export.export_saved_model(model, FLAGS.export_dir, class_names=class_names,
                                         max_image_pixels=FLAGS.max_image_pixels,
                                         max_batch_size=FLAGS.max_batch_size,
                                         overwrite=FLAGS.overwrite, **_eval_resize())
        print(f"Wrote {path} (signatures serving_default on image_bytes, serving_images on "
              "float32 [0, 255])")


def run_predict():
    from efficientnet_tf import predict
    from efficientnet_tf.files import write_json_atomic

    cli_flags.require(FLAGS, "image")
    if FLAGS.saved_model:
        if FLAGS.model_dir or FLAGS.weights:
            raise flags.ValidationError("Pass one of --saved_model, --model_dir or --weights.")
        result = predict.predict_images(FLAGS.image, saved_model_dir=FLAGS.saved_model,
                                        top_k=FLAGS.top_k)
    else:
        model, class_names = _inference_model()
        result = predict.predict_images(FLAGS.image, model=model, top_k=FLAGS.top_k,
                                        class_names=class_names, **_eval_resize())
    print(predict.format_predictions(result))
    if FLAGS.output_json:
        write_json_atomic(FLAGS.output_json, result)
        print(f"Wrote {FLAGS.output_json}")


def run_convert():
    from efficientnet_tf import published, weights

    if FLAGS.list:
        print(published.format_table())
        return
    cli_flags.require(FLAGS, "ckpt_path", "output")
    config = (cli_flags.published_model_config(FLAGS) if FLAGS.published
              else cli_flags.model_config_from_flags(FLAGS))
    path = weights.convert(None, FLAGS.ckpt_path, FLAGS.output, config=config,
                           num_classes=FLAGS.num_classes, resize_method=FLAGS.resize_method,
                           published=FLAGS.published)
    record = weights.read_record(path)
    print(f"Wrote {path}: "
          + weights.describe_preprocessing(record["model_config"], record["preprocessing"])
          + ". eval/export/predict with --weights use this preprocessing.")


def run_profile():
    from efficientnet_tf import profile
    from efficientnet_tf.files import write_json_atomic

    rows = profile.profile_models(cli_flags.profile_model_names(FLAGS))
    print(profile.format_profile_table(rows))
    if FLAGS.output_json:
        write_json_atomic(FLAGS.output_json, rows)
        print(f"Wrote {FLAGS.output_json}")


def _scaling_experiment():
    """(base experiment, strategy) for the scaling tools: --phi is theirs, not the model's."""
    cli_flags.require(FLAGS, "model_dir")
    strategy = _strategy()
    return cli_flags.experiment_config_from_flags(FLAGS, use_phi=False), strategy


def run_scaling_search():
    from efficientnet_tf import scaling

    experiment, strategy = _scaling_experiment()
    grids = {name: scaling.parse_grid(getattr(FLAGS, name), name)
             for name in ("alpha_grid", "beta_grid", "gamma_grid")}
    scaling.scaling_search(experiment, strategy, FLAGS.model_dir,
                           phi=1.0 if FLAGS.phi is None else FLAGS.phi,
                           tolerance=FLAGS.search_tolerance,
                           budget_steps=FLAGS.search_budget_steps, **grids)


def run_scaling_study():
    from efficientnet_tf import scaling

    if FLAGS.phi is not None:
        raise flags.ValidationError("--mode=scaling_study sets its FLOPs targets with --study_k "
                                    "(compound phi=k); --phi does not apply.")
    ks = cli_flags.study_ks(FLAGS)
    experiment, strategy = _scaling_experiment()
    scaling.scaling_study(experiment, strategy, FLAGS.model_dir, alpha=FLAGS.alpha,
                          beta=FLAGS.beta, gamma=FLAGS.gamma, ks=ks, repeats=FLAGS.study_repeats,
                          budget_steps=FLAGS.search_budget_steps)


def run_cam():
    from efficientnet_tf import cam, predict
    from efficientnet_tf.model import classifier_layer, label_offset, model_image_size

    cli_flags.require(FLAGS, "image", "output")
    if len(FLAGS.image) != 1:
        raise flags.ValidationError(f"--mode=cam takes one --image, got {len(FLAGS.image)}.")
    model, class_names = _inference_model()
    result = cam.cam_for_image_file(model, FLAGS.image[0], FLAGS.output, **_eval_resize())
    labels = predict.class_labels(classifier_layer(model).units, class_names,
                                  label_offset(model))
    size = model_image_size(model)
    print(f"{result['image']}: class {result['class_index']} "
          f"({labels[result['class_index']]['label']}), probability "
          f"{result['probability']:.4f}; activation peak at (row, col) {tuple(result['peak'])} "
          f"of the {size}x{size} eval image. Wrote {result['output']}")


RUNNERS = {mode: globals()[f"run_{mode}"] for mode in cli_flags.MODES}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        problems = cli_flags.unused_flags(FLAGS)
        if problems:
            raise flags.ValidationError("; ".join(problems) + ".")
        RUNNERS[FLAGS.mode]()
    except Exception as e:  # noqa: BLE001 - user errors become one line, bugs keep tracebacks
        if not is_user_error(e):
            raise
        logging.debug("failure", exc_info=True)
        print(f"error: {cli_flags.flag_spelling(str(e))}", file=sys.stderr)
        sys.exit(2)


def is_user_error(e: BaseException) -> bool:
    """Settings and files the user can fix, and input data TensorFlow cannot read."""
    if isinstance(e, (ConfigError, flags.ValidationError, FileNotFoundError, FileExistsError,
                      PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    names = {cls.__name__ for cls in type(e).__mro__
             if cls.__module__.startswith("tensorflow")}
    return bool(names & {"DataLossError", "NotFoundError", "PermissionDeniedError"})


def run(argv: list[str] | None = None):
    """Console-script entry point."""
    argv = sys.argv if argv is None else argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli_flags.define_flags()
    if any(a in ("-h", "--help", "-help", "--helpshort") for a in argv[1:]):
        print(cli_flags.help_text(FLAGS, _program(argv[0])))
        sys.exit(0)
    from efficientnet_tf.tf_quiet import import_tensorflow

    import_tensorflow()  # without the CUDA-absence lines on machines without a GPU
    app.run(main, argv=argv)


def _program(argv0: str) -> str:
    name = os.path.basename(argv0)
    return f"python {name}" if name.endswith(".py") else name
