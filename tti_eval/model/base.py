"""The interface every model type implements.

The engine splits a model into two halves on purpose: `get_image_preprocessor()` returns a small, picklable,
weight-free callable that turns a batch of PIL images into the model's input tensor and runs inside DataLoader
workers; `embed_images` / `embed_texts` run the network on the chosen device. Nothing that holds the weights ever
reaches a worker or a `datasets` fingerprint (the original tool lost 2.4 s and 1.2 GiB per call to that).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.registry import call_setup
from tti_eval.common.settings import get_settings

ImagePreprocessor = Callable[[Sequence[Image.Image]], torch.Tensor]


def available_devices() -> list[str]:
    """The devices this machine can run a model on, as `--device` takes them."""
    cuda = [f"cuda:{index}" for index in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *cuda, *(["mps"] if torch.backends.mps.is_available() else [])]


def _runnable(device: torch.device) -> bool:
    # Only these types run a model here: `meta` holds no data, and `xla`, `ipu`, ... need backends tti-eval does not
    # drive, though torch parses their names.
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type == "cpu"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/"auto" picks cuda, then mps, then cpu; an explicit device this machine cannot run a model on is one
    sentence naming the devices it has (the CLI checks before any model loads)."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        resolved = None
    if resolved is None or not _runnable(resolved):
        raise TTIEvalError(
            f"Device '{device}' cannot run a model on this machine; use one of those it has: "
            f"{', '.join(available_devices())}."
        )
    return resolved


class ImageBatchCollator:
    """DataLoader `collate_fn`: one preprocessing call per batch, never one per image.

    Items that could not be read (`{"bad": name, "reason": ...}`) pass through as `bad`, so the process that owns
    the build decides whether to stop or skip them; `pixel_values` is None when no image of the batch was read."""

    def __init__(self, preprocess: ImagePreprocessor):
        self.preprocess = preprocess

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        good = [item for item in items if "bad" not in item]
        labels = torch.tensor([int(item["label"]) for item in good], dtype=torch.long)
        pixel_values = self.preprocess([item["image"] for item in good]) if good else None
        return {"pixel_values": pixel_values, "labels": labels, "bad": [item for item in items if "bad" in item]}


def _normalized_numpy(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy().astype(np.float32, copy=False)


def model_cache_dir(title: str, cache_dir: str | Path | None = None) -> Path:
    """Where a model keeps what it downloads or trains: the definition's `cache_dir`, else `<models cache>/<title>`."""
    return Path(cache_dir) if cache_dir else get_settings().models_path / title


class Model(ABC):
    def __init__(
        self,
        title: str,
        title_in_source: str | None = None,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        self.title = title
        self.title_in_source = title_in_source or title
        self.device = resolve_device(device)
        self.cache_dir = model_cache_dir(title, cache_dir)
        call_setup(self, kwargs)

    @classmethod
    def source_paths(cls, title: str, title_in_source: str | None = None, **fields: Any) -> list[Path]:
        """Local files or folders the weights come from (a model directory, a checkpoint), from the definition's
        fields alone: a class method, because checking a cache must not load the model. Their sizes and mtimes join
        the cache fingerprint, so replacing or retraining them marks cached embeddings stale. Default: every field
        (but the download cache) that names an existing path."""
        values = [title_in_source, *(value for name, value in fields.items() if name != "cache_dir")]
        return [
            Path(value).expanduser()
            for value in values
            if isinstance(value, str | Path) and str(value) and Path(value).expanduser().exists()
        ]

    @abstractmethod
    def _setup(self, **kwargs: Any) -> None:
        """Load weights and preprocessors; definition fields beyond the common ones arrive as keyword arguments."""

    @abstractmethod
    def get_image_preprocessor(self) -> ImagePreprocessor:
        """A picklable callable holding no weights: batch of PIL images -> input tensor [B, ...], or a compact form
        of it that `_encode_images` expands (OpenCLIP's 8-bit pixels, a quarter of float32's bytes between
        processes)."""

    @abstractmethod
    def _encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw image features [B, D] for inputs already on `self.device`."""

    @abstractmethod
    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw text features [T, D] on any device."""

    def image_input_size(self) -> int | None:
        """The shorter side, in pixels, of the images the network takes (224 for most CLIPs), or None if unknown.

        Known, it lets the engine decode large JPEGs at reduced resolution on request (`draft_decode`)."""
        return None

    def get_collate_fn(self) -> ImageBatchCollator:
        return ImageBatchCollator(self.get_image_preprocessor())

    def _autocast(self):
        # Half precision where it is safe and fast (CUDA); outputs are cast back to float32 before normalising.
        return (
            torch.autocast("cuda", dtype=torch.float16)
            if self.device.type == "cuda"
            else torch.autocast("cpu", enabled=False)
        )

    def embed_images(self, pixel_values: torch.Tensor) -> np.ndarray:
        """L2-normalised float32 image embeddings [B, D]."""
        with torch.inference_mode(), self._autocast():
            return _normalized_numpy(self._encode_images(pixel_values.to(self.device, non_blocking=True)))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised float32 text embeddings [T, D]."""
        chunks = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(texts), batch_size):
                chunks.append(_normalized_numpy(self._encode_texts(list(texts[start : start + batch_size]))))
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(title={self.title!r}, source={self.title_in_source!r}, device={self.device})"
