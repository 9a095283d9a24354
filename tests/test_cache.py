import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tti_eval.common import CacheError, EmbeddingDefinition, Embeddings, Split, atomic
from tti_eval.common.atomic import _HOST, remove_stale_temp_files
from tti_eval.common.cache import (
    embedding_path,
    list_cached,
    load_embeddings,
    load_metadata,
    read_shape,
    save_embeddings,
)
from tti_eval.common.errors import WriteError


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
    path = save_embeddings(d, e, Split.TRAIN, {"class_names": ["a", "b"]})
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) == {"image_embeddings", "labels", "class_embeddings", "metadata"}
    loaded = load_embeddings(d, Split.TRAIN)
    np.testing.assert_array_equal(loaded.images, e.images)
    np.testing.assert_array_equal(loaded.classes, e.classes)
    np.testing.assert_array_equal(loaded.labels, e.labels)
    assert load_metadata(d, Split.TRAIN) == {"class_names": ["a", "b"]}
    assert read_shape(d, Split.TRAIN) == (5, 3)
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_original_tool_layout_loads(cache_path):
    """A file as the original tool wrote it (np.savez_compressed, no metadata) loads unchanged."""
    d = EmbeddingDefinition(model="clip", dataset="plants")
    path = embedding_path(d, Split.VALIDATION)
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, classes, labels = (
        rng.normal(size=(4, 8)).astype(np.float32),
        rng.normal(size=(3, 8)),
        np.array([0, 2, 1, 2]),
    )
    np.savez_compressed(path, image_embeddings=images, class_embeddings=classes, labels=labels)
    loaded = load_embeddings(d, Split.VALIDATION)
    np.testing.assert_array_equal(loaded.images, images)
    assert loaded.classes.shape == (3, 8) and list(loaded.labels) == [0, 2, 1, 2]
    assert load_metadata(d, Split.VALIDATION) == {}
    assert read_shape(d, Split.VALIDATION) == (4, 8)


def test_missing_embeddings_name_the_build_command(cache_path):
    d = EmbeddingDefinition(model="clip", dataset="plants")
    with pytest.raises(CacheError, match=r"run `tti-eval build --model-dataset clip/plants` first"):
        load_embeddings(d, Split.TRAIN)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-key"])
def test_damaged_file_gives_one_sentence(cache_path, damage):
    d = EmbeddingDefinition(model="clip", dataset="plants")
    path = save_embeddings(d, _embeddings(n=200, d=64), Split.TRAIN)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("labels.npy", b"")
    with pytest.raises(CacheError) as error:
        load_embeddings(d, Split.TRAIN)
    message = str(error.value)
    assert str(path) in message and "--overwrite" in message and "\n" not in message


def test_list_cached_orders_pairs_and_splits(cache_path):
    for model, dataset, split in [
        ("b", "x", Split.VALIDATION),
        ("siglip_large", "x", Split.TRAIN),
        ("b", "x", Split.TRAIN),
        ("a", "W", Split.TRAIN),
    ]:
        save_embeddings(EmbeddingDefinition(model=model, dataset=dataset), _embeddings(), split)
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
    path = save_embeddings(EmbeddingDefinition(model="m", dataset="ds"), _embeddings(), Split.TRAIN)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_npy_under_an_npz_name_gets_one_sentence(cache_path):
    d = EmbeddingDefinition(model="m", dataset="ds")
    path = embedding_path(d, Split.TRAIN)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        np.save(handle, np.ones((2, 2)))
    with pytest.raises(CacheError, match="cannot be read"):
        load_embeddings(d, Split.TRAIN)


def test_metadata_is_json_not_pickle(cache_path):
    d = EmbeddingDefinition(model="m", dataset="ds")
    path = save_embeddings(d, _embeddings(classes=False), Split.TEST, {"n": 1})
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["metadata"])) == {"n": 1}
        assert "class_embeddings" not in archive.files
    assert load_embeddings(d, Split.TEST).classes is None


def _temp_files(folder):
    return sorted(p.name for p in folder.glob(".*.tmp"))


@pytest.mark.parametrize("phase", ["writing", "fsync", "rename"])
def test_a_write_that_fails_at_any_phase_keeps_the_old_file(cache_path, monkeypatch, phase):
    """Fail between the first byte and the rename: the previous file must still load unchanged, and no temporary
    file may be left. A writer that wrote into the target directly would leave it half-written here."""
    d = EmbeddingDefinition(model="m", dataset="ds")
    old = _embeddings(n=50, d=16)
    path = save_embeddings(d, old, Split.TRAIN)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        if phase == "writing":

            class FullAfterSomeBytes(io.FileIO):  # the disk fills up part-way through the file
                def write(self, data):
                    if self.tell() + len(data) > 1000:
                        fail()
                    return super().write(data)

            patch.setattr(atomic.os, "fdopen", lambda fd, mode: io.BufferedWriter(FullAfterSomeBytes(fd, mode)))
        else:
            patch.setattr(atomic.os, {"fsync": "fsync", "rename": "replace"}[phase], fail)
        # A failure of the file, in any phase, is one sentence.
        with pytest.raises(WriteError, match="No space left on"):
            save_embeddings(d, _embeddings(n=80, d=16), Split.TRAIN)
    np.testing.assert_array_equal(load_embeddings(d, Split.TRAIN).images, old.images)
    assert _temp_files(path.parent) == []


def test_a_write_is_flushed_to_disk_before_it_is_renamed(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = atomic.os.fsync, atomic.os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    atomic.atomic_write(tmp_path / "f.bin", lambda handle: handle.write(b"data"))
    assert calls == ["fsync", "replace"] and (tmp_path / "f.bin").read_bytes() == b"data"


def test_temp_names_carry_host_and_pid_and_stale_ones_are_swept_by_the_next_write(tmp_path):
    target = tmp_path / "f.bin"
    dead = tmp_path / f".f.bin.{_HOST}@999999999@0badc0de.tmp"
    unrelated = tmp_path / f".g.bin.{_HOST}@999999999@0badc0de.tmp"  # another target's leftovers: not this write's
    for file in (dead, unrelated):
        file.write_bytes(b"x")
    seen = []
    atomic.atomic_write(target, lambda handle: seen.extend(_temp_files(tmp_path)))
    assert not dead.exists() and unrelated.exists()
    mine = [name for name in seen if name.startswith(".f.bin.")]
    assert len(mine) == 1 and mine[0].startswith(f".f.bin.{_HOST}@{os.getpid()}@")


def test_importing_tti_eval_changes_no_process_state():
    """Reading the umask means setting it (for a moment, for every thread): no module may do it at import."""
    code = (
        "import os\n"
        "def refuse(*a):\n    raise AssertionError('umask changed at import')\n"
        "os.umask = refuse\n"
        "import tti_eval.common, tti_eval.common.cache, tti_eval.common.atomic, tti_eval.compute, tti_eval.cli.main\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
