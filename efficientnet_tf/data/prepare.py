"""`prepare`: convert a dataset's official files into ImageNet-format TFRecords (`--mode=prepare`).

Stanford Cars, FGVC Aircraft and Birdsnap have no working TFDS download; `folder` converts any
class-per-directory tree. The output directory then reads like ImageNet (`train-NNNNN-of-MMMMM`,
`validation-...`; 1-based `image/class/label`), with `metadata.json` holding class names and
per-shard counts. The expected source layouts are documented in docs/datasets.md.

Shards are written to a temporary directory inside data_dir and renamed into place only when
all of them are complete; metadata.json goes last, so a directory with metadata.json is whole.
Images are checked with PIL; non-JPEG or CMYK images are re-encoded as RGB JPEG (quality 95), as
the standard ImageNet conversion does.
"""
from __future__ import annotations

import concurrent.futures
import io
import logging
import math
import os
import random
import shutil
import tempfile

import tensorflow as tf
from PIL import Image

from efficientnet_tf.config import ConfigError
from efficientnet_tf.data import tfrecord
from efficientnet_tf.data.config import PREPARE_DATASETS
from efficientnet_tf.data.sources import NUM_CLASSES, list_image_folder
from efficientnet_tf.files import write_json_atomic

EXAMPLES_PER_SHARD = 1024
log = logging.getLogger(__name__)


class SourceLayoutError(FileNotFoundError):
    """The source directory does not hold the files the dataset's layout needs."""


def _find(source_dir: str, candidates, what: str) -> str:
    """The first existing path among `candidates` (relative to source_dir, or absolute)."""
    for rel in candidates:
        path = os.path.join(source_dir, rel)
        if os.path.exists(path):
            return path
    tried = ", ".join(os.path.join(source_dir, c) for c in candidates)
    raise SourceLayoutError(f"{what} not found; looked for: {tried}. See docs/datasets.md.")


def _read_tsv(path: str) -> list[dict]:
    """Tab-separated file with a header line (the Birdsnap metadata format)."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = []
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            values = line.rstrip("\n").split("\t")
            if len(values) != len(header):
                raise ConfigError(f"{path}:{n}: {len(values)} fields, header has {len(header)}")
            rows.append(dict(zip(header, values)))
    return rows


def collect_stanford_cars(source_dir: str):
    """devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat,
    cars_train/, cars_test/. Classes in cars_meta order; the .mat labels are 1-based."""
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise ImportError("prepare --dataset=stanford_cars reads the devkit's MATLAB .mat files "
                          "with scipy: pip install scipy") from e
    import numpy as np

    meta = _find(source_dir, ["devkit/cars_meta.mat", "car_devkit/devkit/cars_meta.mat"],
                 "Stanford Cars devkit cars_meta.mat")
    devkit = os.path.dirname(meta)
    train_annos = _find(devkit, ["cars_train_annos.mat"], "cars_train_annos.mat")
    test_annos = _find(source_dir, ["cars_test_annos_withlabels.mat",
                                    os.path.join(devkit, "cars_test_annos_withlabels.mat")],
                       "cars_test_annos_withlabels.mat (the test annotations with labels)")
    class_names = [str(n) for n in np.atleast_1d(loadmat(meta, squeeze_me=True)["class_names"])]
    splits = {}
    for split, annos, image_dirs in (
            ("train", train_annos, ["cars_train/cars_train", "cars_train"]),
            ("validation", test_annos, ["cars_test/cars_test", "cars_test"])):
        image_dir = _find(source_dir, image_dirs, f"Stanford Cars {split} image directory")
        records = np.atleast_1d(loadmat(annos, squeeze_me=True)["annotations"])
        splits[split] = [(os.path.join(image_dir, str(r["fname"])), int(r["class"]) - 1)
                         for r in records]
    return class_names, splits, False


def collect_fgvc_aircraft(source_dir: str):
    """fgvc-aircraft-2013b/data: variants.txt, images_variant_{trainval,test}.txt, images/."""
    listing = _find(source_dir, ["images_variant_trainval.txt", "data/images_variant_trainval.txt",
                                 "fgvc-aircraft-2013b/data/images_variant_trainval.txt"],
                    "FGVC Aircraft images_variant_trainval.txt")
    data_dir = os.path.dirname(listing)
    rows = {}
    for split, name in (("train", "images_variant_trainval.txt"),
                        ("validation", "images_variant_test.txt")):
        path = _find(data_dir, [name], f"FGVC Aircraft {name}")
        with open(path, encoding="utf-8") as f:
            # "<image id> <variant>", and variant names may contain spaces ("Cessna 172").
            rows[split] = [tuple(line.rstrip("\n").split(" ", 1)) for line in f if line.strip()]
    variants_file = os.path.join(data_dir, "variants.txt")
    if os.path.exists(variants_file):
        with open(variants_file, encoding="utf-8") as f:
            class_names = [line.strip() for line in f if line.strip()]
    else:
        class_names = sorted({v for split_rows in rows.values() for _, v in split_rows})
    index = {c: i for i, c in enumerate(class_names)}
    image_dir = os.path.join(data_dir, "images")
    splits = {}
    for split, split_rows in rows.items():
        unknown = sorted({v for _, v in split_rows} - set(index))
        if unknown:
            raise ConfigError(f"FGVC Aircraft: variants {unknown[:3]} are not in {variants_file}.")
        splits[split] = [(os.path.join(image_dir, f"{i}.jpg"), index[v]) for i, v in split_rows]
    return class_names, splits, False


def collect_birdsnap(source_dir: str):
    """species.txt, images.txt, test_images.txt and the images the dataset's get_birdsnap.py
    downloaded into download/images/ (images that failed to download are skipped)."""
    species = _read_tsv(_find(source_dir, ["species.txt"], "Birdsnap species.txt"))
    images = _read_tsv(_find(source_dir, ["images.txt"], "Birdsnap images.txt"))
    test = {r["path"] for r in _read_tsv(_find(source_dir, ["test_images.txt"],
                                               "Birdsnap test_images.txt"))}
    image_root = _find(source_dir, ["download/images", "images"],
                       "Birdsnap image directory (get_birdsnap.py writes download/images/)")
    species = sorted(species, key=lambda r: int(r["id"]))
    ids = [int(r["id"]) for r in species]
    if ids != list(range(1, len(ids) + 1)):
        raise ConfigError("Birdsnap species.txt: ids must run 1..N without gaps.")
    splits = {"train": [], "validation": []}
    for r in images:
        split = "validation" if r["path"] in test else "train"
        splits[split].append((os.path.join(image_root, r["path"]), int(r["species_id"]) - 1))
    return [r["common"] for r in species], splits, True


def collect_folder(source_dir: str):
    class_names, files = list_image_folder(source_dir)
    return list(class_names), {"train": list(zip(*files["train"])),
                               "validation": list(zip(*files["eval"]))}, False


COLLECTORS = {"stanford_cars": collect_stanford_cars, "fgvc_aircraft": collect_fgvc_aircraft,
              "birdsnap": collect_birdsnap, "folder": collect_folder}


def encode_image(path: str):
    """(JPEG bytes, height, width); re-encodes anything that is not an RGB/gray JPEG."""
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.format == "JPEG" and image.mode in ("RGB", "L"):
            return data, image.height, image.width
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=95)
        return buf.getvalue(), image.height, image.width


def _write_shard(path, examples, class_names, skip_bad):
    """Write one shard; returns (examples written, list of skipped paths)."""
    written, skipped = 0, []
    with tf.io.TFRecordWriter(path) as writer:
        for image_path, label in examples:
            try:
                encoded, height, width = encode_image(image_path)
            except FileNotFoundError:
                if not skip_bad:
                    raise
                skipped.append(image_path)
                continue
            except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for corrupt images
                if not skip_bad:
                    raise ConfigError(f"Cannot decode image {image_path!r}: {e}") from e
                skipped.append(image_path)
                continue
            name = class_names[label]
            writer.write(tfrecord.make_example(
                encoded, label=label + 1, height=height, width=width,
                filename=os.path.basename(image_path), synset=name, text=name).SerializeToString())
            written += 1
    return written, skipped


def prepare(dataset: str, source_dir: str, data_dir: str, *, num_train_shards: int | None = None,
            num_eval_shards: int | None = None, num_workers: int = 8, overwrite: bool = False,
            seed: int = 0) -> dict:
    """Convert `source_dir` (layout per docs/datasets.md) into TFRecords in `data_dir`.

    Train examples are shuffled (by `seed`) before sharding so each shard mixes classes. Default
    shard counts: ceil(examples / 1024). Returns a summary: dataset, data_dir, num_classes,
    examples per split, and skipped images (Birdsnap only: failed downloads / corrupt files; other
    datasets treat a missing or corrupt image as an error).
    """
    if dataset not in PREPARE_DATASETS:
        raise ConfigError(f"prepare: dataset={dataset!r}; --mode=prepare converts one of "
                          f"{', '.join(PREPARE_DATASETS)} (the TFDS datasets are read directly).")
    if not source_dir or not os.path.isdir(source_dir):
        raise SourceLayoutError(f"prepare: source_dir {source_dir!r} does not exist or is not a "
                                "directory.")
    if not data_dir:
        raise ConfigError("prepare: data_dir (the output directory) is required.")
    source_dir = os.path.abspath(source_dir)
    os.makedirs(data_dir, exist_ok=True)
    existing = [n for n in os.listdir(data_dir)
                if tfrecord.SHARD_RE.match(n) or n == tfrecord.METADATA_FILE]
    if existing and not overwrite:
        raise FileExistsError(f"prepare: data_dir {data_dir!r} already holds a conversion "
                              f"({existing[0]}, ...); pass overwrite=True (--overwrite) to replace "
                              "it.")

    class_names, splits, skip_bad = COLLECTORS[dataset](source_dir)
    expected = NUM_CLASSES.get(dataset)
    if expected is not None and len(class_names) != expected:
        raise ConfigError(f"prepare {dataset}: found {len(class_names)} classes in "
                          f"{source_dir!r}, the dataset has {expected}; the class list file is "
                          "incomplete or wrong.")
    for split, examples in splits.items():
        if not examples:
            raise ConfigError(f"prepare {dataset}: no {split} examples found in {source_dir!r}.")
        bad = next(((p, label) for p, label in examples if not 0 <= label < len(class_names)), None)
        if bad:
            raise ConfigError(f"prepare {dataset}: label {bad[1] + 1} of {bad[0]!r} is outside "
                              f"1..{len(class_names)}.")
    train = list(splits["train"])
    random.Random(seed).shuffle(train)
    plan = []
    for prefix, examples, shards in ((tfrecord.TRAIN_PREFIX, train, num_train_shards),
                                     (tfrecord.EVAL_PREFIX, splits["validation"], num_eval_shards)):
        shards = shards or math.ceil(len(examples) / EXAMPLES_PER_SHARD)
        if not 1 <= shards <= len(examples):
            raise ConfigError(f"prepare: {shards} {prefix} shards for {len(examples)} examples.")
        for i in range(shards):
            plan.append((prefix, tfrecord.shard_name(prefix, i, shards), examples[i::shards]))

    tmp = tempfile.mkdtemp(prefix=".prepare-", dir=data_dir)
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, num_workers)) as pool:
            futures = [pool.submit(_write_shard, os.path.join(tmp, name), examples, class_names,
                                   skip_bad) for _, name, examples in plan]
            results = [f.result() for f in futures]
        counts = {}
        skipped = {prefix: [] for prefix in (tfrecord.TRAIN_PREFIX, tfrecord.EVAL_PREFIX)}
        totals = dict.fromkeys(skipped, 0)
        for (prefix, name, _), (n, paths) in zip(plan, results):
            counts[name] = n
            skipped[prefix].extend(paths)
            totals[prefix] += n
        empty = [name for name, n in counts.items() if n == 0]
        if empty:
            raise ConfigError(f"prepare {dataset}: shard {empty[0]} would be empty (all of its "
                              "images are missing or corrupt); check the source directory.")
        metadata = {"format": tfrecord.METADATA_FORMAT, "dataset": dataset,
                    "num_classes": len(class_names), "class_names": list(class_names),
                    "num_examples": totals, "shard_counts": counts,
                    "skipped": {k: len(v) for k, v in skipped.items()}}
        for name in existing:
            os.remove(os.path.join(data_dir, name))
        for _, name, _ in plan:
            os.replace(os.path.join(tmp, name), os.path.join(data_dir, name))
        write_json_atomic(os.path.join(data_dir, tfrecord.METADATA_FILE), metadata)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for prefix, paths in skipped.items():
        if paths:
            log.warning("prepare %s: skipped %d %s images that are missing or corrupt (first: %s)",
                        dataset, len(paths), prefix, paths[0])
    return {"dataset": dataset, "data_dir": data_dir, "num_classes": len(class_names),
            "num_examples": totals, "skipped": metadata["skipped"]}
