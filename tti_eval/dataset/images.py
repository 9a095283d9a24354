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
import torch
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


# Draft decoding lets libjpeg-turbo scale a JPEG down only while both sides keep twice the model's input side, so that
# an antialiased resize still does the last reduction; and only by 1/2, 1/4 or 1/8, its fast reduced transforms (5/8
# of a 500×375 photo decoded slower than the whole of it here).
DRAFT_OVERSAMPLING = 2
_JPEG_SCALE_DENOMINATORS = (8, 4, 2)


def jpeg_draft_scale(size: tuple[int, int], min_size: int) -> int:
    """The denominator (8, 4, 2, or 1 for none) by which draft decoding scales a JPEG of `size` for a model whose
    input side is `min_size`."""
    floor = DRAFT_OVERSAMPLING * min_size
    fits = [d for d in _JPEG_SCALE_DENOMINATORS if min(-(-side // d) for side in size) >= floor]
    return fits[0] if fits else 1


def _draft_jpeg(data: bytes, header: Image.Image, min_size: int) -> np.ndarray | None:
    """The pixels of an RGB or greyscale JPEG decoded by libjpeg-turbo, reduced in the decoder by `jpeg_draft_scale`;
    None for what only Pillow's path handles: CMYK and other colour models, or anything simplejpeg rejects (Pillow
    then decodes it, or names the error). Faster than Pillow's own decoder at every scale here (a 500×375 photo: 0.8
    against 1.1 ms)."""
    if header.format != "JPEG" or header.mode not in ("RGB", "L"):
        return None
    scale = jpeg_draft_scale(header.size, min_size)
    width, height = (-(-side // scale) for side in header.size)
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=height, min_width=width)
    except ValueError:
        return None


def reduced_to(pixels: np.ndarray, side: int) -> Image.Image:
    """RGB `pixels` [H, W, 3] as an image whose shorter side is at most `side`, reduced by torch's antialiased bicubic
    resampling of 8-bit pixels: within a level or two of Pillow's bicubic, about four times faster. The size is the
    one torchvision's `Resize(side)` computes, so a model's own resize of the result has nothing left to do."""
    height, width = pixels.shape[:2]
    if min(width, height) <= side:
        return Image.fromarray(pixels)
    long = int(side * max(width, height) / min(width, height))
    size = (side, long) if height <= width else (long, side)
    channels_last = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # NCHW over HWC memory: what its uint8 kernel likes
    planes = torch.nn.functional.interpolate(channels_last, size=size, mode="bicubic", antialias=True)[0]
    # The result comes planar; Pillow interleaves planes five times faster than a strided copy does.
    return Image.merge("RGB", [Image.frombuffer("L", size[::-1], plane.numpy(), "raw", "L", 0, 1) for plane in planes])


def _upright(image: Image.Image) -> Image.Image:
    if image.getexif().get(Image.ExifTags.Base.Orientation) is not None:
        return ImageOps.exif_transpose(image)
    return image


def decode_image(source: str | Path | bytes, item: str, dataset: str, min_size: int | None = None) -> Image.Image:
    """Decode a file (path) or its bytes into 8-bit RGB, upright as its EXIF orientation says.

    `min_size` (a model's input side) asks for a draft: faster, with slightly different pixels, so callers pass it
    only when the user asked. A JPEG then decodes at 1/2, 1/4 or 1/8 scale as `jpeg_draft_scale` says (RGB and
    greyscale ones through simplejpeg, others in Pillow's draft mode), and any image is `reduced_to` that side. Any
    failure (missing, truncated or non-image file, decompression bomb) is a `BadImageError` naming `item` and
    `dataset`."""
    try:
        data = source if isinstance(source, bytes) or not min_size else Path(source).read_bytes()
        with Image.open(BytesIO(data) if isinstance(data, bytes) else data) as image:
            pixels = _draft_jpeg(data, image, min_size) if min_size else None
            if pixels is not None:  # reduced before Pillow holds it, which saves two copies of the full-size pixels
                draft = reduced_to(pixels, min_size)
                if "exif" in image.info:
                    draft.info["exif"] = image.info["exif"]
                return _upright(draft)
            if min_size:
                image.draft(None, (DRAFT_OVERSAMPLING * min_size,) * 2)
            image.load()
            rgb = to_rgb(_upright(image))
            return reduced_to(np.array(rgb), min_size) if min_size else rgb
    except Exception as e:  # a decoder fed arbitrary bytes can fail in any way; every way means "this file is bad"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadImageError(item, dataset, reason) from None
