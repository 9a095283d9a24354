"""A GIF in which one model's 2-D embedding map morphs into another's and back, coloured by class.

Both maps are standardised and the second is rotated (or reflected) onto the first with orthogonal Procrustes, so the
morph shows points moving between clusters rather than the whole cloud spinning. Frames are rendered one at a time on
an Agg canvas (only the points and the progress marker are redrawn over a cached background) and streamed into the
GIF, so memory stays flat whatever the number of frames.

The GIF is meant to be shared (a notebook, a report, a chat message), so it is kept small: one palette for all frames
holding only greys (text, lines) and the class colours, points drawn without antialiasing so each of their pixels is
exactly its class colour, and after the first frame only the box of changed pixels is stored, unchanged ones in it
transparent. The demo map (270 points) went from 1.8 MB to a seventh of that (benchmarks/README.md).
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from PIL import GifImagePlugin, Image

from tti_eval.common import EmbeddingDefinition, Embeddings, Split, TTIEvalError, get_settings
from tti_eval.common.atomic import atomic_write, check_writable
from tti_eval.common.cache import load_embeddings, load_metadata

from .reduction import DEFAULT_REDUCTION, DEFAULT_SEED, reduce_embeddings

MAX_POINTS = 3_000  # more makes an unreadable blob and slows every frame; the sample is seeded
# The file grows with frames x moving points: 40 frames (20 each way, eased) at 10 per second still read as motion.
NUM_FRAMES = 40
FIGURE_SIZE = (10, 6)  # inches; at DPI this is 800 x 480 pixels, the width a notebook cell shows without scaling
DPI = 80
MORPH_MS = 3_800  # one loop's moving frames together, whatever their number, so fewer frames step rather than hurry
HOLD_MS = 1_000  # linger on each model's own map
GREYS = 16  # shades from black to white in the GIF's palette, for antialiased text and lines


class NoDisplayError(TTIEvalError):
    """`--interactive` was asked for where matplotlib cannot open a window."""


def standardise(points: np.ndarray) -> np.ndarray:
    """Centre a map and scale it to unit RMS radius: the same scale for both maps, without distorting either."""
    centred = points - points.mean(axis=0)
    radius = math.sqrt(float((centred**2).sum(axis=1).mean()))
    return centred / (radius or 1.0)


def align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`source` rotated or reflected to lie as close as possible to `target` (same points, same order)."""
    from scipy.linalg import orthogonal_procrustes

    rotation, _ = orthogonal_procrustes(source, target)
    return source @ rotation


def class_colours(num_classes: int) -> np.ndarray:
    """One distinct RGBA colour per class index [C, 4], fixed by the index alone so it never depends on the sample."""
    if num_classes <= 10:
        return colormaps["tab10"](np.arange(num_classes))
    if num_classes <= 20:
        return colormaps["tab20"](np.arange(num_classes))
    # Golden-ratio steps along a continuous map put neighbouring class indices far apart in hue.
    return colormaps["turbo"](0.05 + 0.9 * ((np.arange(num_classes) * 0.6180339887) % 1.0))


def morph_times(num_frames: int) -> np.ndarray:
    """Interpolation weights for one loop, A -> B -> A, eased so motion slows near each model's own map; consecutive
    weights always differ."""
    return (1 - np.cos(2 * np.pi * np.arange(num_frames) / num_frames)) / 2


@dataclass
class MorphFigure:
    """A figure whose points can be placed anywhere between two maps; `set_time(0)` shows A, `set_time(1)` B."""

    figure: Figure
    axes: Axes
    scatter: PathCollection
    legend: Legend
    track: Axes  # a strip under the map, between the two model names, for a progress marker or a slider
    start: np.ndarray
    end: np.ndarray
    labels: np.ndarray

    def set_time(self, t: float) -> None:
        self.scatter.set_offsets((1 - t) * self.start + t * self.end)

    @property
    def legend_labels(self) -> list[str]:
        return [text.get_text() for text in self.legend.get_texts()]

    @property
    def legend_colours(self) -> np.ndarray:
        return np.array([handle.get_markerfacecolor() for handle in self.legend.legend_handles])


def create_morph_figure(
    start: np.ndarray,
    end: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    from_title: str,
    to_title: str,
    title: str,
    subtitle: str = "",
    figure: Figure | None = None,
) -> MorphFigure:
    """Draw the points of `start` coloured by `labels`, with a legend entry for every class in `class_names`.

    `class_names[i]` names label i, and every label needs a name; classes without points still get their entry."""
    if figure is None:
        figure = Figure(figsize=FIGURE_SIZE, dpi=DPI)
        FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=15, y=0.975)
    if subtitle:
        figure.text(0.5, 0.915, subtitle, ha="center", va="center", fontsize=11, color="0.35")

    colours = class_colours(len(class_names))
    rows = 28 if len(class_names) <= 28 else 38
    legend = figure.legend(
        handles=[
            Line2D([], [], linestyle="", marker="o", markersize=7, markerfacecolor=colour, markeredgecolor=colour)
            for colour in colours
        ],
        labels=class_names,
        loc="center right",
        bbox_to_anchor=(0.99, 0.5),
        ncols=math.ceil(len(class_names) / rows),
        fontsize=10 if len(class_names) <= 28 else 8,
        frameon=False,
        handletextpad=0.2,
        columnspacing=0.8,
    )
    # The map takes whatever width the legend leaves, so long class names or many classes never cover points.
    legend_left = figure.transFigure.inverted().transform(legend.get_window_extent().p0)[0]
    width = max(0.3, legend_left - 0.04)
    axes = figure.add_axes((0.02, 0.13, width, 0.75))
    axes.set_axis_off()
    both = np.concatenate([start, end])
    low, high = both.min(axis=0), both.max(axis=0)
    pad = 0.04 * np.maximum(high - low, 1e-6)
    axes.set_xlim(low[0] - pad[0], high[0] + pad[0])
    axes.set_ylim(low[1] - pad[1], high[1] + pad[1])
    size = float(np.clip(30_000 / len(start), 4, 30))
    # Opaque, so a point shows its class colour exactly (as in the legend) wherever points overlap.
    scatter = axes.scatter(start[:, 0], start[:, 1], c=colours[labels], s=size, linewidths=0)

    centre = 0.02 + width / 2
    track = figure.add_axes((centre - 0.17, 0.045, 0.34, 0.03))
    track.set_axis_off()
    figure.text(centre - 0.18, 0.06, from_title, ha="right", va="center", fontsize=12)
    figure.text(centre + 0.18, 0.06, to_title, ha="left", va="center", fontsize=12)
    return MorphFigure(figure, axes, scatter, legend, track, start, end, labels)


def gif_palette(colours: np.ndarray) -> np.ndarray:
    """The GIF's one palette [P, 3] (uint8, P <= 255, leaving an index for transparency): a grey ramp for the text
    and lines, then the class colours `colours` ([C, 3 or 4] in 0..1), merged by median cut beyond what fits."""
    greys = np.repeat(np.linspace(0, 255, GREYS).round()[:, None], 3, axis=1)
    rgb = np.round(np.asarray(colours)[:, :3] * 255).astype(np.uint8)
    room = 255 - GREYS
    if len(rgb) > room:  # hundreds of classes: their colours are indistinguishable anyway
        strip = Image.frombytes("RGB", (len(rgb), 1), rgb.tobytes())
        merged = strip.quantize(room, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).getpalette()
        rgb = np.array(merged, dtype=np.uint8).reshape(-1, 3)[:room]
    return np.concatenate([greys, rgb]).astype(np.uint8)


def changed_patch(previous: np.ndarray, current: np.ndarray, transparent: int) -> tuple[np.ndarray, tuple[int, int]]:
    """What a GIF frame must store to turn `previous` into `current` (palette indices, [H, W]): the smallest box
    holding every changed pixel, unchanged pixels in it set to `transparent`, and the box's (left, top) corner."""
    changed = previous != current
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if rows.size == 0:  # no point moved by a whole pixel: one transparent pixel keeps the frame and its delay
        return np.full((1, 1), transparent, dtype=np.uint8), (0, 0)
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    patch = np.where(changed[top:bottom, left:right], current[top:bottom, left:right], transparent)
    return patch.astype(np.uint8), (int(left), int(top))


def _frames(morph: MorphFigure, times: np.ndarray, palette: np.ndarray) -> Iterator[np.ndarray]:
    """Each frame of the morph as indices into `palette`, rendered one at a time.

    Only the points and the marker are redrawn over a cached background. Points are drawn without antialiasing, so
    their pixels are exactly the class colours the palette holds (no edge blend of two classes can land on a third
    class's colour), and a point that moves less than a pixel leaves the frame unchanged."""
    canvas = morph.figure.canvas
    morph.track.plot([0, 1], [0, 0], color="0.75", linewidth=3, solid_capstyle="round")
    morph.track.set_xlim(-0.03, 1.03)
    (marker,) = morph.track.plot([0], [0], marker="o", markersize=11, color="0.25", animated=True)
    morph.scatter.set_animated(True)
    morph.scatter.set_antialiased(False)
    canvas.draw()
    background = canvas.copy_from_bbox(morph.figure.bbox)
    target = Image.new("P", (1, 1))
    target.putpalette(palette.ravel().tolist())
    for t in times:
        canvas.restore_region(background)
        morph.set_time(float(t))
        marker.set_xdata([t])
        morph.axes.draw_artist(morph.scatter)
        morph.track.draw_artist(marker)
        frame = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
        yield np.asarray(frame.quantize(palette=target, dither=Image.Dither.NONE))


def save_gif(morph: MorphFigure, path: Path, num_frames: int = NUM_FRAMES) -> Path:
    """Write a looping GIF of the morph from A to B and back, one frame at a time (memory does not grow with frames).

    Pillow's `save(append_images=...)` keeps every frame until the end, so the file is assembled here from its public
    (legacy) GIF helpers `getheader` and `getdata`: the first frame whole, then each frame's `changed_patch` over the
    one before (disposal 1 keeps what is already shown)."""
    if num_frames < 2:
        raise ValueError(f"a morph needs at least 2 frames, got {num_frames}")
    times = morph_times(num_frames)
    holds = {0, num_frames // 2} if num_frames % 2 == 0 else {0}
    # GIF delays count hundredths of a second, and browsers slow anything under 20 ms down to 100 ms
    frame_ms = max(20, 10 * round(MORPH_MS / max(1, num_frames - len(holds)) / 10))
    palette = gif_palette(morph.legend_colours)
    transparent = len(palette)
    entries = [*palette.ravel().tolist(), 255, 255, 255]  # the transparent index's colour is never shown

    def image(indices: np.ndarray) -> Image.Image:
        picture = Image.frombytes("P", (indices.shape[1], indices.shape[0]), np.ascontiguousarray(indices).tobytes())
        picture.putpalette(entries)
        return picture

    def write(handle) -> None:
        previous = None
        for index, frame in enumerate(_frames(morph, times, palette)):
            duration = HOLD_MS if index in holds else frame_ms
            if previous is None:
                first = image(frame)
                header, _ = GifImagePlugin.getheader(first, info={"loop": 0, "duration": duration})
                handle.writelines(header)
                handle.writelines(GifImagePlugin.getdata(first, duration=duration))
            else:
                patch, offset = changed_patch(previous, frame, transparent)
                handle.writelines(
                    GifImagePlugin.getdata(
                        image(patch), offset=offset, duration=duration, transparency=transparent, disposal=1
                    )
                )
            previous = frame
        handle.write(b";")  # GIF trailer

    atomic_write(path, write)
    return path


def require_display() -> None:
    """Fail in one sentence, before any work, where matplotlib can only draw to files."""
    import matplotlib
    from matplotlib.backends import BackendFilter, backend_registry

    backend = matplotlib.get_backend().lower()
    if backend in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE) or "inline" in backend:
        raise NoDisplayError(
            f"There is no display for an interactive window here (matplotlib backend '{backend}'), so run without "
            "--interactive to save a GIF instead."
        )


def show_interactive(morph: MorphFigure) -> None:
    """Show the morph in a window with a slider from A to B; returns when the window is closed."""
    import matplotlib.pyplot as plt
    from matplotlib.widgets import Slider

    slider = Slider(morph.track, "", 0.0, 1.0, valinit=0.0)

    def update(t: float) -> None:
        morph.set_time(t)
        morph.figure.canvas.draw_idle()

    slider.on_changed(update)
    plt.show()


def animation_path(
    from_model: EmbeddingDefinition, to_model: EmbeddingDefinition, split: Split, reduction: str
) -> Path:
    parts = [from_model.dataset, from_model.model, to_model.model, Split(split).value, reduction]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return get_settings().output_path / "animations" / f"transition_{'_'.join(parts)}_{stamp}.gif"


def _shared_labels(
    from_model: EmbeddingDefinition, to_model: EmbeddingDefinition, split: Split, embeddings: list[Embeddings]
) -> np.ndarray:
    labels = embeddings[0].labels
    if not np.array_equal(labels, embeddings[1].labels):
        raise TTIEvalError(
            f"{from_model} and {to_model} hold different {Split(split).value} images of {from_model.dataset}, so "
            f"their maps cannot be morphed; rebuild both with `tti-eval build --model-dataset {from_model} "
            f"--model-dataset {to_model} --overwrite`."
        )
    return labels


def class_names_for(definitions: list[EmbeddingDefinition], split: Split, labels: np.ndarray) -> list[str]:
    """The dataset's class names from the cache metadata; label numbers for caches without any (the original tool's)."""
    names: list[str] = next((names for d in definitions if (names := load_metadata(d, split).get("class_names"))), [])
    num_classes = max(len(names), int(labels.max()) + 1 if labels.size else 0)
    return [str(n) for n in names] + [str(i) for i in range(len(names), num_classes)]


def build_animation(
    from_model: EmbeddingDefinition,
    to_model: EmbeddingDefinition,
    *,
    split: Split = Split.VALIDATION,
    reduction: str = DEFAULT_REDUCTION,
    interactive: bool = False,
    seed: int = DEFAULT_SEED,
    max_points: int = MAX_POINTS,
    num_frames: int = NUM_FRAMES,
) -> Path | None:
    """Morph `from_model`'s map of a dataset's split into `to_model`'s; the GIF's path, or None after a window."""
    if from_model.dataset != to_model.dataset:
        raise TTIEvalError(
            f"{from_model} and {to_model} embed different datasets; pick two models of the same dataset."
        )
    if from_model.model == to_model.model:
        raise TTIEvalError(
            f"Both models are '{from_model.model}', and a map cannot morph into itself; pick two different models."
        )
    if interactive:
        require_display()
    else:
        check_writable(animation_path(from_model, to_model, split, reduction).parent, "the animation")
    # Each file is read once: the labels are compared and the same arrays feed the reductions.
    embeddings = [load_embeddings(from_model, split), load_embeddings(to_model, split)]
    labels = _shared_labels(from_model, to_model, split, embeddings)
    start = standardise(reduce_embeddings(from_model, split, reduction, seed, embeddings[0]))
    end = align(standardise(reduce_embeddings(to_model, split, reduction, seed, embeddings[1])), start)
    # A seeded permutation both picks the sample (the same points for both maps) and mixes the drawing order, so no
    # class is always painted on top of the others.
    shown = np.random.default_rng(seed).permutation(len(labels))[:max_points]
    total = len(labels)
    count = f"{len(shown):,} of {total:,} images" if len(shown) < total else f"{total:,} images"

    if interactive:
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=FIGURE_SIZE)
    else:
        figure = None
    morph = create_morph_figure(
        start[shown],
        end[shown],
        labels[shown],
        class_names_for([from_model, to_model], split, labels),
        from_title=from_model.model,
        to_title=to_model.model,
        title=f"{from_model.model} \u2194 {to_model.model} on {from_model.dataset}",
        subtitle=f"{reduction.upper()} maps of the {Split(split).value} image embeddings ({count})",
        figure=figure,
    )
    if interactive:
        show_interactive(morph)
        return None
    return save_gif(morph, animation_path(from_model, to_model, split, reduction), num_frames)
