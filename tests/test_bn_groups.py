"""Batch norm across replicas: the reference's group rule and grouped statistics on 4 replicas."""
import json

import pytest

from efficientnet_tf.layers import bn_group_size

from conftest import run_main, run_python


@pytest.mark.parametrize("replicas, size", [(1, 1), (2, 1), (8, 1), (16, 8), (32, 8), (128, 16),
                                            (1024, 128)])
def test_default_rule_is_the_references(replicas, size):
    # TpuBatchNormalization: per replica up to 8 replicas, groups of max(8, n // 8) above.
    assert bn_group_size(replicas) == size


def test_explicit_group_sizes():
    assert bn_group_size(4, 0) == 4
    assert bn_group_size(4, 1) == 1
    assert bn_group_size(4, 2) == 2
    for replicas, size in ((4, 3), (1, 2), (12, None)):
        with pytest.raises(ValueError, match="do not divide"):
            bn_group_size(replicas, size)


GROUPED_RUN = """
import json
import numpy as np
import tensorflow as tf
from efficientnet_tf import distribute
from efficientnet_tf.layers import GroupBatchNormalization

distribute.split_cpu(4)
strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)])
rng = np.random.default_rng(0)
x = rng.normal(size=(4, 3, 5, 5, 6)).astype(np.float32) * rng.uniform(0.5, 3, (4, 1, 1, 1, 6)) \\
    + rng.normal(size=(4, 1, 1, 1, 6)).astype(np.float32) * 4  # per-replica shifts and scales
results = {}
for group_size in (2, None, 0):
    with strategy.scope():
        bn = GroupBatchNormalization(group_size=group_size, momentum=0.0, epsilon=1e-3)
        bn.build((None, 5, 5, 6))

    def step(bn=bn):
        ctx = tf.distribute.get_replica_context()
        return bn(tf.gather(tf.constant(x), ctx.replica_id_in_sync_group), training=True)

    out = strategy.run(tf.function(step))
    results[str(group_size)] = {
        "outputs": [o.numpy().tolist() for o in strategy.experimental_local_results(out)],
        "moving_mean": [v.numpy().tolist() for v in bn.moving_mean.value.values],
        "moving_variance": [v.numpy().tolist() for v in bn.moving_variance.value.values]}
print("RESULT" + json.dumps({"x": x.tolist(), "results": results}))
"""


def test_grouped_statistics_on_four_replicas():
    import numpy as np

    out = run_python(GROUPED_RUN).stdout
    data = json.loads(out[out.index("RESULT") + len("RESULT"):])
    x = np.asarray(data["x"], np.float64)  # [replica, batch, h, w, c]
    for key, groups in (("2", [[0, 1], [2, 3]]), ("None", [[0], [1], [2], [3]]),
                        ("0", [[0, 1, 2, 3]])):
        result = data["results"][key]
        for group in groups:
            pooled = x[group].reshape(-1, x.shape[-1])  # equal per-replica batches
            mean, var = pooled.mean(0), pooled.var(0)
            for r in group:
                # momentum 0: the moving statistics are this step's group statistics.
                np.testing.assert_allclose(result["moving_mean"][r], mean, rtol=1e-4, atol=1e-4)
                np.testing.assert_allclose(result["moving_variance"][r], var, rtol=1e-4, atol=1e-4)
                expected = (x[r] - mean) / np.sqrt(var + 1e-3)
                np.testing.assert_allclose(result["outputs"][r], expected, atol=2e-4)
    # Replicas in different groups really saw different statistics.
    assert not np.allclose(data["results"]["2"]["moving_mean"][0],
                           data["results"]["2"]["moving_mean"][2])


def test_cli_refuses_groups_that_do_not_divide_the_replicas(tmp_path):
    proc = run_main("--mode=train", f"--model_dir={tmp_path / 'run'}", "--num_cpu_devices=4",
                    "--strategy=mirrored", "--bn_group_size=3", "--train_batch_size=8",
                    "--train_steps=1", "--width_coefficient=0.25", "--depth_coefficient=0.2",
                    "--image_size=32", check=False)
    assert proc.returncode == 2
    assert "bn_group_size=3" in proc.stderr and "4 replicas" in proc.stderr
    proc = run_main("--mode=train", f"--model_dir={tmp_path / 'run'}", "--bn_group_size=two",
                    check=False)
    assert proc.returncode != 0 and "--bn_group_size=two" in proc.stderr
