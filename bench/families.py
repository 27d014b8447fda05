"""Inference speed of the EdgeTPU and CondConv models against B0, in one run (run by hand).

    python bench/families.py [--batch=16] [--repeats=5]

Every model at its native resolution, float [0, 255] input, a compiled inference `tf.function`;
timed runs alternate between the models to share the machine's noise, and the median over
repeats is reported with its ratio to B0 (higher = faster) next to the multiply-adds, so the cost
of CondConv's per-example kernels (mixing the experts, the folded-batch depthwise conv) shows.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = ("efficientnet-b0", "efficientnet-condconv-b0-4e", "efficientnet-condconv-b0-8e",
          "efficientnet-edgetpu-S")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import tensorflow as tf

    from efficientnet_tf.model import build_model
    from efficientnet_tf.profile import count_flops

    runs = {}
    for name in MODELS:
        model = build_model(model_name=name)
        size = model.input_shape[1]
        x = tf.random.uniform((args.batch, size, size, 3), maxval=255.0)
        step = tf.function(lambda images, m=model: m(images, training=False), jit_compile=False)
        step(x)  # trace and warm up
        runs[name] = (step, x, count_flops(model))
    times = {name: [] for name in MODELS}
    for _ in range(args.repeats):
        for name, (step, x, _) in runs.items():
            start = time.perf_counter()
            step(x).numpy()
            times[name].append(time.perf_counter() - start)
    base = args.batch / statistics.median(times[MODELS[0]])
    print(f"{'model':<32}{'MACs':>10}{'img/s':>9}{'vs b0':>8}")
    for name in MODELS:
        speed = args.batch / statistics.median(times[name])
        print(f"{name:<32}{runs[name][2] / 1e9:>9.3f}G{speed:>9.1f}{speed / base:>8.2f}")


if __name__ == "__main__":
    main()
