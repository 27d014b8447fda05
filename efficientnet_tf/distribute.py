"""Pick the tf.distribute strategy and the mixed-precision policy from explicit arguments.

The decision (`select_strategy_name`) is a pure function of the arguments and the device counts,
so it is tested without hardware. Asking for hardware that is not there raises at once with the
flag and what was found: never a silent single-CPU run, never minutes of metadata-server retries.
"""
from __future__ import annotations

import glob
import json
import os

import tensorflow as tf

from efficientnet_tf.config import JIT_COMPILE, MIXED_PRECISION, STRATEGIES, ConfigError


def select_strategy_name(strategy: str = "auto", *, use_tpu: bool = False,
                         num_gpus: int | None = None, visible_gpus: int = 0,
                         logical_cpus: int = 1) -> str:
    """'tpu' | 'mirrored' | 'multi_worker_mirrored' | 'one_device' | 'default'.

    auto: TPU if use_tpu, else mirrored over >1 GPU, else one_device for an explicit
    num_gpus <= 1, else TensorFlow's default strategy. mirrored without GPUs mirrors over the
    logical CPU devices (num_gpus unset or 0), which must be more than one.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if use_tpu and strategy not in ("auto", "tpu"):
        raise ConfigError(f"use_tpu conflicts with --strategy={strategy}; use --strategy=tpu "
                          "or drop --use_tpu")
    if num_gpus is not None:
        if num_gpus < 0:
            raise ConfigError(f"num_gpus={num_gpus}: must be >= 0")
        if use_tpu or strategy == "tpu":
            raise ConfigError(f"num_gpus={num_gpus} conflicts with a TPU strategy")
        if num_gpus > visible_gpus:
            raise ConfigError(f"num_gpus={num_gpus}, but TensorFlow sees {visible_gpus} GPU(s) "
                               "on this machine (check CUDA_VISIBLE_DEVICES and the CUDA install)")
    if use_tpu or strategy == "tpu":
        return "tpu"
    if strategy == "auto":
        if num_gpus is not None:
            return "mirrored" if num_gpus > 1 else "one_device"
        return "mirrored" if visible_gpus > 1 else "default"
    if strategy == "mirrored" and (visible_gpus == 0 or num_gpus == 0) and logical_cpus < 2:
        raise ConfigError(
            f"strategy=mirrored: without GPUs ({visible_gpus} visible, --num_gpus={num_gpus}) it "
            f"mirrors over logical CPU devices, but there is only {logical_cpus}. Use "
            "--strategy=auto or one_device, or make GPUs visible (CUDA_VISIBLE_DEVICES).")
    return strategy


def split_cpu(num_devices: int) -> None:
    """Split the host CPU into `num_devices` logical devices, to run multi-replica code on CPU.

    Must run before TensorFlow initializes its devices (before any op or device listing).
    """
    if num_devices < 1:
        raise ConfigError(f"num_devices={num_devices}: must be >= 1")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as e:
        raise RuntimeError(f"split_cpu({num_devices}) must run before TensorFlow initializes its "
                           f"devices: {e}") from e


def parse_tf_config(value: str | None) -> dict:
    """Validate TF_CONFIG for multi-worker training; returns the parsed dict."""
    if not value:
        raise ConfigError("strategy=multi_worker_mirrored needs the TF_CONFIG environment "
                           "variable (JSON with 'cluster' and 'task'), and it is not set")
    try:
        config = json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}): {value[:200]!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(cluster.get(k) for k in ("worker", "chief")):
        raise ConfigError("TF_CONFIG needs a 'cluster' with a non-empty 'worker' (or 'chief') list "
                          f"of host:port addresses; got {value[:200]!r}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ConfigError(f"TF_CONFIG needs 'task': {{'type': ..., 'index': ...}}; "
                          f"got {value[:200]!r}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ConfigError(f"TF_CONFIG task {task} is not in the cluster {cluster}")
    return config


def local_tpu_devices() -> list[str]:
    """Device files of TPU chips attached to this VM (v2-v4: /dev/accel*, v5+: /dev/vfio/N)."""
    return sorted(glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*"))


def _on_google_cloud() -> bool:
    # What google-auth checks on Linux: the DMI product name of a GCE VM.
    try:
        with open("/sys/class/dmi/id/product_name") as f:
            return "Google" in f.read()
    except OSError:
        return bool(os.environ.get("GCE_METADATA_HOST"))


def check_tpu_request(tpu: str | None, tpu_zone: str | None, gcp_project: str | None, *,
                      local_devices: list[str], on_google_cloud: bool,
                      env: dict | None = None) -> str:
    """The `tpu` argument for TPUClusterResolver, or a clear error when it cannot work.

    Run before the resolver: it would otherwise block on the GCE metadata server (no timeout)
    or fail with an unrelated network error.
    """
    env = os.environ if env is None else env
    if tpu in (None, "", "local"):
        if local_devices:
            return "local"
        if tpu != "local" and env.get("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS"):
            return ""  # GKE: the resolver reads the endpoints itself
        if tpu == "local" or not env.get("TPU_NAME"):
            asked = "tpu=local" if tpu == "local" else "use_tpu/strategy=tpu without a tpu name"
            raise ConfigError(
                f"{asked}: no TPU found on this machine (no /dev/accel* or /dev/vfio/N device, "
                "TPU_NAME not set). Run on a Cloud TPU VM, or pass --tpu=NAME (a Cloud TPU, with "
                "--tpu_zone/--gcp_project off Google Cloud) or --tpu=grpc://HOST:8470.")
        name = env["TPU_NAME"]
    else:
        name = tpu
    if name.startswith("grpc://"):
        return tpu or ""
    if not (tpu_zone and gcp_project) and not on_google_cloud:
        raise ConfigError(
            f"tpu={name}: finding a Cloud TPU by name needs its zone and project, which only the "
            "GCE metadata server of a Google Cloud VM provides, and this is not one. Pass "
            "--tpu_zone and --gcp_project, or --tpu=grpc://HOST:8470.")
    return tpu or ""


def _tpu_strategy(tpu, tpu_zone, gcp_project):
    tpu = check_tpu_request(tpu, tpu_zone, gcp_project, local_devices=local_tpu_devices(),
                            on_google_cloud=_on_google_cloud())
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu, zone=tpu_zone, project=gcp_project)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:
        raise ConfigError(f"tpu={tpu or '(from TPU_NAME)'}: could not reach the TPU: "
                           f"{type(e).__name__}: {e}") from e
    return tf.distribute.TPUStrategy(resolver)


def get_strategy(strategy: str = "auto", *, use_tpu: bool = False, tpu: str | None = None,
                 tpu_zone: str | None = None, gcp_project: str | None = None,
                 num_gpus: int | None = None) -> tf.distribute.Strategy:
    """The strategy the arguments ask for (see `select_strategy_name`)."""
    gpus = tf.config.list_physical_devices("GPU")
    # Counting logical CPUs initializes the runtime; only the CPU-mirrored case needs them.
    logical_cpus = (len(tf.config.list_logical_devices("CPU"))
                    if strategy == "mirrored" and (not gpus or num_gpus == 0) else 1)
    name = select_strategy_name(strategy, use_tpu=use_tpu, num_gpus=num_gpus,
                                visible_gpus=len(gpus), logical_cpus=logical_cpus)
    if name == "tpu":
        return _tpu_strategy(tpu, tpu_zone, gcp_project)
    if name == "mirrored":
        if gpus and num_gpus != 0:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")][:num_gpus or None]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        parse_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus and num_gpus != 0 else "/cpu:0")
    return tf.distribute.get_strategy()


def strategy_device_kind(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'gpu' or 'cpu': the devices the strategy computes on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = strategy.extended.worker_devices
    except (AttributeError, RuntimeError, NotImplementedError):
        devices = [d.name for d in tf.config.list_logical_devices("GPU")[:1]]
    return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"


def resolve_mixed_precision(policy: str, device_kind: str) -> str:
    """`--mixed_precision`: auto → mixed_bfloat16 on TPU, mixed_float16 on GPU, float32 on CPU."""
    if policy not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision={policy!r}: expected one of "
                          f"{', '.join(MIXED_PRECISION)}")
    if device_kind not in ("tpu", "gpu", "cpu"):
        raise ValueError(f"device_kind={device_kind!r}: expected 'tpu', 'gpu' or 'cpu'")
    if policy != "auto":
        return policy
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}[device_kind]


def resolve_jit_compile(setting: str, device_kind: str) -> bool:
    """`--jit_compile`: auto → on for GPU (fused kernels), off on CPU (where XLA's code is several
    times slower than TensorFlow's kernels); TPU programs are always XLA: off is refused."""
    if setting not in JIT_COMPILE:
        raise ConfigError(f"jit_compile={setting!r}: expected one of {', '.join(JIT_COMPILE)}")
    if device_kind not in ("tpu", "gpu", "cpu"):
        raise ValueError(f"device_kind={device_kind!r}: expected 'tpu', 'gpu' or 'cpu'")
    if device_kind == "tpu":
        if setting == "off":
            raise ConfigError("jit_compile='off': TPU programs are always compiled with XLA; "
                              "use auto or on.")
        return True
    return setting == "on" or (setting == "auto" and device_kind == "gpu")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The worker that writes shared outputs (task 'chief', else worker 0, else the only one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def strategy_for(runtime) -> tf.distribute.Strategy:
    """The strategy a `RuntimeConfig` asks for (splitting the CPU first when it says so)."""
    if runtime.num_cpu_devices:
        split_cpu(runtime.num_cpu_devices)
    return get_strategy(runtime.strategy, use_tpu=runtime.use_tpu, tpu=runtime.tpu,
                        tpu_zone=runtime.tpu_zone, gcp_project=runtime.gcp_project,
                        num_gpus=runtime.num_gpus)
