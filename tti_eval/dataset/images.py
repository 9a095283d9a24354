"""Reading one image: decode a file or bytes, turn any mode into 8-bit RGB, and name the file when that fails.

Every dataset type goes through `decode_image` (files, bytes) or `to_rgb` (images it already holds), and the build
engine applies `to_rgb` once more to whatever a custom dataset returns, so a model always sees the same 8-bit RGB
for the same picture. `decode_image` is a plain function of its arguments, so a worker process or a Ray task can
call it directly.
"""

from io import BytesIO
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from tti_eval.common.errors import TTIEvalError

WHITE = (255, 255, 255)
# Modes that carry transparency of their own; "P" and "L"/"RGB" images can also carry it in info["transparency"].
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MAX = 65535


class BadImageError(TTIEvalError):
    """An image that cannot be decoded; `item` names it (a file, or a row of a split) for lists of skipped images."""

    def __init__(self, item: str, dataset: str, reason: str) -> None:
        self.item = item
        self.reason = reason
        super().__init__(
            f"Image {item} of dataset '{dataset}' cannot be read ({reason}); replace or remove it, or build with "
            "--skip-bad-images to leave it out."
        )


def _scaled_to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    return np.rint(np.clip(values, 0, top) * (255 / top)).astype(np.uint8)


def _grey_levels(image: Image.Image) -> np.ndarray:
    """8-bit grey levels of a single-channel image deeper than 8 bits, scaled rather than clipped.

    16-bit modes use their full range. Mode "I" (32-bit integers) is how Pillow delivers many 16-bit PNG and TIFF
    files, so it is read as 16-bit when its values fit, and stretched from its own minimum and maximum otherwise.
    Mode "F" holds floats: values in [0, 1] are read as intensities, anything else is stretched; NaN becomes black."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        return _scaled_to_uint8(values.astype(np.float64), _SIXTEEN_BIT_MAX)
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if image.mode == "I" and values.size and values.min() >= 0 and values.max() <= _SIXTEEN_BIT_MAX:
        return _scaled_to_uint8(values, _SIXTEEN_BIT_MAX)
    if image.mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
        return _scaled_to_uint8(values, 1.0)
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if high == low:  # a flat image outside the ranges above has no contrast to stretch
        return np.zeros(values.shape, dtype=np.uint8)
    return _scaled_to_uint8(values - low, high - low)


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB: high bit depths scaled to 0..255, transparency composited on white, other modes
    (palette, CMYK, YCbCr, bilevel, ...) converted by Pillow. An RGB image without transparency is returned as is."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(_grey_levels(image), mode="L").convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scaled_jpeg(data: bytes, header: Image.Image, min_size: int) -> Image.Image | None:
    """A JPEG decoded by libjpeg-turbo at the smallest of its M/8 scales (M = 1..8) that keeps both sides at least
    `min_size`, or None for what only Pillow's path handles: CMYK and other colour models, or anything simplejpeg
    rejects (Pillow then decodes it, or names the error). Finer than Pillow's 1/2, 1/4, 1/8: a 500×375 photo decodes
    at 5/8 for a 224 model instead of in full."""
    if header.format != "JPEG" or header.mode not in ("RGB", "L"):
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_size, min_width=min_size)
    except ValueError:
        return None
    image = Image.fromarray(pixels, mode="RGB")
    if "exif" in header.info:  # so that `decode_image` turns it upright as it does Pillow's decodes
        image.info["exif"] = header.info["exif"]
    return image


def decode_image(source: str | Path | bytes, item: str, dataset: str, min_size: int | None = None) -> Image.Image:
    """Decode a file (path) or its bytes into 8-bit RGB, upright as its EXIF orientation says.

    `min_size` lets a JPEG decode at a reduced scale as long as both sides stay at least that many pixels: libjpeg-
    turbo's M/8 scales for RGB and greyscale JPEGs, Pillow's draft mode (1/2, 1/4, 1/8) for the others. Several
    times faster for photos larger than the model's input, at the price of slightly different pixels, so callers
    pass it only when the user asked. Any failure (missing, truncated or non-image file, decompression bomb) is a
    `BadImageError` naming `item` and `dataset`."""
    try:
        data = source if isinstance(source, bytes) or not min_size else Path(source).read_bytes()
        with Image.open(BytesIO(data) if isinstance(data, bytes) else data) as image:
            scaled = _scaled_jpeg(data, image, min_size) if min_size else None
            if scaled is not None:
                image = scaled
            elif min_size:
                image.draft(None, (min_size, min_size))
            image.load()
            if image.getexif().get(Image.ExifTags.Base.Orientation) is not None:
                image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except Exception as e:  # a decoder fed arbitrary bytes can fail in any way; every way means "this file is bad"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadImageError(item, dataset, reason) from None
