"""Fuzzed image bytes: every input gives a valid output or InvalidArgument, nothing worse."""
import json

from conftest import run_python
from test_export import classifier, serving_dir  # noqa: F401 (fixtures)

FUZZ = r"""
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
