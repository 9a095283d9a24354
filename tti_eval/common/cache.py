"""The embeddings cache: `<cache>/embeddings/<dataset>/<model>_<split>.npz`.

The array keys (`image_embeddings`, `class_embeddings`, `labels`) are the original tool's, so its caches load
unchanged. Metadata rides along in the same file as a JSON string (`metadata`), which keeps one file per split and
lets every load use `allow_pickle=False`. Writes are atomic (`atomic.py`), so a killed build never leaves a file that
looks finished. This is the only module that reads or writes embedding files.

Listing the cache, its shapes and its metadata (`list`, and `build` of a cached pair) reads the zip directory and the
NPY headers directly, so it needs no numpy: its import would be a large part of those commands' start-up.
"""

import ast
import json
import re
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .atomic import atomic_write
from .errors import CacheError
from .pairs import EmbeddingDefinition
from .settings import get_settings
from .split import Split

if TYPE_CHECKING:
    import numpy as np

    from .base import Embeddings

_SPLIT_SUFFIXES = tuple(f"_{split.value}" for split in Split)


def embedding_path(definition: EmbeddingDefinition, split: Split, cache_path: Path | None = None) -> Path:
    root = cache_path if cache_path is not None else get_settings().cache_path
    return root / "embeddings" / definition.dataset / f"{definition.model}_{Split(split).value}.npz"


def build_command(definition: EmbeddingDefinition, overwrite: bool = False) -> str:
    return f"tti-eval build --model-dataset {definition}" + (" --overwrite" if overwrite else "")


def embeddings_exist(definition: EmbeddingDefinition, split: Split) -> bool:
    return embedding_path(definition, split).is_file()


def save_embeddings(
    definition: EmbeddingDefinition, embeddings: "Embeddings", split: Split, metadata: dict[str, Any] | None = None
) -> Path:
    return save_embeddings_streamed(
        definition, split, [embeddings.images], embeddings.images.shape, embeddings.labels, embeddings.classes, metadata
    )


def save_embeddings_streamed(
    definition: EmbeddingDefinition,
    split: Split,
    image_chunks: Iterable["np.ndarray"],
    images_shape: tuple[int, int],
    labels: "np.ndarray",
    classes: "np.ndarray | None" = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a split's file with the image embeddings arriving in row chunks, so that a split assembled from shards
    never holds all its image embeddings at once. The file is exactly what `np.savez` writes (stored zip members)."""
    import numpy as np

    path = embedding_path(definition, split)
    small: dict[str, np.ndarray] = {"labels": np.asarray(labels)}
    if classes is not None:
        small["class_embeddings"] = np.asarray(classes)
    if metadata is not None:
        small["metadata"] = np.array(json.dumps(metadata, default=str))

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("image_embeddings.npy", "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
                np.lib.format.write_array_header_1_0(member, {**header, "shape": tuple(images_shape)})
                rows = 0
                for chunk in image_chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=np.float32)
                    member.write(chunk.tobytes())
                    rows += chunk.shape[0]
                if rows != images_shape[0]:  # a header that lies would make a file that loads as garbage
                    raise ValueError(f"expected {images_shape[0]} image embeddings, got {rows}")
            for name, array in small.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    atomic_write(path, write)
    return path


def _existing_path(definition: EmbeddingDefinition, split: Split) -> Path:
    path = embedding_path(definition, split)
    if not path.is_file():
        raise CacheError(
            f"No {Split(split).value} embeddings for {definition} (expected {path}); "
            f"run `{build_command(definition)}` first."
        )
    return path


def _unreadable(path: Path, definition: EmbeddingDefinition, error: BaseException) -> CacheError:
    return CacheError(
        f"{path} cannot be read ({type(error).__name__}); rebuild it with `{build_command(definition, True)}`."
    )


def _open(definition: EmbeddingDefinition, split: Split):
    import numpy as np

    path = _existing_path(definition, split)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not an npz archive")
        return path, archive
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise _unreadable(path, definition, e) from None


def load_embeddings(definition: EmbeddingDefinition, split: Split) -> "Embeddings":
    from .base import Embeddings

    path, archive = _open(definition, split)
    try:
        with archive:
            classes = archive["class_embeddings"] if "class_embeddings" in archive.files else None
            return Embeddings(images=archive["image_embeddings"], labels=archive["labels"], classes=classes)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CacheError(
            f"{path} is damaged or incomplete ({reason}); rebuild it with `{build_command(definition, True)}`."
        ) from None


_NPY_MAGIC = b"\x93NUMPY"
# NPY format version -> (how the header length is stored, the header's encoding); see numpy.lib.format.
_NPY_HEADER_FORMATS = {1: ("<H", "latin1"), 2: ("<I", "latin1"), 3: ("<I", "utf8")}
_TEXT_DESCR = re.compile(r"([<>])U(\d+)")  # a unicode string array, e.g. np.array(json_text): UTF-32 code units


def _npy_header(member: IO[bytes]) -> dict[str, Any]:
    """The header (`descr`, `fortran_order`, `shape`) of one NPY member, read by the format's definition; ValueError
    when it is not one."""
    prefix = member.read(len(_NPY_MAGIC) + 2)
    version = _NPY_HEADER_FORMATS.get(prefix[-2]) if prefix[: len(_NPY_MAGIC)] == _NPY_MAGIC else None
    if version is None:
        raise ValueError("not an NPY array")
    length_format, encoding = version
    try:
        (length,) = struct.unpack(length_format, member.read(struct.calcsize(length_format)))
        header = ast.literal_eval(member.read(length).decode(encoding))
    except (struct.error, SyntaxError) as e:
        raise ValueError(f"malformed NPY header ({e})") from None
    if not isinstance(header, dict) or not isinstance(header.get("shape"), tuple):
        raise ValueError("malformed NPY header")
    return header


def _npy_text(member: IO[bytes]) -> str:
    """The string stored as a 0-d unicode NPY array (how the metadata's JSON is kept)."""
    header = _npy_header(member)
    text = _TEXT_DESCR.fullmatch(str(header.get("descr")))
    if text is None or header["shape"] != ():
        raise ValueError(f"expected one string, found an array of {header.get('descr')} {header['shape']}")
    byte_order, characters = text.groups()
    data = member.read(4 * int(characters))
    # NumPy pads a string array's items with NULs to the dtype's length.
    return data.decode("utf-32-le" if byte_order == "<" else "utf-32-be").rstrip("\x00")


def load_metadata(definition: EmbeddingDefinition, split: Split) -> dict[str, Any]:
    """The metadata stored with a split, or {} for files written by the original tool (which stored none)."""
    path = _existing_path(definition, split)
    try:
        with zipfile.ZipFile(path) as archive:
            if "metadata.npy" not in archive.namelist():
                return {}
            with archive.open("metadata.npy") as member:
                return json.loads(_npy_text(member))
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise _unreadable(path, definition, e) from None
    except ValueError as e:  # not one string, or not JSON
        raise CacheError(f"{path} has unreadable metadata; rebuild it with `{build_command(definition, True)}`.") from e


def array_shapes(definition: EmbeddingDefinition, split: Split) -> dict[str, tuple[int, ...]]:
    """The shape of every array in a cached split, read from the zip directory and the array headers alone.

    A cheap completeness check (a 0-byte or truncated file has no readable directory) that never reads the
    embeddings; a file without the arrays every split has, or with labels that do not match its images, is damaged."""
    path = embedding_path(definition, split)
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    shapes[name.removesuffix(".npy")] = _npy_header(member)["shape"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise _unreadable(path, definition, e) from None
    images, labels = shapes.get("image_embeddings"), shapes.get("labels")
    if images is None or labels is None or len(images) != 2 or labels != images[:1]:
        raise CacheError(f"{path} is damaged or incomplete; rebuild it with `{build_command(definition, True)}`.")
    return shapes


def read_shape(definition: EmbeddingDefinition, split: Split) -> tuple[int, int]:
    """(N, D) of a cached split from its array headers, without reading the embeddings."""
    rows, dim = array_shapes(definition, split)["image_embeddings"]
    return int(rows), int(dim)


def list_cached(cache_path: Path | None = None) -> dict[EmbeddingDefinition, list[Split]]:
    """Every cached (model, dataset) pair with the splits it has, ordered by dataset then model."""
    root = (cache_path if cache_path is not None else get_settings().cache_path) / "embeddings"
    found: dict[EmbeddingDefinition, list[Split]] = {}
    if not root.is_dir():
        return found
    for file in sorted(root.glob("*/*.npz")):
        stem = file.stem
        suffix = next((s for s in _SPLIT_SUFFIXES if stem.endswith(s)), None)
        if suffix is None:
            continue
        try:
            definition = EmbeddingDefinition(model=stem[: -len(suffix)], dataset=file.parent.name)
        except ValueError:
            continue  # a file some other tool left here
        found.setdefault(definition, []).append(Split(suffix[1:]))
    order = list(Split)
    return {
        d: sorted(found[d], key=order.index) for d in sorted(found, key=lambda d: (d.dataset.lower(), d.model.lower()))
    }
