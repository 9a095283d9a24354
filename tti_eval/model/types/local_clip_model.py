"""The original tool's module path for `LocalCLIPModel`, which lives beside `OpenCLIPModel` here."""

from tti_eval.model.types.open_clip_model import LocalCLIPModel

__all__ = ["LocalCLIPModel"]
