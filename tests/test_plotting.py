"""Reductions, alignment and the morph animation, on synthetic clustered embeddings saved through the real cache."""

from collections.abc import Iterator

import matplotlib
import numpy as np
import pytest
from matplotlib.backend_bases import MouseEvent
from PIL import Image
from threadpoolctl import threadpool_limits

from tti_eval.common import EmbeddingDefinition, Embeddings, Split, TTIEvalError, UnknownTitleError
from tti_eval.common.cache import save_embeddings
from tti_eval.common.title_registry import DuplicateTitleError
from tti_eval.plotting import animation, reduction
from tti_eval.plotting.animation import (
    NoDisplayError,
    align,
    build_animation,
    class_colours,
    class_names_for,
    morph_times,
    standardise,
)
from tti_eval.plotting.reduction import REDUCERS, reduce_embeddings, reduction_path

DATASET = "synthetic"
MODEL_A = EmbeddingDefinition(model="model-a", dataset=DATASET)
MODEL_B = EmbeddingDefinition(model="model-b", dataset=DATASET)


def clustered(labels: np.ndarray, dim: int = 16, seed: int = 0) -> Embeddings:
    """Unit vectors scattered around one random centre per class, like a model that separates the classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(int(labels.max()) + 1, dim))
    images = centres[labels] + 0.3 * rng.normal(size=(len(labels), dim))
    return Embeddings(images=images / np.linalg.norm(images, axis=1, keepdims=True), labels=labels)


def save_pair(labels: np.ndarray, class_names: list[str] | None) -> None:
    metadata = None if class_names is None else {"class_names": class_names}
    for seed, definition in enumerate((MODEL_A, MODEL_B)):
        save_embeddings(definition, clustered(labels, seed=seed), Split.VALIDATION, metadata=metadata)


@pytest.fixture
def counting_pca() -> Iterator[list[int]]:
    """Replaces the pca reducer with one that records the size of every input it reduces."""
    calls: list[int] = []
    original = REDUCERS.unregister("pca")

    def counted(images: np.ndarray, seed: int) -> np.ndarray:
        calls.append(len(images))
        return original(images, seed)

    REDUCERS.register("pca", counted)
    yield calls
    REDUCERS.unregister("pca")
    REDUCERS.register("pca", original)


@pytest.fixture
def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list[animation.MorphFigure]:
    """Every figure `build_animation` saves, so a test can inspect the legend and points that went into the GIF."""
    figures: list[animation.MorphFigure] = []
    original = animation.save_gif

    def spy(morph: animation.MorphFigure, *args, **kwargs):
        figures.append(morph)
        return original(morph, *args, **kwargs)

    monkeypatch.setattr(animation, "save_gif", spy)
    return figures


# --- reductions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["pca", "tsne"])
def test_same_seed_gives_the_same_map(title: str) -> None:
    images = clustered(np.arange(40) % 4).images
    with threadpool_limits(1):  # OpenMP threads in t-SNE crawl on a busy two-core machine
        first, second = REDUCERS[title](images, 7), REDUCERS[title](images, 7)
    assert first.shape == (40, 2)
    np.testing.assert_array_equal(first, second)


def test_umap_is_seeded() -> None:
    """The one UMAP test: its first call in a process compiles with numba and takes a while."""
    images = clustered(np.arange(30) % 3).images
    first, second = REDUCERS["umap"](images, 3), REDUCERS["umap"](images, 3)
    assert first.shape == (30, 2)
    np.testing.assert_array_equal(first, second)


def test_reduction_is_cached_reused_and_recomputed_when_embeddings_change(cache_path, counting_pca) -> None:
    labels = np.arange(50) % 5
    save_embeddings(MODEL_A, clustered(labels), Split.VALIDATION)

    first = reduce_embeddings(MODEL_A, Split.VALIDATION, "pca")
    path = cache_path / "reductions" / DATASET / "model-a_validation_pca.npz"
    assert reduction_path(MODEL_A, Split.VALIDATION, "pca") == path and path.is_file()
    assert first.shape == (50, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(reduce_embeddings(MODEL_A, Split.VALIDATION, "pca"), first)
    np.testing.assert_array_equal(reduce_embeddings(MODEL_A, Split.VALIDATION, "PCA"), first)  # same title, same file
    assert counting_pca == [50]

    save_embeddings(MODEL_A, clustered(labels, seed=1), Split.VALIDATION)  # a rebuild with other numbers
    changed = reduce_embeddings(MODEL_A, Split.VALIDATION, "pca")
    assert counting_pca == [50, 50]
    assert not np.allclose(changed, first)

    reduce_embeddings(MODEL_A, Split.VALIDATION, "pca", seed=1)  # another seed is another map
    assert counting_pca == [50, 50, 50]

    path.write_bytes(b"not an npz")  # a damaged cache file is replaced, not fatal
    np.testing.assert_array_equal(reduce_embeddings(MODEL_A, Split.VALIDATION, "pca", seed=1), changed)
    assert counting_pca == [50, 50, 50, 50]


def test_a_duplicate_reduction_title_names_both_places() -> None:
    def shadow(images: np.ndarray, seed: int) -> np.ndarray:
        return images[:, :2]

    with pytest.raises(DuplicateTitleError) as error:
        reduction.register_reducer("UMAP")(shadow)
    assert "tti_eval.plotting.reduction._umap" in str(error.value) and "shadow" in str(error.value)
    assert list(REDUCERS).count("umap") == 1


def test_reduction_errors(cache_path) -> None:
    with pytest.raises(UnknownTitleError, match="Unknown reduction 'uamp'. Did you mean 'umap'"):
        reduce_embeddings(MODEL_A, Split.VALIDATION, "uamp")
    with pytest.raises(TTIEvalError, match="tti-eval build --model-dataset model-a/synthetic"):
        reduce_embeddings(MODEL_A, Split.VALIDATION, "pca")
    save_embeddings(MODEL_A, clustered(np.array([0, 1, 0])), Split.VALIDATION)
    with pytest.raises(TTIEvalError, match="only 3 validation images"):
        reduce_embeddings(MODEL_A, Split.VALIDATION, "pca")
    broken = clustered(np.arange(10) % 2)
    broken.images[3] = np.nan
    save_embeddings(MODEL_A, broken, Split.VALIDATION)
    with pytest.raises(TTIEvalError, match="NaN"):
        reduce_embeddings(MODEL_A, Split.VALIDATION, "pca")


# --- alignment ----------------------------------------------------------------------------------------------------


def test_standardise_removes_position_and_scale() -> None:
    points = np.random.default_rng(0).normal(size=(100, 2)) * [3.0, 1.0]
    result = standardise(points)
    np.testing.assert_allclose(result.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose((result**2).sum(axis=1).mean(), 1.0)
    np.testing.assert_allclose(standardise(5.0 * points + [10.0, -4.0]), result)


@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_a_known_rotation_or_reflection(reflect: bool) -> None:
    target = standardise(np.random.default_rng(1).normal(size=(200, 2)) * [2.0, 0.5])
    angle = 2.1
    transform = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if reflect:
        transform = transform @ np.diag([1.0, -1.0])
    np.testing.assert_allclose(align(target @ transform, target), target, atol=1e-10)


# --- figure and GIF -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [3, 10, 15, 20, 45])
def test_every_class_gets_its_own_colour(num_classes: int) -> None:
    colours = class_colours(num_classes)
    assert colours.shape == (num_classes, 4)
    assert len(np.unique(colours, axis=0)) == num_classes


def test_morph_goes_from_a_to_b_and_back_without_repeating_a_frame() -> None:
    times = morph_times(78)
    assert len(times) == 78 and times[0] == 0 and times[39] == pytest.approx(1)
    assert np.all(np.diff(times[:40]) > 0) and np.all(np.diff(times[39:]) < 0)


def test_gif_has_every_frame_and_the_class_names_as_legend(cache_path, output_path, captured_figures) -> None:
    names = ["zero", "one", "two", "three", "four"]
    save_pair(np.arange(60) % 5, names)

    path = build_animation(MODEL_A, MODEL_B, reduction="pca")

    assert path.parent == output_path / "animations"
    assert path.name.startswith("transition_synthetic_model-a_model-b_validation_pca_") and path.suffix == ".gif"
    with Image.open(path) as gif:
        assert gif.n_frames == animation.NUM_FRAMES == 40 and gif.size == (800, 480) and gif.info["loop"] == 0
        first = np.asarray(gif.convert("RGB"))
        gif.seek(20)
        assert not np.array_equal(first, np.asarray(gif.convert("RGB")))  # the points moved
    (morph,) = captured_figures
    assert morph.legend_labels == names
    title = morph.figure.get_suptitle()
    assert "model-a" in title and "model-b" in title and "synthetic" in title
    assert list(path.parent.glob(".*.tmp")) == []


def gif_frames(path) -> list[np.ndarray]:
    """Every frame of a GIF as shown (RGB), each composed over the ones before as a viewer composes it."""
    with Image.open(path) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def rendered_frames(morph: animation.MorphFigure, num_frames: int) -> list[np.ndarray]:
    """The reference: each frame drawn from scratch (no cached background) at the same times, as RGB."""
    (_, marker) = morph.track.lines  # the track, then the marker `save_gif` added
    for artist in (morph.scatter, marker):
        artist.set_animated(False)
    frames = []
    for t in morph_times(num_frames):
        morph.set_time(float(t))
        marker.set_xdata([t])
        morph.figure.canvas.draw()
        frames.append(np.asarray(morph.figure.canvas.buffer_rgba())[:, :, :3].copy())
    return frames


def test_gif_frames_show_the_drawn_figure_in_one_shared_palette(cache_path, output_path, captured_figures) -> None:
    """Frames after the first store only what changed; composed by a GIF reader they must still show exactly the
    figure as drawn, in the few colours of one palette: greys for text and lines plus the class colours."""
    save_pair(np.arange(120) % 6, [f"class {k}" for k in range(6)])
    path = build_animation(MODEL_A, MODEL_B, reduction="pca", num_frames=8)

    (morph,) = captured_figures
    palette = animation.gif_palette(morph.legend_colours)
    assert len(palette) == animation.GREYS + 6
    shown = gif_frames(path)
    assert len(shown) == 8
    target = Image.new("P", (1, 1))
    target.putpalette(palette.ravel().tolist())
    colours = {tuple(colour) for colour in palette}
    class_rgb = np.round(morph.legend_colours[:, :3] * 255).astype(np.uint8)
    for frame, drawn in zip(shown, rendered_frames(morph, 8), strict=True):
        # the whole frame mapped onto the palette on its own, without reference to the frame before
        whole = palette[np.asarray(Image.fromarray(drawn).quantize(palette=target, dither=Image.Dither.NONE))]
        np.testing.assert_array_equal(frame, whole)
        assert {tuple(colour) for colour in np.unique(frame.reshape(-1, 3), axis=0)} <= colours
        for colour in class_rgb:  # a point's pixels keep exactly its class colour
            drawn_here = (drawn == colour).all(axis=2)
            assert drawn_here.any() and (frame[drawn_here] == colour).all()
        # points are not antialiased: the map holds the background and class colours only, no blends of two
        left, bottom, right, top = np.round(morph.axes.get_window_extent().extents).astype(int)
        in_map = np.unique(drawn[drawn.shape[0] - top : drawn.shape[0] - bottom, left:right].reshape(-1, 3), axis=0)
        assert {tuple(c) for c in in_map} <= {(255, 255, 255), *(tuple(c) for c in class_rgb)}
    with Image.open(path) as gif:
        assert len(gif.palette.colors) <= len(palette) + 1  # the palette's colours and the transparent index
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    # the loop's length does not depend on the number of frames: the moving frames share MORPH_MS
    assert durations[0] == durations[4] == animation.HOLD_MS
    assert sum(durations) - 2 * animation.HOLD_MS == pytest.approx(animation.MORPH_MS, abs=10 * 6)


def test_the_demo_sized_gif_stays_small(cache_path, output_path) -> None:
    """A map of the demo's size (270 points, 10 classes) in the default 40 frames: 1.8 MB before the GIF stored only
    changes in a palette of a few colours; now about 250 KB. The budget leaves room for the layout to change."""
    save_pair(np.arange(270) % 10, [str(k) for k in range(10)])
    path = build_animation(MODEL_A, MODEL_B, reduction="pca")
    assert path.stat().st_size < 400_000


def test_changed_patch_against_a_pixel_by_pixel_reference() -> None:
    rng = np.random.default_rng(3)
    previous = rng.integers(0, 4, size=(30, 40)).astype(np.uint8)
    current = previous.copy()
    current[5, 7], current[12, 30], current[20, 9] = 9, 8, 7
    patch, (left, top) = animation.changed_patch(previous, current, transparent=255)
    changed = [(y, x) for y in range(30) for x in range(40) if previous[y, x] != current[y, x]]
    assert (top, left) == (min(y for y, _ in changed), min(x for _, x in changed))
    assert patch.shape == (max(y for y, _ in changed) - top + 1, max(x for _, x in changed) - left + 1)
    for y in range(patch.shape[0]):
        for x in range(patch.shape[1]):
            expected = current[top + y, left + x] if (top + y, left + x) in changed else 255
            assert patch[y, x] == expected
    unchanged, corner = animation.changed_patch(previous, previous, transparent=255)
    assert unchanged.tolist() == [[255]] and corner == (0, 0)  # a frame that changes nothing is still a frame


def test_many_classes_share_the_palette_without_overflowing_it() -> None:
    palette = animation.gif_palette(class_colours(1000))
    assert 200 < len(palette) <= 255 and palette.dtype == np.uint8  # merged colours; one index left for transparency
    assert len(animation.gif_palette(class_colours(45))) == animation.GREYS + 45


def test_legend_colours_match_the_points_with_many_classes_and_a_missing_one(
    cache_path, output_path, captured_figures
) -> None:
    """25 classes (beyond tab10/tab20), class 7 absent from the split, and a sample smaller than the split."""
    names = [f"class-{i}" for i in range(25)]
    labels = np.array([label for label in np.arange(400) % 25 if label != 7])
    save_pair(labels, names)

    build_animation(MODEL_A, MODEL_B, reduction="pca", max_points=200, num_frames=4)

    (morph,) = captured_figures
    assert morph.legend_labels == names
    legend_colours = morph.legend_colours[:, :3]
    assert len(np.unique(legend_colours, axis=0)) == 25
    point_colours = morph.scatter.get_facecolors()[:, :3]
    assert len(point_colours) == 200 and 7 not in morph.labels
    np.testing.assert_array_equal(point_colours, legend_colours[morph.labels])


def test_same_sample_and_alignment_for_both_maps(cache_path, output_path, captured_figures) -> None:
    save_pair(np.arange(80) % 4, ["a", "b", "c", "d"])
    build_animation(MODEL_A, MODEL_B, reduction="pca", max_points=30, num_frames=2)
    build_animation(MODEL_A, MODEL_B, reduction="pca", max_points=30, num_frames=2)
    first, second = captured_figures
    np.testing.assert_array_equal(first.start, second.start)
    np.testing.assert_array_equal(first.end, second.end)
    assert first.start.shape == (30, 2)


def test_class_names_fall_back_to_label_numbers_without_metadata(cache_path) -> None:
    save_pair(np.arange(12) % 3, None)
    assert class_names_for([MODEL_A, MODEL_B], Split.VALIDATION, np.arange(12) % 3) == ["0", "1", "2"]


def test_models_must_share_images_and_dataset(cache_path) -> None:
    save_embeddings(MODEL_A, clustered(np.arange(20) % 2), Split.VALIDATION)
    save_embeddings(MODEL_B, clustered(np.arange(20) % 4), Split.VALIDATION)
    with pytest.raises(TTIEvalError, match="hold different validation images"):
        build_animation(MODEL_A, MODEL_B, reduction="pca")
    with pytest.raises(TTIEvalError, match="different datasets"):
        build_animation(MODEL_A, EmbeddingDefinition(model="model-b", dataset="other"), reduction="pca")


def test_interactive_without_a_display_says_so_before_any_work(cache_path, monkeypatch) -> None:
    monkeypatch.setitem(matplotlib.rcParams, "backend", "agg")  # what matplotlib picks on a machine with no display
    with pytest.raises(NoDisplayError, match="without --interactive") as error:
        build_animation(MODEL_A, MODEL_B, interactive=True)  # no embeddings exist: the display check came first
    assert str(error.value).count(". ") == 0


def test_interactive_slider_moves_the_points(cache_path, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    save_pair(np.arange(30) % 3, ["a", "b", "c"])
    monkeypatch.setattr(animation, "require_display", lambda: None)
    shown: list[np.ndarray] = []

    def show() -> None:  # stands in for the window: drag the slider to 3/4 and record where the points are
        figure = plt.gcf()
        track = figure.axes[-1]
        x, y = track.transData.transform((0.75, 0.5))
        for name in ("button_press_event", "button_release_event"):
            figure.canvas.callbacks.process(name, MouseEvent(name, figure.canvas, x, y, button=1))
        shown.append(figure.axes[0].collections[0].get_offsets())

    monkeypatch.setattr(plt, "show", show)
    assert build_animation(MODEL_A, MODEL_B, reduction="pca", interactive=True) is None
    start = standardise(reduce_embeddings(MODEL_A, Split.VALIDATION, "pca"))
    end = align(standardise(reduce_embeddings(MODEL_B, Split.VALIDATION, "pca")), start)
    order = np.random.default_rng(reduction.DEFAULT_SEED).permutation(30)
    np.testing.assert_allclose(shown[0], 0.25 * start[order] + 0.75 * end[order], atol=1e-6)
    plt.close("all")
