"""Speed of our EfficientNet vs keras.applications, measured in the same run (run by hand).

    python bench/model_speed.py [--models=b0,b1] [--batch=32] [--repeats=7] [--quick]

Three measurements per model, each in its own subprocess so its thread settings apply before any
op runs: inference images/s at --batch, batch-1 latency on one thread (intra- and inter-op
parallelism 1, like the paper's single-core Table 4), and training-step images/s at --batch (SGD
with momentum, sparse categorical cross-entropy). Both networks get the same float [0, 255] input
and compiled `tf.function`s; timed runs alternate ours/keras to share the machine's noise, and the
median over repeats is reported. ratio = ours/keras in speed (higher means ours is faster);
spread = the larger (max - min) / median of the two, a gauge of how noisy the machine was.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# run from a checkout
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODES = ("infer", "latency", "train")


def _build_pair(name: str):
    import keras

    from efficientnet_tf.model import build_model
    from efficientnet_tf.network import model_config

    phi = int(name[1:])
    ours = build_model(model_name=f"efficientnet-{name}")
    theirs = getattr(keras.applications, f"EfficientNetB{phi}")(weights=None)
    return ours, theirs, model_config(ours).resolution


def _compiled_step(model, mode: str):
    import keras
    import tensorflow as tf

    if mode != "train":
        return tf.function(lambda x, y: model(x, training=False), jit_compile=False)
    optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def _time(fn, x, y, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(x, y)
    out.numpy()  # the value forces the work to finish
    return time.perf_counter() - start


def worker(name: str, mode: str, batch: int, repeats: int, iters: int) -> dict:
    import numpy as np
    import tensorflow as tf

    if mode == "latency":
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        batch = 1
    ours, theirs, resolution = _build_pair(name)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (batch, resolution, resolution, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 1000, (batch,)))
    fns = {"ours": _compiled_step(ours, mode), "keras": _compiled_step(theirs, mode)}
    for fn in fns.values():  # trace, then warm up caches and allocator
        _time(fn, x, y, 2)
    times = {"ours": [], "keras": []}
    for r in range(repeats):
        order = ("ours", "keras") if r % 2 == 0 else ("keras", "ours")
        for key in order:
            times[key].append(_time(fns[key], x, y, iters))
    med = {k: statistics.median(v) / iters for k, v in times.items()}
    if mode == "latency":
        result = {k: med[k] * 1000 for k in med}  # ms per image
        ratio = med["keras"] / med["ours"]
    else:
        result = {k: batch / med[k] for k in med}  # images/s
        ratio = result["ours"] / result["keras"]
    # Largest (max - min) / median over the two: how much the machine's noise moved the repeats.
    spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values())
    return {"model": name, "mode": mode, "batch": batch, "resolution": resolution,
            "ours": result["ours"], "keras": result["keras"], "ratio": ratio, "spread": spread}


def _run_worker(name, mode, args) -> dict:
    # CPU unless the caller set CUDA_VISIBLE_DEVICES (the paper's latency table is single-core CPU).
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **os.environ}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--models", name,
           "--batch", str(args.batch), "--repeats", str(args.repeats), "--iters", str(args.iters)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {name}/{mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="b0,b1", help="comma list of b0..b7")
    p.add_argument("--batch", type=int, default=32, help="batch for inference and training")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (median reported)")
    p.add_argument("--iters", type=int, default=3, help="calls per timed repeat")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {MODES}")
    p.add_argument("--quick", action="store_true", help="batch 8, 3 repeats of 2 calls")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.iters = 8, 3, 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in {f"b{i}" for i in range(8)}]
    if bad:
        p.error(f"--models: {bad} not in b0..b7 (keras.applications has only those)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in modes):
        p.error(f"--modes={args.modes!r}: choose from {MODES}")
    if min(args.batch, args.repeats, args.iters) < 1:
        p.error("--batch, --repeats and --iters must be >= 1")
    args.models, args.modes = models, modes
    return args


def main(argv=None):
    args = _parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.models[0], args.worker, args.batch, args.repeats,
                                args.iters)))
        return
    units = {"infer": "img/s", "latency": "ms", "train": "img/s"}
    print(f"{'model':6} {'measure':28} {'ours':>9} {'keras':>9} {'ours/keras':>10} {'spread':>7}")
    for name in args.models:
        for mode in args.modes:
            r = _run_worker(name, mode, args)
            label = {"infer": f"inference, batch {r['batch']}",
                     "latency": "latency, batch 1, 1 thread",
                     "train": f"train step, batch {r['batch']}"}[mode]
            print(f"{name:6} {label:28} {r['ours']:9.2f} {r['keras']:9.2f} {r['ratio']:10.3f}"
                  f" {r['spread']:7.0%}  ({units[mode]})", flush=True)


if __name__ == "__main__":
    main()
