"""Predict mode: labels, output schema, Keras vs SavedModel paths, bad files, a training run."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import export, predict
from efficientnet_tf.data.preprocessing import preprocess_for_eval
from efficientnet_tf.model import build_model

from conftest import TINY, run_main

SIZE = TINY["resolution"]


def tiny_model(classes):
    return build_model(model_name="efficientnet-b0", classes=classes, **TINY)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for name, shape, encode in (("a.jpg", (48, 64, 3), tf.io.encode_jpeg),
                                ("b.png", (40, 40, 3), tf.io.encode_png),
                                ("c.jpeg", (70, 50, 3), tf.io.encode_jpeg)):
        path = root / name
        path.write_bytes(encode(rng.integers(0, 256, shape, dtype=np.uint8)).numpy())
        paths.append(str(path))
    return paths


def test_imagenet_resource():
    classes = predict.imagenet_classes()
    assert len(classes) == 1000
    synsets = [s for s, _ in classes]
    assert synsets == sorted(synsets) and len(set(synsets)) == 1000
    assert classes[0] == ("n01440764", "tench, Tinca tinca")
    assert classes[281] == ("n02123045", "tabby, tabby cat")
    assert classes[999][0] == "n15075141"


def test_class_labels():
    imagenet = predict.class_labels(1000)
    assert imagenet[281] == {"label": "tabby, tabby cat", "synset": "n02123045"}
    # TFDS imagenet2012 names its classes by synset: shown as ImageNet names too.
    synsets = [s for s, _ in predict.imagenet_classes()]
    assert predict.class_labels(1000, synsets)[1]["label"].startswith("goldfish")
    assert predict.class_labels(3, ["cat", "dog", "eel"])[2] == {"label": "eel"}
    assert predict.class_labels(3)[1] == {"label": "class_1"}
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        predict.class_labels(3, ["cat", "dog"])


def test_predict_schema_and_values(image_files):
    model = tiny_model(5)
    names = ["ant", "bee", "cat", "dog", "eel"]
    result = predict.predict_images(image_files, model=model, top_k=3, class_names=names)
    assert list(result) == ["predictions"]
    assert [p["image"] for p in result["predictions"]] == image_files
    for path, entry in zip(image_files, result["predictions"]):
        assert list(entry) == ["image", "top_k"] and len(entry["top_k"]) == 3
        for item in entry["top_k"]:
            assert set(item) == {"index", "label", "probability"}
            assert isinstance(item["index"], int) and isinstance(item["probability"], float)
            assert item["label"] == names[item["index"]]
        probs = [item["probability"] for item in entry["top_k"]]
        assert probs == sorted(probs, reverse=True)
        with open(path, "rb") as f:
            image = preprocess_for_eval(tf.constant(f.read()), SIZE)
        expected = model(image[None], training=False).numpy()[0]
        assert entry["top_k"][0]["index"] == int(expected.argmax())
        np.testing.assert_allclose(probs, np.sort(expected)[::-1][:3], atol=1e-6)
    json.dumps(result)  # --output_json writes exactly this
    lines = predict.format_predictions(result).splitlines()
    first = result["predictions"][0]["top_k"][0]
    assert lines[0] == image_files[0]
    assert lines[1] == f"  1. {first['probability']:.4f}  [{first['index']}] {first['label']}"
    assert len(lines) == 3 * 4


def test_imagenet_labels_and_saved_model_path(image_files, tmp_path):
    model = tiny_model(1000)
    export_dir = str(tmp_path / "export")
    export.export_saved_model(model, export_dir)
    from_keras = predict.predict_images(image_files, model=model, top_k=5)
    from_saved = predict.predict_images(image_files, saved_model_dir=export_dir, top_k=5)
    for a, b in zip(from_keras["predictions"], from_saved["predictions"]):
        assert [i["index"] for i in a["top_k"]] == [i["index"] for i in b["top_k"]]
        np.testing.assert_allclose([i["probability"] for i in a["top_k"]],
                                   [i["probability"] for i in b["top_k"]], atol=1e-5)
    top = from_saved["predictions"][0]["top_k"][0]
    synset, name = predict.imagenet_classes()[top["index"]]
    assert top["synset"] == synset and top["label"] == name
    assert synset in predict.format_predictions(from_saved)
    with pytest.raises(ValueError, match="fixed inside a SavedModel"):
        predict.predict_images(image_files, saved_model_dir=export_dir, image_size=64)
    with pytest.raises(FileNotFoundError, match="nope"):
        predict.predict_images(image_files, saved_model_dir=os.path.join(export_dir, "nope"))
    foreign = tf.Module()
    foreign.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None])])
    tf.saved_model.save(foreign, str(tmp_path / "foreign"), signatures=foreign.f)
    with pytest.raises(ValueError, match="image_bytes input"):
        predict.predict_images(image_files, saved_model_dir=str(tmp_path / "foreign"))


def test_bad_image_files_are_named(image_files, tmp_path):
    model = tiny_model(3)
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predict.predict_images([image_files[0], missing], model=model)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png.*empty file"):
        predict.predict_images([str(empty)], model=model)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(open(image_files[0], "rb").read()[:60])
    with pytest.raises(ValueError, match="corrupt.jpg.*cannot be decoded"):
        predict.predict_images([str(corrupt)], model=model)
    with pytest.raises(ValueError, match="exactly one of model or saved_model_dir"):
        predict.predict_images(image_files)


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run") / "model"
    run_main("--mode=train", "--dataset=synthetic", "--model=efficientnet-b0",
             "--width_coefficient=0.25", "--depth_coefficient=0.2", f"--image_size={SIZE}",
             "--train_batch_size=8", "--train_steps=2", "--steps_per_eval=2",
             "--steps_per_loop=1", "--synthetic_train_size=32", "--synthetic_eval_size=16",
             f"--model_dir={model_dir}")
    return str(model_dir)


def test_export_and_predict_from_training_run(training_run, image_files, tmp_path):
    """Run last: it needs the training engine (a real 2-step run, EMA weights exported)."""
    from efficientnet_tf.run_dir import load_trained_model

    model = load_trained_model(training_run)
    names = predict.class_names_for_run(training_run)
    assert list(names) == [f"class_{i}" for i in range(10)]  # synthetic: 10 classes
    export_dir = str(tmp_path / "export")
    export.export_saved_model(model, export_dir, class_names=names)
    loaded = tf.saved_model.load(export_dir).signatures[export.IMAGES_SIGNATURE]
    x = tf.random.stateless_uniform([2, SIZE, SIZE, 3], seed=[0, 1], maxval=255.0)
    got = loaded(images=x)["probabilities"].numpy()
    assert np.abs(got - model(x, training=False).numpy()).max() <= 1e-5
    result = predict.predict_images(image_files[:1], saved_model_dir=export_dir, top_k=2)
    assert result["predictions"][0]["top_k"][0]["label"].startswith("class_")
