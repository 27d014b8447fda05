"""Input pipelines: dataset sources, reference preprocessing, augmentation, `prepare` converters.

Public API (see each module's docstring for the contracts):
- `DataConfig` (config.py): every setting of a pipeline except per-call sizes.
- `get_dataset_info(config) -> DatasetInfo`: classes, exact split sizes, class names.
- `build_dataset(...)`, `distributed_dataset(...)`, `steps_per_epoch`, `eval_steps`
  (pipeline.py).
- `prepare(dataset, source_dir, data_dir, ...)` (prepare.py): official archives -> TFRecords.
- `preprocess_image(...)` (preprocessing.py) and `augment_op(...)` (augment.py): the reference's
  preprocessing and augmentation ops with its signatures, the same code the pipelines run.

The names import their modules on first use, so `import efficientnet_tf.data` loads no TensorFlow.
"""
from efficientnet_tf import _lazy_exports

_EXPORTS = {
    "augment": ("augment_op",),
    "config": ("AUGMENT_NAMES", "DATASETS", "PREPARE_DATASETS", "DataConfig"),
    "pipeline": ("build_dataset", "distributed_dataset", "eval_steps", "steps_per_epoch"),
    "prepare": ("prepare",),
    "preprocessing": ("preprocess_image",),
    "sources": ("DatasetInfo", "get_dataset_info"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
