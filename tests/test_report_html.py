"""The HTML report's structure, read back with html.parser: its tables, inlined pictures, and nothing fetched from
the network; and the confusion-matrix pictures it embeds."""

import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from tti_eval.comparison import ModelOutcomes, compare_models
from tti_eval.plotting.confusion import MAX_MATRIX_CLASSES, confusion_figure, most_confused_pairs, plot_confusion
from tti_eval.report import write_report

PNG, GIF = b"\x89PNG\r\n\x1a\n", b"GIF8"


class Structure(HTMLParser):
    """Tables as lists of rows of cell texts, images by source, and every attribute value that names a location."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.locations, self.tags, self.styles = [], [], [], [], []
        self._cell = None
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.locations += [value for key, value in attrs.items() if key in {"src", "href", "action", "data"}]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in {"td", "th"}:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag in {"td", "th"}:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_style:
            self.styles.append(data)


def outcomes(dataset: str, classes: int, n: int, seed: int) -> list[ModelOutcomes]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    names = [f"class {c} <&>" for c in range(classes)]  # markup in names must be escaped, not interpreted
    found = []
    for model, accuracy in (("alpha", 0.9), ("beta", 0.88), ("gamma", 0.5)):
        predictions = np.where(rng.random(n) < accuracy, labels, rng.integers(0, classes, n))
        common = dict(model=model, dataset=dataset, split="validation", metric="accuracy", higher_is_better=True)
        found.append(
            ModelOutcomes(
                **common,
                evaluator="wKNN",
                kind="correct",
                outcomes=(predictions == labels).astype(np.int8),
                labels=labels,
                predictions=predictions,
                class_names=names,
            )
        )
        found.append(ModelOutcomes(**common, evaluator="I2IR", kind="scores", outcomes=rng.random(n) * accuracy))
    return found


@pytest.fixture(scope="module")
def run():
    return compare_models(
        outcomes("plants", 5, 200, 0) + outcomes("many", MAX_MATRIX_CLASSES + 5, 300, 1), n_resamples=50
    )


@pytest.fixture(scope="module")
def gif(tmp_path_factory):
    frames = [Image.new("RGB", (16, 16), (60 * k, 0, 0)) for k in range(3)]
    path = tmp_path_factory.mktemp("animations") / "alpha_beta_plants.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


@pytest.fixture(scope="module")
def report(run, gif, tmp_path_factory) -> str:
    """The report written once (pictures cost seconds) and parsed; each test takes a fresh parse of its text."""
    return write_report(run, tmp_path_factory.mktemp("report") / "report.html", [gif]).read_text(encoding="utf-8")


def parse(text: str) -> Structure:
    parsed = Structure()
    parsed.feed(text)
    return parsed


def decoded(image: dict) -> bytes:
    header, _, payload = image["src"].partition(",")
    assert header in {"data:image/png;base64", "data:image/gif;base64"}
    return base64.b64decode(payload, validate=True)


def test_report_is_self_contained_and_has_every_table_and_picture(report, gif):
    parsed = parse(report)

    fetched = [place for place in parsed.locations if not place.startswith(("#", "data:image/"))]
    assert fetched == [], "only in-page links and inlined pictures"
    assert "script" not in parsed.tags and "link" not in parsed.tags
    css = "".join(parsed.styles)
    assert "@media print" in css and "url(" not in css and "@import" not in css

    # 2 leaderboards, 4 groups, per-class recall for the 5-class dataset only (45 classes is beyond a table), footer
    assert len(parsed.tables) == 2 + 4 + 1 + 1
    images = [decoded(image) for image in parsed.images]
    pngs = [data for data in images if data.startswith(PNG)]
    assert [data for data in images if data.startswith(GIF)] == [gif.read_bytes()]
    assert len(pngs) == 4 + 2 * 3, "a chart per group, a confusion picture per model of each wKNN group"
    for data in pngs:
        Image.open(io.BytesIO(data)).verify()


def test_group_tables_show_ranks_intervals_and_ties(run, report):
    parsed = parse(report)
    for group in run.groups:
        table = next(t for t in parsed.tables if t[1][1] == group.results[0].model and t[0][0] == "Rank")
        parsed.tables.remove(table)
        assert [row[1] for row in table[1:]] == [r.model for r in group.results]
        best, *others = table[1:]
        assert best[3] == "best" and best[2] == f"{group.results[0].value:.4f} [{group.results[0].low:.4f}, " + (
            f"{group.results[0].high:.4f}]"
        )
        for row, comparison in zip(others, group.comparisons, strict=True):
            assert (row[5] != "") == comparison.tied_with_best
            assert row[3].startswith(f"{comparison.difference.value:+.4f}")


def test_per_class_table_marks_recall_below_another_models(run, report):
    parsed = parse(report)
    table = next(t for t in parsed.tables if t[0][0] == "Class")
    assert table[1][0] == "class 0 <&>", "class names arrive as text"
    (group,) = [g for g in run.groups if g.dataset == "plants" and g.evaluator == "wKNN"]
    for k, row in enumerate(table[1:]):
        recalls = [model.classes[k].recall for model in group.per_class]
        for cell, recall in zip(row[2:], recalls, strict=True):
            below = any(recall.high < other.low for other in recalls)
            assert cell.startswith("▼") == below
    assert any("▼" in cell for row in table[1:] for cell in row), "gamma is far below alpha on some class"


def test_confusion_figure_labels_every_class_up_to_the_limit():
    names = [f"c{k}" for k in range(MAX_MATRIX_CLASSES)]
    matrix = np.diag(np.arange(1, MAX_MATRIX_CLASSES + 1))
    matrix[0, 1] = 3
    axes = confusion_figure(matrix, names, "t").axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == names
    image = axes.get_images()[0].get_array()
    assert image[0, 1] == pytest.approx(3 / 4)
    np.testing.assert_allclose(image.sum(axis=1), np.ones(MAX_MATRIX_CLASSES))


def test_most_confused_pairs_beyond_the_limit(tmp_path):
    classes = MAX_MATRIX_CLASSES + 1
    matrix = np.eye(classes, dtype=int) * 10
    matrix[3, 7] = 10  # half of class 3 goes to 7
    matrix[5, 2] = 2  # a sixth of class 5 goes to 2
    matrix[8, 9] = 2  # the same share and count as 5 -> 2: class order decides
    matrix[11, 12] = 3  # more images than 5 -> 2 but a smaller share (3 of 33)
    matrix[11, 11] = 30
    # Reference: every off-diagonal cell, sorted by share of its row, then count.
    cells = [
        (t, p, matrix[t, p] / matrix[t].sum(), int(matrix[t, p]))
        for t in range(classes)
        for p in range(classes)
        if t != p and matrix[t, p]
    ]
    expected = sorted(cells, key=lambda cell: (-cell[2], -cell[3], cell[0], cell[1]))
    assert most_confused_pairs(matrix) == expected
    names = [f"c{k}" for k in range(classes)]
    axes = confusion_figure(matrix, names, "t").axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["c3 → c7", "c5 → c2", "c8 → c9", "c11 → c12"]
    path = plot_confusion(matrix, names, "t", tmp_path / "confusion.png")
    assert path.read_bytes().startswith(PNG)


def test_confusion_pictures_name_the_model_metric_split_and_images(run, tmp_path, monkeypatch):
    from tti_eval.report import html

    titles = []

    def recording(matrix, class_names, title):
        titles.append(title)
        return confusion_figure(matrix, class_names, title)

    monkeypatch.setattr(html, "confusion_figure", recording)
    write_report(run, tmp_path / "report.html")
    expected = []
    for group in (g for g in run.groups if g.per_class):
        value = {r.model: r.value for r in group.results}
        shows = f"{group.metric} on the {group.split} split"
        expected += [
            f"{p.model} on {group.dataset} · {group.evaluator}\n{shows} {value[p.model]:.3f}, {group.n} images"
            for p in group.per_class
        ]
    assert titles == expected and len(titles) == 6
