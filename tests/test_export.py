"""Export: BN folding, the serving SavedModel, TF-Hub reusable SavedModels, TFLite."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import export
from efficientnet_tf.data import DataConfig
from efficientnet_tf.data.preprocessing import preprocess_for_eval
from efficientnet_tf.export.folding import FoldedNetwork
from efficientnet_tf.model import build_model
from efficientnet_tf.training.regularization import l2_loss

from conftest import TINY

SIZE = TINY["resolution"]
CLASSES = 7


def randomize_batch_norm(model, seed=0):
    """Non-trivial BN statistics and affine terms, so folding has something to fold."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        if v.path.endswith(("moving_variance", "gamma")):
            v.assign(rng.uniform(0.5, 2.0, v.shape))
        elif v.path.endswith(("moving_mean", "beta")):
            v.assign(rng.normal(0.0, 0.5, v.shape))


def tiny_model(**kwargs):
    kwargs = {"model_name": "efficientnet-b0", "classes": CLASSES, **TINY, **kwargs}
    model = build_model(**kwargs)
    randomize_batch_norm(model)
    return model


def images(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32"))


def encoded_images():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (64, 40, 3), dtype=np.uint8)
    return [tf.io.encode_jpeg(a).numpy(), tf.io.encode_png(b).numpy()]


@pytest.fixture(scope="module")
def classifier():
    return tiny_model()


@pytest.fixture(scope="module")
def serving_dir(classifier, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serving") / "model")
    export.export_saved_model(classifier, path, class_names=[f"c{i}" for i in range(CLASSES)])
    return path


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(classifier_activation=None),
    dict(include_top=False, pooling="avg"),
    dict(model_name="efficientnet-lite0"),
], ids=["softmax", "logits", "backbone", "lite"])
def test_folded_network_matches_keras(kwargs):
    model = tiny_model(**kwargs)
    folded = export.fold_model(model)
    x = images(4)
    expected = model(x, training=False).numpy()
    assert np.abs(folded(x).numpy() - expected).max() <= 1e-5
    assert not folded.trainable_variables, "the folded network is inference-only"
    # No BatchNormalization survives: one kernel and one bias per folded conv/dense.
    assert len(folded.variables) < len(model.variables)


@pytest.mark.parametrize("size", [31, 32, 33])
def test_folded_stem_is_exact_at_the_border(size):
    """The input normalization folds into the stem by padding with the raw value that normalizes
    to zero; the stem output must match Keras' everywhere, the padded last row/column included."""
    model = tiny_model(input_shape=(size, size, 3))
    stem = keras.Model(model.inputs, model.get_layer("stem_activation").output)
    x = tf.constant(np.random.default_rng(size).uniform(0, 255, (2, size, size, 3)), tf.float32)
    expected = stem(x, training=False).numpy()
    got = export.fold_model(model).steps[0](x).numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
    assert np.abs(got[:, -1] - expected[:, -1]).max() <= 1e-5 * np.abs(expected).max()


def test_fold_rejects_foreign_layers():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.LayerNormalization()(x)
    with pytest.raises(ValueError, match="LayerNormalization"):
        FoldedNetwork(keras.Model(inputs, x))


def test_serving_signatures_match_keras(classifier, serving_dir):
    loaded = tf.saved_model.load(serving_dir)
    x = images()
    out = loaded.signatures[export.IMAGES_SIGNATURE](images=x)
    expected = classifier(x, training=False).numpy()
    assert np.abs(out["probabilities"].numpy() - expected).max() <= 1e-5
    assert out["probabilities"].dtype == tf.float32 and out["classes"].dtype == tf.int64
    np.testing.assert_array_equal(out["classes"].numpy(), expected.argmax(-1))
    assert out["top_k_classes"].shape == (3, 5) and out["top_k_classes"].dtype == tf.int64
    np.testing.assert_allclose(
        out["top_k_probabilities"].numpy(),
        np.take_along_axis(out["probabilities"].numpy(), out["top_k_classes"].numpy(), -1))

    encoded = encoded_images()
    out = loaded.signatures[export.SERVING_SIGNATURE](image_bytes=tf.constant(encoded))
    preprocessed = tf.stack([preprocess_for_eval(tf.constant(b), SIZE) for b in encoded])
    expected = classifier(preprocessed, training=False).numpy()
    assert out["probabilities"].shape == (2, CLASSES)
    assert np.abs(out["probabilities"].numpy() - expected).max() <= 1e-5

    info = export.read_export_info(serving_dir)
    assert info["image_size"] == SIZE and info["class_names"][3] == "c3"
    assert info["batch_norm_folded"] is True


def test_saved_model_cli_lists_signatures(serving_dir):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", serving_dir, "--all"], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['serving_images']",
                 "inputs['image_bytes']", "inputs['images']", "DT_STRING",
                 f"shape: (-1, {SIZE}, {SIZE}, 3)", "outputs['probabilities']",
                 "outputs['classes']", "outputs['top_k_classes']",
                 "outputs['top_k_probabilities']"):
        assert text in proc.stdout, text


@pytest.mark.parametrize("bad, message", [
    (b"", "empty string"),
    (b"definitely not an image", "not a JPEG, PNG"),
    ("truncated", "Invalid JPEG data"),
])
def test_bad_image_is_invalid_argument(serving_dir, bad, message):
    good = encoded_images()[0]
    if bad == "truncated":
        bad = good[:40]
    serve = tf.saved_model.load(serving_dir).signatures[export.SERVING_SIGNATURE]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as info:
        serve(image_bytes=tf.constant([good, bad]))
    if message != "Invalid JPEG data":
        assert "batch indices] [1]" in info.value.message  # names the bad element


def test_existing_export_is_refused_then_replaced(classifier, tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_saved_model(classifier, str(path))
    assert (path / "keep.txt").read_text() == "old"
    # overwrite=True replaces it whole, here with the unfolded Keras graph.
    export.export_saved_model(classifier, str(path), fold_batch_norm=False, overwrite=True)
    assert not (path / "keep.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["model"]
    out = tf.saved_model.load(str(path)).signatures[export.IMAGES_SIGNATURE](images=images())
    expected = classifier(images(), training=False).numpy()
    assert np.abs(out["probabilities"].numpy() - expected).max() <= 1e-5
    assert export.read_export_info(str(path))["batch_norm_folded"] is False


def test_interrupted_export_leaves_nothing(classifier, tmp_path, monkeypatch):
    def save_then_die(obj, export_dir, **kwargs):
        os.makedirs(os.path.join(export_dir, "variables"))
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"half a graph")
        raise KeyboardInterrupt("killed mid-export")

    monkeypatch.setattr(tf.saved_model, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(classifier, str(tmp_path / "model"))
    assert os.listdir(tmp_path) == []

    # Replacing an existing export: the old one stays intact when the new one fails.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"previous export")
    with pytest.raises(KeyboardInterrupt):
        export.export_hub(classifier, str(tmp_path / "model"), overwrite=True)
    assert os.listdir(tmp_path) == ["model"]
    assert (tmp_path / "model" / "saved_model.pb").read_bytes() == b"previous export"


def test_export_rejects_bad_arguments(classifier, tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        export.export_saved_model(classifier, str(tmp_path / "a"), class_names=["x"])
    with pytest.raises(ValueError, match="image_size=64"):
        export.export_saved_model(classifier, str(tmp_path / "a"), image_size=64)
    backbone = tiny_model(include_top=False, pooling="avg")
    with pytest.raises(ValueError, match="include_top=True"):
        export.export_saved_model(backbone, str(tmp_path / "a"))
    sigmoid = tiny_model(classifier_activation="sigmoid")
    with pytest.raises(ValueError, match="sigmoid"):
        export.export_saved_model(sigmoid, str(tmp_path / "a"))
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ TF-Hub format


@pytest.fixture(scope="module")
def hub_dir(classifier, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hub") / "hub")
    paths = export.export_hub(classifier, path)
    assert sorted(os.listdir(path)) == ["classification", "feature_vector"]
    assert paths["feature_vector"] == os.path.join(path, "feature_vector")
    return path


def test_hub_call_equals_keras(classifier, hub_dir):
    x01 = images() / 255.0
    features = keras.Model(classifier.inputs, classifier.get_layer("avg_pool").output)
    fv = tf.saved_model.load(os.path.join(hub_dir, "feature_vector"))
    np.testing.assert_allclose(fv(x01).numpy(), features(x01 * 255.0).numpy(), atol=1e-5)
    np.testing.assert_allclose(fv(x01, training=False).numpy(), fv(x01).numpy())
    cls = tf.saved_model.load(os.path.join(hub_dir, "classification"))
    logits = cls(x01)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(),
                               classifier(x01 * 255.0, training=False).numpy(), atol=1e-5)
    serve = cls.signatures["serving_default"](images=x01)
    np.testing.assert_allclose(serve["logits"].numpy(), logits.numpy(), rtol=1e-5, atol=1e-5)
    assert "feature_vector" in fv.signatures["serving_default"](images=x01)
    assert cls(x01, training=True).shape == (3, CLASSES)  # updates the BN moving averages

    # Reusable SavedModel attributes: variables, trainable_variables, regularization_losses.
    assert len(cls.variables) == len(classifier.variables)
    assert len(cls.trainable_variables) == len(classifier.trainable_variables)
    assert len(fv.trainable_variables) == len(classifier.trainable_variables) - 2  # no dense
    np.testing.assert_allclose(cls.regularization_losses[0]().numpy(),
                               l2_loss(classifier, 1e-5).numpy(), rtol=1e-5)
    info = export.read_export_info(os.path.join(hub_dir, "feature_vector"))
    assert "[0, 1]" in info["input"]


def test_hub_tfsm_layer_fine_tunes(hub_dir):
    layer = keras.layers.TFSMLayer(os.path.join(hub_dir, "feature_vector"),
                                   call_endpoint="__call__",
                                   call_training_endpoint="call_training")
    assert layer.trainable_weights
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(layer(inputs)))
    x = (images(8) / 255.0).numpy()
    y = np.arange(8) % 3
    before = layer(x).numpy()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = layer(x).numpy()
    assert np.abs(after - before).max() > 1e-4


def test_hub_keras_layer_trains_in_tf_keras(hub_dir):
    hub = pytest.importorskip("tensorflow_hub", reason="optional: pip install tensorflow-hub")
    tf_keras = pytest.importorskip("tf_keras", reason="optional: pip install tf-keras")
    layer = hub.KerasLayer(os.path.join(hub_dir, "feature_vector"), trainable=True)
    model = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)), layer,
                                 tf_keras.layers.Dense(3)])
    assert len(model.losses) == 1  # the SavedModel's regularization loss
    x = (images(8) / 255.0).numpy()
    y = np.arange(8) % 3
    before = [v.numpy().copy() for v in layer.trainable_weights]
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = sum(np.abs(v.numpy() - b).max() > 0 for v, b in zip(layer.trainable_weights, before))
    assert changed > len(before) // 2


# ------------------------------------------------------------------------------------ TFLite


def run_tflite(path, x):
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in np.asarray(x):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(results), inp, out


def test_tflite_float32_matches_keras(classifier, tmp_path):
    path = export.export_tflite(classifier, str(tmp_path / "model.tflite"))
    x = images()
    got, inp, _ = run_tflite(path, x)
    assert inp["dtype"] == np.float32 and tuple(inp["shape"]) == (1, SIZE, SIZE, 3)
    # Stated tolerance: float32 rounding only (the same folded graph), 1e-5 on probabilities.
    assert np.abs(got - classifier(x, training=False).numpy()).max() <= 1e-5
    with pytest.raises(FileExistsError):
        export.export_tflite(classifier, path)


def test_tflite_quantized(classifier, tmp_path):
    x = images(4)
    expected = classifier(x, training=False).numpy()
    dynamic = export.export_tflite(classifier, str(tmp_path / "dynamic.tflite"),
                                   quantize="dynamic")
    got, _, _ = run_tflite(dynamic, x)
    assert np.abs(got - expected).max() < 0.1
    data = DataConfig(dataset="synthetic", synthetic_train_size=16, synthetic_eval_size=8)
    calibration = list(export.calibration_images(data, SIZE, num_images=12, batch_size=8))
    assert len(calibration) == 12 and calibration[0].shape == (SIZE, SIZE, 3)
    int8 = export.export_tflite(classifier, str(tmp_path / "int8.tflite"), quantize="int8",
                                representative_images=[np.stack(calibration)])  # one batch
    got, inp, out = run_tflite(int8, x)
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=0.05)
    interpreter = tf.lite.Interpreter(model_path=int8)
    kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.int8 in kinds
    assert os.path.getsize(int8) < os.path.getsize(dynamic) * 1.5
    with pytest.raises(ValueError, match="representative_images"):
        export.export_tflite(classifier, str(tmp_path / "x.tflite"), quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        export.export_tflite(classifier, str(tmp_path / "x.tflite"), quantize="fp16")
