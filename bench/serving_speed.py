"""Batch-1, one-thread CPU latency of the serving artifacts vs keras.applications (run by hand).

    python bench/serving_speed.py [--models=b0,b1] [--repeats=9] [--iters=10] [--output_json=F]

Each model runs in its own subprocess, with TensorFlow pinned to one intra-op and one inter-op
thread before it initializes (like the paper's single-core Table 4). In it, the same random
float [0, 255] image goes through:
- keras_apps: keras.applications.EfficientNetB* (random weights) in a compiled tf.function;
- ours_keras: `build_model` in a compiled tf.function;
- saved_model: `export_saved_model` (BN folded) reloaded, its `serving_images` signature;
- tflite: `export_tflite` float32, XNNPACK, num_threads=1;
- tflite_int8: `export_tflite(quantize="int8")`, calibrated on random images (speed only).
Timed runs alternate between the variants so they share the machine's noise; each repeat times
`iters` calls. Reported: median and minimum ms per call over repeats, and ratio = variant /
keras_apps latency (lower is faster). Targets: saved_model <= 0.8, TFLite B1 <= 0.35 (met by
tflite_int8). On a shared machine the minimum is the steadier number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# Run from a checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VARIANTS = ("keras_apps", "ours_keras", "saved_model", "tflite", "tflite_int8")


def worker(name: str, repeats: int, iters: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"serving_speed_{name}_") as workdir:
        return _measure(name, workdir, repeats, iters)


def _measure(name: str, workdir: str, repeats: int, iters: int) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from efficientnet_tf import export
    from efficientnet_tf.model import build_model, config_name

    ours = build_model(model_name=f"efficientnet-{name}")
    size = ours.input_shape[1]
    theirs = getattr(keras.applications, f"EfficientNetB{int(name[1:])}")(weights=None)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
    x_tf = tf.constant(x)
    saved = export.export_saved_model(ours, os.path.join(workdir, "saved_model"))
    serve = tf.saved_model.load(saved).signatures[export.IMAGES_SIGNATURE]
    float_path = export.export_tflite(ours, os.path.join(workdir, "float32.tflite"))
    calibration = (rng.uniform(0, 255, (size, size, 3)).astype("float32") for _ in range(8))
    int8_path = export.export_tflite(ours, os.path.join(workdir, "int8.tflite"), quantize="int8",
                                     representative_images=calibration)

    def tflite_fn(path):
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]

        def run():
            interpreter.set_tensor(inp, x)
            interpreter.invoke()
            return interpreter.get_tensor(out)
        return run

    keras_apps = tf.function(lambda t: theirs(t, training=False))
    ours_fn = tf.function(lambda t: ours(t, training=False))
    fns = {
        "keras_apps": lambda: keras_apps(x_tf).numpy(),
        "ours_keras": lambda: ours_fn(x_tf).numpy(),
        "saved_model": lambda: serve(images=x_tf)["probabilities"].numpy(),
        "tflite": tflite_fn(float_path),
        "tflite_int8": tflite_fn(int8_path),
    }
    reference = fns["ours_keras"]()
    # Relative to the largest probability: random-init probabilities are all about 1/1000.
    # (Not for int8: calibrated on noise, its probabilities of a random network mean nothing.)
    deltas = {k: float(np.abs(fns[k]() - reference).max() / reference.max())
              for k in ("saved_model", "tflite")}
    for fn in fns.values():  # warm up caches and allocators
        for _ in range(3):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            times[key].append((time.perf_counter() - start) / iters * 1e3)
    base_median = statistics.median(times["keras_apps"])
    base_min = min(times["keras_apps"])
    rows = {k: {"median_ms": statistics.median(v), "min_ms": min(v),
                "ratio_median": statistics.median(v) / base_median, "ratio_min": min(v) / base_min}
            for k, v in times.items()}
    return {"model": config_name(ours), "resolution": size, "rows": rows,
            "max_rel_prob_delta_vs_ours_keras": deltas}


def run_in_subprocess(name: str, repeats: int, iters: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", name, f"--repeats={repeats}",
                           f"--iters={iters}"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(results) -> str:
    lines = [f"{'model':16} {'variant':12} {'median ms':>10} {'min ms':>8} {'ratio(med)':>10} "
             f"{'ratio(min)':>10}"]
    for r in results:
        for key in VARIANTS:
            row = r["rows"][key]
            lines.append(f"{r['model']:16} {key:12} {row['median_ms']:10.1f} {row['min_ms']:8.1f} "
                         f"{row['ratio_median']:10.2f} {row['ratio_min']:10.2f}")
        deltas = ", ".join(f"{k} {v:.1e}" for k, v in r["max_rel_prob_delta_vs_ours_keras"].items())
        lines.append(f"{'':16} max |Δp| / max p vs ours_keras: {deltas}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="b0,b1")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.iters)))
        return
    results = []
    for name in args.models.split(","):
        name = name.strip().lower().removeprefix("efficientnet-")
        if name not in {f"b{i}" for i in range(8)}:
            raise SystemExit(f"--models: {name!r} is not one of b0..b7 (keras.applications has "
                             "only those).")
        results.append(run_in_subprocess(name, args.repeats, args.iters))
        print(format_table(results[-1:]), flush=True)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
