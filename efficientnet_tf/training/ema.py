"""Exponential moving average of the model weights, as the reference evaluates with
(docs/fidelity.md).

Covers every floating-point model weight: the trainables AND the BatchNorm moving mean/variance
(Keras' built-in `use_ema` covers trainables only and has no warm-up). Integer state (seed
generators) and optimizer slots are not model weights and are left out.

Distribution: the shadows are `tf.Variable`s created under the model's strategy scope, so they are
mirrored like the weights. `update()` may be called inside `strategy.run` (replica context): it
hops to the cross-replica context with one `merge_call` and updates each device's shadow from that
device's copy of the weight, with no communication. That is consistent because after the
optimizer step every replica holds the same weights. BN moving statistics are shared only within
a group of replicas (`--bn_group_size`; by default each replica keeps its own, as the reference):
each device's shadow then follows its own replica's statistics, and reads, swaps and checkpoints
use replica 0's, exactly as for the model's statistics themselves (and as the reference's
checkpoints hold one replica's).
"""
from __future__ import annotations

import contextlib

import tensorflow as tf


def ema_decay(step, decay: float = 0.9999):
    """min(decay, (1 + step) / (10 + step)): early averages forget the random init quickly."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + step) / (10.0 + step))


def ema_source_variables(model) -> list:
    """The weights to average: all floating-point model weights (trainables + BN statistics)."""
    return [v for v in model.weights if tf.as_dtype(v.dtype).is_floating]


def _tf_variable(v):
    # Keras 3 variables wrap a tf.Variable (a distributed one under a strategy).
    return v if isinstance(v, tf.Variable) else v.value


class ExponentialMovingAverage(tf.Module):
    """Shadow copies of a model's weights, updated as s ← s − (1 − d)(s − w).

    Create it after the model's weights are initialized or loaded (shadows start as copies), under
    the same strategy scope as the model. Save it in the same `tf.train.Checkpoint` as the model
    and optimizer (`tf.train.Checkpoint(model=..., optimizer=..., ema=ema)`): its `averages` are
    tracked and restored with them.
    """

    # The model is checkpointed on its own: keep its weights out of this module's dependencies
    # and out of `self.variables`.
    _TF_MODULE_IGNORED_PROPERTIES = tf.Module._TF_MODULE_IGNORED_PROPERTIES | {"_sources"}

    def __init__(self, model, decay: float = 0.9999, name="ema"):
        super().__init__(name=name)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"moving_average_decay={decay}: must be in (0, 1)")
        self.decay = float(decay)
        sources = ema_source_variables(model)
        with tf.init_scope():
            self.averages = [
                tf.Variable(tf.identity(_tf_variable(v)), trainable=False,
                            name=v.path.replace("/", "_") + "_ema")
                for v in sources]
        self._set_sources(tuple(_tf_variable(v) for v in sources))
        self._paths = tuple(v.path for v in sources)

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _set_sources(self, sources):
        self._sources = sources

    @property
    def source_variables(self) -> tuple:
        """The averaged model weights, as the `tf.Variable`s (mirrored ones) under Keras'."""
        return self._sources

    @property
    def paths(self) -> tuple:
        """Keras paths of the averaged weights, in the order of `averages`."""
        return self._paths

    def update(self, step):
        """Fold the current weights in with decay min(decay, (1+step)/(10+step)).

        `step` = number of optimizer updates done, counting this one (`optimizer.iterations`
        read after `apply_gradients`), as the reference's num_updates=global_step.
        """
        decay = ema_decay(step, self.decay)
        if tf.distribute.in_cross_replica_context():
            return self._update_cross_replica(tf.distribute.get_strategy(), decay)
        return tf.distribute.get_replica_context().merge_call(self._update_cross_replica,
                                                              args=(decay,))

    def _update_cross_replica(self, strategy, decay):
        def apply(shadow, value, d):
            return shadow.assign_sub((1.0 - d) * (shadow - tf.cast(value, shadow.dtype)))

        updates = [strategy.extended.update(shadow, apply, args=(source, decay), group=False)
                   for shadow, source in zip(self.averages, self.source_variables)]
        return tf.group(tf.nest.flatten(updates))

    def swap(self):
        """Exchange model weights and averages (call again to undo). Cross-replica context."""
        for shadow, source in zip(self.averages, self.source_variables):
            current = tf.identity(source)
            source.assign(shadow)
            shadow.assign(current)

    @contextlib.contextmanager
    def averaged_weights(self):
        """`with ema.averaged_weights(): evaluate/export` — the model holds the EMA weights
        inside."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def copy_to(self, model):
        """Write the averages into `model` (same architecture, e.g. a fresh export model)."""
        targets = ema_source_variables(model)
        if len(targets) != len(self.averages):
            raise ValueError(f"copy_to: model {model.name!r} has {len(targets)} floating-point "
                             f"weights, the EMA tracks {len(self.averages)}")
        for target, shadow, path in zip(targets, self.averages, self._paths):
            if tuple(target.shape) != tuple(shadow.shape):
                raise ValueError(f"copy_to: {target.path} has shape {tuple(target.shape)}, the "
                                 f"average of {path} has {tuple(shadow.shape)}")
            target.assign(shadow)

    def reset(self):
        """Restart the averages from the current weights (e.g. after loading pretrained ones)."""
        for shadow, source in zip(self.averages, self.source_variables):
            shadow.assign(source)
