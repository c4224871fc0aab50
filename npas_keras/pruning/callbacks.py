"""Training callbacks: schedule-driven mask updates and mask re-application (and TensorBoard)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from npas_keras.pruning.prune import iter_wrappers

__all__ = ["PruningCallback", "callbacks", "weight_sparsity"]


def _eval_schedule(schedule, step):
    should, sparsity = schedule(tf.constant(step, dtype=tf.int64))
    return bool(np.asarray(should)), float(np.asarray(sparsity))


def weight_sparsity(wrapper):
    """{weight name: fraction of exact zeros} for a PruneWrapper."""
    return {v.name: float(np.mean(v.variable.numpy() == 0)) for v in wrapper.views}


def _scalar(tag, value, step):
    """tf.summary.scalar without needing the tensorboard package (TF's own summary writer op,
    with the scalars-plugin metadata TensorBoard reads)."""
    from tensorflow.core.framework import summary_pb2
    md = summary_pb2.SummaryMetadata()
    md.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=int(step),
                     metadata=md.SerializeToString())


class PruningCallback(keras.callbacks.Callback):
    """Advances the pruning step, recomputes masks along the schedule, re-applies masks.

    - on_train_batch_begin: for each wrapper with a schedule (this callback's, else the wrapper's),
      if the schedule says so at the current step, masks <- compute_mask(scheme, rate=sparsity).
    - on_train_batch_end: weight <- weight * mask (after the optimizer step, so momentum cannot
      revive a pruned weight between batches), and the step advances.
    - log_dir: per-layer, per-weight sparsity scalars for TensorBoard at each epoch end.
    """

    def __init__(self, schedule=None, log_dir: Optional[str] = None):
        super().__init__()
        self.schedule = schedule
        self.log_dir = log_dir
        self._writer = None
        self.step = None

    def _wrappers(self):
        return list(iter_wrappers(self.model))

    def on_train_begin(self, logs=None):
        ws = self._wrappers()
        if not ws:
            raise ValueError("PruningCallback: the model has no PruneWrapper layers "
                             "(call npas_keras.prune first)")
        self.step = max(int(w.pruning_step.numpy()) for w in ws)
        for w in ws:
            w.apply_masks()
        if self.log_dir and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_begin(self, batch, logs=None):
        for w in self._wrappers():
            sched = self.schedule if self.schedule is not None else w.schedule
            if sched is None:
                continue
            should, sparsity = _eval_schedule(sched, self.step)
            if should:
                w.update_masks(rate=sparsity)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        for w in self._wrappers():
            w.apply_masks()
            w.pruning_step.assign(self.step)

    def on_epoch_end(self, epoch, logs=None):
        if self._writer is None:
            return
        with self._writer.as_default():
            for w in self._wrappers():
                for name, s in weight_sparsity(w).items():
                    _scalar(f"sparsity/{w.layer.name}/{name}", s, epoch)
            self._writer.flush()

    def on_train_end(self, logs=None):
        for w in self._wrappers():
            w.apply_masks()
        if self._writer is not None:
            self._writer.flush()


def callbacks(schedule=None, *, log_dir: Optional[str] = None):
    """Keras callbacks for training a pruned model: ``model.fit(..., callbacks=npas_keras.callbacks())``.

    schedule: a tfmot PruningSchedule overriding the wrappers' own (None: each wrapper follows the
    schedule given to prune(), or keeps its fixed masks). log_dir: TensorBoard sparsity scalars.
    """
    return [PruningCallback(schedule=schedule, log_dir=log_dir)]
