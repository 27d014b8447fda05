"""Training and inference images/s on this machine's accelerator, and the fraction of its peak
FLOP/s that reaches (run by hand, on a GPU/TPU box or a CPU for a quick check).

    python bench/accelerator.py [--models efficientnet-b0,efficientnet-b4] [--batch N]
        [--image_size S] [--precisions float32,mixed_bfloat16] [--xla on,off]
        [--peak_tflops T] [--macs NAME=MACS,...] [--json out.json]
    KERAS_BACKEND=jax python bench/accelerator.py ...   # no TensorFlow needed

Each (model, XLA, precision, mode) row times `train_on_batch` (RMSProp, sparse cross-entropy) or
`predict_on_batch` on one synthetic batch that stays on the device, after warm-up steps (the
first compiles). Without --batch, the batch is the largest power of two up to --max_batch that
fits in memory. XLA off is Keras' `jit_compile=False`: TensorFlow graphs, or JAX op by op.

FLOP/s: multiply-adds per image (MACs) come from `efficientnet_tf.profile` when TensorFlow is
installed (run under KERAS_BACKEND=tensorflow in a subprocess for other backends), else from
--macs or --macs_json (`efficientnet-tf --mode=profile --output_json`, scaled with the image
area); inference is 2 x MACs FLOPs per image, training 3x that (forward and backward).
The peak is --peak_tflops, else the table below for the device's name, else unknown.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# run from a checkout
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from efficientnet_tf import config as cfg  # noqa: E402
from efficientnet_tf.network import build_network  # noqa: E402

# Dense peak TFLOP/s by device name and compute dtype (vendor datasheets, SXM parts). float32 is
# the plain-FP32 rate: TF and JAX run float32 matmuls and convolutions as TF32 on NVIDIA GPUs
# since Ampere (H100/H200 ~494 TFLOP/s), so float32 rows there can pass 100%.
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989, "float16": 989, "float32": 67},
    "H100": {"bfloat16": 989, "float16": 989, "float32": 67},
    "A100": {"bfloat16": 312, "float16": 312, "float32": 19.5},
    "L4": {"bfloat16": 121, "float16": 121, "float32": 30},
    "TPU v4": {"bfloat16": 275},
    "TPU v5 lite": {"bfloat16": 197},
    "TPU v5": {"bfloat16": 459},
}
# Training runs the forward pass and a backward pass of about twice its cost.
TRAIN_FLOPS_PER_FORWARD = 3


def device_name() -> str:
    """The first accelerator's name ('NVIDIA H200', 'TPU v4'), else the CPU's."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return device.device_kind
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def peak_tflops(device: str, precision: str, given: float | None):
    if given:
        return given
    dtype = keras.mixed_precision.Policy(precision).compute_dtype
    for name, peaks in PEAK_TFLOPS.items():  # the longest names first within a family
        if name in device:
            return peaks.get(dtype)
    return None


def parse_macs(text: str | None) -> dict:
    """'efficientnet-b0=0.39e9,...' -> {name: MACs}."""
    pairs = [p.split("=", 1) for p in (text or "").split(",") if p.strip()]
    return {name.strip(): float(value) for name, value in pairs}


def count_macs(config: cfg.ModelConfig, image_size: int, given: dict, json_rows: list):
    """Multiply-adds per image at image_size, or None when nothing can tell."""
    if config.name in given:
        return given[config.name]
    for row in json_rows:
        if row["model"] == config.name:
            return row["flops"] * (image_size / row["resolution"]) ** 2
    if importlib.util.find_spec("tensorflow") is None:
        return None
    code = ("import json, sys; from efficientnet_tf import config as cfg; "
            "from efficientnet_tf.profile import profile_model; "
            f"config = cfg.ModelConfig.from_dict(json.loads({config.to_json()!r})); "
            f"print(json.dumps(profile_model(config, {image_size})['flops']))")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode:
        print(f"MACs of {config.name}: profile failed ({proc.stderr.strip()[-300:]})")
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def is_out_of_memory(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}"
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "ResourceExhausted", "out of memory",
                                   "Out of memory", "OOM"))


def measure(config, image_size, batch, precision, xla, mode, steps, warmup) -> dict:
    """images/s of `mode` at `batch`; raises on out-of-memory (the caller halves the batch)."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_network(config.replace(resolution=image_size),
                              classifier_activation=None)
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3, rho=0.9, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=xla)
        x = keras.random.uniform((batch, image_size, image_size, 3), 0.0, 255.0, seed=0)
        y = keras.ops.convert_to_tensor([i % config.num_classes for i in range(batch)], "int32")
        step = ((lambda: model.train_on_batch(x, y)) if mode == "train"
                else (lambda: keras.ops.convert_to_numpy(model.predict_on_batch(x))))
        start = time.perf_counter()
        step()  # compiles
        compile_s = time.perf_counter() - start
        for _ in range(warmup - 1):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()  # returns host values: each step has finished
        elapsed = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {"batch": batch, "images_per_sec": batch * steps / elapsed,
            "first_step_s": compile_s}


def fitting_batch(config, image_size, start_batch, fixed, **kwargs) -> dict:
    """`measure` at start_batch, halving it on out-of-memory unless the batch is fixed."""
    batch = start_batch
    while True:
        try:
            return measure(config, image_size, batch, **kwargs)
        except Exception as e:  # backends name out-of-memory errors differently
            if fixed or batch == 1 or not is_out_of_memory(e):
                raise
            print(f"  batch {batch} does not fit: retrying at {batch // 2}", flush=True)
            batch //= 2


def format_table(rows) -> str:
    header = ("model", "size", "xla", "precision", "mode", "batch", "images/s", "TFLOP/s",
              "% peak", "1st step s")
    lines = [header]
    for r in rows:
        tflops = "-" if r["tflops"] is None else f"{r['tflops']:.3g}"
        peak = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        lines.append((r["model"], str(r["image_size"]), "on" if r["xla"] else "off",
                      r["precision"], r["mode"], str(r["batch"]), f"{r['images_per_sec']:.1f}",
                      tflops, peak, f"{r['first_step_s']:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i < 5 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(line, widths))) for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet-b0,efficientnet-b4")
    parser.add_argument("--image_size", type=int, help="default: each model's resolution")
    parser.add_argument("--batch", type=int, help="fixed batch (default: the largest that fits)")
    parser.add_argument("--max_batch", type=int, help="where the search for a batch that fits "
                        "starts (default 256 on accelerators, 16 on CPU)")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--xla", default="on,off", help="on, off or both")
    parser.add_argument("--modes", default="train,infer")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps, the first compiles")
    parser.add_argument("--peak_tflops", type=float, help="device peak for every precision")
    parser.add_argument("--macs", help="multiply-adds per image at --image_size, "
                        "NAME=VALUE,... (e.g. efficientnet-b0=0.39e9)")
    parser.add_argument("--macs_json", help="from efficientnet-tf --mode=profile --output_json")
    parser.add_argument("--json", help="write the rows here (after every row)")
    args = parser.parse_args()

    device = device_name()
    on_cpu = device.startswith("CPU")
    json_rows = []
    if args.macs_json:
        with open(args.macs_json) as f:
            json_rows = json.load(f)
    given_macs = parse_macs(args.macs)
    report = {"device": device, "backend": keras.backend.backend(),
              "keras": keras.__version__, "rows": []}
    print(f"{device}, Keras {keras.__version__} on {keras.backend.backend()}", flush=True)
    configs = [cfg.get_model_config(name.strip()) for name in args.models.split(",")]
    macs = {c.name: count_macs(c, args.image_size or c.resolution, given_macs, json_rows)
            for c in configs}
    for xla in [v.strip() == "on" for v in args.xla.split(",")]:
        for config in configs:
            size = args.image_size or config.resolution
            for precision in args.precisions.split(","):
                peak = peak_tflops(device, precision, args.peak_tflops)
                for mode in args.modes.split(","):
                    print(f"{config.name} {size}px xla={'on' if xla else 'off'} {precision} "
                          f"{mode} ...", flush=True)
                    row = fitting_batch(
                        config, size, args.batch or args.max_batch or (16 if on_cpu else 256),
                        args.batch is not None, precision=precision, xla=xla, mode=mode,
                        steps=args.steps, warmup=max(1, args.warmup))
                    flops = macs[config.name] and 2 * macs[config.name] * (
                        TRAIN_FLOPS_PER_FORWARD if mode == "train" else 1)
                    tflops = flops and row["images_per_sec"] * flops / 1e12
                    row.update(model=config.name, image_size=size, xla=xla, precision=precision,
                               mode=mode, macs_per_image=macs[config.name], tflops=tflops,
                               peak_tflops=peak, peak_fraction=tflops and peak and tflops / peak)
                    report["rows"].append(row)
                    if args.json:
                        with open(args.json, "w") as f:
                            json.dump(report, f, indent=2)
    print(format_table(report["rows"]))
    if args.json:
        print(f"Wrote {args.json}")


if __name__ == "__main__":
    main()
