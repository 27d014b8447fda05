"""The training engine: a custom tf.distribute loop with the paper's recipe (docs/fidelity.md).

A custom loop rather than `model.fit`: the EMA must cover BN statistics and be swapped in for
eval, resuming must land on the exact step, and Keras 3's fit has open problems under
MultiWorkerMirroredStrategy and with `steps_per_execution > 1` under MirroredStrategy.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import keras
import tensorflow as tf
from absl import logging

from efficientnet_tf import data as data_lib
from efficientnet_tf.config import ExperimentConfig, ModelConfig
from efficientnet_tf.files import write_json_atomic
from efficientnet_tf.distribute import resolve_mixed_precision, strategy_device_kind
from efficientnet_tf.layers import bn_group_size
from efficientnet_tf.model import build_model
from efficientnet_tf.weights import save_weights_atomic
from efficientnet_tf.training.ema import ExponentialMovingAverage
from efficientnet_tf.training.optimizer import build_optimizer
from efficientnet_tf.training.run_dir import RunLock, newest_readable_checkpoint
from efficientnet_tf.training.regularization import classification_loss, l2_loss
from efficientnet_tf.training.schedules import build_lr_schedule

CONFIG_FILE = "config.json"
EVAL_RESULTS_FILE = "eval_results.json"
BEST_WEIGHTS_FILE = "best.weights.h5"
BEST_RESULTS_FILE = "best_eval_results.json"


class Trainer:
    """Owns the model, optimizer, EMA and checkpoints of one run under one strategy."""

    def __init__(self, experiment: ExperimentConfig, strategy: tf.distribute.Strategy, *,
                 training: bool = True):
        """training=False: for evaluation only; the train split and batch size are not used
        (a directory holding only the validation split is enough)."""
        self.experiment = experiment
        self.strategy = strategy
        train = experiment.train
        if train.seed is not None:
            keras.utils.set_random_seed(train.seed)  # initialization, dropout, drop-path
        self.info = data_lib.get_dataset_info(experiment.data)
        self.num_classes = experiment.model.num_classes
        if self.num_classes != self.info.num_classes:
            raise ValueError(
                f"--num_classes={self.num_classes} but dataset {experiment.data.dataset!r} has "
                f"{self.info.num_classes} classes")
        self.image_size = experiment.model.resolution
        self.global_batch = train.train_batch_size
        self.total_steps = None
        if training:
            data_lib.steps_per_epoch(self.info, self.global_batch)  # at least one full batch
            # As the reference: a fractional epoch (train images / batch) for the LR schedule.
            self.steps_per_epoch = self.info.train_size / self.global_batch
            self.total_steps = total_train_steps(self.info.train_size, self.global_batch,
                                                 train.train_steps, train.train_epochs)
        self.model_dir = train.model_dir
        if not self.model_dir:
            raise ValueError("--model_dir is required: checkpoints, config.json and "
                             "TensorBoard logs go there.")

        self.precision = resolve_mixed_precision(train.mixed_precision,
                                                 strategy_device_kind(strategy))
        keras.mixed_precision.set_global_policy(self.precision)
        # Fails here, not at the first step, when the groups do not divide the replicas.
        bn_group_size(strategy.num_replicas_in_sync, experiment.model.bn_group_size)
        with strategy.scope():
            self.model = build_model(config=experiment.model, classifier_activation=None)
            self._apply_freezing()
            if training:
                self.lr_schedule = build_lr_schedule(
                    train.lr_schedule, train.base_learning_rate, self.global_batch,
                    self.steps_per_epoch, self.total_steps or 1,
                    warmup_epochs=train.lr_warmup_epochs, decay_epochs=train.lr_decay_epoch,
                    decay_factor=train.lr_decay_factor,
                    continuous_warmup=train.lr_continuous_warmup)
            else:  # eval restores weights and step only; still a schedule (same checkpoint shape)
                self.lr_schedule = build_lr_schedule("constant", train.base_learning_rate,
                                                     self.global_batch, None, 1, warmup_epochs=0)
            self.optimizer = build_optimizer(
                self.lr_schedule, optimizer=train.optimizer, mixed_precision=self.precision,
                lars_weight_decay=train.lars_weight_decay, lars_epsilon=train.lars_epsilon)
            self.optimizer.build(self.model.trainable_variables)
            self.ema = (ExponentialMovingAverage(self.model, train.moving_average_decay)
                        if train.moving_average_decay > 0 else None)
        objects = dict(model=self.model, optimizer=self.optimizer)
        if self.ema is not None:
            objects["ema"] = self.ema
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.is_chief = is_chief(strategy)
        self._train_loop = None
        self._eval_step = None
        self.skipped_examples = 0

    # --- setup -------------------------------------------------------------------------------

    def _apply_freezing(self):
        train = self.experiment.train
        if train.freeze_backbone:
            for layer in self.model.layers:
                if layer.name != "predictions":
                    layer.trainable = False
        if train.bn_mode == "frozen":
            for layer in self.model._flatten_layers(include_self=False, recursive=True):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore_or_initialize(self) -> int:
        """Resume from the newest readable checkpoint, else start from --weights (if any).

        Unreadable newer checkpoints are set aside with a warning (run_dir); with checkpoints
        present but none readable this raises rather than start over them. Returns the step.
        """
        latest = newest_readable_checkpoint(self.model_dir, set_aside=self.is_chief)
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            logging.info("Resumed from %s at step %d", latest, self.step)
        elif self.experiment.train.weights:
            from efficientnet_tf import weights as weights_lib

            weights_lib.load_weights(self.model, self.experiment.train.weights)
            if self.ema is not None:
                self.ema.reset()
            logging.info("Initialized from %s", self.experiment.train.weights)
        return self.step

    def restore_for_eval(self) -> str:
        """--weights when given (used as is), else the latest checkpoint's model and EMA."""
        if self.experiment.train.weights:
            from efficientnet_tf import weights as weights_lib

            weights_lib.load_weights(self.model, self.experiment.train.weights)
            self.ema = None
            return self.experiment.train.weights
        latest = newest_readable_checkpoint(self.model_dir, set_aside=False)
        if not latest:
            raise FileNotFoundError(f"No checkpoint in --model_dir={self.model_dir} and no "
                                    "--weights given: nothing to evaluate.")
        saved = self._saved_config()
        if saved is not None:
            self._require_same_model(saved, "evaluated")
            decay = saved["train"]["moving_average_decay"]
            if (decay > 0) != (self.ema is not None):
                raise ValueError(
                    f"--model_dir={self.model_dir} was trained with --moving_average_decay="
                    f"{decay}; evaluate it with the same setting, or the wrong weights (raw vs "
                    "EMA) would be scored.")
        self.checkpoint.restore(latest).expect_partial()
        return latest

    def _saved_config(self) -> dict | None:
        path = os.path.join(self.model_dir, CONFIG_FILE)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)

    def _require_same_model(self, saved: dict, action: str):
        if ModelConfig.from_dict(saved["model"]).architecture() != self.experiment.model.architecture():
            raise ValueError(
                f"{os.path.join(self.model_dir, CONFIG_FILE)} describes a different model than "
                f"this run's flags; checkpoints in --model_dir={self.model_dir} cannot be "
                f"{action} with it. Use a new --model_dir or the same model flags.")

    def check_resumable(self):
        """A different model than the checkpoints' in model_dir is refused, not mixed."""
        saved = self._saved_config()
        if saved is not None and tf.train.latest_checkpoint(self.model_dir):
            self._require_same_model(saved, "resumed")

    def write_config(self):
        """config.json next to the checkpoints (after a successful restore: a failed resume
        leaves the directory as it was)."""
        if self.is_chief:
            write_json_atomic(os.path.join(self.model_dir, CONFIG_FILE), self.experiment.to_dict())

    # --- steps -------------------------------------------------------------------------------

    def _build_train_loop(self):
        model, optimizer, ema = self.model, self.optimizer, self.ema
        strategy, num_classes = self.strategy, self.num_classes
        train = self.experiment.train
        global_batch = self.global_batch
        replicas = strategy.num_replicas_in_sync

        def step_fn(images, labels, skipped):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_example = classification_loss(labels, logits, num_classes,
                                                   train.label_smoothing)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                loss += l2_loss(model, train.weight_decay) / replicas
                scaled = optimizer.scale_loss(loss)
            variables = model.trainable_variables
            grads = tape.gradient(scaled, variables)
            optimizer.apply_gradients(zip(grads, variables))
            if ema is not None:
                ema.update(optimizer.iterations)
            target = labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1)
            correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                       tf.cast(target, tf.int32)), tf.float32)
            return (loss, tf.reduce_sum(correct), tf.cast(tf.shape(correct)[0], tf.float32),
                    tf.cast(skipped, tf.float32))

        @tf.function
        def train_loop(iterator, num_steps):
            """Sums of (loss, correct, examples, skipped corrupt records) over the steps."""
            sums = tf.zeros([4])
            for _ in tf.range(num_steps):
                images, labels, skipped = next(iterator)
                out = strategy.run(step_fn, args=(images, labels, skipped))
                sums += tf.stack([strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                                  for v in out])
            return sums

        return train_loop

    def _build_eval_step(self):
        model, strategy = self.model, self.strategy
        k = min(5, self.num_classes)

        def step_fn(images, labels, weights):
            logits = tf.cast(model(images, training=False), tf.float32)
            labels = tf.cast(labels, tf.int32)
            weights = tf.cast(weights, tf.float32)
            top1 = tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)
            top5 = tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)
            return tf.stack([tf.reduce_sum(top1 * weights), tf.reduce_sum(top5 * weights),
                             tf.reduce_sum(weights)])

        @tf.function
        def eval_step(images, labels, weights):
            out = strategy.run(step_fn, args=(images, labels, weights))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

        return eval_step

    # --- loops -------------------------------------------------------------------------------

    def train(self, evaluate_every_checkpoint: bool = False) -> dict:
        """Train to the configured total step, checkpointing every --steps_per_eval steps.

        The chief holds `model_dir`'s lock meanwhile: a second training process there refuses.
        """
        if self.total_steps is None:
            raise ValueError("Pass --train_steps or --train_epochs.")
        if not self.is_chief:
            return self._train(evaluate_every_checkpoint, lock=None)
        tf.io.gfile.makedirs(self.model_dir)
        with RunLock(self.model_dir) as lock:
            return self._train(evaluate_every_checkpoint, lock)

    def _train(self, evaluate_every_checkpoint: bool, lock: RunLock | None) -> dict:
        train = self.experiment.train
        self.check_resumable()
        step = self.restore_or_initialize()
        self.write_config()
        # After the restore, which may have set unreadable checkpoints aside. Every worker saves
        # (saving can need collectives); only the chief's copy is kept.
        save_dir = (self.model_dir if self.is_chief else os.path.join(
            self.model_dir, f".worker_{self.strategy.cluster_resolver.task_id}"))
        manager = tf.train.CheckpointManager(self.checkpoint, save_dir,
                                             max_to_keep=train.keep_checkpoint_max)
        if step >= self.total_steps:
            logging.info("Already at step %d >= %d: nothing to train.", step, self.total_steps)
            return {"step": step}
        data = self.experiment.data
        dataset = data_lib.distributed_dataset(
            self.strategy, data, "train", self.global_batch, image_size=self.image_size,
            is_training=True, count_skipped=True)
        iterator = iter(dataset)
        if self._train_loop is None:
            self._train_loop = self._build_train_loop()
        writer = self._summary_writer("train")
        if step == 0 and self.is_chief:
            self._write_input_images(writer)
        progress = _Progress(self.total_steps, step)
        last_eval = {}
        skipped = 0
        while step < self.total_steps:
            next_stop = min(self.total_steps,
                            (step // train.steps_per_eval + 1) * train.steps_per_eval)
            while step < next_stop:
                n = min(train.steps_per_loop, next_stop - step)
                start = time.time()
                sums = self._train_loop(iterator, tf.constant(n, tf.int32)).numpy()
                elapsed = time.time() - start
                step = self.step
                skipped += int(sums[3])
                metrics = {"loss": sums[0] / n, "top_1": sums[1] / max(sums[2], 1.0),
                           "learning_rate": float(self.lr_schedule(step - 1)),
                           "images_per_sec": self.global_batch * n / max(elapsed, 1e-9)}
                with writer.as_default(step=step):
                    for name, value in metrics.items():
                        tf.summary.scalar(name, value)
                progress.update(step, metrics)
            path = manager.save(checkpoint_number=step)
            if lock is not None:
                logging.info("Saved checkpoint %s", path)
                lock.refresh()
            else:
                tf.io.gfile.rmtree(manager.directory)
            self._report_skipped(writer, step, skipped)
            skipped = 0
            if evaluate_every_checkpoint:
                last_eval = self.evaluate_and_record()
        writer.flush()
        logging.info("Weights fingerprint at step %d: %.10e", step, self.weights_fingerprint())
        return {"step": step, "skipped_examples": self.skipped_examples, **last_eval}

    def _report_skipped(self, writer, step, skipped):
        """`skipped`: corrupt training records skipped by all input pipelines since the last
        checkpoint (counted in the batches; the pipelines name them on stderr)."""
        self.skipped_examples += skipped
        with writer.as_default(step=step):
            tf.summary.scalar("skipped_examples", self.skipped_examples)
        if skipped:
            print(f"Skipped {skipped} corrupt/undecodable training record(s) since the last "
                  f"checkpoint ({self.skipped_examples} in this run); stderr names them.",
                  flush=True)

    def evaluate(self) -> dict:
        """Top-1/top-5 over the whole eval split, with the EMA weights when there are any."""
        if self._eval_step is None:
            self._eval_step = self._build_eval_step()
        dataset = data_lib.distributed_dataset(
            self.strategy, self.experiment.data, "eval", self.experiment.train.eval_batch_size,
            image_size=self.image_size, is_training=False)
        totals = tf.zeros([3])
        with self._deployed_weights():
            for images, labels, weights in dataset:
                totals += self._eval_step(images, labels, weights)
        top1, top5, count = (float(v) for v in totals.numpy())
        if int(round(count)) != self.info.eval_size:
            raise RuntimeError(f"Evaluated {count:.0f} examples but the eval split has "
                               f"{self.info.eval_size}: the eval pipeline lost or repeated data.")
        return {"top_1": top1 / count, "top_5": top5 / count, "num_examples": int(round(count)),
                "step": self.step}

    def evaluate_and_record(self) -> dict:
        """Evaluate, write eval_results.json + TensorBoard, and keep the best EMA weights."""
        results = self.evaluate()
        if not self.is_chief:
            return results
        write_json_atomic(os.path.join(self.model_dir, EVAL_RESULTS_FILE), results)
        writer = self._summary_writer("eval")
        with writer.as_default(step=results["step"]):
            tf.summary.scalar("top_1", results["top_1"])
            tf.summary.scalar("top_5", results["top_5"])
        writer.flush()
        logging.info("Eval at step %d: top_1=%.4f top_5=%.4f over %d examples", results["step"],
                     results["top_1"], results["top_5"], results["num_examples"])
        best_path = os.path.join(self.model_dir, BEST_RESULTS_FILE)
        best = None
        if tf.io.gfile.exists(best_path):
            with tf.io.gfile.GFile(best_path) as f:
                best = json.load(f)
        if best is None or results["top_1"] > best["top_1"]:
            self.save_weights(os.path.join(self.model_dir, BEST_WEIGHTS_FILE))
            write_json_atomic(best_path, results)
        return results

    def _summary_writer(self, name):
        if not self.is_chief:
            return tf.summary.create_noop_writer()
        return tf.summary.create_file_writer(os.path.join(self.model_dir, name))

    def weights_fingerprint(self) -> float:
        """Sum of the trainable weights: equal on every worker when training stayed in sync.

        BN moving statistics are left out: they are shared only within a --bn_group_size group
        of replicas (by default each replica keeps its own, as the reference)."""
        return float(sum(tf.reduce_sum(tf.cast(w, tf.float64)).numpy()
                         for w in self.model.trainable_weights))

    def _deployed_weights(self):
        """The weights eval and users see: the EMA averages, swapped in, when the run keeps them."""
        return self.ema.averaged_weights() if self.ema is not None else contextlib.nullcontext()

    def save_weights(self, path: str):
        with self._deployed_weights():
            save_weights_atomic(self.model, path)

    def _write_input_images(self, writer, count: int = 4):
        dataset = data_lib.build_dataset(self.experiment.data, "train", count,
                                         image_size=self.image_size, is_training=True)
        images, _ = next(iter(dataset))
        with writer.as_default(step=0):
            tf.summary.image("input_images", tf.cast(images, tf.float32) / 255.0,
                             max_outputs=count)


def total_train_steps(train_size: int, global_batch: int, train_steps: int | None,
                      train_epochs: float | None) -> int | None:
    """--train_steps, else int(epochs x images / batch) as the reference (350 ImageNet epochs at
    batch 2048: 218949, its --train_steps default)."""
    if train_steps is not None:
        return train_steps
    if train_epochs is None:
        return None
    return max(1, int(train_epochs * train_size / global_batch))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The worker that writes shared outputs (task 'chief', else worker 0, else the only one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


class _Progress:
    """A Keras progress bar on a terminal, plain log lines otherwise (files, CI)."""

    def __init__(self, total: int, start: int):
        self.total = total
        self.bar = keras.utils.Progbar(total, stateful_metrics=[
            "loss", "top_1", "learning_rate", "images_per_sec"]) if sys.stdout.isatty() else None
        if self.bar is not None and start:
            self.bar.update(start)

    def update(self, step: int, metrics: dict):
        if self.bar is not None:
            self.bar.update(step, list(metrics.items()))
        else:
            text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"step {step}/{self.total} {text}", flush=True)


def read_experiment(model_dir: str) -> ExperimentConfig:
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path} not found: --model_dir must be a training run's "
                                "directory (main.py --mode=train writes config.json there).")
    with tf.io.gfile.GFile(path) as f:
        return ExperimentConfig.from_dict(json.load(f))


def load_trained_model(model_dir: str, *, checkpoint_path: str | None = None,
                       classifier_activation="softmax", **build_kwargs) -> keras.Model:
    """A training run's model with its EMA weights (what eval and the paper report) in place.

    Builds in the current dtype policy from the run's config.json; `build_kwargs` go to
    `build_model` (e.g. input_shape). The latest checkpoint unless `checkpoint_path` is given.
    """
    experiment = read_experiment(model_dir)
    model = build_model(config=experiment.model, classifier_activation=classifier_activation,
                        **build_kwargs)
    decay = experiment.train.moving_average_decay
    ema = ExponentialMovingAverage(model, decay) if decay > 0 else None
    objects = {"model": model, **({"ema": ema} if ema is not None else {})}
    path = checkpoint_path or tf.train.latest_checkpoint(model_dir)
    if not path:
        raise FileNotFoundError(f"No checkpoint in {model_dir}.")
    tf.train.Checkpoint(**objects).restore(path).expect_partial().assert_existing_objects_matched()
    if ema is not None:
        ema.copy_to(model)
    return model
