"""Decompression bombs: sizes read from image headers, refused before decoding everywhere."""
import io
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from efficientnet_tf import export
from efficientnet_tf.data.image_header import MAX_IMAGE_PIXELS, image_dimensions
from efficientnet_tf.data.preprocessing import preprocess_for_eval
from efficientnet_tf.export.saved_model import ServingModule

from conftest import run_main
from test_export import classifier, encoded_images, serving_dir  # noqa: F401 (fixtures)


def _encode(array, fmt, **kwargs):
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **kwargs)
    return out.getvalue()


def bomb_png(height=20000, width=20000):
    """A real PNG header and the start of its zero-filled image data: ~1.2 GB if decoded."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = zlib.compress(b"\0" * (1 + 3 * width) * 200, 9)  # the first 200 rows
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def huge_jpeg(height=30000, width=30000):
    """A real small JPEG whose frame header (SOF0) is patched to claim height x width."""
    data = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("shape", [(37, 91), (300, 17)])
def test_header_dimensions_of_every_format(shape):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
    for data in (_encode(rgb, "JPEG"), _encode(rgb, "PNG"), _encode(rgb, "GIF"),
                 _encode(rgb, "BMP"), _encode(rgb, "WEBP"), _encode(rgb, "WEBP", lossless=True),
                 _encode(rgba, "WEBP")):  # VP8, VP8L, VP8X
        assert tuple(image_dimensions(data).numpy()) == shape, data[:16]
    assert tuple(image_dimensions(bomb_png()).numpy()) == (20000, 20000)
    assert tuple(image_dimensions(huge_jpeg()).numpy()) == (30000, 30000)
    assert tuple(image_dimensions(b"not an image").numpy()) == (-1, -1)


def test_serving_signature_refuses_bombs_without_decoding(serving_dir):  # noqa: F811
    serve = tf.saved_model.load(serving_dir).signatures[export.SERVING_SIGNATURE]
    good = encoded_images()[0]
    serve(image_bytes=tf.constant([good]))  # traced and warm
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for bomb, claim in ((bomb_png(), "20000 20000"), (huge_jpeg(), "30000 30000")):
        assert len(bomb) < 2_000_000
        start = time.monotonic()
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels") as info:
            serve(image_bytes=tf.constant([good, bomb]))
        assert time.monotonic() - start < 1.0
        assert "batch indices] [1]" in info.value.message and claim in info.value.message
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 200, f"peak RSS grew {grown_mb:.0f} MB: something was decoded"
    probabilities = serve(image_bytes=tf.constant([good]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


def test_limits_are_recorded_and_enforced(classifier, serving_dir):  # noqa: F811
    info = export.read_export_info(serving_dir)
    assert info["max_image_pixels"] == MAX_IMAGE_PIXELS and info["max_batch_size"] == 256
    module = ServingModule(classifier, apply_softmax=False, image_size=32, top_k=1,
                           resize_method="bicubic", half_pixel_centers=False,
                           max_image_pixels=40 * 60, max_batch_size=2)
    good = encoded_images()  # 45x70 JPEG (3150 px), 64x40 PNG (2560 px)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
        module.serve_bytes(tf.constant(good * 2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
        module.serve_images(tf.zeros([3, 32, 32, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"batch indices\] \[0 1\]"):
        module.serve_bytes(tf.constant(good))
    # The eval preprocessing itself refuses too (the data pipeline's and CAM's path).
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit 2400 pixels"):
        preprocess_for_eval(tf.constant(good[0]), 32, max_pixels=2400)


def test_predict_prints_one_line_for_a_bomb(serving_dir, tmp_path):  # noqa: F811
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    proc = run_main("--mode=predict", f"--saved_model={serving_dir}", f"--image={path}",
                    check=False, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bomb.png" in errors[0] and "20000 x 20000" in errors[0]


def test_pipelines_skip_and_count_a_bomb_in_training_and_name_it_in_eval(tmp_path):
    from efficientnet_tf.data import DataConfig, build_dataset
    from efficientnet_tf.data.testing import encode, natural_image, write_image_tfrecords

    good = [encode(natural_image(40, 48, seed=i)) for i in range(3)]
    for prefix in ("train", "validation"):
        write_image_tfrecords(str(tmp_path), prefix, good, [0, 1, 0], 1)
    # One more shard per split whose single record claims 20000 x 20000 pixels.
    from efficientnet_tf.data import tfrecord
    for prefix in ("train", "validation"):
        with tf.io.TFRecordWriter(str(tmp_path / f"{prefix}-00001-of-00002")) as writer:
            writer.write(tfrecord.make_example(bomb_png(), label=1, height=20000, width=20000,
                                               filename="bomb.png", synset="n0", text="x",
                                               image_format="PNG").SerializeToString())
        (tmp_path / f"{prefix}-00000-of-00001").rename(tmp_path / f"{prefix}-00000-of-00002")
    config = DataConfig(dataset="folder", data_dir=str(tmp_path), num_classes=2,
                        deterministic=True)
    decoded = skipped = 0
    for images, _, count in build_dataset(config, "train", 1, image_size=32, count_skipped=True):
        decoded += int(images.shape[0])
        skipped += int(count.numpy().sum())
        if decoded + skipped >= 8:  # two passes over the 4 records
            break
    assert skipped == 2 and decoded == 6
    with pytest.raises(tf.errors.InvalidArgumentError, match="validation-00001-of-00002:0"):
        for _ in build_dataset(config, "eval", 2, image_size=32):
            pass
