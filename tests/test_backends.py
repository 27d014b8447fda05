"""The model core (layers, `build_model`, `.weights.h5` loading) on Keras' other backends: the
TensorFlow backend's logits for the same weights, and a `model.fit` step.

tf.data, the tf.distribute trainer and export stay TensorFlow-only.
"""
import importlib.util

import keras
import numpy as np
import pytest

from efficientnet_tf.model import build_model

from conftest import TINY, run_python

TINY_MODEL = dict(TINY, depth_coefficient=0.4, classes=10, classifier_activation=None)

OTHER_BACKEND = """
import keras, numpy as np
from efficientnet_tf.model import build_model

assert keras.backend.backend() == BACKEND
# The loaded weights replace the initial values: skip compiling a random-number program for
# every weight shape (JAX), most of this test's time on 2 cores.
keras.initializers.VarianceScaling.__call__ = lambda self, shape, dtype=None: np.zeros(shape)
model = build_model(**TINY_MODEL, weights=DIR + "/tiny.weights.h5")
x = np.load(DIR + "/x.npy")
logits = keras.ops.convert_to_numpy(model.predict_on_batch(x))
diff = float(np.abs(logits - np.load(DIR + "/logits.npy")).max())
assert diff <= 1e-4, diff
model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
loss = model.fit(x, np.arange(len(x)), batch_size=len(x), epochs=1, verbose=0).history["loss"]
assert np.isfinite(loss[0]), loss
print("max |logits - TensorFlow's|", diff)
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_logits_as_tensorflow_and_a_fit_step(tmp_path, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[test]' installs jax[cpu]; "
                    "torch is optional)")
    assert keras.backend.backend() == "tensorflow"
    model = build_model(**TINY_MODEL)
    rng = np.random.RandomState(0)
    # Nonzero BN statistics and biases, so every weight changes the logits.
    model.set_weights([np.abs(w) + 0.5 if "variance" in v.path else w + rng.normal(0, 0.1, w.shape)
                       for v, w in zip(model.weights, model.get_weights())])
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model.save_weights(tmp_path / "tiny.weights.h5")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "logits.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    out = run_python(f"BACKEND = {backend!r}; DIR = {str(tmp_path)!r}; "
                     f"TINY_MODEL = {TINY_MODEL!r}\n" + OTHER_BACKEND,
                     env={"KERAS_BACKEND": backend}, timeout=300).stdout
    assert "max |logits - TensorFlow's|" in out
