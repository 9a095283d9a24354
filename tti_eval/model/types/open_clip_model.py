"""OpenCLIP models: built-in or team architectures, `hf-hub:` repositories, `local-dir:` folders, local checkpoints.

Every `*.json` architecture in `tti_eval/model/open_clip_configs/` is registered with open_clip when this module is
imported, so a file `my-arch.json` there makes `my-arch` usable as `title_in_source`.
"""

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torchvision.transforms as T
from huggingface_hub import constants as hub_constants
from PIL import Image

from tti_eval.common.errors import DefinitionError, TTIEvalError
from tti_eval.common.hub import require_hub
from tti_eval.common.title_registry import did_you_mean
from tti_eval.model.base import Model, model_cache_dir

OPEN_CLIP_CONFIGS_PATH = Path(__file__).resolve().parent.parent / "open_clip_configs"
_SCHEMA_PREFIXES = ("hf-hub:", "local-dir:")
_registered_config_paths: set[Path] = set()
CHECKPOINT_NAME = "checkpoint.pt"  # a LocalCLIPModel's weights in its cache folder, unless checkpoint_path says


def register_model_configs(path: str | Path) -> None:
    """Make the architecture JSON at `path` (a file, or a folder of them) known to open_clip by its file name.

    Idempotent: open_clip rescans every registered path on each addition, so each path is added once.
    """
    path = Path(path).expanduser().resolve()
    if path not in _registered_config_paths:
        open_clip.add_model_config(path)
        _registered_config_paths.add(path)


register_model_configs(OPEN_CLIP_CONFIGS_PATH)


def check_open_clip_source(name: str, pretrained: str | None, model_config_path: str | Path | None) -> None:
    """What can be told about an open_clip source without loading it: the architecture is known (after registering
    `model_config_path`), a `pretrained` tag belongs to it or names a file, a `local-dir:` folder exists. Raises a
    DefinitionError naming the field; `hf-hub:` names cannot be checked offline."""
    if model_config_path is not None:
        if not Path(model_config_path).expanduser().exists():
            raise DefinitionError(
                f"field 'model_config_path': {model_config_path} does not exist; point it at an OpenCLIP architecture "
                "JSON file"
            )
        register_model_configs(model_config_path)
    if name.startswith("local-dir:"):
        folder = Path(name.removeprefix("local-dir:")).expanduser()
        if not folder.is_dir():
            raise DefinitionError(f"field 'title_in_source': the folder {folder} does not exist")
        return
    if name.startswith(_SCHEMA_PREFIXES):
        return
    architecture = name.replace("/", "-")  # open_clip's own lookup rule
    if open_clip.get_model_config(architecture) is None:
        raise DefinitionError(
            f"field 'title_in_source': OpenCLIP has no architecture '{name}'; use a name from "
            "open_clip.list_models(), an hf-hub: or local-dir: name, or register its JSON with model_config_path. "
            + did_you_mean(architecture, open_clip.list_models())
        )
    if pretrained and not open_clip.get_pretrained_cfg(architecture, pretrained) and not Path(pretrained).is_file():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(architecture)) or "none"
        raise DefinitionError(
            f"field 'pretrained': '{pretrained}' is neither a checkpoint file nor a tag of {name} (tags: {tags})"
        )


class OpenCLIPPreprocessor:
    """Picklable batch transform with open_clip's eval transform per image; holds no weights.

    When the transform ends in ToTensor + Normalize (open_clip's always does), the PIL steps (resize, crop) run per
    image and the batch leaves as 8-bit pixels [B, C, H, W]: a quarter of the bytes of float32 to send from a
    decoding worker or a Ray task (two workers moved float32 batches at about 1,800 images/s here, 8-bit ones at
    about 4,600). `model_input` then converts them where the model runs, with the same float32 operations in the
    same order as ToTensor + Normalize, so the values are the same."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform
        steps = list(getattr(transform, "transforms", ()))
        self._packed = len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize)
        if self._packed:
            self._per_image = T.Compose(steps[:-2])
            normalize = steps[-1]
            self._mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
            self._std = torch.as_tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)
            levels = torch.arange(256).to(torch.float32).expand(1, 3, 256)  # images reach it as RGB
            self._levels = self._normalized(levels)[0].numpy()  # [channel, 8-bit level] -> model input

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if not self._packed:
            return torch.stack([self.transform(image) for image in images])
        return self._pack([self._per_image(image) for image in images])

    @staticmethod
    def _pack(images: Sequence[Image.Image]) -> torch.Tensor:
        """Equally sized RGB images as one [B, C, H, W] tensor of 8-bit pixels."""
        pixels = np.stack([np.asarray(image, dtype=np.uint8) for image in images])  # [B, H, W, C]
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))

    def _normalized(self, pixels: torch.Tensor) -> torch.Tensor:
        # ToTensor's division, then Normalize's subtraction and division, each in float32.
        mean, std = self._mean.to(pixels.device), self._std.to(pixels.device)
        return pixels.to(torch.float32).div(255).sub(mean).div(std)

    def model_input(self, pixels: torch.Tensor, lookup: bool | None = None) -> torch.Tensor:
        """The float32 input of 8-bit `pixels` from `__call__`, on their device (anything else is returned as is).

        On the CPU each channel's 256 levels are converted once and looked up (`lookup`, about 1.5 times faster than
        the arithmetic over the batch); elsewhere the arithmetic runs on the device. Both give the same values."""
        if pixels.dtype != torch.uint8:
            return pixels
        if not (pixels.device.type == "cpu" if lookup is None else lookup):
            return self._normalized(pixels)
        batch = np.empty(pixels.shape, dtype=np.float32)
        for channel, levels in enumerate(self._levels):
            np.take(levels, pixels[:, channel].numpy(), out=batch[:, channel])
        return torch.from_numpy(batch)


class OpenCLIPModel(Model):
    """A model loaded with `open_clip.create_model_and_transforms`.

    `title_in_source` is one of:
    - an architecture name (`ViT-B-32`, or one in `open_clip_configs/`), with `pretrained` either one of its tags
      (`laion2b_e16`) or a checkpoint file;
    - `hf-hub:org/repo`, a hub repository with `open_clip_config.json` and weights;
    - `local-dir:/path/to/folder`, a folder holding `open_clip_config.json` and a weights file
      (`open_clip_pytorch_model.bin`, `*.safetensors`, ...): the way to use a model with no network at all.

    `model_config_path` (optional) names an architecture JSON file, or a folder of them, that is registered with
    open_clip before loading. Definitions are plain JSON read by every process (a CLI subprocess included), so this
    is how a team's own architecture travels with its definition: `{"title_in_source": "my-arch",
    "model_config_path": "/path/to/my-arch.json", "pretrained": "/path/to/weights.pt"}`.
    """

    @classmethod
    def source_paths(cls, title: str, title_in_source: str | None = None, **fields: Any) -> list[Path]:
        # `local-dir:/path` names a folder behind its schema prefix.
        source = (title_in_source or "").removeprefix("local-dir:")
        return super().source_paths(title, source, **fields)

    def _setup(self, pretrained: str | None = None, model_config_path: str | Path | None = None) -> None:
        name = self.title_in_source
        try:  # the two usual typos get a clear sentence before open_clip buries them in a long message
            check_open_clip_source(name, pretrained, model_config_path)
        except DefinitionError as e:
            raise DefinitionError(f"Model '{self.title}': {str(e).rstrip('.')}; fix it in its definition.") from None
        if name.startswith("hf-hub:") or (pretrained and not Path(pretrained).is_file()):
            require_hub(f"Model '{self.title}'", name if name.startswith("hf-hub:") else f"{name} ({pretrained})")
        try:
            self.model, _, transform = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=self.device, cache_dir=str(self.cache_dir), weights_only=True
            )
            self.tokenizer = open_clip.get_tokenizer(name, cache_dir=str(self.cache_dir))
        except (RuntimeError, OSError, ValueError, pickle.UnpicklingError) as e:
            reason = str(e).strip().splitlines()[0].rstrip(".")
            offline = hub_constants.HF_HUB_OFFLINE and not name.startswith("local-dir:")
            hint = " (HF_HUB_OFFLINE is set, so only cached weights load)" if offline else ""
            raise TTIEvalError(
                f"Model '{self.title}': OpenCLIP cannot load '{name}' ({reason}); check title_in_source and "
                f"pretrained in its definition{hint}."
            ) from None
        self.model.eval()
        self.transform = transform
        self._preprocessor = OpenCLIPPreprocessor(transform)

    def image_input_size(self) -> int | None:
        size = getattr(self.model.visual, "image_size", None)
        return min(size) if isinstance(size, tuple | list) else size

    def get_image_preprocessor(self) -> OpenCLIPPreprocessor:
        return self._preprocessor

    def _encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(self._preprocessor.model_input(pixel_values))

    def _encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))


class LocalCLIPModel(OpenCLIPModel):
    """An OpenCLIP architecture (`title_in_source`) with weights from a local checkpoint file.

    The file is `checkpoint_path` from the definition, else `<cache>/models/<title>/checkpoint.pt`; it holds a
    state_dict, plain or as `{"state_dict": ...}` (a DataParallel `module.` prefix is stripped), and is read with
    `torch.load(weights_only=True)` so that a checkpoint cannot run code. `self.checkpoint_path` is known before
    `_setup` runs: a subclass that produces the checkpoint (by training, say) writes it there, then calls
    `super()._setup(**kwargs)`.
    """

    def __init__(
        self,
        title: str,
        title_in_source: str | None = None,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        checkpoint_path: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        self._checkpoint_path = Path(checkpoint_path).expanduser() if checkpoint_path else None
        super().__init__(title, title_in_source=title_in_source, device=device, cache_dir=cache_dir, **kwargs)

    @property
    def checkpoint_path(self) -> Path:
        return self._checkpoint_path or self.cache_dir / CHECKPOINT_NAME

    @classmethod
    def source_paths(cls, title: str, title_in_source: str | None = None, **fields: Any) -> list[Path]:
        checkpoint = fields.get("checkpoint_path") or model_cache_dir(title, fields.get("cache_dir")) / CHECKPOINT_NAME
        return [*super().source_paths(title, title_in_source, **fields), Path(checkpoint).expanduser()]

    def _setup(self, pretrained: str | None = None, model_config_path: str | Path | None = None) -> None:
        if pretrained is not None:
            raise DefinitionError(
                f"Model '{self.title}': LocalCLIPModel reads its weights from checkpoint_path, not pretrained; "
                "rename the field in its definition."
            )
        if not self.checkpoint_path.is_file():
            raise TTIEvalError(
                f"Model '{self.title}': no checkpoint at {self.checkpoint_path}; save the model's state_dict there "
                "or set checkpoint_path in its definition."
            )
        super()._setup(pretrained=str(self.checkpoint_path), model_config_path=model_config_path)
