"""Class activation maps: a trained localizer's map peaks on the object, not on a distractor.

The model is an EfficientNet config whose last feature map has stride 4 (two stages), trained a
few seconds to answer "is there a bright square?" on noise images that always hold a dark square
of the same size. The map of the predicted class must then peak inside the bright square wherever
it is placed (off the diagonal, so a transposed map fails) and never on the dark distractor.
"""
import json
import re

import numpy as np
import pytest

from conftest import run_main

SIZE = 64
BOX = 12
# (bright square top-left, dark square top-left), both away from the image borders.
PLACEMENTS = [((8, 44), (44, 8)), ((44, 8), (8, 44)), ((26, 26), (6, 6)), ((40, 30), (10, 20))]


def _image(rng, bright=None, dark=(0, 0)):
    image = rng.normal(110.0, 25.0, (SIZE, SIZE, 3)).clip(0, 255).astype(np.float32)
    image[dark[0]:dark[0] + BOX, dark[1]:dark[1] + BOX] = 15.0
    if bright is not None:
        image[bright[0]:bright[0] + BOX, bright[1]:bright[1] + BOX] = 245.0
    return image


def _random_placements(rng):
    dark = rng.integers(0, SIZE - BOX, 2)
    while True:
        bright = rng.integers(0, SIZE - BOX, 2)
        if np.max(np.abs(bright - dark)) >= BOX:
            return tuple(bright), tuple(dark)


def _inside(point, corner):
    return corner[0] <= point[0] < corner[0] + BOX and corner[1] <= point[1] < corner[1] + BOX


def _localizer_config():
    from efficientnet_tf.config import ModelConfig

    return ModelConfig(name="cam-localizer", resolution=SIZE, num_classes=2, dropout_rate=0.0,
                       width_coefficient=0.5, head_filters=64, bn_momentum=0.9,
                       blocks=("r1_k3_s11_e1_i32_o16_se0.25", "r1_k3_s22_e6_i16_o24_se0.25"))


@pytest.fixture(scope="module")
def localizer():
    import keras

    from efficientnet_tf.model import build_model

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1024)
    images = np.stack([_image(rng, *(_random_placements(rng) if y else (None, tuple(
        rng.integers(0, SIZE - BOX, 2))))) for y in labels])
    model = build_model(config=_localizer_config(), classifier_activation=None)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=32, epochs=2, verbose=0)
    return model


def test_cam_peaks_on_the_object(localizer):
    from efficientnet_tf import cam

    rng = np.random.default_rng(7)
    for bright, dark in PLACEMENTS:
        image = _image(rng, bright, dark)
        heat, index, probability = cam.class_activation_map(localizer, image)
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert heat.min() == 0.0 and heat.max() == 1.0
        assert index == 1 and probability > 0.9
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        assert _inside(peak, bright), (peak, bright)
        bright_mean = heat[bright[0]:bright[0] + BOX, bright[1]:bright[1] + BOX].mean()
        dark_mean = heat[dark[0]:dark[0] + BOX, dark[1]:dark[1] + BOX].mean()
        assert bright_mean > 2 * dark_mean
    # Without the bright square the model says "absent"; the absent class can be asked for.
    _, index, _ = cam.class_activation_map(localizer, _image(rng, None, (30, 30)))
    assert index == 0
    _, index, _ = cam.class_activation_map(localizer, _image(rng, (8, 44), (44, 8)),
                                           class_index=0)
    assert index == 0
    with pytest.raises(ValueError, match="class_index=2: the model has 2 classes"):
        cam.class_activation_map(localizer, _image(rng, (8, 44)), class_index=2)


def test_overlay_and_jet():
    from efficientnet_tf import cam

    assert cam.jet([0.0, 0.5, 1.0]).tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0]]
    image = np.full((4, 6, 3), 100.0)
    heat = np.zeros((4, 6), np.float32)
    heat[1, 2] = 1.0
    out = cam.overlay(image, heat)
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert out[1, 2].tolist() == [114, 50, 50] and out[0, 0].tolist() == [50, 50, 114]
    with pytest.raises(ValueError, match="differ in size"):
        cam.overlay(image, heat[:3])


def test_cam_mode_writes_the_overlay(localizer, tmp_path):
    """main.py --mode=cam on a training run directory (config.json + checkpoint)."""
    import tensorflow as tf

    from efficientnet_tf.config import RecipeConfig, RuntimeConfig
    from efficientnet_tf.data import DataConfig
    from efficientnet_tf.data.preprocessing import center_crop_window
    from efficientnet_tf.experiment import ExperimentConfig
    from efficientnet_tf.run_dir import CONFIG_FILE

    run = tmp_path / "run"
    run.mkdir()
    experiment = ExperimentConfig(
        model=_localizer_config(), data=DataConfig(dataset="synthetic", num_classes=2),
        recipe=RecipeConfig(moving_average_decay=0.0), runtime=RuntimeConfig(model_dir=str(run)))
    (run / CONFIG_FILE).write_text(json.dumps(experiment.to_dict()))
    tf.train.Checkpoint(model=localizer).save(str(run / "ckpt"))

    # A larger photo: eval preprocessing center-crops and resizes it to 64x64.
    rng = np.random.default_rng(3)
    photo = tf.image.resize(_image(rng, (14, 40), (40, 14)), [96, 96], method="nearest")
    path = tmp_path / "photo.png"
    path.write_bytes(tf.io.encode_png(tf.cast(photo, tf.uint8)).numpy())
    out = tmp_path / "maps" / "cam.png"
    proc = run_main("--mode=cam", f"--model_dir={run}", f"--image={path}", f"--output={out}")
    assert f"Wrote {out}" in proc.stdout and "class 1" in proc.stdout
    overlay = tf.io.decode_png(tf.io.read_file(str(out))).numpy()
    assert overlay.shape == (SIZE, SIZE, 3)

    # The printed peak, mapped back to the 96px photo, lies on the bright square: (14, 40) + 12
    # at 64px is rows 21..39, cols 60..78 after the 1.5x resize.
    peak = tuple(int(v) for v in re.search(r"peak at \(row, col\) \((\d+), (\d+)\)",
                                           proc.stdout).groups())
    top, left, crop, _ = center_crop_window((96, 96), SIZE).numpy()
    photo_peak = (top + peak[0] * crop / SIZE, left + peak[1] * crop / SIZE)
    assert 21 <= photo_peak[0] < 39 and 60 <= photo_peak[1] < 78, (peak, photo_peak)

    for bad, message in ((("--image=" + str(path),), "--output"),
                         ((f"--image={path},{path}", f"--output={out}"), "one --image"),
                         ((f"--image={path}", f"--output={tmp_path / 'x.jpg'}"), ".png path")):
        proc = run_main("--mode=cam", f"--model_dir={run}", *bad, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
