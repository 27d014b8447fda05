"""`prepare` on each official source layout in miniature, then read back as ImageNet TFRecords."""
import json

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.data import DataConfig, build_dataset, get_dataset_info, prepare
from efficientnet_tf.data.testing import encode, natural_image


def write_image(path, seed, image_format="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(natural_image(30, 40, seed=seed), image_format))


def eval_labels(dataset, data_dir):
    config = DataConfig(dataset=dataset, data_dir=str(data_dir))
    out = []
    for _, labels, weights in build_dataset(config, "eval", 4, image_size=16):
        out += [int(y) for y, w in zip(labels.numpy(), weights.numpy()) if w > 0]
    return out


def read_records(path):
    features = {"image/class/label": tf.io.FixedLenFeature([], tf.int64),
                "image/format": tf.io.FixedLenFeature([], tf.string),
                "image/class/text": tf.io.FixedLenFeature([], tf.string)}
    return [tf.io.parse_single_example(r, features) for r in tf.data.TFRecordDataset(str(path))]


def test_stanford_cars_devkit_layout(tmp_path):
    import scipy.io as scipy_io
    src = tmp_path / "cars"
    names = np.array([f"Make Model {i} 2012" for i in range(196)], dtype=object)
    (src / "devkit").mkdir(parents=True)
    scipy_io.savemat(src / "devkit" / "cars_meta.mat", {"class_names": names[None, :]})
    fields = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for split, annos_path, classes in (
            ("cars_train", src / "devkit" / "cars_train_annos.mat", [1, 196, 5, 1]),
            ("cars_test", src / "cars_test_annos_withlabels.mat", [196, 2, 3])):
        annos = np.zeros((len(classes),), dtype=fields)
        for i, c in enumerate(classes):
            annos[i] = (1, 1, 20, 20, c, f"{i + 1:05d}.jpg")
            write_image(src / split / f"{i + 1:05d}.jpg", seed=c + i)
        scipy_io.savemat(annos_path, {"annotations": annos[None, :]})
    out = tmp_path / "out"
    summary = prepare("stanford_cars", str(src), str(out))
    assert summary["num_examples"] == {"train": 4, "validation": 3}
    info = get_dataset_info(DataConfig(dataset="stanford_cars", data_dir=str(out)))
    assert (info.num_classes, info.train_size, info.eval_size) == (196, 4, 3)
    assert info.class_names[195] == "Make Model 195 2012"
    assert eval_labels("stanford_cars", out) == [195, 1, 2]  # 1-based .mat classes -> 0-based
    stored = read_records(out / "validation-00000-of-00001")
    assert [int(r["image/class/label"]) for r in stored] == [196, 2, 3]  # 1-based on disk
    assert stored[0]["image/class/text"].numpy().decode() == "Make Model 195 2012"


def test_fgvc_aircraft_variant_lists(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    variants = [f"Variant {i}" for i in range(99)] + ["Cessna 172"]  # names with spaces
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    (data / "images_variant_trainval.txt").write_text(
        "0034309 Cessna 172\n0034958 Variant 0\n1025794 Variant 7\n")
    (data / "images_variant_test.txt").write_text("0062765 Variant 7\n0064891 Cessna 172\n")
    for i, image_id in enumerate(["0034309", "0034958", "1025794", "0062765", "0064891"]):
        write_image(data / "images" / f"{image_id}.jpg", seed=i)
    out = tmp_path / "out"
    prepare("fgvc_aircraft", str(tmp_path), str(out), num_train_shards=2)
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "train-00000-of-00002", "train-00001-of-00002",
        "validation-00000-of-00001"]
    info = get_dataset_info(DataConfig(dataset="fgvc_aircraft", data_dir=str(out)))
    assert (info.num_classes, info.train_size, info.eval_size) == (100, 3, 2)
    assert eval_labels("fgvc_aircraft", out) == [7, 99]


def test_birdsnap_skips_images_that_failed_to_download(tmp_path):
    species = ["id\tcommon\tscientific\tdir"] + [
        f"{i}\tBird {i}\tAvis {i}\tBird_{i}" for i in range(1, 501)]
    (tmp_path / "species.txt").write_text("\n".join(species) + "\n")
    rows = [("Bird_1/1.jpg", 1), ("Bird_1/2.jpg", 1), ("Bird_500/3.jpg", 500),
            ("Bird_7/4.jpg", 7), ("Bird_7/5.jpg", 7), ("Bird_2/6.jpg", 2)]
    header = "url\tmd5\tpath\tspecies_id\tbb_x1\tbb_y1\tbb_x2\tbb_y2"
    (tmp_path / "images.txt").write_text("\n".join(
        [header] + [f"http://x/{p}\tmd5\t{p}\t{s}\t1\t1\t9\t9" for p, s in rows]) + "\n")
    (tmp_path / "test_images.txt").write_text("path\nBird_7/5.jpg\nBird_2/6.jpg\n")
    for i, (path, _) in enumerate(rows):
        if path != "Bird_1/2.jpg":  # failed download
            write_image(tmp_path / "download" / "images" / path, seed=i)
    (tmp_path / "download" / "images" / "Bird_500" / "3.jpg").write_bytes(b"<html>404</html>")
    out = tmp_path / "out"
    summary = prepare("birdsnap", str(tmp_path), str(out))
    assert summary["num_examples"] == {"train": 2, "validation": 2}
    assert summary["skipped"] == {"train": 2, "validation": 0}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"][499] == "Bird 500" and meta["skipped"]["train"] == 2
    assert eval_labels("birdsnap", out) == [6, 1]


def test_folder_converts_png_to_jpeg_and_reads_back(tmp_path):
    for split in ("train", "validation"):
        for c, name in enumerate(["cat", "dog"]):
            write_image(tmp_path / "src" / split / name / "a.png", seed=c, image_format="PNG")
            write_image(tmp_path / "src" / split / name / "b.JPG", seed=c + 5)
    out = tmp_path / "out"
    prepare("folder", str(tmp_path / "src"), str(out))
    assert ({r["image/format"].numpy() for r in read_records(out / "train-00000-of-00001")}
            == {b"JPEG"})
    info = get_dataset_info(DataConfig(dataset="folder", data_dir=str(out)))
    assert info.source == "tfrecord" and info.class_names == ("cat", "dog")
    assert sorted(eval_labels("folder", out)) == [0, 0, 1, 1]
    with pytest.raises(FileExistsError, match="already holds a conversion"):
        prepare("folder", str(tmp_path / "src"), str(out))
    prepare("folder", str(tmp_path / "src"), str(out), overwrite=True, num_eval_shards=2)
    assert sorted(p.name for p in out.iterdir())[-2:] == ["validation-00000-of-00002",
                                                           "validation-00001-of-00002"]
    with pytest.raises(ValueError, match="hold 'folder', not 'birdsnap'"):
        get_dataset_info(DataConfig(dataset="birdsnap", data_dir=str(out)))


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="source_dir .* does not exist"):
        prepare("birdsnap", str(tmp_path / "missing"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="images_variant_trainval.txt not found"):
        prepare("fgvc_aircraft", str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "species.txt").write_text("id\tcommon\tscientific\tdir\n1\tA\tB\tA\n")
    (tmp_path / "images.txt").write_text("url\tmd5\tpath\tspecies_id\n")
    (tmp_path / "test_images.txt").write_text("path\n")
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="found 1 classes .* the dataset has 500"):
        prepare("birdsnap", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="converts one of"):
        prepare("cifar10", str(tmp_path), str(tmp_path / "out"))
