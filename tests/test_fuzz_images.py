"""Fuzzed image bytes: every input gives a valid output or InvalidArgument, nothing worse."""
import json

from conftest import run_python
from test_export import classifier, serving_dir  # noqa: F401 (fixtures)

INPUTS = r"""
import io, json, resource, time
import numpy as np, tensorflow as tf
from PIL import Image

rng = np.random.default_rng(1234)
photo = np.asarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
seeds = []
for fmt in ("JPEG", "PNG", "GIF"):
    out = io.BytesIO()
    Image.fromarray(photo).save(out, fmt)
    seeds.append(out.getvalue())

def mutate(data):
    kind = rng.integers(4)
    data = bytearray(data)
    if kind == 0:  # truncate
        return bytes(data[:rng.integers(1, len(data))])
    if kind == 1:  # flip bits, mostly in the header
        for _ in range(rng.integers(1, 8)):
            pos = rng.integers(0, min(len(data), 64) if rng.random() < 0.7 else len(data))
            data[pos] ^= 1 << rng.integers(8)
        return bytes(data)
    if kind == 2:  # splice two images
        other = seeds[rng.integers(len(seeds))]
        cut = rng.integers(1, len(data))
        return bytes(data[:cut] + other[rng.integers(0, len(other)):])
    for _ in range(rng.integers(1, 4)):  # overwrite a run with random bytes
        pos = rng.integers(0, len(data))
        data[pos:pos + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    return bytes(data)

inputs = [mutate(seeds[i % 3]) for i in range(300)]
"""

FUZZ = INPUTS + r"""
serve = tf.saved_model.load("SERVING_DIR").signatures["serving_default"]
counts = {"tried": 0, "accepted": 0, "rejected": 0}
start = time.monotonic()
for data in inputs:
    counts["tried"] += 1
    try:
        p = serve(image_bytes=tf.constant([data]))["probabilities"].numpy()
        assert p.shape[0] == 1 and np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-4
        counts["accepted"] += 1
    except tf.errors.InvalidArgumentError:
        counts["rejected"] += 1
counts["seconds"] = round(time.monotonic() - start, 1)
counts["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("FUZZ" + json.dumps(counts))
"""


def test_serving_signature_survives_fuzzed_images(serving_dir):  # noqa: F811
    out = run_python(FUZZ.replace("SERVING_DIR", serving_dir), timeout=600).stdout
    counts = json.loads(out[out.index("FUZZ") + 4:])
    print(counts)
    assert counts["tried"] == 300 == counts["accepted"] + counts["rejected"]
    assert counts["rejected"] > 0 and counts["accepted"] > 0
    assert counts["max_rss_mb"] < 2000, counts


PIPELINE = INPUTS + r"""
import os
from efficientnet_tf.data import DataConfig, build_dataset
from efficientnet_tf.data import tfrecord

data_dir = "DATA_DIR"
os.makedirs(data_dir)
for prefix, records in (("train", inputs), ("validation", seeds)):
    with tf.io.TFRecordWriter(os.path.join(data_dir, f"{prefix}-00000-of-00001")) as writer:
        for i, data in enumerate(records):
            writer.write(tfrecord.make_example(data, label=1 + i % 2, height=0, width=0,
                                               filename=f"{i}.img", synset="n0", text="x")
                         .SerializeToString())
config = DataConfig(dataset="folder", data_dir=data_dir, num_classes=2, deterministic=True,
                    augment_name="randaugment", shuffle_buffer_size=1)
counts = {"tried": 0, "decoded": 0, "skipped": 0}
for images, labels, skipped in build_dataset(config, "train", 10, image_size=32,
                                             count_skipped=True):
    assert np.all(np.isfinite(images.numpy()))
    counts["decoded"] += int(images.shape[0])
    counts["skipped"] += int(skipped.numpy().sum())
    counts["tried"] = counts["decoded"] + counts["skipped"]
    if counts["tried"] >= len(inputs):
        break
counts["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("FUZZ" + json.dumps(counts))
"""


def test_training_pipeline_survives_fuzzed_images(tmp_path):
    out = run_python(PIPELINE.replace("DATA_DIR", str(tmp_path / "data")), timeout=600).stdout
    counts = json.loads(out[out.index("FUZZ") + 4:])
    print(counts)
    assert counts["tried"] >= 300 and counts["skipped"] > 0 and counts["decoded"] > 0
    assert counts["max_rss_mb"] < 2000, counts
