"""The command line's contract: --help, one-line user errors vs tracebacks for bugs, flags
derived from the config dataclasses, the installed console script."""
import dataclasses
import os
import subprocess

import pytest

from conftest import REPO_ROOT, run_main


def test_help_lists_this_projects_flags_by_group_and_exits_0():
    proc = run_main("--help")
    out = proc.stdout
    assert out.startswith("usage: python main.py --mode=MODE")
    for text in ("Modes:", "  train_and_eval", "Training recipe", "--lr_decay_epoch:",
                 "--num_gpus:", "--export_dir:", "One of: exponential, cosine, poly, constant",
                 "(default: 0.016)"):
        assert text in out, text
    assert "--xla_" not in out and "--tpu_worker" not in out   # only this project's flags
    assert proc.stderr == ""


def test_flags_are_derived_from_the_config_fields():
    from absl import flags

    from efficientnet_tf import config as cfg
    from efficientnet_tf.cli import flags as cli_flags
    from efficientnet_tf.data.config import DataConfig

    if not cli_flags.GROUP_OF:
        cli_flags.define_flags()
    FLAGS = flags.FLAGS
    for config_cls in (cfg.RecipeConfig, cfg.RuntimeConfig):
        for field in dataclasses.fields(config_cls):
            # absl prefixes an enum's help with "<a|b|...>: "
            assert FLAGS[field.name].help.split(">: ", 1)[-1] == field.metadata["help"], field.name
            if field.name not in ("dataset", "resize_method"):
                assert FLAGS[field.name].default == field.default, field.name
    assert list(FLAGS["optimizer"].parser.enum_values) == list(cfg.OPTIMIZERS)
    flagged = {f.name for f in dataclasses.fields(DataConfig) if "help" in f.metadata}
    assert flagged <= set(cli_flags.GROUP_OF)
    assert cli_flags.flag_spelling("RecipeConfig.lr_decay_epoch=0: must be > 0") == \
        "--lr_decay_epoch=0: must be > 0"
    assert cli_flags.flag_spelling("ModelConfig.resolution=8: must be an integer >= 32") == \
        "--image_size=8: must be an integer >= 32"


def test_config_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path):
    proc = run_main("--mode=train", "--lr_decay_epoch=0", f"--model_dir={tmp_path}",
                    check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: --lr_decay_epoch=0.0: must be > 0"
    assert "Traceback" not in proc.stderr

    from efficientnet_tf.cli.main import is_user_error
    from efficientnet_tf.config import ConfigError

    assert is_user_error(ConfigError("x")) and is_user_error(FileNotFoundError("x"))
    assert not is_user_error(ValueError("a bug")) and not is_user_error(RuntimeError("a bug"))
    assert not is_user_error(KeyError("a bug"))


def test_finished_train_and_eval_rerun_prints_its_eval(tmp_path):
    flags = ("--dataset=synthetic", "--model=efficientnet-b0", "--width_coefficient=0.25",
             "--depth_coefficient=0.2", "--image_size=32", "--synthetic_eval_size=8",
             "--eval_batch_size=8", "--synthetic_train_size=16", "--train_batch_size=8",
             "--train_steps=1", "--steps_per_eval=1", "--steps_per_loop=1",
             f"--model_dir={tmp_path}")
    first = run_main("--mode=train_and_eval", *flags)
    # Another dropout is a training setting, not another network: the run is the same.
    again = run_main("--mode=train_and_eval", *flags, "--dropout_rate=0.1")
    line = next(x for x in first.stdout.splitlines() if x.startswith("Eval at step 1"))
    assert line in again.stdout.splitlines()
    # A run trained without eval gets evaluated when rerun with train_and_eval.
    os.remove(tmp_path / "eval_results.json")
    third = run_main("--mode=train_and_eval", *flags)
    assert line in third.stdout.splitlines()


def test_setup_installs_a_console_script_and_no_top_level_modules():
    text = (REPO_ROOT / "setup.py").read_text()
    assert "efficientnet-tf=efficientnet_tf.cli.main:run" in text
    assert "py_modules" not in text
    assert not (REPO_ROOT / "flags.py").exists()


@pytest.mark.skipif(not any(os.access(os.path.join(p, "efficientnet-tf"), os.X_OK)
                            for p in os.environ.get("PATH", "").split(os.pathsep)),
                    reason="efficientnet-tf is not installed (pip install -e .)")
def test_console_script_runs_outside_the_checkout(tmp_path):
    proc = subprocess.run(["efficientnet-tf", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: efficientnet-tf")


def test_config_json_before_the_recipe_runtime_split_still_reads():
    from efficientnet_tf.config import ConfigError, RecipeConfig, RuntimeConfig
    from efficientnet_tf.experiment import ExperimentConfig

    legacy = {"model": {"name": "efficientnet-b0"}, "data": {"dataset": "synthetic"},
              "train": {"model_dir": "/runs/b0", "train_batch_size": 64, "eval_batch_size": 32,
                        "moving_average_decay": 0.0, "mixed_precision": "float32"}}
    experiment = ExperimentConfig.from_dict(legacy)
    assert experiment.recipe == RecipeConfig(train_batch_size=64, moving_average_decay=0.0)
    assert experiment.runtime == RuntimeConfig(model_dir="/runs/b0", eval_batch_size=32,
                                               mixed_precision="float32")
    assert ExperimentConfig.from_dict(experiment.to_dict()) == experiment
    with pytest.raises(ConfigError, match="Unknown train keys in config.json: \\['lr'\\]"):
        ExperimentConfig.from_dict({**legacy, "train": {"lr": 1.0}})
