"""Dynamic loss scaling across replicas: an inf on one replica skips the step on all of them."""
from conftest import run_python

INF_ON_REPLICA_1 = r"""
import numpy as np, tensorflow as tf, keras
from efficientnet_tf import distribute
from efficientnet_tf.training import build_optimizer

distribute.split_cpu(2)
strategy = distribute.get_strategy("mirrored")
assert strategy.num_replicas_in_sync == 2
keras.mixed_precision.set_global_policy("mixed_float16")
with strategy.scope():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    optimizer = build_optimizer(0.1, mixed_precision="mixed_float16")
    optimizer.build(layer.trainable_variables)
start_scale = float(optimizer.dynamic_scale.numpy())
before = [v.numpy() for v in layer.trainable_variables]

@tf.function
def step(poison):
    def replica_fn():
        x = tf.ones([2, 4])
        with tf.GradientTape() as tape:
            # Small enough that the scaled float16 gradients stay finite (65504 is the max).
            loss = optimizer.scale_loss(1e-3 * tf.reduce_sum(tf.cast(layer(x), tf.float32)))
        grads = tape.gradient(loss, layer.trainable_variables)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        bad = tf.logical_and(poison, tf.equal(replica, 1))
        grads = [tf.where(bad, tf.fill(tf.shape(g), np.inf), g) for g in grads]
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
    strategy.run(replica_fn)

step(tf.constant(True))
for v, b in zip(layer.trainable_variables, before):
    for r in strategy.experimental_local_results(v.value):
        np.testing.assert_array_equal(r.numpy(), b)  # skipped on every replica, still finite
assert float(optimizer.dynamic_scale.numpy()) == start_scale / 2, optimizer.dynamic_scale
assert int(optimizer.iterations.numpy()) == 0
step(tf.constant(False))
moved = [r.numpy() for r in strategy.experimental_local_results(layer.kernel.value)]
assert np.all(np.isfinite(moved)) and not np.array_equal(moved[0], before[0])
np.testing.assert_array_equal(moved[0], moved[1])
print("OK")
"""


def test_inf_on_one_replica_skips_the_step_everywhere():
    assert "OK" in run_python(INF_ON_REPLICA_1, timeout=300).stdout
