"""Export: TF Serving SavedModel, TF-Hub reusable SavedModels and TFLite, with BN folded for speed.

One input contract per artifact (README, "Export and predict"), also written to
`assets.extra/export_info.json` of each SavedModel:
- serving SavedModel (saved_model.py): `serving_default` takes encoded images (`image_bytes`,
  string [batch]) and runs the eval preprocessing inside; `serving_images` takes float32 RGB
  [batch, S, S, 3] in [0, 255], already cropped and resized to the model resolution S.
- TF-Hub SavedModels (hub.py; `classification/`, `feature_vector/`): float32 RGB
  [batch, S, S, 3] in [0, 1], the TF-Hub image convention; they scale by 255 inside.
- TFLite (tflite.py): float32 RGB [1, S, S, 3] in [0, 255].

Every directory is written next to its destination and renamed into place, so an interrupted
export leaves nothing at the destination. An existing destination is refused unless
`overwrite=True` (then it is replaced whole). The rename is atomic on local filesystems only.

The names import their modules on first use, so `import efficientnet_tf.export` loads no
TensorFlow.
"""
from efficientnet_tf import _lazy_exports

_EXPORTS = {
    "folding": ("fold_model",),
    "hub": ("HUB_VARIANTS", "export_hub"),
    "saved_model": ("IMAGES_SIGNATURE", "export_saved_model"),
    "saving": ("EXPORT_INFO_FILE", "SERVING_SIGNATURE", "read_export_info"),
    "tflite": ("QUANTIZE_MODES", "calibration_images", "export_tflite"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
