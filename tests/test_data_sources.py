"""Sources on small files in the real formats (ImageNet TFRecords, folder trees), TFDS builders
through `tfds.testing.mock_data`, synthetic data, and the errors for missing data."""
import os

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.data import DataConfig, build_dataset, get_dataset_info
from efficientnet_tf.data.testing import (
    encode,
    natural_image,
    write_image_tfrecords,
    write_tfds_metadata,
)


def jpegs(n, seed=0, size=(40, 56)):
    return [encode(natural_image(*size, seed=seed + i)) for i in range(n)]


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """2 train shards (7 examples) and 1 validation shard (5), labels = example index."""
    root = str(tmp_path_factory.mktemp("imagenet"))
    write_image_tfrecords(root, "train", jpegs(7), list(range(7)), num_shards=2)
    write_image_tfrecords(root, "validation", jpegs(5, seed=50), [10, 11, 12, 13, 14], num_shards=1)
    return root


def eval_labels(config, batch=4, image_size=16):
    labels, weights = [], []
    for _, y, w in build_dataset(config, "eval", batch, image_size=image_size):
        labels += y.numpy().tolist()
        weights += w.numpy().tolist()
    return [label for label, w in zip(labels, weights) if w > 0]


def test_imagenet_tfrecords_sizes_and_zero_based_labels(imagenet_dir):
    config = DataConfig(dataset="imagenet", data_dir=imagenet_dir)
    info = get_dataset_info(config)
    assert ((info.source, info.num_classes, info.train_size, info.eval_size)
            == ("tfrecord", 1000, 7, 5))
    assert eval_labels(config) == [10, 11, 12, 13, 14]  # stored 1-based, read 0-based, in order


def test_holdout_shards_become_the_eval_split(imagenet_dir):
    config = DataConfig(dataset="imagenet", data_dir=imagenet_dir, holdout_shards=1)
    info = get_dataset_info(config)
    assert (info.train_size, info.eval_size) == (3, 4)  # shard 0 holds examples 0, 2, 4, 6
    assert sorted(eval_labels(config)) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="holdout_shards=2 leaves no training data"):
        get_dataset_info(config.replace(holdout_shards=2))


def test_missing_or_empty_data_dir_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"data_dir '{missing}'.*does not exist"):
        get_dataset_info(DataConfig(dataset="imagenet", data_dir=missing))
    with pytest.raises(FileNotFoundError, match="is empty"):
        get_dataset_info(DataConfig(dataset="imagenet", data_dir=str(tmp_path)))
    (tmp_path / "README").write_text("not data")
    with pytest.raises(FileNotFoundError, match="--mode=prepare"):
        get_dataset_info(DataConfig(dataset="fgvc_aircraft", data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="nothing matches .*train-\\*-of-\\*"):
        get_dataset_info(DataConfig(dataset="imagenet", data_dir=str(tmp_path), tfds=False))


def test_incomplete_shard_set_is_an_error(tmp_path):
    write_image_tfrecords(str(tmp_path), "train", jpegs(4), [0, 1, 2, 3], num_shards=3)
    os.remove(tmp_path / "train-00001-of-00003")
    with pytest.raises(ValueError, match="Incomplete shard set.*found 2 files"):
        get_dataset_info(DataConfig(dataset="imagenet", data_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for split, n in (("train", 3), ("validation", 2)):
        for c, name in enumerate(["zebra", "apple", "mango"]):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                fmt = "PNG" if i % 2 else "JPEG"
                (d / f"img{i}.{'png' if fmt == 'PNG' else 'jpg'}").write_bytes(
                    encode(natural_image(30 + 4 * c, 36, seed=10 * c + i), fmt))
        (root / split / "notes.txt").write_text("ignored: not a class directory")
    return str(root)


def test_folder_tree_with_jpeg_and_png(folder_dir):
    config = DataConfig(dataset="folder", data_dir=folder_dir)
    info = get_dataset_info(config)
    assert info.class_names == ("apple", "mango", "zebra")  # class index = sorted names
    assert (info.source, info.num_classes, info.train_size, info.eval_size) == ("folder", 3, 9, 6)
    assert eval_labels(config) == [0, 0, 1, 1, 2, 2]
    images, labels = next(iter(build_dataset(config, "train", 4, image_size=24)))
    assert images.shape == (4, 24, 24, 3) and labels.dtype == tf.int32
    with pytest.raises(ValueError, match="holds out TFRecord shards.*folder source"):
        get_dataset_info(config.replace(holdout_shards=1))


def test_synthetic_is_deterministic_per_seed_and_balanced():
    config = DataConfig(synthetic_train_size=24, synthetic_eval_size=10, num_classes=5)
    first = [x.numpy() for x, _, _ in build_dataset(config, "eval", 5, image_size=16)]
    again = [x.numpy() for x, _, _ in build_dataset(config, "eval", 5, image_size=16)]
    other = [x.numpy() for x, _, _ in build_dataset(config.replace(seed=1), "eval", 5,
                                                    image_size=16)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    assert eval_labels(config, batch=5) == [i % 5 for i in range(10)]
    info = get_dataset_info(config)
    assert (info.num_classes, info.train_size, info.eval_size) == (5, 24, 10)


# TFDS: dataset_info.json as a prepared builder has it, examples from tfds.testing.mock_data.
TFDS_CASES = [
    # dataset, builder, {split: size}, expected (train_size, eval_size), num_classes
    ("cifar10", "cifar10", {"train": 9, "test": 6}, (9, 6), 10),
    ("oxford_flowers102", "oxford_flowers102", {"train": 4, "validation": 5, "test": 6},
     (9, 6), 102),
    ("food101", "food101", {"train": 8, "validation": 6}, (8, 6), 101),
    ("imagenet", "imagenet2012", {"train": 8, "validation": 6}, (8, 6), 1000),
]


@pytest.mark.parametrize("dataset, builder, splits, sizes, num_classes", TFDS_CASES)
def test_tfds_builders_without_download(tmp_path, dataset, builder, splits, sizes, num_classes):
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path)
    write_tfds_metadata(data_dir, builder, splits)
    config = DataConfig(dataset=dataset, data_dir=data_dir)  # tfds=None: auto-detected
    with tfds.testing.mock_data(num_examples=6, data_dir=data_dir,
                                policy=tfds.testing.MockPolicy.USE_FILES):
        info = get_dataset_info(config)
        assert (info.source, info.train_size, info.eval_size, info.num_classes) == (
            "tfds", *sizes, num_classes)
        assert len(eval_labels(config, batch=4)) == 6
        images, labels = next(iter(build_dataset(config, "train", 3, image_size=16)))
        assert images.shape == (3, 16, 16, 3) and labels.shape == (3,)


def test_tfds_not_prepared_is_an_error_not_a_download(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(FileNotFoundError, match="'cifar100' is not prepared.*never downloads"):
        get_dataset_info(DataConfig(dataset="cifar100", data_dir=str(tmp_path)))


def test_records_without_metadata_are_counted_once(tmp_path, monkeypatch):
    """Split sizes of TFRecords without metadata.json cost a full read; it happens once per file
    set, not at every resolve_source (info, each pipeline, each eval)."""
    from efficientnet_tf.data import sources, tfrecord

    images = [encode(natural_image(20, 24, seed=i)) for i in range(4)]
    write_image_tfrecords(str(tmp_path), "train", images, [0, 1, 0, 1], num_shards=2)
    write_image_tfrecords(str(tmp_path), "validation", images[:2], [0, 1], num_shards=1)
    reads = []
    monkeypatch.setattr(tfrecord, "count_records",
                        lambda files: reads.append(files) or len(files) * 2)
    sources._count_files.cache_clear()
    config = DataConfig(dataset="cifar10", data_dir=str(tmp_path), tfds=False)
    for _ in range(3):
        info = get_dataset_info(config)
    build_dataset(config, "eval", 2, image_size=8)
    assert (info.train_size, info.eval_size) == (4, 2) and len(reads) == 2  # train, eval
    sources._count_files.cache_clear()
