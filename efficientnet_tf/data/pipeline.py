"""`build_dataset` / `distributed_dataset`: batched, preprocessed tf.data pipelines per replica.

Element formats:
- training: `(images, labels)`, or `(images, labels, skipped)` with `count_skipped`; images
  float32 [B, S, S, 3] in [0, 255], labels int32 [B], or float32 one-hot [B, K] when `one_hot`
  (always when mixup/cutmix is on: the labels are mixed); skipped int32 [], the corrupt records
  skipped in this pipeline since the previous batch. Infinite (repeats), shuffled, every batch
  full (B = per-replica batch).
- eval: `(images, labels, weights)`; labels int32 [B] whatever the training augmentation (mixing
  is training-only), one-hot only when `one_hot=True`; weights float32 [B], 1 for real examples
  and 0 for padding. Never shuffled; every example of the split appears exactly once across all
  pipelines, and the last batches are padded so that every replica gets `eval_steps(...)` full
  batches. Pass the weights as Keras `sample_weight` so that metrics ignore the padding.

A record that fails to parse or decode is, in training, skipped, named on stderr and counted in
the `skipped` of the next batch; in eval it raises an error naming the record (eval must not
silently change its denominator). See `_decode_in_order` for how a failure inside the parallel
map is found. The pipelines are graph ops only, no Python callbacks: multi-host TPU slices run
them in the TPU runtime, which has no Python interpreter.
"""
from __future__ import annotations

import math
import sys

import tensorflow as tf

from efficientnet_tf.config import ConfigError
from efficientnet_tf.data import preprocessing
from efficientnet_tf.data.augment import ImageAugmenter, LabelMixer
from efficientnet_tf.data.config import DataConfig
from efficientnet_tf.data.sources import DatasetInfo, ReadOptions, check_split, resolve_source

AUTOTUNE = tf.data.AUTOTUNE
# Skipped training records named on stderr: the first LOG_FIRST, then every LOG_EVERY-th.
LOG_FIRST, LOG_EVERY = 20, 100


def _decode_in_order(records, process, *, on_dropped, check_label, image_size: int,
                     num_records: int | None = None):
    """`(payload, seed, where)` records -> `(image, label, skipped)`, decoded in parallel.

    A record whose parsing or decoding raises is dropped by `ignore_errors`: nothing in a graph
    can catch the error itself. So records are numbered, the parallel map keeps their order
    (shuffling happened upstream), and a sequential scan sees each gap in the numbering; the gap's
    records are the failed ones, named through a table of the in-flight records' `where`s, and
    counted in the next element's `skipped` (int32). `on_dropped(wheres, before)` returns the op
    that handles them (log or raise; `before`: records dropped earlier in this stream) and
    `check_label(label)` an assertion; both run before the next element leaves. A finite stream
    passes `num_records` so that failures at its very end are seen too.
    """
    # A record that failed before `remember` (a read error: a truncated or corrupt file) has no
    # name in the table; it is still counted.
    names = tf.lookup.experimental.MutableHashTable(
        tf.int64, tf.string, default_value="a record that could not be read (corrupt or truncated "
                                           "TFRecord/TFDS file)")

    def remember(index, record):
        payload, seed, where = record
        with tf.control_dependencies([names.insert(index[None], where[None])]):
            return tf.identity(index), payload, seed

    ds = records.enumerate().map(remember)
    ds = ds.map(lambda index, payload, seed: (index, *process(payload, seed)),
                num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    if num_records is not None:  # an end marker: the next index after the last record
        ds = ds.concatenate(tf.data.Dataset.from_tensors(
            (tf.constant(num_records, tf.int64), tf.zeros([image_size, image_size, 3]),
             tf.constant(0, tf.int32))))

    def step(state, element):
        previous, dropped = state
        index, image, label = element
        handled = on_dropped(names.lookup(tf.range(previous + 1, index)), dropped)
        with tf.control_dependencies([handled, check_label(label)]):
            forget = names.remove(tf.range(previous + 1, index + 1))
        with tf.control_dependencies([forget]):
            image, label = tf.identity(image), tf.identity(label)
        skipped = index - previous - 1
        return (index, dropped + skipped), (index, image, label, tf.cast(skipped, tf.int32))

    ds = ds.scan((tf.constant(-1, tf.int64), tf.constant(0, tf.int64)), step)
    if num_records is not None:
        ds = ds.filter(lambda index, image, label, skipped: index < num_records)
    return ds.map(lambda index, image, label, skipped: (image, label, skipped))


def _log_skipped(pipeline_id: int):
    """`on_dropped` for training: names skipped records on stderr with `tf.print` (a graph op)."""
    def log(wheres, before):
        numbers = before + tf.range(1, tf.size(wheres, tf.int64) + 1)
        shown = (numbers <= LOG_FIRST) | (numbers % LOG_EVERY == 0)
        lines = tf.strings.join([
            "Skipped an undecodable training record (", tf.strings.as_string(numbers),
            f" so far in input pipeline {pipeline_id}): ", wheres])

        def show():
            text = tf.strings.reduce_join(tf.boolean_mask(lines, shown), separator="\n")
            with tf.control_dependencies([tf.print(text, output_stream=sys.stderr)]):
                return tf.constant(True)

        return tf.cond(tf.reduce_any(shown), show, lambda: tf.constant(True))
    return log


def _label_check(num_classes: int, dataset: str):
    """`check(label)`: an assertion op failing for labels outside [0, num_classes) (never
    skipped)."""
    def check(label):
        return tf.debugging.Assert(tf.logical_and(label >= 0, label < num_classes), [
            f"Label out of range [0, {num_classes}) in dataset {dataset!r}: wrong num_classes, or "
            "TFRecords whose image/class/label is not 1-based. Label:", label])
    return check


def resolve_one_hot(config: DataConfig, one_hot: bool | None, is_training: bool) -> bool:
    """One-hot by default only where labels are mixed: training with mixup/cutmix."""
    mixes = is_training and config.mixes_labels
    if one_hot is None:
        return mixes
    if not one_hot and mixes:
        raise ValueError("mixup/cutmix mix labels, so they need one-hot labels; pass one_hot=True "
                         "or None.")
    return bool(one_hot)


def build_dataset(config: DataConfig, split: str, global_batch_size: int, *, image_size: int,
                  input_context: tf.distribute.InputContext | None = None,
                  is_training: bool | None = None, one_hot: bool | None = None,
                  count_skipped: bool = False) -> tf.data.Dataset:
    """The batched pipeline for `split` ("train" or "eval"); see the module docstring.

    is_training defaults to split == "train" (training mode = shuffle, augment, repeat).
    With an `input_context`, yields per-replica batches of this input pipeline's share.
    count_skipped (training only) adds each batch's count of skipped corrupt records.
    """
    check_split(split)
    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(f"global_batch_size={global_batch_size!r}: must be a positive integer")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size={image_size!r}: must be an integer >= 8")
    is_training = split == "train" if is_training is None else is_training
    one_hot = resolve_one_hot(config, one_hot, is_training)
    source = resolve_source(config)
    ctx = input_context or tf.distribute.InputContext()
    if global_batch_size % ctx.num_replicas_in_sync:
        raise ConfigError(f"global_batch_size={global_batch_size} is not divisible by the "
                          f"{ctx.num_replicas_in_sync} replicas.")
    batch_size = ctx.get_per_replica_batch_size(global_batch_size)
    seed = config.seed * 1_000_003 + ctx.input_pipeline_id if config.deterministic else None
    options = ReadOptions(
        training=is_training, pipeline_id=ctx.input_pipeline_id,
        num_pipelines=ctx.num_input_pipelines, seed=seed, deterministic=config.deterministic,
        # A buffer beyond one epoch only delays the first batch (it fills from repeated data).
        shuffle_buffer_size=min(config.shuffle_buffer_size, source.info.split_size(split)),
        cache=source.default_cache if config.cache is None else config.cache)
    if is_training:
        ds = _train_examples(config, source, split, options, image_size)
    else:
        ds = _eval_examples(config, source, split, options, image_size, global_batch_size,
                            batch_size, ctx)
    ds = ds.batch(batch_size, drop_remainder=True)  # eval: an exact multiple, padding included
    num_classes = source.info.num_classes

    def finish(images, labels, extra):  # extra: eval weights, or training skipped counts
        if one_hot:
            labels = tf.one_hot(labels, num_classes)
        if not is_training:
            return images, labels, extra
        return (images, labels, tf.reduce_sum(extra)) if count_skipped else (images, labels)

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    if is_training and config.mixes_labels:
        # Sequential: the Keras layers draw from seed generators, so order matters for determinism.
        mixer = LabelMixer(config.mixup_alpha, config.cutmix_alpha, seed=seed)
        ds = ds.map(lambda images, labels, *skipped: (*mixer(images, labels), *skipped))
    ds = ds.prefetch(AUTOTUNE)
    data_options = tf.data.Options()
    data_options.deterministic = config.deterministic or not is_training
    if input_context is not None:
        # Sharded here already (files or elements per input pipeline).
        data_options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
    return ds.with_options(data_options)


def _train_examples(config, source, split, options, image_size):
    augment = (ImageAugmenter(config.augment_name, num_layers=config.randaug_num_layers,
                              magnitude=config.randaug_magnitude, ops=config.augment_ops)
               if config.augment_name else None)

    def process(payload, seed):
        image, label = source.decode(payload)
        return preprocessing.preprocess_for_train(
            image, image_size, seed, resize_method=config.resize_method,
            half_pixel_centers=config.half_pixel_centers, augment=augment), label

    pipeline_id = tf.constant(options.pipeline_id, tf.int64)
    records = tf.data.Dataset.zip((source.records(split, options),
                                   tf.data.Dataset.random(seed=options.seed)))
    records = records.map(lambda record, r: (record[0], tf.stack([r, pipeline_id]), record[1]))
    return _decode_in_order(records, process, on_dropped=_log_skipped(options.pipeline_id),
                            image_size=image_size,
                            check_label=_label_check(source.info.num_classes, config.dataset))


def _eval_examples(config, source, split, options, image_size, global_batch_size, batch_size, ctx):
    info = source.info
    size = info.split_size(split)
    # Element sharding: pipeline i holds examples i, i + P, i + 2P, ...
    own = len(range(options.pipeline_id, size, options.num_pipelines))
    replicas_per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    total = eval_steps(info, global_batch_size, split) * replicas_per_pipeline * batch_size

    def process(payload, seed):
        del seed
        image, label = source.decode(payload)
        return preprocessing.preprocess_for_eval(
            image, image_size, resize_method=config.resize_method,
            half_pixel_centers=config.half_pixel_centers), label

    def refuse(wheres, before):
        del before
        return tf.debugging.Assert(tf.equal(tf.size(wheres), 0), [
            f"Corrupt or undecodable record in the {split} split of {info.name!r} "
            f"({getattr(info, split + '_split')}); eval does not skip records, since that would "
            "change its denominator. Record:", tf.strings.reduce_join(wheres, separator=", ")])

    zero_seed = tf.zeros([2], tf.int64)
    records = source.records(split, options).map(lambda payload, where: (payload, zero_seed, where))
    ds = _decode_in_order(records, process, on_dropped=refuse, image_size=image_size,
                          check_label=_label_check(info.num_classes, config.dataset),
                          num_records=own)
    ds = ds.map(lambda image, label, skipped: (image, label, tf.constant(1.0)))
    ds = ds.apply(tf.data.experimental.assert_cardinality(own))
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros([image_size, image_size, 3]), tf.constant(0, tf.int32), tf.constant(0.0)))
    return ds.concatenate(padding.repeat(total - own))


def distributed_dataset(strategy: tf.distribute.Strategy, config: DataConfig, split: str,
                        global_batch_size: int, *, image_size: int, is_training: bool | None = None,
                        one_hot: bool | None = None, count_skipped: bool = False):
    """Per-replica pipelines via `strategy.distribute_datasets_from_function`."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ConfigError(f"global_batch_size={global_batch_size} is not divisible by the "
                          f"{replicas} replicas of {type(strategy).__name__}.")
    return strategy.distribute_datasets_from_function(
        lambda ctx: build_dataset(config, split, global_batch_size, image_size=image_size,
                                  input_context=ctx, is_training=is_training, one_hot=one_hot,
                                  count_skipped=count_skipped))


def steps_per_epoch(info: DatasetInfo, global_batch_size: int) -> int:
    """Full global batches in one pass over the training split."""
    steps = info.train_size // global_batch_size
    if steps < 1:
        raise ConfigError(f"The {info.name} train split has {info.train_size} examples, fewer than "
                          f"one global batch of {global_batch_size}.")
    return steps


def eval_steps(info: DatasetInfo, global_batch_size: int, split: str = "eval") -> int:
    """Steps that cover `split` exactly once in eval mode (the last batches padded)."""
    return math.ceil(info.split_size(split) / global_batch_size)
