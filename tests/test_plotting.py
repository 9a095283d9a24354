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
        assert gif.n_frames == 78 and gif.size == (1200, 700) and gif.info["loop"] == 0
        first = np.asarray(gif.convert("RGB"))
        gif.seek(39)
        assert not np.array_equal(first, np.asarray(gif.convert("RGB")))  # the points moved
    (morph,) = captured_figures
    assert morph.legend_labels == names
    title = morph.figure.get_suptitle()
    assert "model-a" in title and "model-b" in title and "synthetic" in title
    assert list(path.parent.glob(".*.tmp")) == []


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
