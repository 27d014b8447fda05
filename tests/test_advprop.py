"""--advprop_preprocessing: an official-format AdvProp checkpoint through convert, eval and
export. The converted file records the [-1, 1] input, so eval and export need no flag for it."""
import json

import keras
import numpy as np
import tensorflow as tf

from efficientnet_tf import build_model, get_model_config
from efficientnet_tf.data import DataConfig, build_dataset
from efficientnet_tf.data.testing import natural_image

from conftest import run_main
from test_weights import _official_names, _write_tf1_checkpoint

ARCH = ("--model=efficientnet-b0", "--width_coefficient=0.25", "--depth_coefficient=0.2",
        "--image_size=32", "--num_classes=10")
OVERRIDES = dict(width_coefficient=0.25, depth_coefficient=0.2, resolution=32, num_classes=10)


def _photos(n, seed):
    return np.stack([natural_image(32, 32, seed=seed + i) for i in range(n)]).astype("float32")


def _reference_forward(weights_path, images):
    """The reference's eval: features * 2/255 - 1 into a network without its own normalization."""
    model = build_model(config=get_model_config("efficientnet-b0", mean_rgb=(0, 0, 0),
                                                stddev_rgb=(1, 1, 1), **OVERRIDES),
                        classifier_activation=None, weights=weights_path)
    return model(images * 2.0 / 255.0 - 1.0, training=False).numpy()


def test_advprop_checkpoint_convert_eval_export(tmp_path):
    keras.utils.set_random_seed(3)
    source = build_model(config=get_model_config("efficientnet-b0", **OVERRIDES))
    # BN statistics of real images (momentum 0: one batch), so that the logits of a random
    # network depend on its input: with the initial statistics they are nearly constant.
    for layer in source._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    source(_photos(16, seed=100), training=True)
    ema = _official_names(source)
    prefix = _write_tf1_checkpoint(str(tmp_path / "advprop" / "model.ckpt-100"),
                                   "efficientnet-b0", ema)
    weights = tmp_path / "advprop-b0.weights.h5"
    run_main("--mode=convert", *ARCH, "--advprop_preprocessing", f"--ckpt_path={prefix}",
             f"--output={weights}")

    # No model or preprocessing flag: the file's record says B0 (tiny), 32 px, [-1, 1] input.
    proc = run_main("--mode=eval", f"--weights={weights}", "--synthetic_eval_size=96",
                    "--eval_batch_size=32", f"--model_dir={tmp_path / 'eval'}")
    assert (f"--weights={weights}: efficientnet-b0 at 32 px, center crop 0.875, bicubic "
            "resize, input [-1, 1] (x * 2/255 - 1), 10 classes; as recorded.") in proc.stdout
    result = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    # The same eval images, scored by the reference's own arithmetic.
    data = DataConfig(dataset="synthetic", synthetic_eval_size=96, num_classes=10)
    correct = total = 0
    for images, labels, mask in build_dataset(data, "eval", 32, image_size=32):
        logits = _reference_forward(str(weights), images.numpy())
        correct += float(np.sum((logits.argmax(-1) == labels.numpy()) * mask.numpy()))
        total += float(np.sum(mask.numpy()))
    assert result["num_examples"] == total == 96
    assert result["top_1"] == correct / total

    export_dir = tmp_path / "export"
    proc = run_main("--mode=export", f"--weights={weights}", f"--export_dir={export_dir}")
    # No kilobyte log line (TensorFlow's INFO on renamed captured inputs names every variable).
    assert max(map(len, proc.stderr.splitlines())) < 500, proc.stderr[-2000:]
    info = json.loads((export_dir / "assets.extra" / "export_info.json").read_text())
    assert info["input_normalization"] == {"mean": [127.5] * 3, "stddev": [127.5] * 3}
    images = _photos(4, seed=0)
    served = tf.saved_model.load(str(export_dir)).signatures["serving_images"](
        images=tf.constant(images))["probabilities"].numpy()
    expected = tf.nn.softmax(_reference_forward(str(weights), images)).numpy()
    assert np.std(expected, axis=0).max() > 0.05  # the outputs depend on the image
    np.testing.assert_allclose(served, expected, atol=1e-5)
    mean_std = build_model(config=get_model_config("efficientnet-b0", **OVERRIDES),
                           weights=str(weights))(images, training=False).numpy()
    assert np.max(np.abs(mean_std - expected)) > 0.05  # the scaling really matters here
