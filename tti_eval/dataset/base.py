"""The interface every dataset type implements: indexable (image, label) items plus class names and prompts."""

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from tti_eval.common.base import Split
from tti_eval.common.registry import call_setup
from tti_eval.common.settings import get_settings
from tti_eval.dataset.images import decode_image

DEFAULT_TEMPLATES = ("An image of a {}",)  # the original tool's single prompt, so its caches stay comparable
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class Dataset(TorchDataset, ABC):
    # Set by the build engine when the user asks for draft decoding (`tti-eval build --draft-decode`): images may then
    # be decoded smaller and reduced to this shorter side (`decode_image`). Types that cannot honour it ignore it.
    min_image_size: int | None = None

    def __init__(
        self,
        title: str,
        split: Split = Split.ALL,
        title_in_source: str | None = None,
        cache_dir: str | Path | None = None,
        templates: list[str] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.title = title
        self.split = Split(split)
        self.title_in_source = title_in_source or title
        self.cache_dir = Path(cache_dir) if cache_dir else get_settings().datasets_path / title
        self.templates = list(templates or DEFAULT_TEMPLATES)
        self.transform = transform
        self.class_names: list[str] = []
        # How this split was cut from the source; types that carve a split from train replace it (`splits.py`).
        self.split_rule: dict[str, Any] = {"split": self.split.value, "from": "source"}
        self.carving: dict[str, int] | None = None  # split sizes when some split was carved from train
        call_setup(self, kwargs)

    @abstractmethod
    def _setup(self, **kwargs: Any) -> None:
        """Load the split and set `self.class_names`; definition fields beyond the common ones arrive here."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def get_image_and_label(self, index: int) -> tuple[Image.Image, int]:
        """The index-th item as an 8-bit RGB PIL image and its class index into `class_names`.

        Decode files with `tti_eval.dataset.images.decode_image`, so that unusual modes and broken files are handled
        the same way in every type."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.get_image_and_label(index)
        return {"image": self.transform(image) if self.transform else image, "label": label}

    def set_transform(self, transform: Callable[[Image.Image], Any] | None) -> None:
        self.transform = transform

    # -- provenance: what the cache fingerprint records about this split's images (`tti_eval.provenance`) ------------

    image_suffixes: frozenset[str] | None = IMAGE_SUFFIXES  # None: every file in `source_paths` counts

    def source_paths(self) -> list[Path]:
        """Local folders whose image files (`image_suffixes`) decide this split, so that adding, removing or touching
        one marks cached embeddings stale. Their files are only stat'ed, so `list` and `evaluate` can re-check them
        without loading this type. Default: none (the images are not local files, or other identity covers them)."""
        return []

    def source_identity(self) -> dict[str, Any]:
        """What else identifies this split's images, as JSON-able values compared at build time (a hub dataset's
        fingerprint, label versions). Default: nothing beyond the definition and `source_paths`."""
        return {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def prompts(self) -> list[list[str]]:
        """[class][template] zero-shot prompts."""
        return [[template.format(name) for template in self.templates] for name in self.class_names]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(title={self.title!r}, split={self.split.value!r}, size={len(self)})"


class ImageFileDataset(Dataset, ABC):
    """A dataset whose `_setup` lists its items as (image file, class index) pairs in `self._items`."""

    _items: list[tuple[Path, int]]

    def __len__(self) -> int:
        return len(self._items)

    def get_image_and_label(self, index: int) -> tuple[Image.Image, int]:
        path, label = self._items[index]
        return decode_image(path, str(path), self.title, self.min_image_size), label
