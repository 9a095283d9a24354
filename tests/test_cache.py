import json
import os
import zipfile

import numpy as np
import pytest

from tti_eval.common import CacheError, EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import _HOST, list_cached, load_metadata, read_shape, remove_stale_temp_files


def _embeddings(n=5, d=3, classes=True):
    rng = np.random.default_rng(0)
    return Embeddings(
        images=rng.normal(size=(n, d)),
        labels=rng.integers(0, 2, n),
        classes=rng.normal(size=(2, d)) if classes else None,
    )


def test_round_trip_with_metadata(cache_path):
    d = EmbeddingDefinition(model="m", dataset="ds")
    e = _embeddings()
    path = d.save_embeddings(e, Split.TRAIN, {"class_names": ["a", "b"]})
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == {"image_embeddings", "labels", "class_embeddings", "metadata"}
    loaded = d.load_embeddings(Split.TRAIN)
    np.testing.assert_array_equal(loaded.images, e.images)
    np.testing.assert_array_equal(loaded.classes, e.classes)
    np.testing.assert_array_equal(loaded.labels, e.labels)
    assert load_metadata(d, Split.TRAIN) == {"class_names": ["a", "b"]}
    assert read_shape(d, Split.TRAIN) == (5, 3)
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_original_tool_layout_loads(cache_path):
    """A file as the original tool wrote it (np.savez_compressed, no metadata) loads unchanged."""
    d = EmbeddingDefinition(model="clip", dataset="plants")
    path = d.embedding_path(Split.VALIDATION)
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, classes, labels = (
        rng.normal(size=(4, 8)).astype(np.float32),
        rng.normal(size=(3, 8)),
        np.array([0, 2, 1, 2]),
    )
    np.savez_compressed(path, image_embeddings=images, class_embeddings=classes, labels=labels)
    loaded = d.load_embeddings(Split.VALIDATION)
    np.testing.assert_array_equal(loaded.images, images)
    assert loaded.classes.shape == (3, 8) and list(loaded.labels) == [0, 2, 1, 2]
    assert load_metadata(d, Split.VALIDATION) == {}
    assert read_shape(d, Split.VALIDATION) == (4, 8)


def test_missing_embeddings_name_the_build_command(cache_path):
    d = EmbeddingDefinition(model="clip", dataset="plants")
    with pytest.raises(CacheError, match=r"run `tti-eval build --model-dataset clip/plants` first"):
        d.load_embeddings(Split.TRAIN)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-key"])
def test_damaged_file_gives_one_sentence(cache_path, damage):
    d = EmbeddingDefinition(model="clip", dataset="plants")
    path = d.save_embeddings(_embeddings(n=200, d=64), Split.TRAIN)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("labels.npy", b"")
    with pytest.raises(CacheError) as error:
        d.load_embeddings(Split.TRAIN)
    message = str(error.value)
    assert str(path) in message and "--overwrite" in message and "\n" not in message


def test_list_cached_orders_pairs_and_splits(cache_path):
    for model, dataset, split in [
        ("b", "x", Split.VALIDATION),
        ("siglip_large", "x", Split.TRAIN),
        ("b", "x", Split.TRAIN),
        ("a", "W", Split.TRAIN),
    ]:
        EmbeddingDefinition(model=model, dataset=dataset).save_embeddings(_embeddings(), split)
    (cache_path / "embeddings" / "x" / "notes.npz").write_bytes(b"")  # not a split file: ignored
    cached = list_cached()
    assert [str(d) for d in cached] == ["a/W", "b/x", "siglip_large/x"]
    assert cached[EmbeddingDefinition(model="b", dataset="x")] == [Split.TRAIN, Split.VALIDATION]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f".m_train.npz.{_HOST}@999999999@abc12345.tmp"
    alive = tmp_path / f".m_train.npz.{_HOST}@{os.getpid()}@12345678.tmp"  # an all-digit random part is no pid
    other_host = tmp_path / ".m_train.npz.elsewhere@999999999@abc.tmp"
    for file in (dead, alive, other_host):
        file.write_bytes(b"x")
    remove_stale_temp_files(tmp_path)
    assert not dead.exists() and alive.exists() and other_host.exists()


def test_cache_files_are_readable_by_the_team(cache_path):
    path = EmbeddingDefinition(model="m", dataset="ds").save_embeddings(_embeddings(), Split.TRAIN)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_npy_under_an_npz_name_gets_one_sentence(cache_path):
    d = EmbeddingDefinition(model="m", dataset="ds")
    path = d.embedding_path(Split.TRAIN)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        np.save(handle, np.ones((2, 2)))
    with pytest.raises(CacheError, match="cannot be read"):
        d.load_embeddings(Split.TRAIN)


def test_metadata_is_json_not_pickle(cache_path):
    d = EmbeddingDefinition(model="m", dataset="ds")
    path = d.save_embeddings(_embeddings(classes=False), Split.TEST, {"n": 1})
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["metadata"])) == {"n": 1}
        assert "class_embeddings" not in archive.files
    assert d.load_embeddings(Split.TEST).classes is None
