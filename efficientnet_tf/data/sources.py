"""Dataset sources: where the examples of each dataset live, how many there are, how to read them.

A source yields *records* `(payload, where)` — payload is undecoded (a serialized Example, encoded
image bytes, a file path or an index), `where` a string locating it for error messages — and
`decode(payload) -> (image, label)` turns one into encoded bytes or a uint8 image plus a 0-based
int32 label. Decoding is kept out of `records` so the pipeline can isolate failures per record.

Source selection (`resolve_source`):
- `synthetic`: generated on the fly (`synthetic.py`).
- `tfds=True`: the TFDS builder (`imagenet2012`, `cifar10`, ..., `cars196`), read with
  `download=False` semantics: a builder not prepared in data_dir is an error, never a download.
- `tfds=None` (auto): ImageNet-format TFRecords (`train-*-of-*`, `validation-*-of-*`) when data_dir
  holds them; otherwise the TFDS builder for imagenet, cifar10, cifar100, oxford_flowers102,
  oxford_iiit_pet and food101; the raw image tree for `folder`; and for stanford_cars,
  fgvc_aircraft and birdsnap an error asking for `--mode=prepare`.
- `tfds=False`: TFRecords (or, for `folder`, the raw tree when there are no TFRecords).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os

import tensorflow as tf

from efficientnet_tf.config import ConfigError
from efficientnet_tf.data import synthetic, tfrecord
from efficientnet_tf.data.config import PREPARE_DATASETS, TFDS_BUILDERS, DataConfig

SPLITS = ("train", "eval")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
AUTOTUNE = tf.data.AUTOTUNE

# Class counts of the paper's datasets (Table 6 / ImageNet).
NUM_CLASSES = {"imagenet": 1000, "cifar10": 10, "cifar100": 100, "oxford_flowers102": 102,
               "oxford_iiit_pet": 37, "food101": 101, "stanford_cars": 196, "fgvc_aircraft": 100,
               "birdsnap": 500}
# TFDS split names: (train, eval).
TFDS_SPLITS = {"oxford_flowers102": ("train+validation", "test"),
               "food101": ("train", "validation"), "imagenet": ("train", "validation")}
# Small enough to cache the encoded records in memory by default.
CACHE_BY_DEFAULT = ("cifar10", "cifar100", "oxford_flowers102", "oxford_iiit_pet")
# The standard ImageNet conversion: 1024 train / 128 validation shards; the reference's minival is
# the first 20 train shards.
IMAGENET_SHARDS = (1024, 128)
IMAGENET_SIZES = (1_281_167, 50_000)
IMAGENET_HOLDOUT_20 = 25_022

TFDS_HELP = ("This project never downloads data. Prepare the builder once on a machine with "
             "network access: python -c \"import tensorflow_datasets as tfds; "
             "tfds.builder('{builder}', data_dir='{data_dir}').download_and_prepare()\" "
             "(imagenet2012 needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
             "{data_dir}/downloads/manual first).")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training loop needs to know about a dataset, independent of the image size."""

    name: str
    source: str  # "tfrecord" | "tfds" | "folder" | "synthetic"
    num_classes: int
    train_size: int
    eval_size: int
    train_split: str  # human-readable: which files / TFDS split feed training
    eval_split: str
    class_names: tuple[str, ...] | None = None

    def split_size(self, split: str) -> int:
        return {"train": self.train_size, "eval": self.eval_size}[check_split(split)]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: must be one of {SPLITS}")
    return split


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How one input pipeline reads a split: its share of the data and its randomness."""

    training: bool
    pipeline_id: int = 0
    num_pipelines: int = 1
    seed: int | None = None
    deterministic: bool = True
    shuffle_buffer_size: int = 10_000
    cache: bool = False


class Source:
    info: DatasetInfo

    def records(self, split: str, options: ReadOptions) -> tf.data.Dataset:
        raise NotImplementedError

    def decode(self, payload):
        raise NotImplementedError

    @property
    def default_cache(self) -> bool:
        return self.info.name in CACHE_BY_DEFAULT


def _check_num_classes(config: DataConfig, found: int | None, where: str) -> int:
    if config.num_classes is not None:
        if found is not None and config.num_classes < found:
            raise ConfigError(f"DataConfig.num_classes={config.num_classes} is smaller than the "
                              f"{found} classes of {where}.")
        return config.num_classes
    if found is None:
        raise ConfigError(f"The number of classes of {where} is unknown "
                          f"(no {tfrecord.METADATA_FILE}); "
                          "set DataConfig.num_classes (--num_classes).")
    return found


def _finish_list(ds, n: int, options: ReadOptions):
    """Shard, shuffle and repeat an in-memory list of n records (whole-list shuffle each epoch)."""
    return _finish_records(ds, dataclasses.replace(options, shuffle_buffer_size=n), by_file=False,
                           repeated=False)


class SyntheticSource(Source):
    def __init__(self, config: DataConfig):
        if config.cache:
            raise ConfigError("cache=True does not apply to synthetic data (generated per step).")
        self.config = config
        self.num_classes = config.num_classes or 10
        self.info = DatasetInfo(
            name="synthetic", source="synthetic", num_classes=self.num_classes,
            train_size=config.synthetic_train_size, eval_size=config.synthetic_eval_size,
            train_split=f"synthetic train (seed {config.seed})",
            eval_split=f"synthetic eval (seed {config.seed})",
            class_names=tuple(f"class_{i}" for i in range(self.num_classes)))

    def records(self, split, options):
        n = self.info.split_size(split)
        ds = tf.data.Dataset.range(n).map(
            lambda i: (tf.stack([i, tf.constant(synthetic.SPLIT_OFFSETS[split], tf.int64)]),
                       tf.strings.join([f"synthetic:{split}:", tf.strings.as_string(i)])))
        return _finish_list(ds, n, options)

    def decode(self, payload):
        return synthetic.make_image(payload[0], num_classes=self.num_classes,
                                    image_size=self.config.synthetic_image_size,
                                    seed=self.config.seed, offset=payload[1])


def list_image_folder(root: str):
    """Class names and (paths, 0-based labels) per split of `ROOT/{train,validation}/<class>/*`.

    Class index = position in the sorted class directories of train/; shared by the folder source
    and `prepare --dataset=folder`.
    """
    train_dir, eval_dir = os.path.join(root, "train"), os.path.join(root, "validation")
    for d in (train_dir, eval_dir):
        if not os.path.isdir(d):
            raise FileNotFoundError(
                f"Folder dataset: {d!r} does not exist. Expected {root}/train/<class>/*.jpg and "
                f"{root}/validation/<class>/*.jpg (*.jpeg and *.png work too).")
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not classes:
        raise ConfigError(f"Folder dataset: no class directories in {train_dir!r}.")
    index = {c: i for i, c in enumerate(classes)}
    files = {}
    for split, split_dir in (("train", train_dir), ("eval", eval_dir)):
        paths, labels = [], []
        for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
            if not entry.is_dir():
                continue
            if entry.name not in index:
                raise ConfigError(f"Folder dataset: class directory {entry.path!r} has no "
                                  "counterpart under train/; every class must appear in train/.")
            for name in sorted(os.listdir(entry.path)):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(entry.path, name))
                    labels.append(index[entry.name])
        if not paths:
            raise ConfigError(f"Folder dataset: no {'/'.join(IMAGE_EXTENSIONS)} images under "
                              f"{split_dir!r}.")
        files[split] = (paths, labels)
    return tuple(classes), files


class FolderSource(Source):
    """The raw image tree of `list_image_folder`."""

    def __init__(self, config: DataConfig):
        root = config.data_dir
        classes, self.files = list_image_folder(root)
        self.info = DatasetInfo(
            name=config.dataset, source="folder",
            num_classes=_check_num_classes(config, len(classes), os.path.join(root, "train")),
            train_size=len(self.files["train"][0]), eval_size=len(self.files["eval"][0]),
            train_split=os.path.join(root, "train"), eval_split=os.path.join(root, "validation"),
            class_names=classes)

    def records(self, split, options):
        paths, labels = self.files[split]
        ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
        ds = ds.map(lambda p, label: ((p, label), p))
        return _finish_list(ds, len(paths), options)

    def decode(self, payload):
        path, label = payload
        return tf.io.read_file(path), label


class TFRecordSource(Source):
    """ImageNet-format TFRecords: `train-*` / `validation-*`, 1-based labels (docs/datasets.md)."""

    def __init__(self, config: DataConfig):
        data_dir = config.data_dir
        # A directory of validation shards alone is enough to evaluate: train_size is then 0.
        train = tfrecord.list_shards(data_dir, tfrecord.TRAIN_PREFIX)
        if not train and not tfrecord.list_shards(data_dir, tfrecord.EVAL_PREFIX):
            hint = ("Convert the source files with --mode=prepare first."
                    if config.dataset in PREPARE_DATASETS else
                    "Point data_dir at the TFRecord directory, or at a prepared TFDS data_dir.")
            raise FileNotFoundError(
                f"No ImageNet-format TFRecords in data_dir {data_dir!r}: nothing matches "
                f"'{os.path.join(data_dir, 'train-*-of-*')}' or 'validation-*-of-*'. {hint}")
        holdout = config.holdout_shards
        if holdout:
            if holdout >= len(train):
                raise ConfigError(f"holdout_shards={holdout} leaves no training data: {data_dir!r} "
                                  f"has {len(train)} train shards.")
            self.files = {"train": train[holdout:], "eval": train[:holdout]}
            splits = (f"train shards {holdout}..{len(train) - 1}",
                      f"train shards 0..{holdout - 1} (holdout)")
        else:
            evals = tfrecord.list_shards(data_dir, tfrecord.EVAL_PREFIX)
            if not evals:
                raise FileNotFoundError(
                    f"No eval TFRecords in data_dir {data_dir!r}: nothing matches "
                    f"'{os.path.join(data_dir, 'validation-*-of-*')}' (or use holdout_shards).")
            self.files = {"train": train, "eval": evals}
            splits = ("train-*", "validation-*")

        meta = tfrecord.read_metadata(data_dir)
        if meta is not None and meta["dataset"] != config.dataset:
            raise ConfigError(f"{os.path.join(data_dir, tfrecord.METADATA_FILE)} says these "
                              f"records hold {meta['dataset']!r}, not {config.dataset!r}.")
        found_classes = meta["num_classes"] if meta else NUM_CLASSES.get(config.dataset)
        sizes = self._sizes(config, meta, train)
        self.info = DatasetInfo(
            name=config.dataset, source="tfrecord",
            num_classes=_check_num_classes(config, found_classes, f"the records in {data_dir!r}"),
            train_size=sizes[0], eval_size=sizes[1], train_split=splits[0], eval_split=splits[1],
            class_names=tuple(meta["class_names"]) if meta else None)

    def _sizes(self, config, meta, all_train):
        if meta is not None:
            counts = meta["shard_counts"]
            missing = [f for f in self.files["train"] + self.files["eval"]
                       if os.path.basename(f) not in counts]
            if missing:
                raise ConfigError(f"{tfrecord.METADATA_FILE} in {config.data_dir!r} has no count "
                                  f"for {os.path.basename(missing[0])}; the directory mixes "
                                  "conversions.")
            return tuple(sum(counts[os.path.basename(f)] for f in self.files[s]) for s in SPLITS)
        standard = (config.dataset == "imagenet" and len(all_train) == IMAGENET_SHARDS[0]
                    and (config.holdout_shards or len(self.files["eval"]) == IMAGENET_SHARDS[1]))
        if standard and not config.holdout_shards:
            return IMAGENET_SIZES
        if standard:
            held = (IMAGENET_HOLDOUT_20 if config.holdout_shards == 20
                    else _count_files(tuple(self.files["eval"])))
            return IMAGENET_SIZES[0] - held, held
        return _count_files(tuple(self.files["train"])), _count_files(tuple(self.files["eval"]))

    def records(self, split, options):
        files = self.files[split]
        by_file = options.training and len(files) >= options.num_pipelines
        if by_file:
            files = files[options.pipeline_id::options.num_pipelines]

        def read(path):
            return tf.data.TFRecordDataset(path, buffer_size=8 << 20).enumerate().map(
                lambda i, r: (r, tf.strings.join([path, ":", tf.strings.as_string(i)])))

        names = tf.data.Dataset.from_tensor_slices(files)
        if options.training and not options.cache:
            names = names.shuffle(len(files), seed=options.seed,
                                  reshuffle_each_iteration=True).repeat()
        ds = names.interleave(read, cycle_length=min(len(files), 16), block_length=1,
                              num_parallel_calls=AUTOTUNE,
                              deterministic=options.deterministic or not options.training)
        # Without a cache the file names above already repeat.
        return _finish_records(ds, options, by_file, repeated=not options.cache)

    def decode(self, payload):
        return tfrecord.parse_example(payload)


def _finish_records(ds, options: ReadOptions, by_file: bool, repeated: bool):
    """Example-level sharding where files could not be split; cache, shuffle, repeat to train."""
    if not by_file and options.num_pipelines > 1:
        ds = ds.shard(options.num_pipelines, options.pipeline_id)
    if not options.training:
        return ds
    if options.cache:
        ds = ds.cache()
    ds = ds.shuffle(options.shuffle_buffer_size, seed=options.seed, reshuffle_each_iteration=True)
    return ds if repeated else ds.repeat()


@functools.lru_cache(maxsize=64)
def _count_files(files: tuple) -> int:
    log.info("Counting the records of %d TFRecord files (no %s)...", len(files),
             tfrecord.METADATA_FILE)
    return tfrecord.count_records(files)


class TFDSSource(Source):
    def __init__(self, config: DataConfig):
        import tensorflow_datasets as tfds

        self._tfds = tfds
        self.builder_name = TFDS_BUILDERS[config.dataset]
        self.builder = tfds.builder(self.builder_name, data_dir=config.data_dir)
        if not self.builder.is_prepared():
            raise FileNotFoundError(
                f"TFDS dataset {self.builder_name!r} is not prepared in data_dir "
                f"{config.data_dir!r} (looked in {self.builder.data_dir}). "
                + TFDS_HELP.format(builder=self.builder_name, data_dir=config.data_dir)
                + ("" if config.tfds
                   else " No ImageNet-format TFRecords (train-*-of-*) there either."))
        self.splits = dict(zip(SPLITS, TFDS_SPLITS.get(config.dataset, ("train", "test"))))
        sizes = [self.builder.info.splits[self.splits[s]].num_examples for s in SPLITS]
        label = self.builder.info.features["label"]
        self.info = DatasetInfo(
            name=config.dataset, source="tfds",
            num_classes=_check_num_classes(config, label.num_classes,
                                           f"TFDS {self.builder_name!r}"),
            train_size=sizes[0], eval_size=sizes[1],
            train_split=f"tfds {self.builder_name}:{self.splits['train']}",
            eval_split=f"tfds {self.builder_name}:{self.splits['eval']}",
            class_names=tuple(label.names) if label.names else None)

    def records(self, split, options):
        tfds = self._tfds
        tfds_split = self.splits[split]
        by_file = (options.training and options.num_pipelines > 1
                   and self.builder.info.splits[tfds_split].num_shards >= options.num_pipelines)
        context = (tf.distribute.InputContext(options.num_pipelines, options.pipeline_id)
                   if by_file else None)
        ds = self.builder.as_dataset(
            split=tfds_split, shuffle_files=options.training and not options.cache,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(input_context=context, shuffle_seed=options.seed,
                                        try_autocache=False))
        where = f"tfds {self.builder_name}:{tfds_split} example "
        ds = ds.enumerate().map(lambda i, ex: ((ex["image"], tf.cast(ex["label"], tf.int32)),
                                               tf.strings.join([where, tf.strings.as_string(i)])))
        return _finish_records(ds, options, by_file, repeated=False)

    def decode(self, payload):
        return payload


def resolve_source(config: DataConfig) -> Source:
    """The source `config` selects (see the module docstring for the rules)."""
    if config.dataset == "synthetic":
        return SyntheticSource(config)
    data_dir = config.data_dir
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} (dataset {config.dataset!r}) does not "
                                "exist or is not a directory.")
    if not tf.io.gfile.listdir(data_dir):
        raise FileNotFoundError(f"data_dir {data_dir!r} (dataset {config.dataset!r}) is empty.")
    has_records = (tfrecord.has_shards(data_dir)
                   or tfrecord.has_shards(data_dir, tfrecord.EVAL_PREFIX))
    use_tfds = config.tfds if config.tfds is not None else (
        not has_records and config.dataset in TFDS_BUILDERS
        and config.dataset not in PREPARE_DATASETS)
    if use_tfds:
        source = TFDSSource(config)
    elif config.dataset == "folder" and not has_records:
        source = FolderSource(config)
    else:
        return TFRecordSource(config)
    if config.holdout_shards:
        raise ConfigError(f"holdout_shards={config.holdout_shards} holds out TFRecord shards, but "
                          f"data_dir {data_dir!r} is read as a {source.info.source} source.")
    if config.cache and source.info.source == "folder":
        raise ConfigError("cache=True caches encoded records of TFRecord or TFDS sources; an image "
                          "folder is read file by file (the OS page cache already applies).")
    return source


def get_dataset_info(config: DataConfig) -> DatasetInfo:
    """num_classes, exact split sizes and class names (when known) of the configured dataset."""
    return resolve_source(config).info
