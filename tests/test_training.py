"""Training engine through main.py: strategies, resume, eval, fine-tuning, EMA in eval."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, run_main

# What eval uses; training adds the train split's size and batch (eval refuses those flags).
EVAL_FLAGS = ("--dataset=synthetic", "--model=efficientnet-b0", "--width_coefficient=0.25",
              "--depth_coefficient=0.2", "--image_size=32", "--synthetic_eval_size=24",
              "--eval_batch_size=8")
TINY_FLAGS = EVAL_FLAGS + ("--synthetic_train_size=64", "--train_batch_size=8")


def _latest_step(model_dir):
    import tensorflow as tf
    return int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """With mixup: its one-hot labels are for training only (eval's top-k takes sparse ones)."""
    model_dir = tmp_path_factory.mktemp("run")
    proc = run_main("--mode=train_and_eval", *TINY_FLAGS, "--train_steps=4", "--steps_per_eval=2",
                    "--steps_per_loop=2", "--mixup_alpha=0.2", f"--model_dir={model_dir}")
    return model_dir, proc


def test_train_and_eval_writes_everything(trained_run):
    model_dir, proc = trained_run
    assert "step 4/4" in proc.stdout
    names = set(os.listdir(model_dir))
    assert {"config.json", "eval_results.json", "best.weights.h5", "best_eval_results.json",
            "checkpoint", "train", "eval"} <= names
    assert _latest_step(model_dir) == 4
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert set(results) == {"top_1", "top_5", "num_examples", "step"}
    assert results["num_examples"] == 24 and results["step"] == 4
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"]["num_classes"] == 10 and config["model"]["resolution"] == 32
    assert config["recipe"]["train_steps"] == 4 and config["runtime"]["model_dir"] == str(model_dir)
    assert f"Results: {model_dir}/eval_results.json" in proc.stdout
    from efficientnet_tf.weights import read_record

    record = read_record(model_dir / "best.weights.h5")  # eval/export --weights need no flags
    assert (record["model_config"].resolution, record["model_config"].width_coefficient,
            record["preprocessing"]["resize_method"], record["source"]) == (
        32, 0.25, "bicubic", str(model_dir))
    events = os.listdir(model_dir / "train")
    assert any(e.startswith("events.out.tfevents") for e in events)


def test_eval_mode_latest_checkpoint_and_weights(trained_run, tmp_path):
    model_dir, _ = trained_run
    before = json.loads((model_dir / "eval_results.json").read_text())
    (model_dir / "eval_results.json").unlink()
    proc = run_main("--mode=eval", *EVAL_FLAGS, f"--model_dir={model_dir}")
    after = json.loads((model_dir / "eval_results.json").read_text())
    assert after == before   # same EMA weights, same eval split, deterministic eval
    other = tmp_path / "eval_only"
    proc = run_main("--mode=eval", *EVAL_FLAGS, f"--model_dir={other}",
                    f"--weights={model_dir / 'best.weights.h5'}")
    from_file = json.loads((other / "eval_results.json").read_text())
    best = json.loads((model_dir / "best_eval_results.json").read_text())
    assert from_file["top_1"] == best["top_1"] and from_file["num_examples"] == 24
    assert "best.weights.h5" in proc.stdout


def corrupt_tfrecords(root, good=4, bad=8, num_eval=12):
    """An ImageNet-format dir of 4 classes: a train shard of `good` JPEGs, then `bad` truncated
    ones; a clean validation shard (eval refuses corrupt records)."""
    import tensorflow as tf

    from efficientnet_tf.data import tfrecord
    from efficientnet_tf.data.testing import encode, natural_image, write_image_tfrecords

    write_image_tfrecords(root, "validation", [encode(natural_image(36, 44, seed=i))
                                               for i in range(num_eval)],
                          [i % 4 for i in range(num_eval)], num_shards=1)
    train = tfrecord.shard_name("train", 0, 1)
    with tf.io.TFRecordWriter(os.path.join(root, train)) as writer:
        for i in range(good + bad):
            image = encode(natural_image(36, 44, seed=100 + i))
            writer.write(tfrecord.make_example(image if i < good else image[:100], label=1 + i % 4,
                                               height=36, width=44, filename=f"{i}.jpg",
                                               synset="s", text="t").SerializeToString())
    with open(os.path.join(root, tfrecord.METADATA_FILE), "w") as f:
        json.dump({"format": tfrecord.METADATA_FORMAT, "dataset": "imagenet", "num_classes": 4,
                   "class_names": list("abcd"), "shard_counts": {
                       train: good + bad, tfrecord.shard_name("validation", 0, 1): num_eval}},
                  f)


def _scalars(log_dir, tag):
    import tensorflow as tf
    return [(e.step, float(tf.make_ndarray(v.tensor)))
            for path in log_dir.glob("events.out.tfevents*")
            for e in tf.compat.v1.train.summary_iterator(str(path))
            for v in e.summary.value if v.tag == tag]


def test_cutmix_run_skips_counts_and_names_corrupt_training_records(tmp_path):
    """Corrupt training records are skipped, counted across the replicas' batches, reported at
    the checkpoint (stdout, TensorBoard) and named on stderr; cutmix trains with one-hot labels
    while eval's top-k gets sparse ones, every eval example counted."""
    data_dir, model_dir = tmp_path / "data", tmp_path / "run"
    data_dir.mkdir()
    corrupt_tfrecords(str(data_dir))
    tiny = [f for f in TINY_FLAGS if not f.startswith(("--dataset", "--synthetic"))]
    proc = run_main("--mode=train_and_eval", *tiny, "--dataset=imagenet", f"--data_dir={data_dir}",
                    "--cutmix_alpha=1.0", "--train_steps=2", "--steps_per_eval=2",
                    "--steps_per_loop=1", f"--model_dir={model_dir}")
    report = re.findall(r"Skipped (\d+) corrupt/undecodable training record\(s\) since the last "
                        r"checkpoint \((\d+) in this run\)", proc.stdout)
    # 16 good records took at least 4 epochs of input, through a 12-record shuffle buffer.
    assert len(report) == 1 and report[0][0] == report[0][1], proc.stdout
    assert int(report[0][0]) >= 8, proc.stdout
    assert _scalars(model_dir / "train", "skipped_examples") == [(2, int(report[0][0]))]
    named = re.findall(r"Skipped an undecodable training record \(\d+ so far in input "
                       r"pipeline 0\): .*train-00000-of-00001:(\d+)", proc.stderr)
    assert named and {int(i) for i in named} <= set(range(4, 12)), proc.stderr[-3000:]
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert results["num_examples"] == 12 and results["step"] == 2


def test_eval_without_checkpoint_is_a_clear_error(tmp_path):
    proc = run_main("--mode=eval", *EVAL_FLAGS, f"--model_dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert f"No checkpoint in {tmp_path} and no weights file given (--weights)" in proc.stderr


def test_resume_refuses_a_different_model(trained_run):
    model_dir, _ = trained_run
    flags = [f for f in TINY_FLAGS if not f.startswith("--width")]
    proc = run_main("--mode=train", *flags, "--width_coefficient=0.5", "--train_steps=6",
                    f"--model_dir={model_dir}", check=False)
    assert proc.returncode == 2
    assert "different model" in proc.stderr


def test_eval_refuses_flags_that_would_score_other_weights(trained_run):
    """Eval builds from flags: a different EMA setting or model than the run's config.json would
    evaluate the EMA's initial values, the raw weights or a partial restore; it is refused."""
    model_dir, _ = trained_run
    proc = run_main("--mode=eval", *EVAL_FLAGS, "--moving_average_decay=0",
                    f"--model_dir={model_dir}", check=False)
    assert proc.returncode == 2 and "trained with moving_average_decay=0.9999" in proc.stderr
    flags = [f for f in EVAL_FLAGS if not f.startswith("--width")]
    proc = run_main("--mode=eval", *flags, "--width_coefficient=0.5", f"--model_dir={model_dir}",
                    check=False)
    assert proc.returncode == 2 and "cannot be evaluated" in proc.stderr


def test_use_tpu_without_tpu_fails_fast(tmp_path):
    start = time.monotonic()
    proc = run_main("--mode=train", *TINY_FLAGS, "--use_tpu", "--train_steps=1",
                    f"--model_dir={tmp_path}", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error:" in proc.stderr and "TPU" in proc.stderr
    assert not (tmp_path / "checkpoint").exists()
    print(f"--use_tpu failed after {time.monotonic() - start:.1f}s")


def test_mirrored_two_cpu_replicas_with_global_bn(tmp_path):
    proc = run_main("--mode=train_and_eval", *TINY_FLAGS, "--strategy=mirrored",
                    "--num_cpu_devices=2", "--train_steps=4", "--steps_per_eval=2",
                    "--steps_per_loop=2", "--bn_group_size=all", f"--model_dir={tmp_path}")
    assert "2 replica(s), MirroredStrategy" in proc.stdout
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["bn_group_size"] == 0
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["num_examples"] == 24 and results["step"] == 4
    assert _latest_step(tmp_path) == 4


def test_resume_after_kill_continues_at_the_checkpointed_step(tmp_path):
    args = [sys.executable, str(REPO_ROOT / "main.py"), "--mode=train", *TINY_FLAGS,
            "--train_steps=30", "--steps_per_eval=3", "--steps_per_loop=1",
            f"--model_dir={tmp_path}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    victim = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "checkpoint").exists():
            assert victim.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait()
    killed_at = _latest_step(tmp_path)
    assert 3 <= killed_at < 30 and killed_at % 3 == 0
    proc = run_main(*args[2:])
    assert f"at step {killed_at}" in proc.stderr   # "Resumed from .../ckpt-N at step N"
    assert f"step {killed_at + 1}/30" in proc.stdout
    assert f"step {killed_at}/30" not in proc.stdout   # no step repeated
    assert _latest_step(tmp_path) == 30
    # A rerun after completion trains nothing.
    again = run_main(*args[2:])
    assert "step " not in again.stdout.replace("to step", "")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_two_local_workers_agree(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for task_id in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": task_id}})}
        procs.append(subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "main.py"), "--mode=train_and_eval", *TINY_FLAGS,
             "--strategy=multi_worker_mirrored", "--train_steps=4", "--steps_per_eval=2",
             "--steps_per_loop=2", f"--model_dir={tmp_path}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT))
    outputs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outputs.append((p.returncode, out, err))
    for code, out, err in outputs:
        assert code == 0, f"worker failed:\n{out[-2000:]}\n{err[-4000:]}"
    fingerprints = []
    for _, _, err in outputs:
        line = [ln for ln in err.splitlines() if "Weights fingerprint at step 4" in ln]
        assert line, err[-3000:]
        fingerprints.append(float(line[-1].rsplit(" ", 1)[1]))
    assert fingerprints[0] == fingerprints[1]
    assert "2 replica(s), CollectiveAllReduceStrategy" in outputs[0][1]  # = MultiWorkerMirrored
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["num_examples"] == 24 and results["step"] == 4
    assert _latest_step(tmp_path) == 4
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".worker_")]


def test_fine_tune_new_head_with_frozen_backbone(trained_run, tmp_path):
    import keras

    from efficientnet_tf.model import build_model

    model_dir, _ = trained_run
    weights = model_dir / "best.weights.h5"
    run_main("--mode=train", *TINY_FLAGS, "--num_classes=4", f"--weights={weights}",
             "--freeze_backbone", "--moving_average_decay=0", "--train_steps=2",
             "--steps_per_eval=2", f"--model_dir={tmp_path}")
    common = dict(model_name="efficientnet-b0", width_coefficient=0.25, depth_coefficient=0.2,
                  input_shape=(32, 32, 3))
    pretrained = build_model(classes=10, weights=str(weights), **common)
    tuned = build_model(classes=4, **common)
    import tensorflow as tf
    tf.train.Checkpoint(model=tuned).restore(
        tf.train.latest_checkpoint(str(tmp_path))).expect_partial()
    for name in ("stem_conv", "top_conv", "top_bn"):
        for a, b in zip(pretrained.get_layer(name).get_weights(),
                        tuned.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)   # frozen, BN statistics included
    assert tuned.get_layer("predictions").kernel.shape == (320, 4)
    keras.backend.clear_session()


def test_end_to_end_learns_and_eval_uses_ema(tmp_path):
    """In-process: a tiny model beats chance clearly, and evaluate() reads the EMA weights."""
    import keras
    import tensorflow as tf

    from efficientnet_tf import config as cfg
    from efficientnet_tf.data import DataConfig, build_dataset
    from efficientnet_tf.experiment import ExperimentConfig
    from efficientnet_tf.training.trainer import Trainer

    experiment = ExperimentConfig(
        # BN momentum 0.9: at 150 steps the 0.99 moving statistics still lag the weights.
        model=cfg.get_model_config("efficientnet-b0", width_coefficient=0.25,
                                   depth_coefficient=0.2, resolution=32, num_classes=4,
                                   bn_momentum=0.9),
        data=DataConfig(dataset="synthetic", num_classes=4, synthetic_train_size=512,
                        synthetic_eval_size=64, synthetic_image_size=32),
        recipe=cfg.RecipeConfig(train_batch_size=32, train_steps=150, base_learning_rate=0.128,
                                lr_schedule="cosine", lr_warmup_epochs=1,
                                moving_average_decay=0.99),
        runtime=cfg.RuntimeConfig(model_dir=str(tmp_path), eval_batch_size=32,
                                  steps_per_eval=150, steps_per_loop=50))
    trainer = Trainer(experiment, tf.distribute.get_strategy())
    trainer.train()
    raw = [w.numpy().copy() for w in trainer.model.weights]
    results = trainer.evaluate()
    assert results["top_1"] > 0.6, results           # chance is 0.25
    # evaluate() swapped the EMA in and back out.
    for a, w in zip(raw, trainer.model.weights):
        np.testing.assert_array_equal(a, w.numpy())
    ema_differs = any(not np.allclose(a, s.numpy())
                      for a, s in zip(raw, trainer.ema.averages))
    assert ema_differs

    def accuracy():
        ds = build_dataset(experiment.data, "eval", 32, image_size=32, is_training=False)
        correct = total = 0
        for images, labels, weights in ds:
            pred = np.argmax(trainer.model(images, training=False), -1)
            correct += float(np.sum((pred == labels.numpy()) * weights.numpy()))
            total += float(np.sum(weights.numpy()))
        return correct / total

    with trainer.ema.averaged_weights():
        assert accuracy() == pytest.approx(results["top_1"])
    keras.backend.clear_session()


def _copy_run(trained_run, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    return run


def _files(directory):
    import hashlib
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def test_corrupt_newest_checkpoint_resumes_from_the_previous_one(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    newest = next(run.glob("ckpt-4.data-*"))
    newest.write_bytes(newest.read_bytes()[:100])  # a partial copy
    proc = run_main("--mode=train", *TINY_FLAGS, "--mixup_alpha=0.2", "--train_steps=6",
                    "--steps_per_eval=2", "--steps_per_loop=2", f"--model_dir={run}")
    assert "Checkpoint" in proc.stderr and "ckpt-4 is unreadable" in proc.stderr
    assert "Resumed from" in proc.stderr and "ckpt-2 at step 2" in proc.stderr
    assert _latest_step(run) == 6
    assert (run / f"{newest.name}.unreadable").exists()  # set aside, not deleted


def test_all_checkpoints_corrupt_is_an_error_that_changes_nothing(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path)
    for data in run.glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:100])
    before = _files(run)
    proc = run_main("--mode=train", *TINY_FLAGS, "--mixup_alpha=0.2", "--train_steps=6",
                    f"--model_dir={run}", check=False)
    assert proc.returncode == 2
    assert "No readable checkpoint" in proc.stderr and "ckpt-2" in proc.stderr
    assert _files(run) == before


def test_second_trainer_on_a_live_run_refuses_and_a_dead_ones_lock_is_taken_over(
        trained_run, tmp_path):
    import socket
    import subprocess
    run = _copy_run(trained_run, tmp_path)
    lock = run / "train.lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid,
                                    "refreshed": 0}))
        before = _files(run)
        proc = run_main("--mode=train", *TINY_FLAGS, "--train_steps=4", f"--model_dir={run}",
                        check=False)
        assert proc.returncode == 2 and "another training process" in proc.stderr
        assert f"pid {live.pid}" in proc.stderr and _files(run) == before
    finally:
        live.kill()
        live.wait()
    proc = run_main("--mode=train", *TINY_FLAGS, "--mixup_alpha=0.2", "--train_steps=4",
                    f"--model_dir={run}")  # the holder is gone now: taken over, then released
    assert "Taking over" in proc.stderr and not lock.exists()


def test_eval_of_weights_on_a_validation_only_directory(trained_run, tmp_path):
    from efficientnet_tf.data.testing import encode, natural_image, write_image_tfrecords

    data_dir = tmp_path / "val_only"
    images = [encode(natural_image(40, 48, seed=i)) for i in range(5)]
    write_image_tfrecords(str(data_dir), "validation", images, [i % 10 for i in range(5)], 1)
    weights = trained_run[0] / "best.weights.h5"
    proc = run_main("--mode=eval", "--dataset=folder", f"--data_dir={data_dir}",
                    "--num_classes=10", "--model=efficientnet-b0", "--width_coefficient=0.25",
                    "--depth_coefficient=0.2", "--image_size=32", "--eval_batch_size=2",
                    f"--weights={weights}", f"--model_dir={tmp_path / 'eval'}")
    result = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert result["num_examples"] == 5, proc.stdout
