"""The engine's exception tree. Messages are one line and never carry document content.

    EngineError
    ├── ModelLoadError              the model directory cannot be served
    │   ├── ConfigError             config.json missing, unreadable or inconsistent
    │   ├── UnknownModelType        config.json names a model_type Tacet does not implement
    │   ├── CorruptCheckpoint       a weight file is truncated or not safetensors
    │   ├── MissingTensor           the config needs a tensor the checkpoint lacks
    │   ├── UnexpectedTensor        the checkpoint holds a tensor the config does not explain
    │   └── ShapeMismatch           a tensor's shape differs from the one the config implies
    └── TokenizerError              tokenizer.json / chat template missing or unusable
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptCheckpoint",
    "EngineError",
    "MissingTensor",
    "ModelLoadError",
    "ShapeMismatch",
    "TokenizerError",
    "UnexpectedTensor",
    "UnknownModelType",
]


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class ModelLoadError(EngineError):
    """The model directory cannot be turned into a servable model."""


class ConfigError(ModelLoadError):
    pass


class UnknownModelType(ModelLoadError):
    pass


class CorruptCheckpoint(ModelLoadError):
    pass


class MissingTensor(ModelLoadError):
    pass


class UnexpectedTensor(ModelLoadError):
    pass


class ShapeMismatch(ModelLoadError):
    pass


class TokenizerError(EngineError):
    pass
