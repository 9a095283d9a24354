"""Hugging Face transformers models (CLIP and SigLIP families), from the hub or from a local directory."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from PIL import Image
from transformers import AutoModel, AutoProcessor, AutoTokenizer
from transformers.image_processing_base import ImageProcessingMixin

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.hub import require_hub
from tti_eval.model.base import Model
from tti_eval.model.spec import looks_like_local_path


class HFImagePreprocessor:
    """Picklable batch transform: one image-processor call per batch; holds the processor's settings, no weights."""

    def __init__(self, image_processor: ImageProcessingMixin) -> None:
        self.image_processor = image_processor

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def _features(output: Any) -> torch.Tensor:
    # transformers 4 returns the projected features as a tensor; transformers 5 wraps them in `pooler_output`.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFModel(Model):
    """A transformers model with `get_image_features` / `get_text_features` (CLIP, SigLIP and their fine-tunes).

    `title_in_source` is a hub id or a local directory written by `save_pretrained`. SigLIP texts are padded to the
    maximum length because SigLIP was trained that way and pools the last position; CLIP texts are padded to the
    longest prompt. Remote code runs only when the definition sets `"trust_remote_code": true`.
    """

    def _setup(self, trust_remote_code: bool = False) -> None:
        source = self.title_in_source
        local = Path(source).expanduser()
        if looks_like_local_path(source) and not local.is_dir():
            raise TTIEvalError(
                f"Model '{self.title}': the directory '{source}' does not exist; fix title_in_source in its definition."
            )
        location = str(local) if local.is_dir() else source
        if not local.is_dir():
            require_hub(f"Model '{self.title}'", source)
        options = {"cache_dir": self.cache_dir, "trust_remote_code": trust_remote_code}
        try:
            self.model = AutoModel.from_pretrained(location, dtype=torch.float32, **options)
            processor = AutoProcessor.from_pretrained(location, **options)
            self.tokenizer = AutoTokenizer.from_pretrained(location, **options)
        except (OSError, ValueError) as e:
            reason = str(e).strip().splitlines()[0].rstrip(".")
            hint = " (HF_HUB_OFFLINE is set, so only cached models load)" if hub_constants.HF_HUB_OFFLINE else ""
            raise TTIEvalError(
                f"Model '{self.title}': cannot load '{source}' from Hugging Face ({reason}); check title_in_source, "
                f"or download it once with network access{hint}."
            ) from None
        self.model.to(self.device).eval()
        self.image_processor = getattr(processor, "image_processor", processor)
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_text_length = min(self.tokenizer.model_max_length, text_config.max_position_embeddings)
        self.pad_to_max_length = self.model.config.model_type.startswith("siglip")

    def image_input_size(self) -> int | None:
        # CLIP resizes the shorter side and crops (crop_size); SigLIP resizes to height x width (size).
        processor = self.image_processor
        size = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        size = size or getattr(processor, "size", None) or {}
        sides = [size[key] for key in ("shortest_edge", "height", "width") if size.get(key)]
        return min(sides) if sides else None

    def get_image_preprocessor(self) -> HFImagePreprocessor:
        return HFImagePreprocessor(self.image_processor)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Model inputs for `texts`, padded the way the model family was trained."""
        return self.tokenizer(
            list(texts),
            padding="max_length" if self.pad_to_max_length else True,
            truncation=True,
            max_length=self.max_text_length,
            return_tensors="pt",
        )

    def _encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixel_values))

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        inputs = self.tokenize(texts).to(self.device)
        return _features(self.model.get_text_features(**inputs))
