"""keras.applications-style API: `EfficientNetB0` ... `EfficientNetB7`, `EfficientNetLite0` ...
`EfficientNetLite4`, `preprocess_input` and `decode_predictions`, all on top of `build_model`.

It stands in for `keras.applications.efficientnet` so code written against that module runs here
with one import changed. Differences, because this package never downloads anything:

- `weights` defaults to None (random init). Pretrained weights come from a file: convert an
  official checkpoint or a keras.applications weight file once with
  `python main.py --mode=convert --model=efficientnet-b0 --ckpt_path=SRC --output=b0.weights.h5`
  and pass `weights="b0.weights.h5"` (the unconverted sources are accepted too, see README
  "Weights"). `weights="imagenet"` raises a ValueError that says so.
- `decode_predictions` reads the bundled `resources/imagenet_classes.tsv`, whose names are the
  full WordNet lemmas ("tench, Tinca tinca") where keras' downloaded index has short ones.
"""
from __future__ import annotations

import keras
import numpy as np

from efficientnet_tf.config import SCALING_TABLE
from efficientnet_tf.model import build_model
from efficientnet_tf.predict import IMAGENET_NUM_CLASSES, imagenet_classes


def _application(model_name: str):
    """A keras.applications-signature constructor for one row of the scaling table; `classes`
    (keras' spelling) is ModelConfig.num_classes."""

    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax", name=None):
        return build_model(model_name=model_name, include_top=include_top, weights=weights,
                           input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                           classes=classes, classifier_activation=classifier_activation,
                           name=name)

    resolution = SCALING_TABLE[model_name][2]
    constructor.__name__ = constructor.__qualname__ = (
        "EfficientNet" + model_name.split("-")[1].capitalize())
    constructor.__doc__ = (
        f"{model_name} ({resolution}x{resolution} default input), arguments as "
        "keras.applications.EfficientNetB*, but weights=None by default (see the module "
        "docstring). Input: float RGB in [0, 255]; the model normalizes internally.")
    return constructor


EfficientNetB0 = _application("efficientnet-b0")
EfficientNetB1 = _application("efficientnet-b1")
EfficientNetB2 = _application("efficientnet-b2")
EfficientNetB3 = _application("efficientnet-b3")
EfficientNetB4 = _application("efficientnet-b4")
EfficientNetB5 = _application("efficientnet-b5")
EfficientNetB6 = _application("efficientnet-b6")
EfficientNetB7 = _application("efficientnet-b7")
EfficientNetLite0 = _application("efficientnet-lite0")
EfficientNetLite1 = _application("efficientnet-lite1")
EfficientNetLite2 = _application("efficientnet-lite2")
EfficientNetLite3 = _application("efficientnet-lite3")
EfficientNetLite4 = _application("efficientnet-lite4")


def preprocess_input(x, data_format=None):
    """Identity, as keras.applications.efficientnet.preprocess_input: the models take float RGB
    in [0, 255] and normalize inside, so there is nothing to do (`data_format` is ignored)."""
    del data_format
    return x


def decode_predictions(preds, top=5):
    """[[(synset, name, score), ...] per image], best first, top `top`: keras' format.

    preds: [batch, 1000] ImageNet scores (class index = sorted-synset position).
    """
    preds = keras.ops.convert_to_numpy(preds)
    if preds.ndim != 2 or preds.shape[1] != IMAGENET_NUM_CLASSES:
        raise ValueError(f"decode_predictions expects [batch, {IMAGENET_NUM_CLASSES}] ImageNet "
                         f"predictions, got shape {preds.shape}.")
    classes = imagenet_classes()
    return [[(*classes[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:top]]
            for p in preds]
