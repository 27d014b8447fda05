"""Training throughput: main.py's train step (full recipe) vs keras.applications, same run.

    python bench/train_speed.py [--batch 32] [--image_size 224] [--steps 8] [--rounds 3]

Measures images/s of three train steps on the same in-memory batch (input pipeline excluded):
  keras_apps : keras.applications.EfficientNetB0(weights=None) compiled with RMSpropTF, fit()
  ours_fit   : build_model(0) compiled the same way (architecture alone, no recipe)
  ours_recipe: the Trainer's compiled loop as main.py runs it (EMA over weights and BN stats,
               L2, label smoothing, LR schedule; one replica, so sync BN off)
Rounds are interleaved and the median taken, since shared machines are noisy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# run from a checkout
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from efficientnet_tf import config as cfg  # noqa: E402
from efficientnet_tf.data import DataConfig  # noqa: E402
from efficientnet_tf.experiment import ExperimentConfig  # noqa: E402
from efficientnet_tf.model import build_model  # noqa: E402
from efficientnet_tf.training.optimizer import RMSpropTF  # noqa: E402
from efficientnet_tf.training.trainer import Trainer  # noqa: E402


def batch(batch_size, image_size, classes):
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.randint(0, classes, batch_size).astype("int32")
    return x, y


def fit_runner(model, x, y):
    model.compile(optimizer=RMSpropTF(0.001),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()

    def run(steps):
        model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return run


def recipe_runner(x, y, image_size, model_dir):
    experiment = ExperimentConfig(
        model=cfg.get_model_config("efficientnet-b0", resolution=image_size, num_classes=1000),
        data=DataConfig(dataset="synthetic", num_classes=1000, synthetic_train_size=len(x)),
        recipe=cfg.RecipeConfig(train_batch_size=len(x), train_steps=10**6),
        runtime=cfg.RuntimeConfig(model_dir=model_dir, mixed_precision="float32"))
    trainer = Trainer(experiment, tf.distribute.get_strategy())
    loop = trainer._build_train_loop()
    iterator = iter(tf.data.Dataset.from_tensors((x, y, 0)).repeat())  # 0 skipped records

    def run(steps):
        loop(iterator, tf.constant(steps, tf.int32)).numpy()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    x, y = batch(args.batch, args.image_size, 1000)
    shape = (args.image_size, args.image_size, 3)
    with tempfile.TemporaryDirectory() as model_dir:
        runners = {
            "keras_apps": fit_runner(keras.applications.EfficientNetB0(
                weights=None, input_shape=shape, classifier_activation=None), x, y),
            "ours_fit": fit_runner(build_model(0, input_shape=shape,
                                               classifier_activation=None), x, y),
            "ours_recipe": recipe_runner(x, y, args.image_size, model_dir),
        }
        for run in runners.values():   # trace and warm up
            run(2)
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run(args.steps)
                times[name].append(time.perf_counter() - start)
    ips = {name: args.batch * args.steps / statistics.median(t) for name, t in times.items()}
    print(f"B0 train step, batch {args.batch} at {args.image_size}px, {args.steps} steps x "
          f"{args.rounds} rounds (median), {os.cpu_count()} CPU cores")
    for name, value in ips.items():
        print(f"  {name:12s} {value:8.2f} images/s")
    print(f"  ours_fit    / keras_apps : {ips['ours_fit'] / ips['keras_apps']:.3f}x")
    print(f"  ours_recipe / keras_apps : {ips['ours_recipe'] / ips['keras_apps']:.3f}x "
          "(target >= 0.90x: the recipe may cost at most 10%)")
    print(f"  ours_recipe / ours_fit   : {ips['ours_recipe'] / ips['ours_fit']:.3f}x")


if __name__ == "__main__":
    main()
