"""Recipe units against the reference's own outputs (shared/golden, README sections 1 and 5), and
the TF1 optimizer rules the golden set does not cover (sgd, momentum, LARS) re-derived in numpy."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from golden import load_golden

from efficientnet_tf import build_model
from efficientnet_tf.training import (
    LARS,
    ExponentialMovingAverage,
    MomentumTF,
    RMSpropTF,
    build_learning_rate,
    build_lr_schedule,
    build_optimizer,
    classification_loss,
    ema_decay,
    l2_loss,
    l2_variables,
)

from conftest import TINY

LR_TYPES = ("exponential", "cosine", "poly", "constant")
LR_CONFIGS = ("bs2048", "mainpy", "small")


@pytest.fixture(scope="module")
def lr_golden():
    arrays, meta = load_golden("lr.npz")
    return arrays, {case["name"]: case for case in meta["cases"]}


@pytest.fixture(scope="module")
def golden5():
    return load_golden("optimizer_ema_loss.npz")[0]


# ---- 1. learning rates ------------------------------------------------------------------------

@pytest.mark.parametrize("lr_type", LR_TYPES)
@pytest.mark.parametrize("config", LR_CONFIGS)
def test_build_learning_rate_matches_reference(lr_golden, config, lr_type):
    arrays, cases = lr_golden
    case = cases[config]
    got = [build_learning_rate(case["initial_lr"], tf.constant(step, tf.int64),
                               case["steps_per_epoch"], lr_type, case["decay_factor"],
                               case["decay_epochs"], case["total_steps"], case["warmup_epochs"])
           for step in arrays[f"{config}_steps"]]
    assert all(lr.dtype == tf.float32 and lr.shape == () for lr in got)
    np.testing.assert_allclose(np.array(got), arrays[f"{config}_{lr_type}"], rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize("lr_type", LR_TYPES)
@pytest.mark.parametrize("config", LR_CONFIGS)
def test_trainer_schedule_matches_reference(lr_golden, config, lr_type):
    """build_lr_schedule as the trainer calls it: 0.016 per 256 images at batch 2048 = 0.128."""
    arrays, cases = lr_golden
    case = cases[config]
    if config == "mainpy":  # what main.py passes: num_train_images / train_batch_size
        assert case["steps_per_epoch"] == 1281167 / 2048
    schedule = build_lr_schedule(lr_type, 0.016, 2048, steps_per_epoch=case["steps_per_epoch"],
                                 total_steps=case["total_steps"],
                                 warmup_epochs=case["warmup_epochs"],
                                 decay_epochs=case["decay_epochs"],
                                 decay_factor=case["decay_factor"])
    in_graph = tf.function(schedule)  # as the optimizer evaluates it inside the train step
    steps = arrays[f"{config}_steps"]
    for fn in (schedule, in_graph):
        got = [fn(tf.constant(step, tf.int64)) for step in steps]
        np.testing.assert_allclose(np.array(got), arrays[f"{config}_{lr_type}"], rtol=1e-5,
                                   atol=1e-7)


def test_exponential_drops_when_warmup_ends(lr_golden):
    """The reference quirk kept by default: the staircase counts from step 0."""
    arrays, cases = lr_golden
    for config, case in cases.items():
        warmup = case["warmup_steps"]
        first = list(arrays[f"{config}_steps"]).index(warmup)
        assert arrays[f"{config}_exponential"][first] == pytest.approx(0.128 * 0.97 ** 2,
                                                                       rel=1e-6)
        schedule = build_lr_schedule("exponential", 0.016, 2048, case["steps_per_epoch"],
                                     case["total_steps"])
        assert float(schedule(warmup)) == pytest.approx(0.128 * 0.97 ** 2, rel=1e-6)


# ---- 5a. RMSProp ------------------------------------------------------------------------------

def test_rmsprop_matches_reference_steps(golden5):
    g = golden5
    np.testing.assert_array_equal(g["rmsprop_rms0"], np.ones_like(g["rmsprop_var0"]))
    var = keras.Variable(g["rmsprop_var0"])
    opt = RMSpropTF(learning_rate=0.0)
    opt.build([var])
    np.testing.assert_array_equal(opt._mean_squares[0].numpy(), g["rmsprop_rms0"])
    np.testing.assert_array_equal(opt._momentums[0].numpy(), g["rmsprop_mom0"])
    for i, lr in enumerate(g["rmsprop_lrs"]):
        opt.learning_rate = float(lr)
        opt.apply_gradients([(tf.constant(g["rmsprop_grads"][i]), var)])
        for got, key in ((var, "rmsprop_var"), (opt._mean_squares[0], "rmsprop_rms"),
                         (opt._momentums[0], "rmsprop_mom")):
            np.testing.assert_allclose(got.numpy(), g[key][i], rtol=1e-6, atol=1e-7,
                                       err_msg=f"{key} after step {i + 1}")


# ---- 5b. EMA ----------------------------------------------------------------------------------

def test_ema_matches_reference(golden5):
    g = golden5
    layer = keras.layers.Dense(g["ema_var0"].shape[1], use_bias=False)
    layer.build((None, g["ema_var0"].shape[0]))
    layer.kernel.assign(g["ema_var0"])
    ema = ExponentialMovingAverage(layer, decay=0.9999)
    np.testing.assert_array_equal(ema.averages[0].numpy(), g["ema_shadow0"])
    for i, n in enumerate(g["ema_num_updates"]):
        assert float(ema_decay(tf.constant(n, tf.int64))) == pytest.approx(
            float(g["ema_effective_decay"][i]), rel=1e-7, abs=0), n
        layer.kernel.assign(g["ema_values"][i])
        ema.update(tf.constant(n, tf.int64))
        np.testing.assert_allclose(ema.averages[0].numpy(), g["ema_shadow"][i], rtol=1e-6,
                                   atol=1e-7, err_msg=f"num_updates={n}")


# ---- 5c. loss ---------------------------------------------------------------------------------

def l2_mirror_model(g):
    """Variables shaped as the fixture's: conv kernel, BN gamma, depthwise kernel, dense k+b."""
    model = keras.Sequential([
        keras.Input((3, 4, 3)),
        keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv"),
        keras.layers.BatchNormalization(name="stem_bn"),
        keras.layers.DepthwiseConv2D(3, use_bias=False, name="dwconv"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="predictions")])
    for v, key in zip((model.get_layer("stem_conv").kernel, model.get_layer("stem_bn").gamma,
                       model.get_layer("dwconv").kernel, model.get_layer("predictions").kernel,
                       model.get_layer("predictions").bias), [f"l2_var{i}" for i in range(5)]):
        v.assign(g[key])
    return model


def test_loss_matches_reference(golden5):
    g = golden5
    logits = g["ce_logits"]
    per_example = classification_loss(g["ce_onehot"], logits, 10, label_smoothing=0.1)
    np.testing.assert_allclose(np.asarray(per_example), g["ce_per_example"], rtol=1e-6,
                               atol=1e-7)
    ce = tf.reduce_mean(per_example)
    np.testing.assert_allclose(float(ce), g["ce_loss"], rtol=1e-6, atol=1e-7)
    soft = tf.reduce_mean(classification_loss(g["ce_soft_labels"], logits, 10, 0.1))
    np.testing.assert_allclose(float(soft), g["ce_loss_soft"], rtol=1e-6, atol=1e-7)

    model = l2_mirror_model(g)
    included = {v.path.removeprefix("sequential/") for v in l2_variables(model)}
    assert included == {"stem_conv/kernel", "dwconv/kernel", "predictions/kernel",
                        "predictions/bias"}  # BN gamma (and beta) excluded, as the reference
    l2 = l2_loss(model, float(g["l2_weight_decay"]))
    np.testing.assert_allclose(float(l2), g["l2_term"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(ce + l2), g["total_loss"], rtol=1e-6, atol=1e-7)


# ---- sgd / momentum / LARS: TF1 rules re-derived in numpy -------------------------------------

LRS = [0.0, 0.05, 0.1, 0.2, 0.15]  # a changing LR, as warmup + decay produce
RNG = np.random.default_rng(0)
W0 = RNG.normal(size=(3, 4))
GRADS = RNG.normal(size=(5, 3, 4))


def run(opt, var0, grads, lrs):
    var = keras.Variable(np.asarray(var0, "float32"))
    for g, lr in zip(grads, lrs):
        opt.learning_rate = lr
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    return var.numpy()


def tf1_momentum(var, grads, lrs, momentum=0.9):
    """tf.compat.v1.train.MomentumOptimizer: accum = m·accum + g; var −= lr·accum."""
    accum = np.zeros_like(var)
    for g, lr in zip(grads, lrs):
        accum = momentum * accum + g
        var = var - lr * accum
    return var


def test_sgd_is_plain_gradient_descent():
    opt = build_optimizer(0.1, optimizer="sgd")
    want = W0 - sum(lr * g for g, lr in zip(GRADS, LRS))
    np.testing.assert_allclose(run(opt, W0, GRADS, LRS), want, rtol=1e-5, atol=1e-6)


def test_momentum_follows_tf1_not_keras_sgd():
    opt = build_optimizer(0.1, optimizer="momentum")
    assert isinstance(opt, MomentumTF) and opt.momentum == 0.9
    got = run(opt, W0, GRADS, LRS)
    np.testing.assert_allclose(got, tf1_momentum(W0, GRADS, LRS), rtol=1e-5, atol=1e-6)
    keras_sgd = run(keras.optimizers.SGD(0.1, momentum=0.9), W0, GRADS, LRS)
    assert np.abs(keras_sgd - got).max() > 1e-2  # v = m·v − lr·g scales past gradients by past LRs
    # With a constant LR the two rules coincide.
    np.testing.assert_allclose(run(MomentumTF(0.1), W0, GRADS, [0.1] * 5),
                               run(keras.optimizers.SGD(0.1, momentum=0.9), W0, GRADS, [0.1] * 5),
                               rtol=1e-5, atol=1e-6)


def tf1_lars(var, grads, lrs, skipped, momentum=0.9, wd=1e-5, eeta=0.001, eps=0.0):
    """The reference's LARSOptimizer: trust ratio and weight decay unless skipped, lr-1 momentum."""
    accum = np.zeros_like(var)
    for g, lr in zip(grads, lrs):
        if not skipped:
            w_norm, g_norm = np.linalg.norm(var), np.linalg.norm(g)
            ratio = eeta * w_norm / (g_norm + wd * w_norm + eps) if w_norm > 0 and g_norm > 0 \
                else 1.0
            lr, g = lr * ratio, g + wd * var
        accum = momentum * accum + g * lr
        var = var - accum
    return var


def test_lars_matches_reference_rule_and_skip_list():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dense(2, name="predictions")])
    rng = np.random.default_rng(1)
    for v in model.trainable_weights:
        v.assign(rng.normal(size=v.shape))
    start = [v.numpy().astype(np.float64) for v in model.trainable_weights]
    grads = [rng.normal(size=(5, *v.shape)) for v in model.trainable_weights]
    grads[0][2] = 0.0  # a zero gradient: trust ratio 1, the weight decay still applies
    opt = build_optimizer(0.1, optimizer="lars", lars_weight_decay=2e-5, lars_epsilon=1e-6)
    assert isinstance(opt, LARS) and (opt.momentum, opt.lars_weight_decay, opt.epsilon,
                                      opt.eeta) == (0.9, 2e-5, 1e-6, 0.001)
    assert opt.skip_list == ("batch_normalization", "bias", "beta", "gamma")
    # A large eeta and decay so that the trust ratio and the decay term move the weights visibly.
    opt = LARS(0.1, lars_weight_decay=1e-2, eeta=0.5, epsilon=1e-6)
    opt.build(model.trainable_weights)
    for i, lr in enumerate(LRS):
        opt.learning_rate = lr
        opt.apply_gradients([(tf.constant(g[i], tf.float32), v)
                             for g, v in zip(grads, model.trainable_weights)])
    # Sequential prefixes its name ("sequential/fc/kernel"); matched as substrings all the same.
    paths = [v.path.removeprefix(model.name + "/") for v in model.trainable_weights]
    skipped = dict(zip(paths, opt._skipped))
    assert skipped == {"fc/kernel": False, "fc/bias": True, "bn/gamma": True, "bn/beta": True,
                       "predictions/kernel": False, "predictions/bias": True}
    for v, path, w0, g in zip(model.trainable_weights, paths, start, grads):
        want = tf1_lars(w0, g, LRS, skipped[path], wd=1e-2, eeta=0.5, eps=1e-6)
        np.testing.assert_allclose(v.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=path)


def test_lars_skips_bn_and_biases_of_efficientnet():
    model = build_model(model_name="efficientnet-b0", input_shape=(32, 32, 3), classes=4, **TINY)
    opt = LARS(0.1)
    opt.build(model.trainable_weights)
    scaled = [v for v, s in zip(model.trainable_weights, opt._skipped) if not s]
    skipped = [v for v, s in zip(model.trainable_weights, opt._skipped) if s]
    # Only kernels get the trust ratio; every BN gamma/beta and every bias is skipped.
    assert scaled and all(v.path.endswith("kernel") for v in scaled)
    assert all(v.path.rsplit("/", 1)[-1] in ("gamma", "beta", "bias") for v in skipped)
    assert {v.path for v in l2_variables(model)} - {v.path for v in scaled} == {
        v.path for v in skipped if v.path.endswith("bias")}


def test_train_epochs_give_the_references_step_count():
    from efficientnet_tf.training.trainer import total_train_steps

    # The reference's --train_steps default: int(350 * 1281167 / 2048).
    assert total_train_steps(1_281_167, 2048, None, 350) == 218_949
    assert total_train_steps(1_281_167, 2048, 1000, 350) == 1000
    assert total_train_steps(64, 8, None, None) is None
