"""Input pipelines: dataset sources, reference preprocessing, augmentation, `prepare` converters.

Public API (see each module's docstring for the contracts):
- `DataConfig` (config.py): every setting of a pipeline except per-call sizes.
- `get_dataset_info(config) -> DatasetInfo`: classes, exact split sizes, class names.
- `build_dataset(...)`, `distributed_dataset(...)`, `steps_per_epoch`, `eval_steps`
  (pipeline.py).
- `prepare(dataset, source_dir, data_dir, ...)` (prepare.py): official archives -> TFRecords.
- `preprocess_image(...)` (preprocessing.py) and `augment_op(...)` (augment.py): the reference's
  preprocessing and augmentation ops with its signatures, the same code the pipelines run.
"""
from efficientnet_tf.data.augment import augment_op
from efficientnet_tf.data.config import AUGMENT_NAMES, DATASETS, PREPARE_DATASETS, DataConfig
from efficientnet_tf.data.pipeline import (build_dataset, distributed_dataset, eval_steps,
                                           steps_per_epoch)
from efficientnet_tf.data.prepare import prepare
from efficientnet_tf.data.preprocessing import preprocess_image
from efficientnet_tf.data.sources import DatasetInfo, get_dataset_info

__all__ = ["AUGMENT_NAMES", "DATASETS", "PREPARE_DATASETS", "DataConfig", "DatasetInfo",
           "augment_op", "build_dataset", "distributed_dataset", "eval_steps",
           "get_dataset_info", "prepare", "preprocess_image", "steps_per_epoch"]
