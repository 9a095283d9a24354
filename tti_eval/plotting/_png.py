"""Charts saved as palette PNGs: reports and notebooks embed them, and a chart's few flat colours and antialiased
text fit in 256 palette entries with no visible change, at about a third of the bytes of matplotlib's RGBA file."""

import io
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from tti_eval.common.atomic import atomic_write

CHART_DPI = 150


def save_png(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as an 8-bit palette PNG (atomically); return `path`."""

    def write(handle) -> None:
        rendered = io.BytesIO()
        figure.savefig(rendered, format="png", dpi=CHART_DPI)
        rendered.seek(0)
        with Image.open(rendered) as image:
            palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette.save(handle, format="PNG", optimize=True)

    return atomic_write(path, write)
