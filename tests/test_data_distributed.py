"""Two replicas (two logical CPU devices, MirroredStrategy, own subprocess): distinct examples per
replica in training, every eval example exactly once, augmentation and mixing under the strategy."""
import json

from efficientnet_tf.data.testing import encode, natural_image, write_image_tfrecords

from conftest import run_python

NUM_EVAL = 13

SNIPPET = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from efficientnet_tf.data import DataConfig, distributed_dataset, eval_steps, get_dataset_info

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
config = DataConfig(dataset="imagenet", data_dir=DATA_DIR, deterministic=True,
                    shuffle_buffer_size=1)
out = {"eval_steps": eval_steps(get_dataset_info(config), 4), "eval": [], "train": []}

def local(x):
    return [v.numpy().tolist() for v in strategy.experimental_local_results(x)]

for images, labels, weights in distributed_dataset(strategy, config, "eval", 4, image_size=16):
    out["eval"].append({"labels": local(labels), "weights": local(weights),
                        "shapes": [list(v.shape)
                                   for v in strategy.experimental_local_results(images)]})

train = iter(distributed_dataset(strategy, config, "train", 4, image_size=16))
for _ in range(3):
    images, labels = next(train)
    out["train"].append({"labels": local(labels),
                         "devices": [v.device
                                     for v in strategy.experimental_local_results(images)]})

mixed = config.replace(augment_name="randaugment", mixup_alpha=0.2, deterministic=False)
mixed_train = distributed_dataset(strategy, mixed, "train", 4, image_size=16, count_skipped=True)
images, labels, skipped = next(iter(mixed_train))
out["mixed"] = [list(v.shape) for v in strategy.experimental_local_results(labels)]
out["mixed_sums"] = [float(np.sum(v)) for v in strategy.experimental_local_results(labels)]
out["skipped"] = local(skipped)
print("RESULT" + json.dumps(out))
"""


def test_two_replicas_distinct_examples_and_exact_eval(tmp_path):
    data_dir = str(tmp_path)
    images = [encode(natural_image(30, 40, seed=i)) for i in range(NUM_EVAL)]
    write_image_tfrecords(data_dir, "train", images, list(range(NUM_EVAL)), num_shards=2)
    write_image_tfrecords(data_dir, "validation", images, list(range(NUM_EVAL)), num_shards=2)
    proc = run_python(f"DATA_DIR = {data_dir!r}\n" + SNIPPET, timeout=300)
    out = json.loads(proc.stdout.split("RESULT", 1)[1])

    # Eval: ceil(13 / 4) = 4 steps, each replica a full batch of 2 per step; padding weighted 0.
    assert out["eval_steps"] == 4 and len(out["eval"]) == 4
    seen = []
    for step in out["eval"]:
        assert step["shapes"] == [[2, 16, 16, 3], [2, 16, 16, 3]]
        for labels, weights in zip(step["labels"], step["weights"]):
            seen += [label for label, w in zip(labels, weights) if w == 1.0]
    assert sorted(seen) == list(range(NUM_EVAL))  # every example exactly once
    assert sum(w.count(0.0) for s in out["eval"] for w in s["weights"]) == 16 - NUM_EVAL

    # Train: each replica gets its own half of every global batch, no example twice in an epoch.
    train_labels = [label for step in out["train"] for replica in step["labels"]
                    for label in replica]
    assert len(train_labels) == 12 and len(set(train_labels)) == 12
    assert ([d.split("/")[-1] for d in out["train"][0]["devices"]]
            == ["device:CPU:0", "device:CPU:1"])

    # RandAugment + mixup under the strategy: one-hot mixed labels, per-replica batch of 2, and
    # a per-replica count of skipped corrupt records (none here).
    assert out["mixed"] == [[2, 1000], [2, 1000]]
    assert all(abs(s - 2.0) < 1e-4 for s in out["mixed_sums"]) and out["skipped"] == [0, 0]
