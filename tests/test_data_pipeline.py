"""Pipeline contracts: batch formats, exact eval coverage with padding weights, corrupt records
(skipped, counted and named in training, an error in eval), label checks, mixing, no Python ops,
learnable synthetic."""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.data import (
    DataConfig,
    build_dataset,
    eval_steps,
    get_dataset_info,
    steps_per_epoch,
    tfrecord,
)
from efficientnet_tf.data.testing import encode, natural_image, write_image_tfrecords

GOOD, BAD_IMAGES, BAD_PROTOS = 6, 2, 1


def jpegs(n, seed=0):
    return [encode(natural_image(36, 44, seed=seed + i)) for i in range(n)]


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("records"))
    write_image_tfrecords(root, "train", jpegs(10), [i % 3 for i in range(10)], num_shards=2)
    write_image_tfrecords(root, "validation", jpegs(11, seed=20), list(range(11)), num_shards=2)
    return root


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory):
    """Train and validation shards with good JPEGs, truncated JPEGs and a non-Example record."""
    root = str(tmp_path_factory.mktemp("corrupt"))
    for prefix in ("train", "validation"):
        with tf.io.TFRecordWriter(f"{root}/{tfrecord.shard_name(prefix, 0, 1)}") as writer:
            for i, image in enumerate(jpegs(GOOD + BAD_IMAGES)):
                if i >= GOOD:
                    image = image[: len(image) // 3]
                writer.write(tfrecord.make_example(image, label=1 + i % 2, height=36, width=44,
                                                   filename=f"{i}.jpg", synset="s", text="t")
                             .SerializeToString())
            writer.write(b"this is not a tf.train.Example")
    return root


def test_train_batches_are_full_float_images_in_range_and_repeat(records_dir):
    config = DataConfig(dataset="imagenet", data_dir=records_dir, augment_name="autoaugment")
    batches = list(build_dataset(config, "train", 4, image_size=32).take(6))  # 24 > 10 examples
    for images, labels in batches:
        assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
        assert labels.shape == (4,) and labels.dtype == tf.int32
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert set(np.concatenate([y.numpy() for _, y in batches])) <= {0, 1, 2}


def test_eval_covers_every_example_once_with_padding_weights(records_dir):
    config = DataConfig(dataset="imagenet", data_dir=records_dir)
    info = get_dataset_info(config)
    assert eval_steps(info, 4) == 3 and steps_per_epoch(info, 4) == 2
    batches = list(build_dataset(config, "eval", 4, image_size=16))
    assert len(batches) == 3 and all(x.shape == (4, 16, 16, 3) for x, _, _ in batches)
    labels = np.concatenate([y.numpy() for _, y, _ in batches])
    weights = np.concatenate([w.numpy() for _, _, w in batches])
    assert weights.tolist() == [1.0] * 11 + [0.0]
    assert sorted(labels[weights > 0]) == list(range(11))
    # Deterministic: the same order and pixels every time.
    again = list(build_dataset(config, "eval", 4, image_size=16))
    np.testing.assert_array_equal(batches[0][0].numpy(), again[0][0].numpy())


def test_input_pipelines_split_the_data(tmp_path):
    """Two input pipelines (hosts): disjoint train files, eval examples split with none lost."""
    write_image_tfrecords(str(tmp_path), "train", jpegs(8), list(range(8)), num_shards=2)
    write_image_tfrecords(str(tmp_path), "validation", jpegs(7), list(range(7)), num_shards=1)
    config = DataConfig(dataset="imagenet", data_dir=str(tmp_path))
    train, evaluated = [], []
    for pipeline in (0, 1):
        context = tf.distribute.InputContext(2, pipeline, 2)
        # 40 shuffled batches of 2: each of the pipeline's 4 labels shows up (P(miss) ~ 1e-10).
        batches = build_dataset(config, "train", 4, image_size=16, input_context=context).take(40)
        train.append({int(y) for _, labels in batches for y in labels.numpy()})
        batches = list(build_dataset(config, "eval", 4, image_size=16, input_context=context))
        assert len(batches) == 2 and all(x.shape[0] == 2 for x, _, _ in batches)
        evaluated += [int(y) for _, labels, weights in batches
                      for y, w in zip(labels.numpy(), weights.numpy()) if w > 0]
    assert train[0] | train[1] == set(range(8)) and not train[0] & train[1]
    assert sorted(evaluated) == list(range(7))


def skip_logs(stderr):
    """(number so far, record name) of each skipped record the pipeline named on stderr."""
    found = re.findall(r"Skipped an undecodable training record \((\d+) so far in input "
                       r"pipeline 0\): (.*)", stderr)
    return [(int(n), name) for n, name in found]


def test_corrupt_training_records_are_skipped_counted_and_named(corrupt_dir, capfd):
    # In file order (no shuffle): each epoch is 6 good records, then the 3 bad ones.
    config = DataConfig(dataset="imagenet", data_dir=corrupt_dir, shuffle_buffer_size=1)
    ds = build_dataset(config, "train", 2, image_size=16, count_skipped=True)
    batches = list(ds.take(5 * GOOD // 2))
    assert set(np.concatenate([y.numpy() for _, y, _ in batches])) == {0, 1}
    # Each batch counts the records skipped before its examples: the 3 bad ones, exactly, in
    # the first batch of every later epoch.
    bad = BAD_IMAGES + BAD_PROTOS
    assert [int(s) for _, _, s in batches] == [0, 0, 0] + [bad, 0, 0] * 4
    # Each skipped record is named on stderr (the bad ones are records 6, 7 and 8 of the shard),
    # numbered; prefetching may have run a little ahead of the batches taken.
    logged = skip_logs(capfd.readouterr().err)
    assert [n for n, _ in logged][:4 * bad] == list(range(1, 4 * bad + 1)), logged
    assert {name.rsplit(":", 1)[-1] for _, name in logged} == {"6", "7", "8"}


def test_skipped_records_are_named_first_20_then_every_100th(tmp_path, capfd):
    """Many bad records: the log stays short (numbers 1..20, then 100, 200, ...)."""
    root = str(tmp_path)
    write_image_tfrecords(root, "validation", jpegs(1), [0], num_shards=1)
    with tf.io.TFRecordWriter(f"{root}/{tfrecord.shard_name('train', 0, 1)}") as writer:
        writer.write(tfrecord.make_example(jpegs(1)[0], label=1, height=36, width=44,
                                           filename="0.jpg", synset="s", text="t")
                     .SerializeToString())
        for _ in range(59):
            writer.write(b"not an Example")
    config = DataConfig(dataset="imagenet", data_dir=root, shuffle_buffer_size=1)
    ds = build_dataset(config, "train", 3, image_size=16, count_skipped=True)
    _, _, skipped = next(iter(ds))
    assert int(skipped) == 2 * 59  # before the 2nd and 3rd copies of the one good record
    numbers = [n for n, _ in skip_logs(capfd.readouterr().err)]
    assert numbers[:21] == [*range(1, 21), 100], numbers
    assert all(n % 100 == 0 for n in numbers[21:]), numbers


def test_corrupt_eval_record_is_an_error_naming_it(corrupt_dir):
    config = DataConfig(dataset="imagenet", data_dir=corrupt_dir)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="(?s)Corrupt or undecodable record.*validation-00000-of-00001:6"):
        list(build_dataset(config, "eval", 4, image_size=16))


def truncate_last_record(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-100])


def test_truncated_training_file_is_skipped_and_counted(tmp_path, capfd):
    """A read error (not a decode error) is counted too: the file ends early every epoch."""
    root = str(tmp_path)
    files = write_image_tfrecords(root, "train", jpegs(8), [i % 2 for i in range(8)], num_shards=2)
    write_image_tfrecords(root, "validation", jpegs(2), [0, 1], num_shards=1)
    truncate_last_record(files[1])
    counts = {name: (4 if name.startswith("train") else 2) for name in os.listdir(root)}
    with open(os.path.join(root, tfrecord.METADATA_FILE), "w") as f:  # sizes without counting
        json.dump({"format": tfrecord.METADATA_FORMAT, "dataset": "imagenet", "num_classes": 2,
                   "class_names": ["a", "b"], "shard_counts": counts}, f)
    ds = build_dataset(DataConfig(dataset="imagenet", data_dir=root), "train", 2, image_size=16,
                       count_skipped=True)
    batches = list(ds.take(14))  # 28 examples: at least 3 epochs of 7 readable records
    assert len(batches) == 14 and sum(int(s) for _, _, s in batches) >= 3
    assert any("could not be read (corrupt or truncated" in name
               for _, name in skip_logs(capfd.readouterr().err))


def test_counting_records_names_a_truncated_file(tmp_path):
    files = write_image_tfrecords(str(tmp_path), "train", jpegs(4), [0, 1, 0, 1], num_shards=2)
    truncate_last_record(files[1])
    assert tfrecord.count_records(files[:1]) == 2
    with pytest.raises(ValueError, match=f"Corrupt or truncated TFRecord file {files[1]}"):
        tfrecord.count_records(files)


def test_corrupt_last_eval_record_is_an_error_too(tmp_path):
    """A failure with no good record after it (the end of the split) is still caught."""
    write_image_tfrecords(str(tmp_path), "train", jpegs(2), [0, 1], num_shards=1)
    with tf.io.TFRecordWriter(f"{tmp_path}/{tfrecord.shard_name('validation', 0, 1)}") as writer:
        for i, image in enumerate(jpegs(3)):
            image = image if i < 2 else image[:40]
            writer.write(tfrecord.make_example(image, label=1, height=36, width=44,
                                               filename=f"{i}.jpg", synset="s", text="t")
                         .SerializeToString())
    config = DataConfig(dataset="imagenet", data_dir=str(tmp_path))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="(?s)Corrupt or undecodable record.*validation-00000-of-00001:2"):
        list(build_dataset(config, "eval", 2, image_size=16))


def test_labels_outside_num_classes_are_an_error(tmp_path):
    write_image_tfrecords(str(tmp_path), "train", jpegs(3), [0, 1, 5], num_shards=1)
    write_image_tfrecords(str(tmp_path), "validation", jpegs(3), [0, 1, 5], num_shards=1)
    config = DataConfig(dataset="folder", data_dir=str(tmp_path), num_classes=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Label out of range \\[0, 3\\)"):
        list(build_dataset(config, "eval", 3, image_size=16))
    with pytest.raises(ValueError, match="number of classes .* is unknown"):
        get_dataset_info(config.replace(num_classes=None))


def test_mixing_yields_one_hot_labels_in_training_only(records_dir):
    config = DataConfig(dataset="imagenet", data_dir=records_dir, num_classes=1000,
                        mixup_alpha=0.4, cutmix_alpha=1.0)
    images, labels = next(iter(build_dataset(config, "train", 4, image_size=24)))
    assert labels.shape == (4, 1000) and labels.dtype == tf.float32
    np.testing.assert_allclose(labels.numpy().sum(1), 1.0, atol=1e-5)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    # Eval is never mixed: sparse labels, as the eval step's top-k needs.
    _, eval_y, _ = next(iter(build_dataset(config, "eval", 4, image_size=24)))
    assert eval_y.shape == (4,) and eval_y.dtype == tf.int32
    _, eval_onehot, _ = next(iter(build_dataset(config, "eval", 4, image_size=24, one_hot=True)))
    assert eval_onehot.shape == (4, 1000)
    sparse = DataConfig(dataset="imagenet", data_dir=records_dir)
    _, onehot = next(iter(build_dataset(sparse, "train", 4, image_size=24, one_hot=True)))
    assert onehot.shape == (4, 1000)
    with pytest.raises(ValueError, match="need one-hot labels"):
        build_dataset(config, "train", 4, image_size=24, one_hot=False)


def op_types(ds):
    """Every op type in a dataset's serialized graph, function library included."""
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    return {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def}


@pytest.mark.parametrize("dataset", ["imagenet", "synthetic"])
def test_pipelines_run_no_python(records_dir, dataset):
    """Multi-host TPU slices run the pipelines where there is no Python interpreter: no PyFunc
    (tf.py_function, tf.numpy_function, from_generator) in training, corrupt-record counting,
    augmentation (real data only: it is slow to build) and mixing included, or in eval."""
    source = (dict(data_dir=records_dir, augment_name="randaugment") if dataset == "imagenet"
              else dict(synthetic_train_size=16, synthetic_eval_size=8))
    config = DataConfig(dataset=dataset, mixup_alpha=0.2, cutmix_alpha=1.0, **source)
    train = build_dataset(config, "train", 4, image_size=16, count_skipped=True)
    evaluation = build_dataset(config, "eval", 4, image_size=16)
    for ds in (train, evaluation):
        ops = op_types(ds)
        assert "ParallelMapDatasetV2" in ops and "ScanDataset" in ops  # the walk sees the maps
        assert not {op for op in ops if "PyFunc" in op}


def test_deterministic_training_pipeline_repeats_exactly(records_dir):
    config = DataConfig(dataset="imagenet", data_dir=records_dir, deterministic=True, seed=5)
    runs = [[x.numpy() for x, _ in build_dataset(config, "train", 2, image_size=16).take(3)]
            for _ in range(2)]
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))


def test_synthetic_task_is_learnable_by_a_tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    config = DataConfig(synthetic_train_size=512, synthetic_eval_size=128, deterministic=True)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(0.01),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"])
    evaluation = build_dataset(config, "eval", 32, image_size=32)
    before = model.evaluate(evaluation, verbose=0, return_dict=True)["accuracy"]
    model.fit(build_dataset(config, "train", 32, image_size=32), steps_per_epoch=150, epochs=1,
              verbose=0)
    after = model.evaluate(evaluation, verbose=0, return_dict=True)["accuracy"]
    assert before < 0.3 and after > 0.6, (before, after)
