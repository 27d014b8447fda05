"""keras.applications-style API: signatures, table rows, layer names, decode_predictions."""
import inspect

import keras
import numpy as np
import pytest

from efficientnet_tf import applications
from efficientnet_tf.network import model_config
from efficientnet_tf.weights import weight_layers

CONSTRUCTORS = {f"EfficientNetB{i}": f"efficientnet-b{i}" for i in range(8)}
CONSTRUCTORS.update({f"EfficientNetLite{i}": f"efficientnet-lite{i}" for i in range(5)})


def test_constructors_take_keras_arguments_and_pick_their_row(monkeypatch):
    theirs = inspect.signature(keras.applications.EfficientNetB0).parameters
    calls = []
    monkeypatch.setattr(applications, "build_model", lambda **kw: calls.append(kw))
    for fn_name, model_name in CONSTRUCTORS.items():
        fn = getattr(applications, fn_name)
        ours = inspect.signature(fn).parameters
        assert list(ours) == list(theirs), fn_name
        # Only the defaults that would download or that name the model differ.
        assert {k for k in ours if ours[k].default != theirs[k].default} == {"weights", "name"}
        assert fn.__name__ == fn_name and model_name in fn.__doc__
        fn(classes=7, pooling="avg")
        assert calls[-1]["model_name"] == model_name
        assert calls[-1]["classes"] == 7 and calls[-1]["pooling"] == "avg"


def test_b0_params_and_keras_applications_layer_names():
    ours = applications.EfficientNetB0(input_shape=(64, 64, 3))
    assert ours.count_params() == 5_330_564  # tests/test_model.py's build_model(0) count
    assert model_config(ours).num_classes == 1000
    ref = keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3))
    # `block2a/se/se_reduce` here is `block2a_se_reduce` there; their Normalization is stateful.
    mapped = {path.replace("/se/", "/").replace("/", "_") for path in weight_layers(ours)}
    assert mapped == {layer.name for layer in ref.layers
                      if layer.weights and not layer.name.startswith("normalization")}


def test_headless_pooling_and_input_tensor():
    inputs = keras.Input((32, 32, 3))
    m = applications.EfficientNetLite0(include_top=False, pooling="avg", input_tensor=inputs)
    assert m.inputs[0] is inputs
    assert tuple(m.output.shape) == (None, 1280)


def test_imagenet_weights_are_refused_with_the_way_out():
    with pytest.raises(ValueError, match="--mode=convert"):
        applications.EfficientNetB3(weights="imagenet")


def test_preprocess_input_is_the_identity():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    assert applications.preprocess_input(x) is x
    assert applications.preprocess_input(x, data_format="channels_last") is x


def test_decode_predictions_bundled_classes():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [1, 0, 999]] = [0.5, 0.3, 0.2]
    preds[1, 2] = 1.0
    first, second = applications.decode_predictions(preds, top=3)
    assert first == [("n01443537", "goldfish, Carassius auratus", 0.5),
                     ("n01440764", "tench, Tinca tinca", pytest.approx(0.3)),
                     ("n15075141", "toilet tissue, toilet paper, bathroom tissue",
                      pytest.approx(0.2))]
    assert second[0][:2] == ("n01484850", "great white shark, white shark, man-eater, "
                                          "man-eating shark, Carcharodon carcharias")
    assert len(applications.decode_predictions(preds)[0]) == 5
    with pytest.raises(ValueError, match="1000"):
        applications.decode_predictions(preds[0])
