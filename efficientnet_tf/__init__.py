"""EfficientNet (Tan & Le, 2019) for TensorFlow 2 / Keras 3: models, weights, data, training,
export.

The public names import their modules on first use (PEP 562), so `import efficientnet_tf` and its
pure-Python modules (`efficientnet_tf.config`, hence `tpu/launch.py`) run without TensorFlow.
"""
import importlib
import sys
import types

__version__ = "0.1.0"


class _LazyPackage(types.ModuleType):
    def __setattr__(self, name, value):
        # Importing submodule `pkg.x` binds it as attribute `x` of `pkg`. Where `x` is also a
        # re-exported name (`efficientnet_tf.data.prepare`), keep the re-exported object there,
        # as the eager `from pkg.x import x` this replaces did.
        if (isinstance(value, types.ModuleType) and name in self.__all__
                and value.__name__ == f"{self.__name__}.{name}"):
            value = getattr(value, name)
        super().__setattr__(name, value)


def _lazy_exports(package: str, exports: dict):
    """PEP 562 `__getattr__` and `__dir__` for `package` (whose `__all__` must be set): `exports`
    maps each submodule to the public names it defines, imported when one of them is first read."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    owner = {name: submodule for submodule, names in exports.items() for name in names}

    def __getattr__(name):
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{owner[name]}"), name)
        setattr(module, name, value)  # later reads skip __getattr__
        return value

    def __dir__():
        return sorted({*vars(module), *owner})

    return __getattr__, __dir__


_EXPORTS = {
    "config": ("MODEL_NAMES", "ModelConfig", "config_for_phi", "get_model_config",
               "round_filters", "round_repeats"),
    "layers": ("ImageNormalization", "MBConvBlock", "SqueezeExcite", "StochasticDepth"),
    "model": ("build_feature_extractor", "build_model"),
    "applications": ("EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3",
                     "EfficientNetB4", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
                     "EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2",
                     "EfficientNetLite3", "EfficientNetLite4", "preprocess_input",
                     "decode_predictions"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
