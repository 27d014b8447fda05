"""Published checkpoints and the preprocessing a converted file records: `--mode=convert
--list`, `--published`, NoisyStudent L2-475 naming, and eval/export/predict fed by the record
(EdgeTPU's background class included) unless flags override it, and say so."""
import json

import h5py
import keras
import numpy as np
import pytest

from efficientnet_tf import build_model, get_model_config
from efficientnet_tf import weights as W
from efficientnet_tf.config import ConfigError
from efficientnet_tf.data import DataConfig, build_dataset
from efficientnet_tf.data.testing import natural_image
from efficientnet_tf.predict import class_labels
from efficientnet_tf.published import CHECKPOINTS, get_published

from conftest import REPO_ROOT, run_main
from test_weights import _official_names, _randomize, _write_tf1_checkpoint


def _photos(n, size, seed=0):
    return np.stack([natural_image(size, size, seed=seed + i)
                     for i in range(n)]).astype("float32")


def _with_image_statistics(model, size):
    """BN statistics of real images (one batch), so a random network's logits depend on the
    image: with the initial statistics they are nearly constant."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(_photos(16, size, seed=100), training=True)
    return model


def test_list_names_every_published_checkpoint():
    out = run_main("--mode=convert", "--list").stdout
    for c in CHECKPOINTS.values():
        row = next(line for line in out.splitlines() if line.startswith(c.name + " "))
        assert c.model in row and f"{c.top_1:g}" in row, row
    l2 = next(line for line in out.splitlines() if line.startswith("noisy_student/"
                                                                     "efficientnet-l2-475 "))
    assert " 475 " in l2 and "88.2%" in l2
    advprop = next(line for line in out.splitlines() if line.startswith("advprop/"
                                                                          "efficientnet-b0 "))
    assert "[-1, 1]" in advprop and "77.6%" in advprop
    edgetpu = next(line for line in out.splitlines() if line.startswith("edgetpu/"))
    assert "bilinear" in edgetpu and "1001 (background 0)" in edgetpu
    assert "--mode=convert --list" in (REPO_ROOT / "README.md").read_text()


def test_noisy_student_l2_475_naming(tmp_path):
    """L2's depth (88 blocks under the scope `efficientnet-l2`) at a small width, converted as
    the published L2-475: the file records 475 px."""
    name = "noisy_student/efficientnet-l2-475"
    config = get_published(name).model_config(width_coefficient=0.1, num_classes=5)
    source = build_model(config=config, classifier_activation=None)
    _randomize(W.weight_layers(source).values(), seed=4)
    names = _official_names(source)
    assert "blocks_87/tpu_batch_normalization_2/gamma" in names
    prefix = _write_tf1_checkpoint(str(tmp_path / "noisy_student_efficientnet-l2_475" /
                                       "model.ckpt"), "efficientnet-l2", names)
    out = W.convert(None, prefix, tmp_path / "l2.weights.h5", config=config, published=name)
    record = W.read_record(out)
    assert record["published"] == name and record["published_top_1"] == 88.2
    pre = record["preprocessing"]
    assert (pre["resolution"], pre["crop_fraction"], pre["resize_method"], pre["num_classes"],
            pre["input_range"]) == (475, 0.875, "bicubic", 5, "mean/stddev")
    assert record["model_config"] == config
    converted = build_model(config=config, classifier_activation=None, weights=out)
    x = _photos(2, 475)
    np.testing.assert_allclose(converted(x, training=False), source(x, training=False),
                               atol=1e-4)


@pytest.fixture(scope="module")
def edgetpu_file(tmp_path_factory):
    """A converted-style EdgeTPU-S (small) with a background class: 11 outputs, label + 1."""
    keras.utils.set_random_seed(5)
    config = get_model_config("efficientnet-edgetpu-S", width_coefficient=0.25,
                              depth_coefficient=0.3, resolution=32, num_classes=11,
                              label_offset=1)
    model = _with_image_statistics(build_model(config=config, classifier_activation=None), 32)
    path = tmp_path_factory.mktemp("edgetpu") / "edgetpu-s.weights.h5"
    W.save_weights_atomic(model, path, record=W.preprocessing_record(config))
    return path, config


def test_background_class_eval_export_predict(edgetpu_file, tmp_path):
    path, config = edgetpu_file
    # Synthetic data has 10 classes; the model 11 with class 0 background: eval shifts labels.
    proc = run_main("--mode=eval", f"--weights={path}", "--synthetic_eval_size=64",
                    "--eval_batch_size=32", f"--model_dir={tmp_path / 'eval'}")
    assert ("efficientnet-edgetpu-S at 32 px, center crop 0.875, bilinear resize, input "
            "(x - 127) / 128, 11 classes (class 0 is background); as recorded.") in proc.stdout
    result = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    model = build_model(config=config, classifier_activation=None, weights=str(path))
    data = DataConfig(dataset="synthetic", synthetic_eval_size=64, num_classes=10,
                      resize_method="bilinear")
    correct = total = 0
    for images, labels, mask in build_dataset(data, "eval", 32, image_size=32):
        predicted = model(images, training=False).numpy().argmax(-1)
        correct += float(np.sum((predicted == labels.numpy() + 1) * mask.numpy()))
        total += float(np.sum(mask.numpy()))
    assert result["num_examples"] == total == 64 and result["top_1"] == correct / total

    export_dir = tmp_path / "export"
    run_main("--mode=export", f"--weights={path}", f"--export_dir={export_dir}")
    info = json.loads((export_dir / "assets.extra" / "export_info.json").read_text())
    assert (info["label_offset"], info["resize_method"], info["num_classes"],
            info["input_normalization"]) == (1, "bilinear", 11,
                                             {"mean": [127.0] * 3, "stddev": [128.0] * 3})
    labels = class_labels(11, None, 1)
    assert labels[0] == {"label": "background"} and labels[1] == {"label": "class_0"}
    assert class_labels(1001, None, 1)[1]["synset"] == "n01440764"  # ImageNet label 0, tench


def test_explicit_flags_override_the_record_and_say_so(edgetpu_file, tmp_path):
    path, _ = edgetpu_file
    proc = run_main("--mode=eval", f"--weights={path}", "--image_size=40",
                    "--resize_method=bicubic", "--synthetic_eval_size=32",
                    "--eval_batch_size=32", f"--model_dir={tmp_path / 'eval'}")
    assert "--image_size=40 overrides the recorded 32" in proc.stdout
    assert "--resize_method=bicubic overrides the recorded bilinear." in proc.stdout
    assert "efficientnet-edgetpu-S at 40px" in proc.stdout
    proc = run_main("--mode=eval", f"--weights={path}", "--model=efficientnet-b0",
                    f"--model_dir={tmp_path / 'eval2'}", check=False)
    assert proc.returncode == 2
    assert (f"error: --model=efficientnet-b0: --weights={path} holds efficientnet-edgetpu-S"
            in proc.stderr)
    proc = run_main("--mode=convert", "--published=advprop/efficientnet-b0", "--image_size=64",
                    f"--ckpt_path={tmp_path}", f"--output={tmp_path / 'x.weights.h5'}",
                    check=False)
    assert proc.returncode == 2 and "drop --image_size" in proc.stderr
    proc = run_main("--mode=convert", "--published=advprop/efficientnet-b9",
                    f"--ckpt_path={tmp_path}", f"--output={tmp_path / 'x.weights.h5'}",
                    check=False)
    assert proc.returncode == 2 and "--published=advprop/efficientnet-b9: unknown" in proc.stderr


def test_a_contradictory_record_is_refused(edgetpu_file, tmp_path):
    path, config = edgetpu_file
    edited = tmp_path / "edited.weights.h5"
    edited.write_bytes(path.read_bytes())
    with h5py.File(edited, "a") as f:
        record = json.loads(f.attrs[W.RECORD_ATTRIBUTE])
        record["preprocessing"]["resolution"] = 224
        f.attrs[W.RECORD_ATTRIBUTE] = json.dumps(record)
    with pytest.raises(ConfigError, match=r"contradicts its model config in \['resolution'\]"):
        W.read_record(edited)
    assert W.read_record(path)["model_config"] == config
    assert W.read_record(tmp_path / "missing.weights.h5") is None


def test_published_convert_records_the_family(tmp_path):
    """--published picks the network and its input scaling: AdvProp B0 at full size."""
    source = build_model(model_name="efficientnet-b0", classifier_activation=None)
    prefix = _write_tf1_checkpoint(str(tmp_path / "advprop-b0" / "model.ckpt-1"),
                                   "efficientnet-b0", _official_names(source))
    out = tmp_path / "advprop-b0.weights.h5"
    proc = run_main("--mode=convert", "--published=advprop/efficientnet-b0",
                    f"--ckpt_path={prefix}", f"--output={out}")
    assert (f"Wrote {out}: efficientnet-b0 at 224 px, center crop 0.875, bicubic resize, input "
            "[-1, 1] (x * 2/255 - 1), 1000 classes.") in proc.stdout
    record = W.read_record(out)
    assert record["model_config"].advprop_preprocessing
    assert (record["published"], record["published_top_1"]) == ("advprop/efficientnet-b0", 77.6)


def test_fine_tuning_keeps_the_background_class(edgetpu_file, tmp_path):
    """Training from a 1001-style file on 10 dataset classes keeps its 11-way head: integer
    labels shift by one, mixup's one-hot targets get a zero background column."""
    path, _ = edgetpu_file
    proc = run_main("--mode=train", f"--weights={path}", "--mixup_alpha=0.2",
                    "--synthetic_train_size=16", "--train_batch_size=8", "--train_steps=2",
                    f"--model_dir={tmp_path / 'run'}")
    assert "11 classes (class 0 is background); as recorded." in proc.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert (config["name"], config["num_classes"], config["label_offset"]) == (
        "efficientnet-edgetpu-S", 11, 1)
