"""`ExperimentConfig`: one run's model, data, recipe and runtime, as written to `config.json`."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from efficientnet_tf.config import (
    ConfigError,
    ModelConfig,
    RecipeConfig,
    RuntimeConfig,
    _check_known_keys,
)
from efficientnet_tf.data.config import DataConfig


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A run's identity (model, data, recipe) and where it runs (runtime)."""

    model: ModelConfig
    data: DataConfig
    recipe: RecipeConfig = RecipeConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def replace(self, **overrides) -> "ExperimentConfig":
        _check_known_keys(type(self), overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": self.data.to_dict(),
                "recipe": self.recipe.to_dict(), "runtime": self.runtime.to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExperimentConfig":
        d = dict(d)
        if "train" in d:
            d.update(_split_train_section(d.pop("train")))
        _check_known_keys(cls, d)
        missing = [k for k in ("model", "data") if k not in d]
        if missing:
            raise ConfigError(f"ExperimentConfig: missing sections {missing}")
        return cls(model=ModelConfig.from_dict(d["model"]), data=DataConfig.from_dict(d["data"]),
                   recipe=RecipeConfig.from_dict(d.get("recipe", {})),
                   runtime=RuntimeConfig.from_dict(d.get("runtime", {})))


def _split_train_section(train: Mapping[str, Any]) -> dict:
    """config.json files written before the recipe/runtime split kept both in one "train"
    section; their runs still evaluate, export and resume."""
    recipe_keys = {f.name for f in dataclasses.fields(RecipeConfig)}
    runtime_keys = {f.name for f in dataclasses.fields(RuntimeConfig)}
    unknown = sorted(set(train) - recipe_keys - runtime_keys)
    if unknown:
        raise ConfigError(f"Unknown train keys in config.json: {unknown}")
    return {"recipe": {k: v for k, v in train.items() if k in recipe_keys},
            "runtime": {k: v for k, v in train.items() if k in runtime_keys}}
