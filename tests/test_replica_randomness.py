"""Dropout and stochastic depth draw independent, reproducible masks on each replica (2 CPUs)."""
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import run_python

# The model's own head dropout and a StochasticDepth, both built under a 2-replica
# MirroredStrategy after keras.utils.set_random_seed(seed), called for 3 steps on the same input.
MASKS_RUN = """
import json
import keras
import tensorflow as tf
from efficientnet_tf.distribute import split_cpu
from efficientnet_tf.layers import StochasticDepth
from efficientnet_tf.model import build_model

split_cpu(2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {}
for seed in SEEDS:
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        drop_path = StochasticDepth(0.5)
        dropout = build_model(width_coefficient=0.25, depth_coefficient=0.2, resolution=32,
                              dropout_rate=0.5).get_layer("top_dropout")

    @tf.function
    def step():
        def masks():
            return (tf.reshape(drop_path(tf.ones((64, 1, 1, 1)), training=True), [-1]),
                    tf.reshape(dropout(tf.ones((2, 32)), training=True), [-1]))
        return [strategy.experimental_local_results(m) for m in strategy.run(masks)]

    steps = [step() for _ in range(3)]
    results[seed] = {name: [[r.numpy().tolist() for r in s[i]] for s in steps]
                     for i, name in enumerate(("stochastic_depth", "dropout"))}
print("RESULT" + json.dumps(results))
"""

LAYERS = ("stochastic_depth", "dropout")


def _masks(seeds):
    out = run_python(MASKS_RUN.replace("SEEDS", repr(list(seeds)))).stdout
    return json.loads(out.split("RESULT", 1)[1])


@pytest.fixture(scope="module")
def runs():
    """Two processes at once: seeds 1 and 2 in one, seed 1 again in a fresh one."""
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(_masks, ([1, 2], [1]))
    return first, second


@pytest.mark.parametrize("layer", LAYERS)
def test_replicas_draw_different_masks_every_step(runs, layer):
    steps = runs[0]["1"][layer]  # [step][replica] -> mask
    for replica0, replica1 in steps:
        assert set(replica0) == {0.0, 2.0}
        assert replica0 != replica1
    for replica in (0, 1):
        masks = [s[replica] for s in steps]
        assert all(a != b for a, b in zip(masks, masks[1:]))


@pytest.mark.parametrize("layer", LAYERS)
def test_masks_are_reproducible_from_the_seed(runs, layer):
    first, second = runs
    assert first["1"][layer] == second["1"][layer]
    assert first["1"][layer] != first["2"][layer]
