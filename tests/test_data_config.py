"""DataConfig: validation with clear messages, replace/to_dict/from_dict round trips."""
import pytest

from efficientnet_tf.data import DataConfig


def test_defaults_are_synthetic_and_valid():
    config = DataConfig()
    assert config.dataset == "synthetic" and config.data_dir is None
    assert not config.mixes_labels


def test_round_trip_and_unknown_keys():
    config = DataConfig(dataset="imagenet", data_dir="/data/imagenet", holdout_shards=20,
                        augment_name="randaugment", randaug_magnitude=17, mixup_alpha=0.2)
    assert DataConfig.from_dict(config.to_dict()) == config
    assert config.mixes_labels
    assert config.replace(mixup_alpha=0.0).mixes_labels is False
    with pytest.raises(ValueError, match="Unknown DataConfig keys: \\['batch_size'\\]"):
        config.replace(batch_size=8)
    with pytest.raises(ValueError, match="Unknown DataConfig keys"):
        DataConfig.from_dict({**config.to_dict(), "image_size": 224})
    assert '"holdout_shards": 20' in config.to_json()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="mnist"), "dataset='mnist'"),
    (dict(dataset="imagenet"), "needs a data_dir"),
    (dict(dataset="synthetic", data_dir="/x"), "generated in memory"),
    (dict(dataset="fgvc_aircraft", data_dir="/x", tfds=True), "no TFDS builder"),
    (dict(dataset="cifar10", data_dir="/x", tfds=True, holdout_shards=2), "holdout_shards"),
    (dict(augment_name="autoaugment_v1"), "augment_name"),
    (dict(randaug_magnitude=31), "randaug_magnitude"),
    (dict(randaug_num_layers=0), "randaug_num_layers"),
    (dict(mixup_alpha=-0.1), "mixup_alpha"),
    (dict(cutmix_alpha=-1.0), "cutmix_alpha"),
    (dict(num_classes=1), "num_classes"),
    (dict(synthetic_image_size=4), "synthetic_image_size"),
    (dict(shuffle_buffer_size=0), "shuffle_buffer_size"),
])
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)
