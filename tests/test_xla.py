"""XLA readiness: `--jit_compile` resolution, and the replica train and eval steps lowering to XLA
with static shapes (what a TPU compiles), on CPU.

Lowering (`experimental_get_compiler_ir`, TF's tf2xla bridge) is where a TPU run fails: an op
without an XLA kernel (`tf.py_function`, string ops) is an error here, before any device is
needed, and lowering skips the slow machine-code step.
"""
import re

import pytest
import tensorflow as tf

from efficientnet_tf import config as cfg
from efficientnet_tf import data as data_lib
from efficientnet_tf.cli import flags as cli_flags
from efficientnet_tf.config import ConfigError
from efficientnet_tf.distribute import resolve_jit_compile
from efficientnet_tf.experiment import ExperimentConfig
from efficientnet_tf.training.trainer import Trainer

from conftest import TINY, run_python

# Depth 0.4 repeats some stages: their blocks have a residual branch, hence stochastic depth.
XLA_MODEL = {**TINY, "depth_coefficient": 0.4, "num_classes": 10}


@pytest.mark.parametrize("setting, kind, expected", [
    ("auto", "gpu", True), ("auto", "cpu", False), ("auto", "tpu", True),
    ("on", "cpu", True), ("on", "gpu", True), ("on", "tpu", True),
    ("off", "gpu", False), ("off", "cpu", False),
])
def test_resolve_jit_compile(setting, kind, expected):
    assert resolve_jit_compile(setting, kind) is expected


def test_resolve_jit_compile_errors():
    with pytest.raises(ConfigError, match="TPU programs are always compiled"):
        resolve_jit_compile("off", "tpu")
    with pytest.raises(ConfigError, match="jit_compile='yes'"):
        resolve_jit_compile("yes", "gpu")
    with pytest.raises(ConfigError, match="jit_compile='yes'"):
        cfg.RuntimeConfig(jit_compile="yes")


def test_runtime_flags_per_mode():
    if not cli_flags.GROUP_OF:
        cli_flags.define_flags()
    uses = cli_flags.mode_flags()
    assert {"jit_compile", "profile_steps"} <= uses["train"]
    assert "jit_compile" in uses["eval"]
    assert "profile_steps" not in uses["eval"]  # eval runs no training steps


def test_profile_steps_validation():
    assert cfg.RuntimeConfig().profile_range() is None
    assert cfg.RuntimeConfig(profile_steps="3,3").profile_range() == (3, 3)
    assert cfg.RuntimeConfig(profile_steps=" 2, 5").profile_range() == (2, 5)
    for bad in ("0,3", "5,2", "3", "1,2,3", "a,b", "-1,2", ""):
        with pytest.raises(ConfigError, match="profile_steps"):
            cfg.RuntimeConfig(profile_steps=bad)


def experiment(model_dir, precision, **model):
    """EMA, label smoothing (defaults), stochastic depth, mixup's one-hot labels."""
    return ExperimentConfig(
        model=cfg.get_model_config("efficientnet-b0", **{**XLA_MODEL, **model}),
        data=data_lib.DataConfig(dataset="synthetic", num_classes=10, synthetic_train_size=64,
                                 mixup_alpha=0.2),
        recipe=cfg.RecipeConfig(train_batch_size=8, train_steps=10),
        runtime=cfg.RuntimeConfig(model_dir=str(model_dir), mixed_precision=precision))


def hlo(fn, *specs) -> str:
    """`fn` lowered to XLA HLO for static input specs (raises where XLA cannot compile it)."""
    return tf.function(fn, jit_compile=True).experimental_get_compiler_ir(*specs)(stage="hlo")


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_train_and_eval_steps_compile_with_xla(tmp_path, precision):
    exp = experiment(tmp_path, precision)
    trainer = Trainer(exp, tf.distribute.get_strategy())
    assert any(type(layer).__name__ == "StochasticDepth"
               for layer in trainer.model._flatten_layers()) and trainer.ema is not None
    train = data_lib.build_dataset(exp.data, "train", 8, image_size=32, is_training=True,
                                   count_skipped=True).element_spec
    assert train[1].shape == (8, 10)  # mixup's one-hot labels
    assert all(spec.shape.is_fully_defined() for spec in train)
    # The whole replica step: forward, backward, optimizer, EMA.
    train_hlo = hlo(lambda *batch: trainer.train_step(*batch), *train)
    half = {"float32": set(), "mixed_bfloat16": {"bf16"}, "mixed_float16": {"f16"}}[precision]
    assert set(re.findall(r"\b(b?f16)\[", train_hlo)) == half
    images, labels, weights = data_lib.build_dataset(exp.data, "eval", 8, image_size=32,
                                                     is_training=False).element_spec
    assert all(spec.shape.is_fully_defined() for spec in (images, labels, weights))
    hlo(trainer.eval_step, images, labels, weights)


GROUPED_BN = """
import tempfile
import tensorflow as tf
from tensorflow.python.distribute import collective_util
from efficientnet_tf import data as data_lib
from efficientnet_tf.distribute import split_cpu
from efficientnet_tf.training.trainer import Trainer
from test_xla import experiment, hlo

split_cpu(2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
# On CPUs, MirroredStrategy sums across replicas with merge_call and ring collectives, which run
# outside XLA. Lower as it does on GPUs under XLA (and as TPUStrategy always does): collectives
# inside the compiled program.
strategy.extended._use_merge_call = lambda: False
for launcher in strategy.extended._collective_ops._launchers:
    launcher._options = collective_util.Options(
        implementation=collective_util.CommunicationImplementation.NCCL)
for precision in ("float32", "mixed_bfloat16"):
    exp = experiment(tempfile.mkdtemp(), precision, depth_coefficient=0.2, bn_group_size=0)
    trainer = Trainer(exp, strategy)
    train = data_lib.build_dataset(exp.data, "train", 4, image_size=32, is_training=True,
                                   count_skipped=True).element_spec
    evals = data_lib.build_dataset(exp.data, "eval", 4, image_size=32,
                                   is_training=False).element_spec
    # What the trainer compiles per replica under MirroredStrategy: the optimizer and EMA
    # updates stay outside (merge_call); the single-replica test covers them.
    sums = strategy.run(lambda: hlo(trainer.forward_backward, *train[:2]).count(" all-reduce("))
    # Each BN layer's statistics summed over the replicas, forward and backward.
    bns = [layer for layer in trainer.model._flatten_layers()
           if type(layer).__name__ == "GroupBatchNormalization"]
    assert sums == 2 * len(bns), (sums, len(bns))
    strategy.run(lambda: len(hlo(trainer.eval_step, *evals)))
    print(precision, "compiled with", sums, "all-reduces")
"""


@pytest.mark.slow
def test_grouped_batch_norm_steps_compile_with_xla_on_two_replicas():
    out = run_python("import sys; sys.path.insert(0, 'tests')\n" + GROUPED_BN).stdout
    assert "float32 compiled" in out and "mixed_bfloat16 compiled" in out
