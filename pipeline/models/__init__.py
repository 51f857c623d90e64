"""Loading models from local directories: a Hugging Face checkpoint (Qwen3-VL-8B-Instruct, Visual-ERM-8B, a
tiny model `pipeline.tiny` built) and its image-only processor. Loading never builds: a `path: tiny` that no
entry point resolved (`pipeline.tiny.ensure_models`) is an error here, not a minutes-long build. Nothing is
ever downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch

from pipeline.models.processor import Qwen3VLImageOnlyProcessor, load_processor


class ModelSpec(Protocol):
    """What loading needs of a `models:` entry (`pipeline.models.config.ModelConfig`)."""

    path: str
    dtype: str


def has_model(path: Path) -> bool:
    return (path / "config.json").is_file()


def model_dir(model: ModelSpec | str | Path) -> Path:
    """The checkpoint directory of a `models:` entry (or a path), checked: it must hold a config.json."""
    raw = str(getattr(model, "path", model))
    if raw == "tiny":
        raise ValueError("model path 'tiny' was not built: an entry point builds tiny models with "
                         "pipeline.tiny.ensure_models(cfg.models) before anything loads them")
    path = Path(os.path.expanduser(raw))
    if not has_model(path):
        raise FileNotFoundError(
            f"model path {path} is not a Hugging Face checkpoint directory (no config.json). "
            "Models are never downloaded at run time: give a local directory, or path: tiny."
        )
    return path


def load_model(path: str | Path, dtype: str = "float32") -> torch.nn.Module:
    """Any HF image-text-to-text checkpoint (Qwen3-VL family) from a local directory."""
    from transformers import AutoModelForImageTextToText  # heavy: transformers, only this path needs it

    return AutoModelForImageTextToText.from_pretrained(Path(path), dtype=getattr(torch, dtype))


def load_model_and_processor(model: ModelSpec) -> tuple[torch.nn.Module, Qwen3VLImageOnlyProcessor]:
    path = model_dir(model)
    return load_model(path, model.dtype), load_processor(path)


__all__ = ["ModelSpec", "Qwen3VLImageOnlyProcessor", "has_model", "load_model", "load_model_and_processor",
           "load_processor", "model_dir"]
