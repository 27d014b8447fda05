"""Train efficientnet_tf on a Cloud TPU VM or pod slice: create the VM, install, train, delete.

    python tpu/launch.py --name=my-tpu --zone=us-central2-b --accelerator_type=v4-8 \
        --runtime_version=tpu-vm-tf-2.16.1-pjrt --model=efficientnet-b0 \
        --data_dir=gs://BUCKET/imagenet --model_dir=gs://BUCKET/runs/b0 [--dry_run] all

Every gcloud command is built by a pure function (unit-tested without a TPU or gcloud); `--dry_run`
prints them. No TensorFlow import here: the launcher runs on a laptop. See tpu/README.md for the
why of each command and the sources behind the TPU-specific choices.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# `python tpu/launch.py` puts tpu/, not the checkout, on sys.path; the launcher reads the tables of
# the checkout it ships, installed or not. The package and its config import no TensorFlow.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from efficientnet_tf import config as model_config  # noqa: E402

ACTIONS = ("create", "install", "train", "delete", "all")
MAIN_MODES = ("train", "eval", "train_and_eval")
REMOTE_DIR = "efficientnet_tf"            # on the VM, relative to the login user's home
REMOTE_TARBALL = "efficientnet_tf-src.tar.gz"
# tensorflow-tpu wheels and their libtpu (tensorflow-tpu is also on PyPI from 2.16.1).
TF_TPU_FIND_LINKS = "https://storage.googleapis.com/libtpu-tf-releases/index.html"
TPU_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
RUNTIME_RE = re.compile(r"^tpu-vm-tf-(\d+)\.(\d+)\.(\d+)((?:-[a-z0-9]+)*)$")

MODEL_NAMES = model_config.MODEL_NAMES


def image_size(model: str) -> int:
    """The model's training resolution, from the package's own scaling table."""
    return model_config.SCALING_TABLE[model][2]


# --- TPU VM runtime images -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TpuRuntime:
    """A TensorFlow TPU VM image (gcloud --version) and the Python stack that works on it."""
    tf_version: str                # the image's TensorFlow; the VM gets tensorflow-tpu==tf_version
    python: str                    # the image's python3
    keras: str                     # pip specifier: the Keras efficientnet_tf runs with there
    generations: tuple[str, ...]   # accelerator generations the image runs on
    source: str                    # where the image name is confirmed


# Keras on the TPU VM: >= 3.10 for `Optimizer.add_optimizer_variables` (first in Keras 3.10.0;
# efficientnet_tf/training/optimizer.py), < 3.13 because Keras 3.13 needs Python >= 3.11 and the
# TensorFlow TPU images run Python 3.10 (Ubuntu 22.04). setup.py states the same lower bounds.
KERAS_ON_PY310 = ">=3.10,<3.13"
PY310 = "3.10"
# PJRT runs on every TPU generation TensorFlow supports; the stream executor (-se) only on v2-v4
# ("TPU v5e and future TPU generations only support PJRT"; v5p dense compute: PJRT only).
PJRT_GENERATIONS = ("v2", "v3", "v4", "v5litepod", "v5p")
SE_GENERATIONS = ("v2", "v3", "v4")
# Where each name is confirmed (details in tpu/README.md, Sources).
_DOCS = "Cloud TPU docs, TPU software versions"
_PY_SAMPLES = "GoogleCloudPlatform/python-docs-samples, tpu/"
_JAVA_SAMPLES = "GoogleCloudPlatform/java-docs-samples, tpu/"
_CREATED = "public gcloud create logs (created and ran)"
_SCRIPTS = "public setup scripts (picked from `versions list`)"

# Only images whose names are confirmed (sources in tpu/README.md). The newest TensorFlow with TPU
# VM images is 2.18.0: the Cloud TPU docs' TensorFlow/libtpu table stops there, although
# tensorflow-tpu 2.19/2.20 wheels exist on PyPI. Add a row only for a name that
# `gcloud compute tpus tpu-vm versions list --zone=ZONE` shows, after running the core tests
# (.ci/run's oldest-stack selection) on that TensorFlow with the Keras range given.
TPU_RUNTIMES = {
    "tpu-vm-tf-2.16.1-pjrt": TpuRuntime("2.16.1", PY310, KERAS_ON_PY310, PJRT_GENERATIONS, _DOCS),
    "tpu-vm-tf-2.16.1-se": TpuRuntime("2.16.1", PY310, KERAS_ON_PY310, SE_GENERATIONS, _DOCS),
    "tpu-vm-tf-2.16.1-pod-pjrt": TpuRuntime("2.16.1", PY310, KERAS_ON_PY310, PJRT_GENERATIONS,
                                            _CREATED),
    "tpu-vm-tf-2.17.0-pjrt": TpuRuntime("2.17.0", PY310, KERAS_ON_PY310, PJRT_GENERATIONS,
                                        _PY_SAMPLES),
    "tpu-vm-tf-2.17.0-pod-pjrt": TpuRuntime("2.17.0", PY310, KERAS_ON_PY310, PJRT_GENERATIONS,
                                            _JAVA_SAMPLES),
    # From 2.18.0 the images are split by TPU generation.
    "tpu-vm-tf-2.18.0-pjrt-v5p-and-below": TpuRuntime("2.18.0", PY310, KERAS_ON_PY310,
                                                      ("v2", "v3", "v4", "v5p"), _SCRIPTS),
    "tpu-vm-tf-2.18.0-pjrt-v5e-and-v6": TpuRuntime("2.18.0", PY310, KERAS_ON_PY310,
                                                   ("v5litepod",), _CREATED),
    "tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6": TpuRuntime("2.18.0", PY310, KERAS_ON_PY310,
                                                       ("v5litepod",), _CREATED),
}


def runtime_choices(accelerator: "Accelerator | None" = None) -> list[str]:
    """The known runtimes, those that run on `accelerator` (generation, single host or pod) only."""
    if accelerator is None:
        return list(TPU_RUNTIMES)
    return [name for name, rt in TPU_RUNTIMES.items()
            if accelerator.generation in rt.generations
            and ("pod" in _runtime_tags(name)) == accelerator.multi_host]


def _runtime_tags(name: str) -> list[str]:
    return RUNTIME_RE.match(name).group(4).split("-")


def runtime_table() -> str:
    """TPU_RUNTIMES as the markdown table in tpu/README.md."""
    rows = [["runtime (`--runtime_version`)", "TensorFlow", "Python", "Keras",
             "TPU generations", "name confirmed by"], ["---"] * 6]
    for name, rt in TPU_RUNTIMES.items():
        rows.append([f"`{name}`", rt.tf_version, rt.python, f"`{rt.keras}`",
                     ", ".join(rt.generations), rt.source])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


# --- accelerators -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    # How many units of the accelerator-type suffix make one TF replica: v2/v3 count TensorCores
    # (one replica each), v4/v5p count TensorCores too but run as one "megacore" replica per chip
    # (2 cores), v5litepod counts chips (one TensorCore each).
    suffix_units_per_replica: int
    hbm_gib_per_replica: float


# HBM per replica from the Cloud TPU system-architecture pages: v2 16 GiB/chip (2 cores),
# v3 32 GiB/chip (2 cores), v4 32 GiB/chip, v5e 16 GiB/chip, v5p 95 GiB/chip.
TPU_GENERATIONS = {
    "v2": TpuGeneration(1, 8),
    "v3": TpuGeneration(1, 16),
    "v4": TpuGeneration(2, 32),
    "v5litepod": TpuGeneration(1, 16),
    "v5p": TpuGeneration(2, 95),
}
# v2-8, v3-8, v4-8, v5litepod-8 and v5p-8 are the largest single-host slices of each generation.
MAX_SINGLE_HOST_SUFFIX = 8


@dataclasses.dataclass(frozen=True)
class Accelerator:
    type: str
    generation: str
    suffix: int

    @property
    def replicas(self) -> int:
        """TPUStrategy.num_replicas_in_sync on this slice."""
        return self.suffix // TPU_GENERATIONS[self.generation].suffix_units_per_replica

    @property
    def hbm_gib_per_replica(self) -> float:
        return TPU_GENERATIONS[self.generation].hbm_gib_per_replica

    @property
    def multi_host(self) -> bool:
        return self.suffix > MAX_SINGLE_HOST_SUFFIX


def parse_accelerator(accelerator_type: str) -> Accelerator:
    m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator_type or "")
    generation, suffix = (m.group(1), int(m.group(2))) if m else (None, 0)
    if generation and int(re.match(r"v(\d+)", generation).group(1)) >= 6:
        raise ValueError(f"--accelerator_type={accelerator_type}: TensorFlow does not support TPU "
                         "v6e (Trillium) and later; use v2, v3, v4, v5litepod (v5e) or v5p.")
    if generation == "v5e":
        raise ValueError(f"--accelerator_type={accelerator_type}: gcloud names TPU v5e slices "
                         f"'v5litepod-N' (e.g. v5litepod-{suffix or 8}).")
    if generation not in TPU_GENERATIONS or suffix < 1:
        raise ValueError(f"--accelerator_type={accelerator_type!r}: expected GEN-SIZE with GEN one "
                         f"of {', '.join(TPU_GENERATIONS)} (e.g. v3-8, v4-32, v5litepod-8).")
    units = TPU_GENERATIONS[generation].suffix_units_per_replica
    if suffix % units:
        raise ValueError(f"--accelerator_type={accelerator_type}: {generation} sizes count "
                         f"TensorCores and must be a multiple of {units}.")
    return Accelerator(accelerator_type, generation, suffix)


# --- recommended settings ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelSettings:
    # Training images per replica that fit a 16 GiB replica (v3 core, v5e chip). A JUDGMENT CALL,
    # not a TPU measurement: the largest power of two <= 16 GiB / activation_mib_per_image, i.e.
    # about half of HBM for activations once XLA has fused away about half of the tensors counted
    # below. L2 is set to 0.5 because its float32 weights, gradients, two RMSProp slots and EMA
    # (481M params x 20 bytes ~ 9 GiB) leave too little of a 16 GiB replica.
    images_per_16gib: float
    # Estimate, bfloat16: sum over the stem, every MBConv block (expand conv/BN/act, depthwise
    # conv/BN/act -- EdgeTPU's `_c1` blocks: one strided expansion conv/BN/act instead --, SE
    # product, project conv/BN, drop-path/add) and the head of the tensors kept for the backward
    # pass, from config.stage_table at the model's resolution (recomputed by
    # tests/test_tpu_launch.py). CondConv's routing vectors and expert mixes are left out (tiny).
    activation_mib_per_image: int


MODEL_SETTINGS = {
    "efficientnet-b0": ModelSettings(256, 43),
    "efficientnet-b1": ModelSettings(128, 71),
    "efficientnet-b2": ModelSettings(128, 90),
    "efficientnet-b3": ModelSettings(64, 155),
    "efficientnet-b4": ModelSettings(32, 324),
    "efficientnet-b5": ModelSettings(16, 653),
    "efficientnet-b6": ModelSettings(8, 1108),
    "efficientnet-b7": ModelSettings(8, 1931),
    "efficientnet-b8": ModelSettings(4, 2954),
    "efficientnet-l2": ModelSettings(0.5, 11464),
    "efficientnet-lite0": ModelSettings(256, 38),
    "efficientnet-lite1": ModelSettings(256, 58),
    "efficientnet-lite2": ModelSettings(128, 74),
    "efficientnet-lite3": ModelSettings(128, 109),
    "efficientnet-lite4": ModelSettings(64, 166),
    "efficientnet-edgetpu-S": ModelSettings(256, 50),
    "efficientnet-edgetpu-M": ModelSettings(128, 82),
    "efficientnet-edgetpu-L": ModelSettings(64, 175),
    "efficientnet-condconv-b0-4e": ModelSettings(256, 43),
    "efficientnet-condconv-b0-8e": ModelSettings(256, 43),
    "efficientnet-condconv-b0-8e-depth": ModelSettings(256, 61),
}
# Upper bounds on the defaults: 256 images per replica (B0 on a v3-8 gives the reference default
# global batch of 2048), and a global batch of 4096, the largest the paper's recipe was run with
# (its LR 0.256 = 0.016 x 4096/256). Larger batches need other optimizers (LARS, Wongpanich et al.
# 2020), so on big slices the default stays at 4096 and leaves HBM unused.
MAX_PER_REPLICA_BATCH = 256
MAX_GLOBAL_BATCH = 4096
# Steps per host round trip (Keras steps_per_execution). Judgment call: the reference ran
# iterations_per_loop=1251 (one epoch at batch 1024); 1000 keeps the TPU busy just as well.
DEFAULT_STEPS_PER_LOOP = 1000


def per_replica_batch(model: str, accelerator: Accelerator) -> int:
    """Images per replica: the 16 GiB figure scaled by the largest power of two <= HBM/16 GiB."""
    scale = 2.0 ** math.floor(math.log2(accelerator.hbm_gib_per_replica / 16))
    images = min(MAX_PER_REPLICA_BATCH, MODEL_SETTINGS[model].images_per_16gib * scale)
    if images < 1:
        raise ValueError(
            f"{model} does not fit on {accelerator.type} ({accelerator.hbm_gib_per_replica:g} GiB "
            f"HBM per replica) even at one image per replica, by the estimate in tpu/README.md; "
            f"use v4 or v5p, or pass --train_batch_size to try anyway.")
    return int(images)


def recommended_train_batch_size(model: str, accelerator: Accelerator) -> int:
    """Per-replica batch x replicas, capped at MAX_GLOBAL_BATCH (rounded to a replica multiple)."""
    per_replica = min(per_replica_batch(model, accelerator),
                      max(1, MAX_GLOBAL_BATCH // accelerator.replicas))
    return per_replica * accelerator.replicas


def settings_table(accelerators=("v2-8", "v3-8", "v4-8", "v5litepod-8", "v5p-8", "v3-32",
                                 "v4-32")) -> str:
    """The recommended default global batch per model and slice, as the README's markdown table."""
    accels = [parse_accelerator(a) for a in accelerators]
    head = ["model", "image size", "act. MiB/img (est.)", "per 16 GiB replica",
            *[f"{a.type} ({a.replicas} rep.)" for a in accels]]
    rows = [head, ["---"] * len(head)]
    for model, s in MODEL_SETTINGS.items():
        cells = []
        for a in accels:
            try:
                cells.append(str(recommended_train_batch_size(model, a)))
            except ValueError:
                cells.append("does not fit")
        rows.append([model, str(image_size(model)), str(s.activation_mib_per_image),
                     f"{s.images_per_16gib:g}", *cells])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def _unknown_runtime_message(runtime_version, accelerator: Accelerator) -> str:
    m = RUNTIME_RE.match(runtime_version or "")
    why = "is not a TensorFlow TPU VM image known to exist"
    if m and tuple(int(v) for v in m.group(1, 2)) < (2, 16):
        why = ("is too old: efficientnet_tf needs TensorFlow >= 2.16.1 (Keras 3, and Keras >= 3.10 "
               "as setup.py states)")
    elif m and tuple(int(v) for v in m.group(1, 2)) > (2, 18):
        why = ("is not a Cloud TPU image: the TensorFlow TPU VM images stop at TensorFlow 2.18.0 "
               "(Cloud TPU docs, TPU software versions)")
    fitting = runtime_choices(accelerator)
    return (f"--runtime_version={runtime_version!r} {why}. Valid runtimes: "
            f"{', '.join(TPU_RUNTIMES)}"
            + (f"; for {accelerator.type}: {', '.join(fitting)}" if fitting else "")
            + ". (The table TPU_RUNTIMES in tpu/launch.py; tpu/README.md says how to add one.)")


# --- launch configuration ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    name: str
    zone: str
    accelerator: Accelerator
    runtime_version: str
    model_dir: str
    project: str | None = None
    model: str = "efficientnet-b0"
    mode: str = "train_and_eval"
    dataset: str = "imagenet"
    data_dir: str | None = None
    train_batch_size: int | None = None   # None: recommended_train_batch_size
    train_steps: int | None = None
    train_epochs: float | None = None
    steps_per_loop: int = DEFAULT_STEPS_PER_LOOP
    extra_args: tuple = ()
    spot: bool = False
    repo_root: Path = REPO_ROOT
    local_tarball: Path | None = None     # None: <tempdir>/efficientnet_tf-src-NAME.tar.gz

    def __post_init__(self):
        def check(ok, msg):
            if not ok:
                raise ValueError(msg)

        check(bool(TPU_NAME_RE.match(self.name or "")),
              f"--name={self.name!r}: TPU names are 1-63 lowercase letters, digits or '-', "
              "starting with a letter and not ending with '-'.")
        check(bool(self.zone), "--zone is required (e.g. us-central2-b for v4).")
        check(self.model in MODEL_SETTINGS,
              f"--model={self.model!r}: choose one of {', '.join(MODEL_NAMES)}.")
        check(self.mode in MAIN_MODES, f"--mode={self.mode!r}: choose one of {MAIN_MODES}.")
        # The VM is deleted at the end, and pod hosts share nothing but GCS.
        check(str(self.model_dir or "").startswith("gs://"),
              f"--model_dir={self.model_dir!r}: must be a gs:// path (checkpoints must outlive "
              "the TPU VM, and every pod worker must reach them).")
        if self.dataset != "synthetic":
            check(str(self.data_dir or "").startswith("gs://"),
                  f"--data_dir={self.data_dir!r}: must be a gs:// path holding the "
                  f"{self.dataset} TFRecords (the TPU hosts read it directly).")
        check(not (self.train_steps and self.train_epochs),
              "Pass --train_steps or --train_epochs, not both.")
        check(self.train_steps is None or self.train_steps >= 1, "--train_steps must be >= 1.")
        check(self.train_epochs is None or self.train_epochs > 0, "--train_epochs must be > 0.")
        check(self.steps_per_loop >= 1, "--steps_per_loop must be >= 1.")
        replicas = self.accelerator.replicas
        check(self.train_batch_size is None
              or (self.train_batch_size >= 1 and self.train_batch_size % replicas == 0),
              f"--train_batch_size={self.train_batch_size}: must be a positive multiple of the "
              f"{replicas} replicas of {self.accelerator.type}.")
        check(self.runtime_version in TPU_RUNTIMES, _unknown_runtime_message(self.runtime_version,
                                                                             self.accelerator))
        runtime = TPU_RUNTIMES[self.runtime_version]
        check(self.accelerator.generation in runtime.generations,
              f"--runtime_version={self.runtime_version} runs on TPU "
              f"{', '.join(runtime.generations)}, not {self.accelerator.type}; for "
              f"{self.accelerator.type} use one of: "
              f"{', '.join(runtime_choices(self.accelerator)) or '(none known)'}.")
        check(not self.accelerator.multi_host or self.pod_runtime,
              f"--runtime_version={self.runtime_version}: {self.accelerator.type} is a multi-host "
              "pod slice; TensorFlow needs a '-pod' runtime there (e.g. "
              "tpu-vm-tf-2.16.1-pod-pjrt), whose tpu-runtime service serves the other hosts' TPUs.")
        if self.train_batch_size is None:
            object.__setattr__(self, "train_batch_size",
                               recommended_train_batch_size(self.model, self.accelerator))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))

    @property
    def runtime(self) -> TpuRuntime:
        return TPU_RUNTIMES[self.runtime_version]

    @property
    def tf_version(self) -> str:
        return self.runtime.tf_version

    @property
    def pod_runtime(self) -> bool:
        """'-pod' images run TF on worker 0 as a client of every host's tpu-runtime service."""
        return "pod" in _runtime_tags(self.runtime_version)

    @property
    def pjrt(self) -> bool:
        return "pjrt" in _runtime_tags(self.runtime_version)

    @property
    def tpu_address(self) -> str:
        """main.py's --tpu: the TPU name on pod runtimes, 'local' for chips on this VM."""
        return self.name if self.pod_runtime else "local"

    @property
    def tarball(self) -> Path:
        default = Path(tempfile.gettempdir()) / f"efficientnet_tf-src-{self.name}.tar.gz"
        return self.local_tarball or default


# --- command builders (pure) ------------------------------------------------------------------

def _location(cfg: LaunchConfig) -> list[str]:
    return [f"--zone={cfg.zone}", *([f"--project={cfg.project}"] if cfg.project else [])]


def _gcloud(verb: str, cfg: LaunchConfig, *extra: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, cfg.name, *_location(cfg), *extra]


def create_command(cfg: LaunchConfig) -> list[str]:
    return _gcloud("create", cfg, f"--accelerator-type={cfg.accelerator.type}",
                   f"--version={cfg.runtime_version}", *(["--spot"] if cfg.spot else []))


def package_command(cfg: LaunchConfig) -> list[str]:
    """The committed tree (HEAD) as a tarball: reproducible, and build outputs stay behind."""
    return ["git", "-C", str(cfg.repo_root), "archive", "--format=tar.gz", "-o", str(cfg.tarball),
            "HEAD"]


def copy_command(cfg: LaunchConfig) -> list[str]:
    # Only worker 0 runs Python on a pod (the other hosts run the tpu-runtime service).
    return ["gcloud", "compute", "tpus", "tpu-vm", "scp", str(cfg.tarball),
            f"{cfg.name}:{REMOTE_TARBALL}", *_location(cfg), "--worker=0"]


# Requirements of the installed efficientnet_tf except `tensorflow` and `keras`, which the install
# pins to the runtime's stack: pip would otherwise put the stock PyPI `tensorflow` wheel over the
# image's TPU build (installed as `tensorflow-tpu`, another dist name).
_DEPS_EXCEPT_TF_AND_KERAS = (
    'import importlib.metadata as m, re; '
    'print(" ".join(r for r in m.requires("efficientnet_tf") or [] if "extra ==" not in r '
    'and re.match(r"[A-Za-z0-9_.-]+", r).group().lower() not in ("tensorflow", "keras")))')


def stack_requirements(runtime_version: str) -> list[str]:
    """The pins of the runtime's stack: its TensorFlow (TPU build) and a Keras that works there."""
    rt = TPU_RUNTIMES[runtime_version]
    return [f"tensorflow-tpu=={rt.tf_version}", f"keras{rt.keras}"]


def remote_install_script(cfg: LaunchConfig) -> str:
    # A current pip first: on Python 3.10 an older pip backtracks for minutes over this stack
    # (measured with the stock tensorflow wheel: pip 23.0.1 still resolving after 2.5 min, pip 26.3
    # done in 31 s). Then one pip resolve for the pinned stack and every other requirement, so
    # nothing moves the pins.
    return " && ".join([
        f"rm -rf {REMOTE_DIR}", f"mkdir {REMOTE_DIR}",
        f"tar -xzf {REMOTE_TARBALL} -C {REMOTE_DIR}", f"cd {REMOTE_DIR}",
        "python3 -m pip install --upgrade pip",
        "python3 -m pip install --no-deps -e .",
        shlex.join(["python3", "-m", "pip", "install", *stack_requirements(cfg.runtime_version),
                    "-f", TF_TPU_FIND_LINKS])
        + f" $(python3 -c {shlex.quote(_DEPS_EXCEPT_TF_AND_KERAS)})",
    ])


def install_command(cfg: LaunchConfig) -> list[str]:
    return _gcloud("ssh", cfg, "--worker=0", f"--command={remote_install_script(cfg)}")


def _flag_name(arg: str) -> str | None:
    return arg[2:].split("=", 1)[0] if arg.startswith("--") else None


def main_py_args(cfg: LaunchConfig) -> list[str]:
    """main.py's flags; anything in --extra_args replaces the launcher's value for that flag."""
    flags = {"mode": cfg.mode, "use_tpu": True, "tpu": cfg.tpu_address}
    if cfg.pod_runtime:  # the resolver looks the slice up by name through the Cloud TPU API
        flags["tpu_zone"] = cfg.zone
        if cfg.project:
            flags["gcp_project"] = cfg.project
    training = cfg.mode != "eval"  # main.py refuses flags its mode does not use
    flags.update(model=cfg.model, dataset=cfg.dataset, data_dir=cfg.data_dir,
                 model_dir=cfg.model_dir,
                 train_batch_size=cfg.train_batch_size if training else None,
                 eval_batch_size=cfg.train_batch_size)
    if training:
        flags.update(
            steps_per_loop=min(cfg.steps_per_loop, cfg.train_steps or cfg.steps_per_loop),
            train_steps=cfg.train_steps,
            train_epochs=None if cfg.train_epochs is None else f"{cfg.train_epochs:g}")
    overridden = {_flag_name(a) for a in cfg.extra_args}
    args = [f"--{k}" if v is True else f"--{k}={v}" for k, v in flags.items()
            if v is not None and k not in overridden]
    return args + list(cfg.extra_args)


# TF's PJRT TPU plugin: the pip `libtpu` package's libtpu.so, or the image's /lib/libtpu.so.
_LIBTPU_PATH = ("$(python3 -c 'import libtpu, os.path as p; "
                "print(p.join(p.dirname(libtpu.__file__), \"libtpu.so\"))' 2>/dev/null "
                "|| echo /lib/libtpu.so)")


def remote_train_script(cfg: LaunchConfig) -> str:
    env = []
    if cfg.pod_runtime:
        # This process is only a client: the TPUs belong to each host's tpu-runtime service.
        env.append("export TPU_LOAD_LIBRARY=0")
    elif cfg.pjrt:
        env += ["export NEXT_PLUGGABLE_DEVICE_USE_C_API=true",
                f'export TF_PLUGGABLE_DEVICE_LIBRARY_PATH="{_LIBTPU_PATH}"']
    return " && ".join([f"cd {REMOTE_DIR}", *env,
                        shlex.join(["python3", "main.py", *main_py_args(cfg)])])


def train_command(cfg: LaunchConfig) -> list[str]:
    return _gcloud("ssh", cfg, "--worker=0", f"--command={remote_train_script(cfg)}")


def delete_command(cfg: LaunchConfig) -> list[str]:
    return _gcloud("delete", cfg, "--quiet")


def build_steps(cfg: LaunchConfig) -> dict[str, list[list[str]]]:
    return {
        "package": [package_command(cfg)],
        "create": [create_command(cfg)],
        "install": [copy_command(cfg), install_command(cfg)],
        "train": [train_command(cfg)],
        "delete": [delete_command(cfg)],
    }


# `all` packages before creating, so a broken checkout costs no VM time.
ACTION_STEPS = {
    "create": ("create",),
    "install": ("package", "install"),
    "train": ("train",),
    "delete": ("delete",),
    "all": ("package", "create", "install", "train", "delete"),
}


def plan(cfg: LaunchConfig, action: str, keep_vm: bool = False) -> list[list[str]]:
    """Every command `action` runs, in order (what --dry_run prints)."""
    steps = build_steps(cfg)
    names = [n for n in ACTION_STEPS[action] if not (keep_vm and action == "all" and n == "delete")]
    return [argv for n in names for argv in steps[n]]


# --- execution --------------------------------------------------------------------------------

def _run(argv: list[str]) -> None:
    print(f"+ {shlex.join(argv)}", file=sys.stderr, flush=True)
    subprocess.run(argv, check=True)


def execute(cfg: LaunchConfig, action: str, keep_vm: bool = False, run=_run) -> None:
    """Run `action`; for `all`, delete the VM afterwards even when install or training fails."""
    steps = build_steps(cfg)
    if action != "all":
        for argv in plan(cfg, action):
            run(argv)
        return
    # A failed create deletes nothing: the name may belong to someone else's VM.
    for argv in steps["package"] + steps["create"]:
        run(argv)
    try:
        for argv in steps["install"] + steps["train"]:
            run(argv)
    finally:
        if keep_vm:
            print(f"--keep_vm: {cfg.name} is still running (and billed). Delete it with:\n  "
                  f"{shlex.join(delete_command(cfg))}", file=sys.stderr)
        else:
            for argv in steps["delete"]:
                run(argv)


def check_tools(commands: list[list[str]]) -> None:
    for tool in dict.fromkeys(argv[0] for argv in commands):
        if shutil.which(tool) is None:
            hint = (" Install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and "
                    "run `gcloud auth login`." if tool == "gcloud" else "")
            raise FileNotFoundError(f"`{tool}` was not found on PATH; nothing was run.{hint}")


def _warn_if_dirty(repo_root: Path) -> None:
    if not (repo_root / ".git").exists():
        raise FileNotFoundError(f"{repo_root} is not a git checkout: the launcher ships the "
                                "committed tree with `git archive HEAD`.")
    # GIT_OPTIONAL_LOCKS=0: only look, never refresh the index (someone may be committing).
    status = subprocess.run(["git", "-C", str(repo_root), "status", "--porcelain"],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout
    if status.strip():
        print("warning: the VM gets the committed tree (git archive HEAD); these uncommitted "
              f"changes are NOT shipped:\n{status}", file=sys.stderr)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="tpu/launch.py", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=ACTIONS,
                   help="all = create, install, train, then delete (unless --keep_vm)")
    p.add_argument("--name", required=True, help="TPU VM name")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default=None, help="GCP project (default: gcloud's configured one)")
    p.add_argument("--accelerator_type", required=True, help="e.g. v3-8, v4-8, v4-32, v5litepod-8")
    p.add_argument("--runtime_version", required=True,
                   help="TensorFlow TPU VM image, one of: " + ", ".join(TPU_RUNTIMES)
                        + " ('-pod' ones for pod slices)")
    p.add_argument("--spot", action="store_true", help="create a Spot TPU VM (preemptible)")
    p.add_argument("--model", default="efficientnet-b0", choices=MODEL_NAMES)
    p.add_argument("--mode", default="train_and_eval", choices=MAIN_MODES)
    p.add_argument("--dataset", default="imagenet")
    p.add_argument("--data_dir", default=None, help="gs:// directory of the dataset's TFRecords")
    p.add_argument("--model_dir", required=True, help="gs:// directory for checkpoints and logs")
    p.add_argument("--train_batch_size", type=int, default=None,
                   help="global batch (default: the recommended one for --model on the slice)")
    p.add_argument("--train_steps", type=int, default=None)
    p.add_argument("--train_epochs", type=float, default=None)
    p.add_argument("--steps_per_loop", type=int, default=DEFAULT_STEPS_PER_LOOP)
    p.add_argument("--extra_args", default="",
                   help="more main.py flags, one shell-quoted string; they override the launcher's")
    p.add_argument("--keep_vm", action="store_true", help="all: do not delete the VM at the end")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> LaunchConfig:
    return LaunchConfig(
        name=args.name, zone=args.zone, project=args.project,
        accelerator=parse_accelerator(args.accelerator_type),
        runtime_version=args.runtime_version, spot=args.spot, model=args.model, mode=args.mode,
        dataset=args.dataset, data_dir=args.data_dir, model_dir=args.model_dir,
        train_batch_size=args.train_batch_size, train_steps=args.train_steps,
        train_epochs=args.train_epochs, steps_per_loop=args.steps_per_loop,
        extra_args=tuple(shlex.split(args.extra_args)))


def _report_failure(cfg: LaunchConfig, args, e: subprocess.CalledProcessError) -> None:
    earlier = e.__context__ if isinstance(e.__context__, subprocess.CalledProcessError) else None
    for failure in filter(None, (earlier, e)):
        print(f"error: exit code {failure.returncode} from: {shlex.join(failure.cmd)}",
              file=sys.stderr)
    steps = build_steps(cfg)
    if e.cmd in steps["delete"]:
        print(f"Deleting {cfg.name} FAILED: it may still be running, and billed. Retry with:\n  "
              f"{shlex.join(e.cmd)}", file=sys.stderr)
    elif args.action == "all" and e.cmd in steps["install"] + steps["train"]:
        if args.keep_vm:
            print(f"{cfg.name} is still running (--keep_vm): rerun the `train` action to resume "
                  f"from the checkpoints in {cfg.model_dir}, or `delete` it.", file=sys.stderr)
        else:
            print(f"The TPU VM {cfg.name} was deleted; checkpoints in {cfg.model_dir} are kept: "
                  "rerunning the same command resumes training.", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a = cfg.accelerator
    per_replica = cfg.train_batch_size // a.replicas
    print(f"# {cfg.model} at {image_size(cfg.model)}px on {a.type} "
          f"({'multi-host' if a.multi_host else 'single host'}, {a.replicas} replicas): main.py on "
          f"worker 0 with --tpu={cfg.tpu_address}, global batch {cfg.train_batch_size} "
          f"({per_replica}/replica), TensorFlow {cfg.tf_version} (tensorflow-tpu), "
          f"Keras{cfg.runtime.keras}, Python {cfg.runtime.python}", file=sys.stderr)
    commands = plan(cfg, args.action, args.keep_vm)
    if args.dry_run:
        for argv_ in commands:
            print(shlex.join(argv_))
        return 0
    try:
        check_tools(commands)
        if args.action in ("install", "all"):
            _warn_if_dirty(cfg.repo_root)
        execute(cfg, args.action, args.keep_vm)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        _report_failure(cfg, args, e)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
