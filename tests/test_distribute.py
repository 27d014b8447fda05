"""Strategy selection, TPU fail-fast, mixed-precision policy, and a 2-replica sync-BN train step."""
import json

import pytest
import tensorflow as tf

from efficientnet_tf import distribute
from efficientnet_tf.config import ConfigError
from efficientnet_tf.distribute import (
    check_tpu_request,
    parse_tf_config,
    resolve_mixed_precision,
    select_strategy_name,
)

from conftest import run_python


@pytest.mark.parametrize("kwargs, expected", [
    (dict(), "default"),
    (dict(visible_gpus=1), "default"),
    (dict(visible_gpus=4), "mirrored"),
    (dict(visible_gpus=4, num_gpus=2), "mirrored"),
    (dict(visible_gpus=4, num_gpus=1), "one_device"),
    (dict(num_gpus=0), "one_device"),
    (dict(use_tpu=True), "tpu"),
    (dict(strategy="tpu"), "tpu"),
    (dict(strategy="tpu", use_tpu=True), "tpu"),
    (dict(strategy="mirrored", visible_gpus=2), "mirrored"),
    (dict(strategy="mirrored", logical_cpus=2), "mirrored"),
    (dict(strategy="mirrored", visible_gpus=2, num_gpus=0, logical_cpus=2), "mirrored"),
    (dict(strategy="multi_worker_mirrored"), "multi_worker_mirrored"),
    (dict(strategy="one_device"), "one_device"),
])
def test_select_strategy_name(kwargs, expected):
    assert select_strategy_name(**kwargs) == expected


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(strategy="horovod"), ConfigError, "strategy='horovod'"),
    (dict(strategy="mirrored", use_tpu=True), ConfigError, "use_tpu conflicts"),
    (dict(num_gpus=2, visible_gpus=0), ConfigError, "num_gpus=2, but TensorFlow sees 0"),
    (dict(strategy="mirrored", num_gpus=8, visible_gpus=4), ConfigError, "num_gpus=8"),
    (dict(strategy="mirrored"), ConfigError, "strategy=mirrored: without GPUs"),
    (dict(num_gpus=-1), ConfigError, "num_gpus=-1"),
    (dict(use_tpu=True, num_gpus=1, visible_gpus=1), ConfigError, "conflicts with a TPU"),
])
def test_select_strategy_name_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        select_strategy_name(**kwargs)


def test_parse_tf_config():
    good = {"cluster": {"worker": ["localhost:2222", "localhost:2223"]},
            "task": {"type": "worker", "index": 1}}
    assert parse_tf_config(json.dumps(good)) == good
    with pytest.raises(ConfigError, match="needs the TF_CONFIG environment variable"):
        parse_tf_config(None)
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_tf_config("{cluster")
    with pytest.raises(ConfigError, match="'worker'"):
        parse_tf_config(json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ConfigError, match="'task'"):
        parse_tf_config(json.dumps({"cluster": good["cluster"]}))
    with pytest.raises(ConfigError, match="not in the cluster"):
        parse_tf_config(json.dumps({**good, "task": {"type": "worker", "index": 2}}))


def test_check_tpu_request():
    none = dict(local_devices=[], on_google_cloud=False, env={})
    with pytest.raises(ConfigError, match="no TPU found on this machine"):
        check_tpu_request(None, None, None, **none)
    with pytest.raises(ConfigError, match="tpu=local: no TPU found"):
        check_tpu_request("local", None, None, **none)
    with pytest.raises(ConfigError, match="tpu=my-tpu: .*--tpu_zone and --gcp_project"):
        check_tpu_request("my-tpu", None, None, **none)
    with pytest.raises(ConfigError, match="tpu=env-tpu"):
        check_tpu_request(None, None, None, local_devices=[], on_google_cloud=False,
                          env={"TPU_NAME": "env-tpu"})
    assert check_tpu_request(None, None, None, local_devices=["/dev/accel0"],
                             on_google_cloud=True, env={}) == "local"
    assert check_tpu_request("my-tpu", "us-central2-b", "proj", **none) == "my-tpu"
    assert check_tpu_request("my-tpu", None, None, local_devices=[], on_google_cloud=True,
                             env={}) == "my-tpu"
    assert check_tpu_request("grpc://10.0.0.2:8470", None, None, **none) == "grpc://10.0.0.2:8470"
    assert check_tpu_request(None, None, None, local_devices=[], on_google_cloud=True,
                             env={"TPU_NAME": "env-tpu"}) == ""


def test_use_tpu_without_tpu_fails_fast():
    # In a fresh process with a hang guard: the resolver alone would query the metadata server.
    out = run_python(
        "import time\n"
        "from efficientnet_tf.distribute import get_strategy\n"
        "for kw in (dict(use_tpu=True), dict(strategy='tpu', tpu='local'),\n"
        "           dict(use_tpu=True, tpu='my-tpu')):\n"
        "    t = time.time()\n"
        "    try:\n"
        "        get_strategy(**kw)\n"
        "    except ValueError as e:  # ConfigError\n"
        "        print(f'ERROR {time.time() - t:.2f}s {e}')\n"
        "    else:\n"
        "        print('NO ERROR', kw)\n",
        timeout=120).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ERROR") for line in lines), out
    assert "no TPU found on this machine" in lines[0]
    assert "use_tpu/strategy=tpu without a tpu name" in lines[0]
    assert "tpu=local: no TPU found" in lines[1]
    assert "tpu=my-tpu" in lines[2] and "--tpu_zone" in lines[2]


def test_get_strategy_on_this_cpu(monkeypatch):
    assert distribute.get_strategy() is tf.distribute.get_strategy()
    one = distribute.get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert distribute.strategy_device_kind(one) == "cpu"
    assert distribute.strategy_device_kind(tf.distribute.get_strategy()) == "cpu"
    with pytest.raises(ConfigError, match="strategy=mirrored: without GPUs"):
        distribute.get_strategy("mirrored")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="needs the TF_CONFIG"):
        distribute.get_strategy("multi_worker_mirrored")


@pytest.mark.parametrize("policy, kind, expected", [
    ("auto", "tpu", "mixed_bfloat16"), ("auto", "gpu", "mixed_float16"), ("auto", "cpu", "float32"),
    ("float32", "tpu", "float32"), ("mixed_float16", "cpu", "mixed_float16"),
    ("mixed_bfloat16", "gpu", "mixed_bfloat16"),
])
def test_resolve_mixed_precision(policy, kind, expected):
    assert resolve_mixed_precision(policy, kind) == expected


def test_resolve_mixed_precision_errors():
    with pytest.raises(ConfigError, match="mixed_precision='float16'"):
        resolve_mixed_precision("float16", "gpu")
    with pytest.raises(ValueError, match="device_kind='npu'"):
        resolve_mixed_precision("auto", "npu")


MIRRORED_TRAIN = r"""
import numpy as np, tensorflow as tf
from efficientnet_tf import build_model, distribute
from efficientnet_tf.training import (ExponentialMovingAverage, build_lr_schedule, build_optimizer,
                                      classification_loss, l2_loss)

distribute.split_cpu(2)
strategy = distribute.get_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2, strategy.extended.worker_devices
assert distribute.strategy_device_kind(strategy) == "cpu"
with strategy.scope():
    model = build_model(model_name="efficientnet-b0", width_coefficient=0.25, depth_coefficient=0.2,
                        input_shape=(32, 32, 3), classes=4, bn_group_size=0,
                        classifier_activation=None)
    optimizer = build_optimizer(build_lr_schedule("exponential", 0.016, 8, steps_per_epoch=2,
                                                  total_steps=10, warmup_epochs=0.5))
    optimizer.build(model.trainable_variables)
    ema = ExponentialMovingAverage(model)

rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
labels = rng.integers(0, 4, (8,))
dataset = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).repeat())

@tf.function
def train_step(iterator):
    def step_fn(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.nn.compute_average_loss(classification_loss(y, logits, 4, 0.1),
                                              global_batch_size=8)
            loss += l2_loss(model, 1e-5) / strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        ema.update(optimizer.iterations)
        return loss
    x, y = next(iterator)
    return strategy.reduce("SUM", strategy.run(step_fn, args=(x, y)), axis=None)

def replicas(v):
    v = v if isinstance(v, tf.Variable) else v.value
    values = [t.numpy() for t in strategy.experimental_local_results(v)]
    assert len(values) == 2, v.name
    return values

start = [v.numpy() for v in model.weights]
iterator = iter(dataset)
losses = [float(train_step(iterator)) for _ in range(3)]
assert all(np.isfinite(losses)), losses
assert int(optimizer.iterations.numpy()) == 3
for group in (model.weights, optimizer.variables, ema.averages):
    for v in group:
        a, b = replicas(v)
        np.testing.assert_array_equal(a, b, err_msg=v.name)
moved = [not np.array_equal(s, v.numpy()) for s, v in zip(start, model.weights)]
assert all(moved[i] for i, p in enumerate(ema.paths) if "moving_mean" in p)
assert sum(moved) > 0.9 * len(moved), sum(moved)
# Step 3: decay 4/13 -> the averages lag the weights but left the initial values.
assert any(not np.array_equal(s.numpy(), v.numpy()) for s, v in zip(ema.averages, model.weights))

before = [v.numpy() for v in model.weights]
averages = [v.numpy() for v in ema.averages]
with ema.averaged_weights():
    for v, a in zip(model.weights, averages):
        for r in replicas(v):
            np.testing.assert_array_equal(r, a)
for v, b in zip(model.weights, before):
    for r in replicas(v):
        np.testing.assert_array_equal(r, b)

ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, ema=ema)
path = ckpt.save("CKPT_DIR/ckpt")
losses.append(float(train_step(iterator)))
ckpt.restore(path).assert_consumed()
assert int(optimizer.iterations.numpy()) == 3
for v, a in zip(ema.averages, averages):
    for r in replicas(v):
        np.testing.assert_array_equal(r, a)
print("OK", losses)
"""


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_global_bn_rmsprop_ema(tmp_path):
    out = run_python(MIRRORED_TRAIN.replace("CKPT_DIR", str(tmp_path)), timeout=300).stdout
    assert "OK" in out, out
