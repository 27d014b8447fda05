"""tpu/launch.py without a TPU: the gcloud commands it builds, what the remote scripts really run,
--dry_run, a missing gcloud, and teardown when training fails (fake `gcloud` on PATH)."""
import ast
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tpu import launch

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH = REPO_ROOT / "tpu" / "launch.py"
TARBALL = Path("/tmp/src.tar.gz")


@pytest.fixture(autouse=True)
def _clear_keras_session():
    """Overrides conftest's fixture: nothing here touches Keras, so don't import it."""
    yield


def make_cfg(accelerator="v4-8", runtime="tpu-vm-tf-2.18.0-pjrt-v5p-and-below", **overrides):
    kw = dict(name="my-tpu", zone="us-central2-b", project="proj",
              accelerator=launch.parse_accelerator(accelerator), runtime_version=runtime,
              model="efficientnet-b0", data_dir="gs://bucket/imagenet",
              model_dir="gs://bucket/runs/b0", local_tarball=TARBALL)
    kw.update(overrides)
    return launch.LaunchConfig(**kw)


def remote_script(ssh_argv):
    assert ssh_argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
    assert ssh_argv[-1].startswith("--command=")
    return ssh_argv[-1][len("--command="):]


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


# --- pure command builders ------------------------------------------------------------------

def test_create_delete_and_copy_commands_single_host():
    cfg = make_cfg(spot=True)
    base = ["my-tpu", "--zone=us-central2-b", "--project=proj"]
    assert launch.create_command(cfg) == [
        "gcloud", "compute", "tpus", "tpu-vm", "create", *base, "--accelerator-type=v4-8",
        "--version=tpu-vm-tf-2.18.0-pjrt-v5p-and-below", "--spot"]
    assert launch.delete_command(cfg) == [
        "gcloud", "compute", "tpus", "tpu-vm", "delete", *base, "--quiet"]
    assert launch.package_command(cfg) == [
        "git", "-C", str(REPO_ROOT), "archive", "--format=tar.gz", "-o", str(TARBALL), "HEAD"]
    assert launch.copy_command(cfg) == [
        "gcloud", "compute", "tpus", "tpu-vm", "scp", str(TARBALL),
        "my-tpu:efficientnet_tf-src.tar.gz", "--zone=us-central2-b", "--project=proj", "--worker=0"]
    assert "--project=proj" not in launch.create_command(make_cfg(project=None))


def test_single_host_train_command():
    cfg = make_cfg()
    argv = launch.train_command(cfg)
    assert argv[5:9] == ["my-tpu", "--zone=us-central2-b", "--project=proj", "--worker=0"]
    assert launch.main_py_args(cfg) == [
        "--mode=train_and_eval", "--use_tpu", "--tpu=local", "--model=efficientnet-b0",
        "--dataset=imagenet", "--data_dir=gs://bucket/imagenet", "--model_dir=gs://bucket/runs/b0",
        "--train_batch_size=1024", "--eval_batch_size=1024", "--steps_per_loop=1000"]
    script = remote_script(argv)
    assert "export NEXT_PLUGGABLE_DEVICE_USE_C_API=true" in script
    assert "TPU_LOAD_LIBRARY" not in script
    # Stream-executor images need no PJRT plugin variables.
    assert "NEXT_PLUGGABLE" not in remote_script(
        launch.train_command(make_cfg(accelerator="v3-8", runtime="tpu-vm-tf-2.16.1-se")))


def test_pod_slice_train_command_runs_on_worker0_as_tpu_client():
    cfg = make_cfg(accelerator="v4-32", runtime="tpu-vm-tf-2.17.0-pod-pjrt",
                   model="efficientnet-b7", train_epochs=350)
    assert cfg.accelerator.multi_host and cfg.accelerator.replicas == 16
    argv = launch.train_command(cfg)
    assert "--worker=0" in argv and "--worker=all" not in argv
    script = remote_script(argv)
    assert "export TPU_LOAD_LIBRARY=0" in script and "NEXT_PLUGGABLE" not in script
    assert launch.main_py_args(cfg)[:5] == [
        "--mode=train_and_eval", "--use_tpu", "--tpu=my-tpu", "--tpu_zone=us-central2-b",
        "--gcp_project=proj"]
    assert "--train_epochs=350" in launch.main_py_args(cfg)
    assert "--train_batch_size=256" in launch.main_py_args(cfg)  # 16 per v4 chip x 16 chips


def test_runtime_names_with_hardware_suffixes():
    cfg = make_cfg(accelerator="v5p-8", runtime="tpu-vm-tf-2.18.0-pjrt-v5p-and-below")
    assert (cfg.tf_version, cfg.pjrt, cfg.pod_runtime, cfg.tpu_address) == ("2.18.0", True, False,
                                                                             "local")
    pod = make_cfg(accelerator="v5litepod-16", runtime="tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6")
    assert (pod.pod_runtime, pod.tpu_address, pod.accelerator.replicas) == (True, "my-tpu", 16)


def test_extra_args_override_and_steps_per_loop_clamp():
    cfg = make_cfg(train_steps=200,
                   extra_args=("--train_batch_size=128", "--augment_name=randaugment"))
    args = launch.main_py_args(cfg)
    assert [a for a in args if a.startswith("--train_batch_size")] == ["--train_batch_size=128"]
    assert args[-2:] == ["--train_batch_size=128", "--augment_name=randaugment"]
    assert "--steps_per_loop=200" in args and "--train_steps=200" in args
    synthetic = launch.main_py_args(make_cfg(dataset="synthetic", data_dir=None))
    assert "--dataset=synthetic" in synthetic and not any("data_dir" in a for a in synthetic)


def test_plan_order_and_keep_vm():
    cfg = make_cfg()
    verbs = [argv[4] if argv[0] == "gcloud" else argv[0] for argv in launch.plan(cfg, "all")]
    assert verbs == ["git", "create", "scp", "ssh", "ssh", "delete"]
    assert launch.plan(cfg, "all", keep_vm=True)[-1] == launch.train_command(cfg)
    assert launch.plan(cfg, "install") == [launch.package_command(cfg), launch.copy_command(cfg),
                                           launch.install_command(cfg)]


def _failing_runner(failing_argv):
    calls = []

    def run(argv):
        calls.append(argv)
        if argv == failing_argv:
            raise subprocess.CalledProcessError(3, argv)
    return calls, run


def test_execute_tears_down_after_a_failed_train_but_not_after_a_failed_create():
    cfg = make_cfg()
    calls, run = _failing_runner(launch.train_command(cfg))
    with pytest.raises(subprocess.CalledProcessError):
        launch.execute(cfg, "all", run=run)
    assert calls == launch.plan(cfg, "all")  # ..., train (failed), delete
    # Ctrl-C during training still tears down.
    calls = []

    def interrupted(argv):
        calls.append(argv)
        if argv == launch.train_command(cfg):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        launch.execute(cfg, "all", run=interrupted)
    assert calls[-1] == launch.delete_command(cfg)
    # A create that fails (e.g. the name is taken by another VM) must not delete anything.
    calls, run = _failing_runner(launch.create_command(cfg))
    with pytest.raises(subprocess.CalledProcessError):
        launch.execute(cfg, "all", run=run)
    assert calls == [launch.package_command(cfg), launch.create_command(cfg)]


@pytest.mark.parametrize("overrides, match", [
    (dict(accelerator="v4-32"), "multi-host pod slice.*'-pod' runtime"),
    (dict(runtime="tpu-vm-tf-2.15.0-pjrt"), "TensorFlow >= 2.16"),
    (dict(runtime="tpu-ubuntu2204-base"), "not a TensorFlow TPU VM image known to exist"),
    (dict(runtime="tpu-vm-tf-2.18.0-pjrt"), "not a TensorFlow TPU VM image known to exist"),
    (dict(runtime="tpu-vm-tf-2.21.0-pjrt"), "stop at TensorFlow 2.18.0"),
    (dict(runtime="tpu-vm-tf-2.16.1-se", accelerator="v5p-8"), "runs on TPU v2, v3, v4, not v5p-8"),
    (dict(runtime="tpu-vm-tf-2.18.0-pjrt-v5e-and-v6"), "runs on TPU v5litepod, not v4-8"),
    (dict(model_dir="/tmp/runs"), "--model_dir=.*gs://"),
    (dict(data_dir="/data/imagenet"), "--data_dir=.*gs://"),
    (dict(train_steps=10, train_epochs=1.0), "not both"),
    (dict(train_batch_size=102), "multiple of the 4 replicas"),
    (dict(name="My_TPU"), "--name="),
    (dict(model="resnet50"), "--model="),
])
def test_bad_configs_fail_with_the_flag_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_cfg(**overrides)


@pytest.mark.parametrize("accelerator, match", [
    ("v6e-8", "TensorFlow does not support TPU v6e"),
    ("v5e-8", "v5litepod"),
    ("v4-3", "multiple of 2"),
    ("tpu-8", "expected GEN-SIZE"),
])
def test_bad_accelerators(accelerator, match):
    with pytest.raises(ValueError, match=match):
        launch.parse_accelerator(accelerator)


def test_recommended_settings():
    accel = launch.parse_accelerator
    assert set(launch.MODEL_SETTINGS) == set(launch.MODEL_NAMES)
    assert [launch.image_size(f"efficientnet-b{i}") for i in (0, 7)] == [224, 600]
    # B0 on a v3-8 gets the reference default global batch; big slices stop at the paper's 4096.
    assert launch.recommended_train_batch_size("efficientnet-b0", accel("v3-8")) == 2048
    assert launch.recommended_train_batch_size("efficientnet-b0", accel("v3-512")) == 4096
    assert launch.recommended_train_batch_size("efficientnet-b7", accel("v3-8")) == 64
    assert launch.recommended_train_batch_size("efficientnet-b7", accel("v2-8")) == 32
    assert launch.recommended_train_batch_size("efficientnet-b7", accel("v5p-8")) == 128
    assert [accel(t).replicas for t in ("v4-8", "v5litepod-8", "v5p-16")] == [4, 8, 8]
    assert not accel("v5litepod-8").multi_host and accel("v5litepod-16").multi_host
    with pytest.raises(ValueError, match="efficientnet-l2 does not fit on v3-8"):
        launch.recommended_train_batch_size("efficientnet-l2", accel("v3-8"))
    assert launch.recommended_train_batch_size("efficientnet-l2", accel("v4-8")) == 4
    table = launch.settings_table()
    assert "| efficientnet-b7 | 600 | 1931 | 8 | 32 | 64 |" in table
    assert table in (REPO_ROOT / "tpu" / "README.md").read_text()  # the docs show the code's table


def estimated_activation_mib(model):
    """The estimate MODEL_SETTINGS documents: tensors kept for backprop, bfloat16, per image."""
    mc = launch.model_config
    c = mc.get_model_config(model)
    r = math.ceil(c.resolution / 2)
    elems = 3 * r * r * mc.stem_filters(c)                       # stem conv, BN, activation
    channels = mc.stem_filters(c)
    for stage in mc.stage_table(c):
        for i in range(stage.num_repeat):
            stride = stage.strides if i == 0 else 1
            cin = stage.input_filters if i == 0 else stage.output_filters  # as declared
            # e1 blocks work on their actual input (Lite's fixed 32-channel stem).
            expanded = channels if stage.expand_ratio == 1 else int(cin * stage.expand_ratio)
            out = math.ceil(r / stride)
            if stage.conv_type == 1:                             # EdgeTPU: strided 3x3 expansion
                elems += 3 * out * out * expanded                # conv, BN, activation
            else:
                if stage.expand_ratio != 1:
                    elems += 3 * r * r * expanded                # expand conv, BN, activation
                elems += 3 * out * out * expanded                # depthwise conv, BN, activation
            if stage.se_ratio:
                elems += out * out * expanded                    # SE gate product
            elems += 2 * out * out * stage.output_filters        # project conv, BN
            if stage.id_skip and stride == 1 and cin == stage.output_filters:
                elems += 2 * out * out * stage.output_filters    # drop-path, residual add
            r, channels = out, stage.output_filters
    elems += 3 * r * r * mc.head_filters(c)                      # head conv, BN, activation
    return elems * 2 / 2**20


def test_batch_table_follows_its_documented_derivation():
    for model, settings in launch.MODEL_SETTINGS.items():
        mib = estimated_activation_mib(model)
        assert settings.activation_mib_per_image == round(mib), model
        if model != "efficientnet-l2":  # set by hand: its optimizer state alone is ~9 GiB
            expected = min(256, 2 ** math.floor(math.log2(16 * 1024 / mib)))
            assert settings.images_per_16gib == expected, model


# --- the remote scripts, run by bash as the VM would (fake python3 records what it gets) -----

FAKE_PYTHON3 = """#!/bin/sh
if [ "$1" = "-c" ]; then
  case "$2" in *libtpu*) echo /fake/libtpu/libtpu.so; exit 0;; esac
  exec "{real}" "$@"
fi
{{ echo "CALL $PWD"; echo "TPU_LOAD_LIBRARY=${{TPU_LOAD_LIBRARY-unset}}"
   echo "PJRT=${{NEXT_PLUGGABLE_DEVICE_USE_C_API-unset}} \
${{TF_PLUGGABLE_DEVICE_LIBRARY_PATH-unset}}"
   for a in "$@"; do echo "ARG $a"; done; }} >> "$RECORD"
"""


def run_remote(script, tmp_path):
    home, fakebin = tmp_path / "home", tmp_path / "bin"
    fakebin.mkdir(exist_ok=True)
    (home / launch.REMOTE_DIR).mkdir(parents=True, exist_ok=True)
    write_script(fakebin / "python3", FAKE_PYTHON3.format(real=sys.executable))
    record = tmp_path / "record.txt"
    subprocess.run(["bash", "-c", script], cwd=home, check=True, timeout=60,
                   env={"PATH": f"{fakebin}{os.pathsep}/usr/bin{os.pathsep}/bin",
                        "RECORD": str(record), "HOME": str(home)})
    calls = []
    for line in record.read_text().splitlines():
        if line.startswith("CALL "):
            calls.append({"cwd": line[5:], "args": []})
        elif line.startswith("ARG "):
            calls[-1]["args"].append(line[4:])
        else:
            key, value = line.split("=", 1)
            calls[-1][key] = value
    return home, calls


@pytest.mark.parametrize("accelerator, runtime, env", [
    ("v4-8", "tpu-vm-tf-2.18.0-pjrt-v5p-and-below", ("unset", "true /fake/libtpu/libtpu.so")),
    ("v4-32", "tpu-vm-tf-2.16.1-pod-pjrt", ("0", "unset unset")),
])
def test_remote_train_script_passes_exact_args(tmp_path, accelerator, runtime, env):
    cfg = make_cfg(accelerator=accelerator, runtime=runtime,
                   extra_args=("--augment_name=randaugment", "--run_note=it's \"quoted\" $HOME"))
    home, calls = run_remote(remote_script(launch.train_command(cfg)), tmp_path)
    assert len(calls) == 1
    assert calls[0]["cwd"] == str(home / launch.REMOTE_DIR)
    assert calls[0]["args"] == ["main.py", *launch.main_py_args(cfg)]
    assert (calls[0]["TPU_LOAD_LIBRARY"], calls[0]["PJRT"]) == env


def test_remote_install_script_unpacks_head_and_installs_the_runtimes_stack(tmp_path):
    cfg = make_cfg(local_tarball=tmp_path / "src.tar.gz")
    subprocess.run(launch.package_command(cfg), check=True, timeout=120)
    with tarfile.open(cfg.tarball) as tar:
        names = set(tar.getnames())
    assert {"setup.py", "main.py", "efficientnet_tf/config.py"} <= names
    (tmp_path / "home").mkdir()
    shutil.copy(cfg.tarball, tmp_path / "home" / launch.REMOTE_TARBALL)
    home, calls = run_remote(launch.remote_install_script(cfg), tmp_path)
    assert (home / launch.REMOTE_DIR / "setup.py").exists()
    assert [c["args"][:3] for c in calls] == [["-m", "pip", "install"]] * 3
    assert calls[0]["args"][3:] == ["--upgrade", "pip"]
    assert calls[1]["args"][3:] == ["--no-deps", "-e", "."]
    # One resolve: the runtime's TensorFlow TPU build, a Keras that works there, everything else.
    args = calls[2]["args"][3:]
    assert args[:4] == ["tensorflow-tpu==2.18.0", "keras>=3.10,<3.13", "-f",
                        launch.TF_TPU_FIND_LINKS]
    deps = args[4:]
    assert "tensorflow-datasets>=4.9" in deps and "absl-py" in deps
    # Neither the stock `tensorflow` wheel nor a second, unpinned Keras requirement.
    assert not [d for d in deps if re.match(r"(tensorflow|keras)\b(?!-)", d)], deps


# --- the runtime table: only images that exist, each with a stack that installs and works -----

def setup_py_requirements():
    """install_requires of setup.py, read without running it."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return {re.match(r"[A-Za-z0-9_.-]+", r).group().lower(): r
                    for r in ast.literal_eval(node.value)}
    raise AssertionError("setup.py has no install_requires")


def version(text):
    return tuple(int(v) for v in text.split("."))


def lower_bound(requirement):
    return version(re.search(r">=\s*([0-9.]+)", requirement).group(1))


# PyPI facts, from `pip index versions tensorflow-tpu` and the Requires-Python of the keras wheels
# (3.10.0-3.12.x: >=3.9 / >=3.10; 3.13.0 and later: >=3.11).
TENSORFLOW_TPU_ON_PYPI = {"2.16.1", "2.16.2", "2.17.0", "2.17.1", "2.18.0", "2.19.1", "2.20.0"}
FIRST_KERAS_NEEDING_PY311 = (3, 13)


def keras_range(spec):
    low = version(re.fullmatch(r">=([0-9.]+),<([0-9.]+)", spec).group(1))
    high = version(re.fullmatch(r">=([0-9.]+),<([0-9.]+)", spec).group(2))
    return low, high


def test_runtime_table_entries_are_consistent_with_setup_py_and_pypi():
    reqs = setup_py_requirements()
    tf_min, keras_min = lower_bound(reqs["tensorflow"]), lower_bound(reqs["keras"])
    assert set(launch.TPU_RUNTIMES) == {
        "tpu-vm-tf-2.16.1-pjrt", "tpu-vm-tf-2.16.1-se", "tpu-vm-tf-2.16.1-pod-pjrt",
        "tpu-vm-tf-2.17.0-pjrt", "tpu-vm-tf-2.17.0-pod-pjrt",
        "tpu-vm-tf-2.18.0-pjrt-v5p-and-below", "tpu-vm-tf-2.18.0-pjrt-v5e-and-v6",
        "tpu-vm-tf-2.18.0-pod-pjrt-v5e-and-v6"}
    for name, rt in launch.TPU_RUNTIMES.items():
        m = launch.RUNTIME_RE.match(name)
        assert m and ".".join(m.group(1, 2, 3)) == rt.tf_version, name
        assert rt.tf_version in TENSORFLOW_TPU_ON_PYPI, name
        assert version(rt.tf_version) >= tf_min, name          # setup.py allows this TensorFlow
        low, high = keras_range(rt.keras)
        assert low == keras_min, name                          # the code's Keras floor
        if version(rt.python) < (3, 11):                       # no Keras the image cannot install
            assert high <= FIRST_KERAS_NEEDING_PY311, name
        assert set(rt.generations) <= set(launch.TPU_GENERATIONS), name
        if "se" in m.group(4).split("-"):                      # stream executor: v2-v4 only
            assert set(rt.generations) <= {"v2", "v3", "v4"}, name
    # Every accelerator generation has a single-host and a pod runtime.
    for gen in launch.TPU_GENERATIONS:
        for accel in (f"{gen}-8", f"{gen}-32"):
            assert launch.runtime_choices(launch.parse_accelerator(accel)), accel


@pytest.mark.parametrize("runtime", list(launch.TPU_RUNTIMES))
def test_install_pins_each_runtimes_stack(runtime):
    rt = launch.TPU_RUNTIMES[runtime]
    accel = next(a for a in (f"{g}-{n}" for g in rt.generations for n in (8, 32))
                 if runtime in launch.runtime_choices(launch.parse_accelerator(a)))
    cfg = make_cfg(accelerator=accel, runtime=runtime)
    assert cfg.tf_version == rt.tf_version
    script = launch.remote_install_script(cfg)
    pip = next(shlex.split(c.split(" $(")[0]) for c in script.split(" && ")
               if "tensorflow-tpu" in c)
    assert pip[:4] == ["python3", "-m", "pip", "install"]
    pins = [a for a in pip[4:] if re.match(r"(tensorflow|keras)", a)]
    assert pins == [f"tensorflow-tpu=={rt.tf_version}", f"keras{rt.keras}"]
    assert pins == launch.stack_requirements(runtime)


@pytest.mark.parametrize("accelerator", ["v4-8", "v5litepod-8"])
def test_unknown_runtime_is_refused_with_the_valid_ones(tmp_path, accelerator):
    args = [a for a in CLI_ARGS if not a.startswith(("--runtime_version", "--accelerator_type"))]
    proc = run_cli([*args, f"--accelerator_type={accelerator}",
                    "--runtime_version=tpu-vm-tf-2.21.0-pjrt", "--dry_run", "all"], tmp_path,
                   os.environ["PATH"])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--runtime_version='tpu-vm-tf-2.21.0-pjrt'" in proc.stderr
    assert "Valid runtimes: " + ", ".join(launch.TPU_RUNTIMES) in proc.stderr
    fitting = launch.runtime_choices(launch.parse_accelerator(accelerator))
    assert f"for {accelerator}: " + ", ".join(fitting) in proc.stderr
    assert ("tpu-vm-tf-2.18.0-pjrt-v5e-and-v6" in fitting) == (accelerator == "v5litepod-8")


def test_readme_shows_the_runtime_table():
    assert launch.runtime_table() in (REPO_ROOT / "tpu" / "README.md").read_text()


# --- the CLI, in a subprocess, with fake tools on PATH ---------------------------------------

CLI_ARGS = ["--name=my-tpu", "--zone=us-central2-b", "--project=proj", "--accelerator_type=v4-8",
            "--runtime_version=tpu-vm-tf-2.18.0-pjrt-v5p-and-below", "--model=efficientnet-b0",
            "--data_dir=gs://bucket/imagenet", "--model_dir=gs://bucket/runs/b0"]

FAKE_GCLOUD = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *main.py*) echo "training crashed" >&2; exit 3;; esac
case "$3 $4" in "tpu-vm delete") exit {delete_rc};; esac
exit 0
"""


def run_cli(args, tmp_path, path):
    env = {**os.environ, "PATH": path, "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, str(LAUNCH), *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path):
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("gcloud", "git"):
        write_script(fakebin / tool, f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 1\n')
    proc = run_cli([*CLI_ARGS, "--dry_run", "all"], tmp_path, f"{fakebin}{os.pathsep}/usr/bin")
    assert proc.returncode == 0, proc.stderr
    assert not log.exists()
    expected = launch.plan(make_cfg(local_tarball=tmp_path / "efficientnet_tf-src-my-tpu.tar.gz"),
                           "all")
    assert proc.stdout.splitlines() == [shlex.join(argv) for argv in expected]
    assert [shlex.split(line) for line in proc.stdout.splitlines()] == expected
    assert "global batch 1024" in proc.stderr


def test_runs_from_a_bare_checkout(tmp_path):
    """`python -S`: no site-packages, so neither an installed efficientnet_tf nor TensorFlow."""
    proc = subprocess.run([sys.executable, "-S", str(LAUNCH), *CLI_ARGS, "--dry_run", "train"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [shlex.join(launch.train_command(make_cfg()))]


def test_missing_gcloud_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli([*CLI_ARGS, "create"], tmp_path, str(empty))
    assert proc.returncode == 2
    assert "`gcloud` was not found on PATH; nothing was run" in proc.stderr


@pytest.mark.parametrize("keep_vm", [False, True])
def test_vm_is_deleted_when_training_fails(tmp_path, keep_vm):
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    log = tmp_path / "gcloud.log"
    write_script(fakebin / "gcloud", FAKE_GCLOUD.format(log=log, delete_rc=0))
    proc = run_cli([*CLI_ARGS, "all", *(["--keep_vm"] if keep_vm else [])], tmp_path,
                   f"{fakebin}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 1
    calls = [line.split()[3] for line in log.read_text().splitlines()]
    assert calls == ["create", "scp", "ssh", "ssh"] + ([] if keep_vm else ["delete"])
    assert (tmp_path / "efficientnet_tf-src-my-tpu.tar.gz").exists()  # real git archive HEAD
    assert "error: exit code 3 from: gcloud compute tpus tpu-vm ssh my-tpu" in proc.stderr
    if keep_vm:
        assert "my-tpu is still running" in proc.stderr
    else:
        assert "The TPU VM my-tpu was deleted" in proc.stderr


def test_a_failed_delete_is_reported_with_the_command_to_retry(tmp_path):
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    log = tmp_path / "gcloud.log"
    write_script(fakebin / "gcloud", FAKE_GCLOUD.format(log=log, delete_rc=5))
    proc = run_cli([*CLI_ARGS, "all"], tmp_path, f"{fakebin}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 1
    # Both failures are named: the training that failed, then the delete that failed.
    assert "error: exit code 3 from: gcloud compute tpus tpu-vm ssh" in proc.stderr
    assert "error: exit code 5 from: gcloud compute tpus tpu-vm delete my-tpu" in proc.stderr
    assert "Deleting my-tpu FAILED" in proc.stderr


@pytest.mark.parametrize("mode", launch.MAIN_MODES)
def test_main_py_accepts_every_flag_the_launcher_passes(mode):
    """main.py refuses flags its mode does not use; the launcher must not pass any."""
    from efficientnet_tf.cli import flags as cli_flags

    names = {arg[2:].split("=", 1)[0] for arg in launch.main_py_args(make_cfg(mode=mode))}
    if not cli_flags.GROUP_OF:
        cli_flags.define_flags()
    assert names - {"mode"} <= cli_flags.mode_flags()[mode]
