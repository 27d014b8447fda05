"""Recipe units against hand-computed values: RMSProp, LR schedules, EMA, L2, smoothing."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import build_model
from efficientnet_tf.training import (
    LARS,
    ExponentialMovingAverage,
    MomentumTF,
    ReferenceLearningRate,
    RMSpropTF,
    build_learning_rate,
    build_lr_schedule,
    build_optimizer,
    classification_loss,
    ema_decay,
    ema_source_variables,
    l2_loss,
    l2_variables,
)

from conftest import TINY

GRADS = np.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2], [-1.5, 0.0, 0.7], [2.0, -0.4, 0.05]])


def tf1_rmsprop(var, grads, lr, rho=0.9, momentum=0.9, eps=1e-3):
    """tf.compat.v1.train.RMSPropOptimizer, written out: ms starts at ones."""
    var, ms, mom = np.array(var, np.float64), np.ones_like(var, np.float64), np.zeros(len(var))
    for g in grads:
        ms = rho * ms + (1 - rho) * g ** 2
        mom = momentum * mom + lr * g / np.sqrt(ms + eps)
        var = var - mom
    return var


def tiny_model(**kw):
    return build_model(model_name="efficientnet-b0", input_shape=(32, 32, 3), classes=4,
                       **{**TINY, **kw})


# ---- RMSProp ----------------------------------------------------------------------------------

def test_rmsprop_matches_tf1_update_rule():
    var = keras.Variable(np.array([1.0, -2.0, 0.5], "float32"))
    opt = RMSpropTF(learning_rate=0.1)
    for i, g in enumerate(GRADS):
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        np.testing.assert_allclose(var.numpy(), tf1_rmsprop([1.0, -2.0, 0.5], GRADS[:i + 1], 0.1),
                                   atol=1e-6)
    # Keras' RMSprop starts the accumulator at zeros: its first step is ~3x larger.
    keras_var = keras.Variable(np.array([1.0, -2.0, 0.5], "float32"))
    keras.optimizers.RMSprop(0.1, rho=0.9, momentum=0.9, epsilon=1e-3).apply_gradients(
        [(tf.constant(GRADS[0], tf.float32), keras_var)])
    assert not np.allclose(keras_var.numpy(), tf1_rmsprop([1.0, -2.0, 0.5], GRADS[:1], 0.1),
                           atol=1e-3)


def test_rmsprop_under_loss_scaling_matches_unscaled_rule():
    opt = build_optimizer(0.05, mixed_precision="mixed_float16")
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert isinstance(opt.inner_optimizer, RMSpropTF)
    var = keras.Variable(np.array([1.0, -2.0, 0.5], "float32"))
    scale = opt.initial_scale
    for g in GRADS[:2]:
        opt.apply_gradients([(tf.constant(g * scale, tf.float32), var)])
    np.testing.assert_allclose(var.numpy(), tf1_rmsprop([1.0, -2.0, 0.5], GRADS[:2], 0.05),
                               atol=1e-6)
    assert isinstance(build_optimizer(0.1, mixed_precision="mixed_bfloat16"), RMSpropTF)
    with pytest.raises(ValueError, match="mixed_precision='auto'"):
        build_optimizer(0.1, mixed_precision="auto")


def test_build_optimizer_names():
    assert type(build_optimizer(0.1, optimizer="sgd")) is keras.optimizers.SGD
    assert build_optimizer(0.1, optimizer="sgd").momentum == 0.0
    assert type(build_optimizer(0.1, optimizer="momentum")) is MomentumTF
    for name, cls in (("rmsprop", RMSpropTF), ("momentum", MomentumTF), ("lars", LARS)):
        wrapped = build_optimizer(0.1, optimizer=name, mixed_precision="mixed_float16")
        assert type(wrapped.inner_optimizer) is cls
    with pytest.raises(ValueError, match="optimizer='adam'"):
        build_optimizer(0.1, optimizer="adam")
    lars = build_optimizer(0.1, optimizer="lars")
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(lars))
    assert type(clone) is LARS and clone.get_config() == lars.get_config()


def test_rmsprop_trains_a_mixed_float16_model():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3, dtype="float32")])
        opt = build_optimizer(0.01, mixed_precision="mixed_float16")
        x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
        start = [v.numpy() for v in model.trainable_weights]
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(classification_loss(np.arange(16) % 3, model(x), 3, 0.1))
                scaled = opt.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights))
        assert int(opt.iterations.numpy()) == 2
        for v, s in zip(model.trainable_weights, start):
            assert v.dtype == "float32" and np.all(np.isfinite(v.numpy()))
            assert not np.array_equal(v.numpy(), s)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_rmsprop_checkpoint_restores_slots(tmp_path):
    var = keras.Variable(np.array([1.0, -2.0, 0.5], "float32"), name="w")
    opt = RMSpropTF(learning_rate=0.1)
    for g in GRADS[:2]:
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
    path = tf.train.Checkpoint(optimizer=opt, var=var).save(str(tmp_path / "ckpt"))

    var2 = keras.Variable(np.zeros(3, "float32"), name="w")
    opt2 = RMSpropTF(learning_rate=0.1)
    opt2.build([var2])
    tf.train.Checkpoint(optimizer=opt2, var=var2).restore(path).assert_consumed()
    assert int(opt2.iterations.numpy()) == 2
    for a, b in zip(opt.variables, opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Resumed training continues the exact TF1 trajectory.
    for g in GRADS[2:]:
        opt2.apply_gradients([(tf.constant(g, tf.float32), var2)])
    np.testing.assert_allclose(var2.numpy(), tf1_rmsprop([1.0, -2.0, 0.5], GRADS, 0.1), atol=1e-6)


def test_rmsprop_serializes_with_schedule():
    opt = RMSpropTF(learning_rate=ReferenceLearningRate(0.1, steps_per_epoch=10),
                    rho=0.8, momentum=0.5, epsilon=1e-4)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, RMSpropTF)
    assert (clone.rho, clone.momentum, clone.epsilon) == (0.8, 0.5, 1e-4)
    assert clone.get_config() == opt.get_config()  # incl. the serialized schedule
    with pytest.raises(ValueError, match="rho=1.5"):
        RMSpropTF(rho=1.5)


# ---- LR schedules -----------------------------------------------------------------------------

def lr_at(schedule, step):
    return float(schedule(tf.constant(step, tf.int64)))


def test_exponential_schedule_reference_numbers():
    # 0.016 per 256 images at global batch 2048 -> 0.128; 100 steps/epoch: warmup 500 steps,
    # decay every 240 steps counted from step 0 (the reference): at step 500 already 0.97^2.
    s = build_lr_schedule("exponential", 0.016, 2048, steps_per_epoch=100, total_steps=35000)
    expected = {0: 0.0, 250: 0.064, 499: 0.128 * 499 / 500, 500: 0.128 * 0.97 ** 2,
                719: 0.128 * 0.97 ** 2, 720: 0.128 * 0.97 ** 3, 2405: 0.128 * 0.97 ** 10}
    for step, lr in expected.items():
        assert lr_at(s, step) == pytest.approx(lr, rel=1e-6, abs=1e-9), step


def test_continuous_warmup_option():
    # The project's former default: decay counted from the end of warmup, lr(warmup) = peak.
    s = build_lr_schedule("exponential", 0.016, 2048, steps_per_epoch=100, total_steps=35000,
                          continuous_warmup=True)
    expected = {0: 0.0, 250: 0.064, 499: 0.128 * 499 / 500, 500: 0.128, 739: 0.128,
                740: 0.128 * 0.97, 500 + 240 * 10 + 5: 0.128 * 0.97 ** 10}
    for step, lr in expected.items():
        assert lr_at(s, step) == pytest.approx(lr, rel=1e-6, abs=1e-9), step
    cos = build_lr_schedule("cosine", 0.016, 512, steps_per_epoch=100, total_steps=1500,
                            continuous_warmup=True)
    for step, lr in {100: 0.0064, 500: 0.032, 750: 0.016 * (1 + math.cos(math.pi / 4)),
                     1000: 0.016, 1500: 0.0}.items():
        assert lr_at(cos, step) == pytest.approx(lr, rel=1e-6, abs=1e-9), step
    # poly already decays from the end of warmup in the reference: the option changes nothing.
    kw = dict(steps_per_epoch=10, total_steps=100)
    poly, cont = build_lr_schedule("poly", 0.016, 2048, **kw), build_lr_schedule(
        "poly", 0.016, 2048, continuous_warmup=True, **kw)
    assert [lr_at(poly, s) for s in range(0, 120, 7)] == pytest.approx(
        [lr_at(cont, s) for s in range(0, 120, 7)], rel=1e-6)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(cos))
    assert clone.continuous_warmup and lr_at(clone, 750) == pytest.approx(lr_at(cos, 750))


def test_cosine_poly_and_constant_schedules():
    cos = build_lr_schedule("cosine", 0.016, 512, steps_per_epoch=100, total_steps=1500,
                            warmup_epochs=5)
    assert isinstance(cos, ReferenceLearningRate)
    # cos(pi·step/total) from step 0; past total_steps it rises again, as in the reference.
    for step, lr in {100: 0.0064, 500: 0.024, 750: 0.016, 1000: 0.008, 1500: 0.0,
                     3000: 0.032}.items():
        assert lr_at(cos, step) == pytest.approx(lr, rel=1e-6, abs=1e-8), step
    # poly: (peak - 0.1)·(1 - p)^2 + 0.1, p = max(1, step - 50) / 51, capped at 1.
    poly = build_lr_schedule("poly", 0.016, 2048, steps_per_epoch=10, total_steps=100)
    after_warmup = 0.028 * (50 / 51) ** 2 + 0.1
    for step, lr in {25: 0.064, 50: after_warmup, 51: after_warmup,
                     75: 0.028 * (26 / 51) ** 2 + 0.1, 101: 0.1, 500: 0.1}.items():
        assert lr_at(poly, step) == pytest.approx(lr, rel=1e-6), step
    const = build_lr_schedule("constant", 0.016, 256, steps_per_epoch=10, total_steps=100,
                              warmup_epochs=1)
    assert [lr_at(const, s) for s in (0, 5, 10, 99)] == pytest.approx([0, 0.008, 0.016, 0.016])
    no_warmup = build_lr_schedule("exponential", 0.016, 256, 10, 100, warmup_epochs=0,
                                  decay_epochs=1, decay_factor=0.5)
    assert [lr_at(no_warmup, s) for s in (0, 9, 10, 25)] == pytest.approx(
        [0.016, 0.016, 0.008, 0.004])
    # A fractional steps_per_epoch (train_size / batch, as main.py): warmup int(5 · 12.5) = 62.
    frac = build_lr_schedule("constant", 0.016, 256, steps_per_epoch=12.5, total_steps=100)
    assert [lr_at(frac, 61), lr_at(frac, 62)] == pytest.approx([0.016 * 61 / 62, 0.016])


def test_schedules_serialize_and_drive_the_optimizer():
    s = build_lr_schedule("exponential", 0.016, 2048, steps_per_epoch=100, total_steps=35000)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert type(clone) is ReferenceLearningRate and clone.get_config() == s.get_config()
    opt = RMSpropTF(learning_rate=s)
    var = keras.Variable(np.zeros(3, "float32"))
    opt.iterations.assign(250)
    assert float(opt.learning_rate) == pytest.approx(0.064)
    opt.apply_gradients([(tf.ones(3), var)])
    assert float(opt.learning_rate) == pytest.approx(0.128 * 251 / 500)


def test_schedule_errors_name_the_argument():
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        build_lr_schedule("linear", 0.016, 256, 10, 100)
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        build_lr_schedule("cosine", 0.016, 256, 0, 100)
    with pytest.raises(ValueError, match="global_batch_size=0"):
        build_lr_schedule("constant", 0.016, 0, 10, 100)
    with pytest.raises(ValueError, match="decay_factor=1.5"):
        build_lr_schedule("exponential", 0.016, 256, 10, 100, decay_factor=1.5)
    with pytest.raises(ValueError, match="lr_decay_type='linear'"):
        build_learning_rate(0.1, 0, 10, "linear")
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        build_learning_rate(0.1, 0, lr_decay_type="exponential", warmup_epochs=0)
    with pytest.raises(ValueError, match="needs steps_per_epoch"):
        build_learning_rate(0.1, 0, lr_decay_type="cosine", total_steps=10)  # for the warmup
    for name in ("cosine", "poly"):
        with pytest.raises(ValueError, match=f"lr_decay_type='{name}' needs total_steps"):
            build_learning_rate(0.1, 0, 10, name)
    assert float(build_learning_rate(0.1, 3, lr_decay_type="constant", warmup_epochs=0)) == \
        pytest.approx(0.1)


# ---- EMA --------------------------------------------------------------------------------------

def test_ema_warmup_decay_values():
    for step, expected in {0: 0.1, 1: 2 / 11, 10: 11 / 20, 1000: 1001 / 1010,
                           10 ** 6: 0.9999}.items():
        assert float(ema_decay(step)) == pytest.approx(expected, rel=1e-6), step
    assert float(ema_decay(3, decay=0.2)) == pytest.approx(0.2)


def small_bn_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                             keras.layers.BatchNormalization(), keras.layers.Dense(2)])


def test_ema_update_sequence_matches_numpy_and_covers_bn_stats():
    model = small_bn_model()
    ema = ExponentialMovingAverage(model, decay=0.9999)
    assert len(ema.averages) == len(model.weights) == 8  # incl. BN moving mean/variance
    names = ema.paths
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    shadows = [v.numpy().astype(np.float64) for v in model.weights]
    rng = np.random.default_rng(0)
    for step in (1, 2, 3, 500):
        for v in model.trainable_weights:
            v.assign(rng.normal(size=v.shape).astype("float32"))
        model(rng.normal(size=(16, 4)).astype("float32"), training=True)  # moves BN statistics
        ema.update(step)
        d = min(0.9999, (1 + step) / (10 + step))
        shadows = [s - (1 - d) * (s - v.numpy()) for s, v in zip(shadows, model.weights)]
        for got, want in zip(ema.averages, shadows):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_ema_update_inside_tf_function():
    model = small_bn_model()
    ema = ExponentialMovingAverage(model)
    start = [v.numpy() for v in model.weights]
    for v in model.trainable_weights:
        v.assign(v + 1.0)

    @tf.function
    def step_fn(step):
        ema.update(step)

    step_fn(tf.constant(0, tf.int64))  # decay 0.1
    for got, s, v in zip(ema.averages, start, model.weights):
        np.testing.assert_allclose(got.numpy(), 0.1 * s + 0.9 * v.numpy(), rtol=1e-6, atol=1e-6)


def test_ema_swap_round_trip_and_copy_to():
    model = small_bn_model()
    ema = ExponentialMovingAverage(model)
    for v in model.weights:
        v.assign(v + 3.0)
    ema.update(5)
    originals = [v.numpy() for v in model.weights]
    averages = [v.numpy() for v in ema.averages]
    with ema.averaged_weights():
        for v, a in zip(model.weights, averages):
            np.testing.assert_array_equal(v.numpy(), a)
    for v, o in zip(model.weights, originals):
        np.testing.assert_array_equal(v.numpy(), o)
    for s, a in zip(ema.averages, averages):
        np.testing.assert_array_equal(s.numpy(), a)

    export = small_bn_model()
    ema.copy_to(export)
    for v, a in zip(export.weights, averages):
        np.testing.assert_array_equal(v.numpy(), a)
    with pytest.raises(ValueError, match="floating-point weights"):
        ema.copy_to(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_ema_checkpoint_round_trip(tmp_path):
    model = small_bn_model()
    ema = ExponentialMovingAverage(model)
    for v in model.weights:
        v.assign(v + 1.0)
    ema.update(7)
    saved = [v.numpy() for v in ema.averages]
    path = tf.train.Checkpoint(model=model, ema=ema).save(str(tmp_path / "ckpt"))
    keys = [k for k, _ in tf.train.list_variables(path) if k.startswith("ema/")]
    assert len(keys) == len(ema.averages)  # only the shadows, not the model weights again
    assert len(ema.variables) == len(ema.averages)
    ema.reset()
    assert not np.array_equal(ema.averages[0].numpy(), saved[0])
    tf.train.Checkpoint(model=model, ema=ema).restore(path).assert_consumed()
    for s, want in zip(ema.averages, saved):
        np.testing.assert_array_equal(s.numpy(), want)


def test_ema_covers_trainables_and_bn_stats_of_efficientnet():
    model = tiny_model()
    sources = ema_source_variables(model)
    bn_stats = [v for v in model.non_trainable_weights if "moving_" in v.path]
    assert len(sources) == len(model.trainable_weights) + len(bn_stats) == len(model.weights)


# ---- L2 and label smoothing -------------------------------------------------------------------

def test_l2_coverage_on_efficientnet():
    model = tiny_model()
    included = {id(v) for v in l2_variables(model)}
    layers = model._flatten_layers(include_self=False, recursive=True)
    bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(id(v) in included for bn in bns for v in (bn.gamma, bn.beta))
    se = [layer for layer in layers if layer.name in ("se_reduce", "se_expand")]
    assert len(se) == 14 and all(id(layer.bias) in included and id(layer.kernel) in included
                                 for layer in se)
    dense = model.get_layer("predictions")
    assert id(dense.kernel) in included and id(dense.bias) in included
    # 7 blocks (1 repeat each): stem 1 + expand 6 + depthwise 7 + SE 4x7 + project 7 + head 1
    # + dense 2 = 52; everything else trainable is BN gamma/beta (2 per BN layer).
    assert len(included) == 52
    assert len(model.trainable_weights) == 52 + 2 * len(bns)


def test_l2_value_matches_numpy_and_skips_frozen():
    model = tiny_model()
    want = 1e-5 * sum(np.sum(v.numpy().astype(np.float64) ** 2) / 2 for v in l2_variables(model))
    assert float(l2_loss(model, 1e-5)) == pytest.approx(want, rel=1e-5)
    assert float(l2_loss(model, 0.0)) == 0.0
    model.get_layer("predictions").trainable = False
    assert len(l2_variables(model)) == 50
    with pytest.raises(ValueError, match="weight_decay=-1"):
        l2_loss(model, -1)


def test_label_smoothing_loss_by_hand():
    logits = np.array([[2.0, 1.0, 0.0], [0.5, -1.0, 3.0]], "float32")
    labels = np.array([0, 2])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.eye(3)[labels] * 0.9 + 0.1 / 3
    want = -(targets * log_p).sum(-1)
    got = classification_loss(labels, logits, num_classes=3, label_smoothing=0.1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(classification_loss(labels[:, None], logits, 3, 0.1)),
                               want, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(classification_loss(np.eye(3, dtype="float32")[labels], logits, 3, 0.1)),
        want, rtol=1e-5)
    probs = np.exp(log_p).astype("float32")
    np.testing.assert_allclose(
        np.asarray(classification_loss(labels, probs, 3, 0.1, from_logits=False)), want,
        rtol=1e-4)
    # mixup targets are used as given (then smoothed)
    mixed = np.array([[0.7, 0.3, 0.0], [0.0, 0.5, 0.5]], "float32")
    want_mix = -((mixed * 0.9 + 0.1 / 3) * log_p).sum(-1)
    np.testing.assert_allclose(np.asarray(classification_loss(mixed, logits, 3, 0.1)), want_mix,
                               rtol=1e-5)


def test_classification_loss_errors():
    logits = np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match="num_classes=4"):
        classification_loss(np.array([0, 1]), logits, 4)
    with pytest.raises(ValueError, match="label_smoothing=1.0"):
        classification_loss(np.array([0, 1]), logits, 3, label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"\[batch, num_classes=3\]"):
        classification_loss(np.zeros((2, 2), "float32"), logits, 3)
