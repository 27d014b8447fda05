"""The training engine: a custom tf.distribute loop with the paper's recipe (docs/fidelity.md).

A custom loop rather than `model.fit`: the EMA must cover BN statistics and be swapped in for
eval, resuming must land on the exact step, and Keras 3's fit has open problems under
MultiWorkerMirroredStrategy and with `steps_per_execution > 1` under MirroredStrategy.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import keras
import tensorflow as tf
from absl import logging

from efficientnet_tf import data as data_lib
from efficientnet_tf import run_dir
from efficientnet_tf.config import ConfigError
from efficientnet_tf.distribute import (
    is_chief,
    resolve_jit_compile,
    resolve_mixed_precision,
    strategy_device_kind,
)
from efficientnet_tf.experiment import ExperimentConfig
from efficientnet_tf.files import read_json, write_json_atomic
from efficientnet_tf.layers import bn_group_size
from efficientnet_tf.model import build_model
from efficientnet_tf.run_dir import RunLock, newest_readable_checkpoint
from efficientnet_tf.training.ema import ExponentialMovingAverage
from efficientnet_tf.training.optimizer import build_optimizer
from efficientnet_tf.training.regularization import classification_loss, l2_loss
from efficientnet_tf.training.schedules import build_lr_schedule
from efficientnet_tf.weights import preprocessing_record, save_weights_atomic


class Trainer:
    """Owns the model, optimizer, EMA and checkpoints of one run under one strategy."""

    def __init__(self, experiment: ExperimentConfig, strategy: tf.distribute.Strategy, *,
                 training: bool = True):
        """training=False: for evaluation only; the train split and batch size are not used
        (a directory holding only the validation split is enough)."""
        self.experiment = experiment
        self.strategy = strategy
        recipe = experiment.recipe
        if recipe.seed is not None:
            keras.utils.set_random_seed(recipe.seed)  # initialization, dropout, drop-path
        self.info = data_lib.get_dataset_info(experiment.data)
        self.num_classes = experiment.model.num_classes
        self.label_offset = experiment.model.label_offset
        if self.num_classes - self.label_offset != self.info.num_classes:
            offset = f" after {self.label_offset} background class(es)" if self.label_offset else ""
            raise ConfigError(
                f"ModelConfig.num_classes={self.num_classes}{offset} but dataset "
                f"{experiment.data.dataset!r} has {self.info.num_classes} classes")
        self.image_size = experiment.model.resolution
        self.global_batch = recipe.train_batch_size
        self.total_steps = None
        if training:
            data_lib.steps_per_epoch(self.info, self.global_batch)  # at least one full batch
            # As the reference: a fractional epoch (train images / batch) for the LR schedule.
            self.steps_per_epoch = self.info.train_size / self.global_batch
            self.total_steps = total_train_steps(self.info.train_size, self.global_batch,
                                                 recipe.train_steps, recipe.train_epochs)
        self.model_dir = experiment.runtime.model_dir
        if not self.model_dir:
            raise ConfigError("RuntimeConfig.model_dir is required: checkpoints, config.json "
                              "and TensorBoard logs go there.")

        device_kind = strategy_device_kind(strategy)
        self.precision = resolve_mixed_precision(experiment.runtime.mixed_precision, device_kind)
        # TPUStrategy compiles every step itself; wrapping it again is for GPU/CPU only.
        self.compile_steps = (resolve_jit_compile(experiment.runtime.jit_compile, device_kind)
                              and device_kind != "tpu")
        # Fails here, not at the first step, when the groups do not divide the replicas.
        group = bn_group_size(strategy.num_replicas_in_sync, experiment.model.bn_group_size)
        if training and self.compile_steps and group > 1 and device_kind == "cpu":
            raise ConfigError(
                f"RuntimeConfig.jit_compile={experiment.runtime.jit_compile!r}: batch norm shares "
                f"statistics over {group} CPU replicas, and MirroredStrategy compiles cross-"
                "replica sums on GPUs only; use --jit_compile=off or --bn_group_size=1.")
        with strategy.scope(), _dtype_policy(self.precision):
            self.model = build_model(config=experiment.model, classifier_activation=None)
            self._apply_freezing()
            if training:
                self.lr_schedule = build_lr_schedule(
                    recipe.lr_schedule, recipe.base_learning_rate, self.global_batch,
                    self.steps_per_epoch, self.total_steps or 1,
                    warmup_epochs=recipe.lr_warmup_epochs, decay_epochs=recipe.lr_decay_epoch,
                    decay_factor=recipe.lr_decay_factor,
                    continuous_warmup=recipe.lr_continuous_warmup)
            else:  # eval restores weights and step only; still a schedule (same checkpoint shape)
                self.lr_schedule = build_lr_schedule("constant", recipe.base_learning_rate,
                                                     self.global_batch, None, 1, warmup_epochs=0)
            self.optimizer = build_optimizer(
                self.lr_schedule, optimizer=recipe.optimizer, mixed_precision=self.precision,
                lars_weight_decay=recipe.lars_weight_decay, lars_epsilon=recipe.lars_epsilon)
            self.optimizer.build(self.model.trainable_variables)
            self.ema = (ExponentialMovingAverage(self.model, recipe.moving_average_decay)
                        if recipe.moving_average_decay > 0 else None)
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
        recipe = self.experiment.recipe
        if recipe.freeze_backbone:
            for layer in self.model.layers:
                if layer.name != "predictions":
                    layer.trainable = False
        if recipe.bn_mode == "frozen":
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
        elif self.experiment.recipe.weights:
            from efficientnet_tf import weights as weights_lib

            weights_lib.load_weights(self.model, self.experiment.recipe.weights)
            if self.ema is not None:
                self.ema.reset()
            logging.info("Initialized from %s", self.experiment.recipe.weights)
        return self.step

    def restore_for_eval(self) -> str:
        """--weights when given (used as is), else the latest checkpoint's model and EMA."""
        if self.experiment.recipe.weights:
            from efficientnet_tf import weights as weights_lib

            weights_lib.load_weights(self.model, self.experiment.recipe.weights)
            self.ema = None
            return self.experiment.recipe.weights
        latest = newest_readable_checkpoint(self.model_dir, set_aside=False)
        if not latest:
            raise FileNotFoundError(f"No checkpoint in {self.model_dir} and no weights file "
                                    "given (--weights): nothing to evaluate.")
        saved = run_dir.read_experiment(self.model_dir, required=False)
        if saved is not None:
            run_dir.require_same_model(self.model_dir, self.experiment, "evaluated")
            decay = saved.recipe.moving_average_decay
            if (decay > 0) != (self.ema is not None):
                raise ConfigError(
                    f"{self.model_dir} was trained with moving_average_decay={decay}; evaluate "
                    "it with the same setting, or the wrong weights (raw vs EMA) would be "
                    "scored.")
        self.checkpoint.restore(latest).expect_partial()
        return latest

    def check_resumable(self):
        """A different model than the checkpoints' in model_dir is refused, not mixed."""
        if tf.train.latest_checkpoint(self.model_dir):
            run_dir.require_same_model(self.model_dir, self.experiment, "resumed")

    def write_config(self):
        """config.json next to the checkpoints (after a successful restore: a failed resume
        leaves the directory as it was)."""
        if self.is_chief:
            write_json_atomic(os.path.join(self.model_dir, run_dir.CONFIG_FILE),
                              self.experiment.to_dict())

    # --- steps -------------------------------------------------------------------------------

    def forward_backward(self, images, labels):
        """One replica's loss, gradients (scaled as the optimizer expects) and correct count."""
        model, recipe = self.model, self.experiment.recipe
        labels = self._model_labels(labels)
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            per_example = classification_loss(labels, logits, self.num_classes,
                                               recipe.label_smoothing)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            loss += l2_loss(model, recipe.weight_decay) / self.strategy.num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        target = labels if labels.shape.rank == 1 else tf.argmax(labels, axis=-1)
        correct = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(target, tf.int32))
        return loss, grads, tf.reduce_sum(tf.cast(correct, tf.float32))

    def _model_labels(self, labels):
        """Dataset labels as classifier indices: shifted past background classes, as the
        reference feeds 1-based ImageNet labels to its 1001-class models."""
        if not self.label_offset:
            return labels
        if labels.shape.rank == 1:
            return labels + tf.cast(self.label_offset, labels.dtype)
        return tf.pad(labels, [[0, 0], [self.label_offset, 0]])  # one-hot / mixed targets

    def train_step(self, images, labels, skipped, forward_backward=None):
        """One replica's step: `forward_backward` (default: the method's), then the optimizer and
        EMA updates. Returns (loss, correct, examples, skipped corrupt records)."""
        loss, grads, correct = (forward_backward or self.forward_backward)(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        return (loss, correct, tf.cast(tf.shape(images)[0], tf.float32),
                tf.cast(skipped, tf.float32))

    def eval_step(self, images, labels, weights):
        """One replica's weighted (top-1, top-5, examples) sums."""
        logits = tf.cast(self.model(images, training=False), tf.float32)
        labels = tf.cast(self._model_labels(labels), tf.int32)
        weights = tf.cast(weights, tf.float32)
        top1 = tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)
        top5 = tf.cast(tf.math.in_top_k(labels, logits, min(5, self.num_classes)), tf.float32)
        return tf.stack([tf.reduce_sum(top1 * weights), tf.reduce_sum(top5 * weights),
                         tf.reduce_sum(weights)])

    def _replica_train_step(self):
        """The function `strategy.run` calls, with the XLA-compiled part `--jit_compile` asks for.

        One replica: the whole step. Several (MirroredStrategy): the forward and backward pass
        only, since the optimizer's and the EMA's updates synchronize the replicas through
        `merge_call`, which a compiled function cannot hold. A TPU compiles the whole step itself.
        """
        if not self.compile_steps:
            return self.train_step
        if self.strategy.num_replicas_in_sync == 1:
            return _xla(self.train_step)
        forward_backward = _xla(self.forward_backward)
        return lambda *batch: self.train_step(*batch, forward_backward=forward_backward)

    def _build_train_loop(self):
        strategy, step_fn = self.strategy, self._replica_train_step()

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
        strategy = self.strategy
        compiled = _xla(self.eval_step) if self.compile_steps else self.eval_step

        @tf.function
        def eval_step(images, labels, weights):
            # Called from a plain function: MirroredStrategy would otherwise compile all its
            # replicas as one program, placed on the first device.
            out = strategy.run(lambda *batch: compiled(*batch), args=(images, labels, weights))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

        return eval_step

    # --- loops -------------------------------------------------------------------------------

    def train(self, evaluate_every_checkpoint: bool = False) -> dict:
        """Train to the configured total step, checkpointing every --steps_per_eval steps.

        The chief holds `model_dir`'s lock meanwhile: a second training process there refuses.
        """
        if self.total_steps is None:
            raise ConfigError("RecipeConfig: set train_steps or train_epochs.")
        if not self.is_chief:
            return self._train(evaluate_every_checkpoint, lock=None)
        tf.io.gfile.makedirs(self.model_dir)
        with RunLock(self.model_dir) as lock:
            return self._train(evaluate_every_checkpoint, lock)

    def _train(self, evaluate_every_checkpoint: bool, lock: RunLock | None) -> dict:
        runtime = self.experiment.runtime
        self.check_resumable()
        step = self.restore_or_initialize()
        self.write_config()
        # After the restore, which may have set unreadable checkpoints aside. Every worker saves
        # (saving can need collectives); only the chief's copy is kept.
        save_dir = (self.model_dir if self.is_chief else os.path.join(
            self.model_dir, f".worker_{self.strategy.cluster_resolver.task_id}"))
        manager = tf.train.CheckpointManager(self.checkpoint, save_dir,
                                             max_to_keep=runtime.keep_checkpoint_max)
        if step >= self.total_steps:
            logging.info("Already at step %d >= %d: nothing to train.", step, self.total_steps)
            if not evaluate_every_checkpoint:
                return {"step": step}
            last_eval = read_json(os.path.join(self.model_dir, run_dir.EVAL_RESULTS_FILE))
            if last_eval is None or last_eval.get("step") != step:
                last_eval = self.evaluate_and_record()
            return {"step": step, **last_eval}
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
        with _ProfilerTrace(runtime.profile_range() if self.is_chief else None,
                            os.path.join(self.model_dir, "train")) as trace:
            while step < self.total_steps:
                next_stop = min(self.total_steps,
                                (step // runtime.steps_per_eval + 1) * runtime.steps_per_eval)
                while step < next_stop:
                    trace.before_loop(step)
                    n = trace.limit(step, min(runtime.steps_per_loop, next_stop - step))
                    start = time.time()
                    sums = self._train_loop(iterator, tf.constant(n, tf.int32)).numpy()
                    elapsed = time.time() - start
                    step = self.step
                    trace.after_loop(step)
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
            self.strategy, self.experiment.data, "eval", self.experiment.runtime.eval_batch_size,
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
        write_json_atomic(os.path.join(self.model_dir, run_dir.EVAL_RESULTS_FILE), results)
        writer = self._summary_writer("eval")
        with writer.as_default(step=results["step"]):
            tf.summary.scalar("top_1", results["top_1"])
            tf.summary.scalar("top_5", results["top_5"])
        writer.flush()
        logging.info("Eval at step %d: top_1=%.4f top_5=%.4f over %d examples", results["step"],
                     results["top_1"], results["top_5"], results["num_examples"])
        best_path = os.path.join(self.model_dir, run_dir.BEST_RESULTS_FILE)
        best = read_json(best_path)
        if best is None or results["top_1"] > best["top_1"]:
            self.save_weights(os.path.join(self.model_dir, run_dir.BEST_WEIGHTS_FILE))
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
        """The deployed weights, recording the run's eval preprocessing (`--weights` of eval,
        export and predict then need no model flags)."""
        data = self.experiment.data
        record = preprocessing_record(self.experiment.model, resize_method=data.resize_method,
                                      half_pixel_centers=data.half_pixel_centers,
                                      source=self.model_dir)
        with self._deployed_weights():
            save_weights_atomic(self.model, path, record=record)

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


class _ProfilerTrace:
    """`--profile_steps=START,END`: a TensorBoard profiler trace of exactly those training
    steps: the host loop ends its multi-step loops at both edges (`limit`), and the trace starts
    right before the loop that begins with step START and stops right after the one that ends
    with step END (or at the end of training), leaving checkpoints and evals outside."""

    def __init__(self, steps: tuple[int, int] | None, logdir: str):
        self.first, self.last = steps or (0, 0)
        self.logdir = logdir
        self.active = False
        self.step = 0  # the last step run

    def limit(self, step: int, num_steps: int) -> int:
        """`num_steps` from `step`, cut at the trace's next edge."""
        for edge in (self.first - 1, self.last):
            if step < edge:
                num_steps = min(num_steps, edge - step)
        return num_steps

    def before_loop(self, step: int):
        if self.first and step == self.first - 1 and not self.active:
            tf.profiler.experimental.start(self.logdir)
            self.active = True

    def after_loop(self, step: int):
        self.step = step
        if self.active and step >= self.last:
            self._stop()

    def _stop(self):
        tf.profiler.experimental.stop()
        self.active = False
        logging.info("Wrote a profiler trace of steps %d-%d to %s/plugins/profile", self.first,
                     self.step, self.logdir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.active:  # END past the last step, or an error
            self._stop()


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


def _xla(fn):
    """`fn` compiled with XLA, traced once per input signature (the pipelines' shapes are
    static)."""
    return tf.function(fn, jit_compile=True)


@contextlib.contextmanager
def _dtype_policy(policy: str):
    """Build under `policy` without leaving it as the process's global Keras policy."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
