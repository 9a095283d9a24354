"""Provenance of cached splits: a fingerprint of everything that decides a split's embeddings, kept in its metadata.

The fingerprint keeps its parts (definitions, file stats, versions), not just a hash, so that a mismatch can be said
in words: "templates changed", "12 images added". It is checked at two depths:

- readers (`list`, `evaluate`, `animate`) re-check what is cheap and needs neither torch nor the dataset's type: the
  model and dataset definitions, the local files recorded at build time (sizes and mtimes, never decoded) and the
  library versions;
- `build` also has the dataset split in hand, so it sees what only the type can tell as well: a hub dataset's own
  fingerprint, Encord's label versions, and how the split was carved.

A split with no fingerprint (written by the original tool or before fingerprints existed), or whose model or dataset
definition is gone, has "unknown" provenance: it stays usable, it just cannot be checked.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.cache import load_metadata
from tti_eval.dataset import DatasetProvider
from tti_eval.model import ModelProvider

if TYPE_CHECKING:
    from tti_eval.dataset.base import Dataset

# The libraries whose versions can change a split's numbers: they decode, preprocess and embed the images.
EMBEDDING_LIBRARIES = ("torch", "torchvision", "transformers", "open_clip_torch", "pillow")

# How `draft_decode` decodes JPEGs, recorded in the fingerprint; draft builds that recorded none used Pillow's.
DRAFT_METHOD = "JPEG 1/2-1/8 scales, sides >= twice the model's input, then torch bicubic to it"
_PILLOW_DRAFT = "Pillow's 1/2, 1/4, 1/8 draft, sides >= twice the model's input"

FileStats = dict[str, list[int]]  # path relative to the recorded root -> [size, mtime_ns]
# What one round of checks has looked up already (folder stats, definitions): pairs share folders and definitions.
Memo = dict[tuple[str, tuple[str, ...] | None], Any]
Status = Literal["fresh", "stale", "unknown"]


def _installed_version(package: str) -> str:
    """`importlib.metadata.version(package)` read from the metadata's header alone: `version()` parses the whole file
    as an e-mail, long description included (30 kB for transformers), which cost `list` more than its cache check."""
    found = distribution(package)
    for line in (found.read_text("METADATA") or found.read_text("PKG-INFO") or "").splitlines():
        if not line:  # the header ends at the first blank line
            break
        if line.startswith("Version:"):
            return line.removeprefix("Version:").strip()
    return found.version


@lru_cache
def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of those `packages` that are installed, read from package metadata (nothing is imported)."""
    found = {}
    for package in packages:
        try:
            found[package] = _installed_version(package)
        except PackageNotFoundError:
            continue
    return found


def library_versions() -> dict[str, str]:
    return package_versions(EMBEDDING_LIBRARIES)


# Libraries that compute scores and statistics from the embeddings.
SCORING_LIBRARIES = ("numpy", "scipy", "scikit-learn", "faiss-cpu", "faiss-gpu")


def run_versions() -> dict[str, str]:
    """Python's, tti-eval's and every installed scoring and embedding library's version: what a saved result records."""
    import platform

    import tti_eval

    return {
        "python": platform.python_version(),
        "tti-eval": tti_eval.__version__,
        **package_versions(SCORING_LIBRARIES),
        **library_versions(),
    }


def file_stats(path: Path, suffixes: Iterable[str] | None = None) -> FileStats:
    """Size and mtime of `path` (a file) or of every file below it (a folder), by name relative to `path`.

    Stat only, so a folder of a hundred thousand images is checked without opening one. Hidden entries (`.git`,
    `.ipynb_checkpoints`, our own temporary files) are skipped; `suffixes` (lower case) keeps only those files."""
    wanted = frozenset(suffixes) if suffixes is not None else None
    if path.is_file():
        stat = path.stat()
        return {path.name: [stat.st_size, stat.st_mtime_ns]}
    found: FileStats = {}
    pending = [path] if path.is_dir() else []
    while pending:
        folder = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    pending.append(Path(entry.path))
                elif entry.is_file() and (wanted is None or Path(entry.name).suffix.lower() in wanted):
                    stat = entry.stat()
                    found[Path(entry.path).relative_to(path).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return dict(sorted(found.items()))


def _paths_identity(paths: Iterable[str], suffixes: list[str] | None, memo: Memo | None) -> dict[str, FileStats]:
    memo = {} if memo is None else memo
    key_suffixes = tuple(suffixes) if suffixes is not None else None
    identity = {}
    for path in paths:
        key = (path, key_suffixes)
        if key not in memo:  # pairs of one dataset (or one model) share its folder: stat it once per check
            memo[key] = file_stats(Path(path), suffixes)
        identity[path] = memo[key]
    return identity


def _spec(registry: Any, title: str) -> dict[str, Any]:
    # `device` decides where the numbers are computed, not what they describe.
    return registry.spec(title).model_dump(mode="json", exclude_none=True, exclude={"device"})


def _memo_spec(registry: Any, title: str, memo: Memo) -> dict[str, Any] | None:
    """A definition's part of the fingerprint, or None when it has none; read once per title per `memo`."""
    key = (f"{registry.kind}:{title}", None)
    if key not in memo:
        memo[key] = _spec(registry, title) if title in registry.titles() else None
    return memo[key]


def _model_paths(title: str) -> list[str]:
    spec = ModelProvider.registry.spec(title)
    paths = ModelProvider.registry.get_class(title).source_paths(**spec.class_kwargs())
    return sorted({str(Path(p).expanduser().resolve()) for p in paths})


def build_fingerprint(
    definition: EmbeddingDefinition, dataset: "Dataset", draft_decode: bool = False
) -> dict[str, Any]:
    """The full fingerprint of one split of `definition`, whose dataset split `dataset` is (loaded by the caller),
    built with or without `draft_decode` (reduced-scale JPEG decoding changes the pixels, hence the embeddings)."""
    suffixes = sorted(dataset.image_suffixes) if dataset.image_suffixes is not None else None
    image_paths = sorted({str(Path(p).expanduser().resolve()) for p in dataset.source_paths()})
    return {
        "model": _spec(ModelProvider.registry, definition.model),
        "dataset": _spec(DatasetProvider.registry, definition.dataset),
        "split": dataset.split_rule,
        "model_files": _paths_identity(_model_paths(definition.model), None, None),
        "image_files": {"suffixes": suffixes, "paths": _paths_identity(image_paths, suffixes, None)},
        "images": dataset.source_identity(),
        "draft_decode": draft_decode,
        "draft_method": _drafted_by(draft_decode),
        "versions": library_versions(),
    }


def _reader_fingerprint(
    model: dict[str, Any], dataset: dict[str, Any], stored: Mapping[str, Any], memo: Memo
) -> dict[str, Any]:
    """What can be re-checked cheaply: current definitions, the stored local paths' stats, library versions."""
    images = stored.get("image_files", {})
    suffixes = images.get("suffixes")
    return {
        "model": model,
        "dataset": dataset,
        "model_files": _paths_identity(stored.get("model_files", {}), None, memo),
        "image_files": {"suffixes": suffixes, "paths": _paths_identity(images.get("paths", {}), suffixes, memo)},
        "versions": library_versions(),
    }


def _changed_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return sorted(key for key in {*stored, *current} if stored.get(key) != current.get(key))


def _merge_stats(identity: Mapping[str, FileStats]) -> FileStats:
    return {f"{root}/{name}": stats for root, files in identity.items() for name, stats in files.items()}


def _files_change(stored: Mapping[str, FileStats], current: Mapping[str, FileStats], noun: str) -> str | None:
    before, after = _merge_stats(stored), _merge_stats(current)
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    modified = sum(1 for name in before.keys() & after.keys() if before[name] != after[name])
    counts = [(n, what) for n, what in ((added, "added"), (removed, "removed"), (modified, "modified")) if n]
    if not counts:
        return None
    (first, what), rest = counts[0], counts[1:]
    return ", ".join([f"{first} {noun}{'' if first == 1 else 's'} {what}", *(f"{n} {w}" for n, w in rest)])


def explain_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why a stored fingerprint differs from the current one, in short phrases; only parts `current` has count."""

    def changed(part: str) -> list[str]:
        return _changed_keys(stored.get(part) or {}, current[part] or {}) if part in current else []

    reasons = []
    if changed("model"):
        reasons.append(f"model definition changed ({', '.join(changed('model'))})")
    dataset_fields = changed("dataset")
    if "templates" in dataset_fields:
        reasons.append("templates changed")
        dataset_fields.remove("templates")
    if dataset_fields:
        reasons.append(f"dataset definition changed ({', '.join(dataset_fields)})")
    if "split" in current and stored.get("split") != current["split"]:
        reasons.append("split rule changed")
    if "model_files" in current:
        reasons.append(_files_change(stored.get("model_files", {}), current["model_files"], "model file"))
    if "image_files" in current:
        before = stored.get("image_files", {}).get("paths", {})
        reasons.append(_files_change(before, current["image_files"]["paths"], "image"))
    drafted_before, drafted_now = _draft_method(stored), _draft_method(current)
    if "draft_decode" in current and drafted_before != drafted_now:
        if drafted_before and drafted_now:
            reasons.append(f"draft decoding changed ({drafted_before} -> {drafted_now})")
        else:
            reasons.append(f"draft decoding switched {'on' if drafted_now else 'off'}")
    if changed("images"):
        reasons.append(f"dataset source changed ({', '.join(changed('images'))})")
    if changed("versions"):
        before, after = stored.get("versions", {}), current["versions"]
        moves = [f"{p} {before.get(p, 'none')} → {after.get(p, 'none')}" for p in changed("versions")]
        reasons.append(f"library versions changed ({', '.join(moves)})")
    return [reason for reason in reasons if reason]


def _drafted_by(draft_decode: bool) -> str | None:
    """How a build asked for `draft_decode` decodes, None for full decoding."""
    return DRAFT_METHOD if draft_decode else None


def _draft_method(fingerprint: Mapping[str, Any]) -> str | None:
    """How a split's JPEGs were draft-decoded, None for full decoding (all fingerprints from before draft decoding
    existed)."""
    if not fingerprint.get("draft_decode", False):
        return None
    return fingerprint.get("draft_method") or _PILLOW_DRAFT


@dataclass(frozen=True)
class SplitState:
    """What is known about one cached split's provenance.

    `fingerprint` is the stored one (None when the file has none); `reasons` says why the split is stale, or, for
    unknown provenance, why it cannot be checked."""

    definition: EmbeddingDefinition
    split: Split
    status: Status
    fingerprint: dict[str, Any] | None = None
    reasons: tuple[str, ...] = field(default=())

    @property
    def summary(self) -> str:
        if self.status == "fresh":
            return "up to date"
        return f"{'stale' if self.status == 'stale' else 'provenance unknown'}: {'; '.join(self.reasons)}"


def split_state(
    definition: EmbeddingDefinition,
    split: Split,
    *,
    current: Mapping[str, Any] | None = None,
    memo: Memo | None = None,
) -> SplitState:
    """The provenance of a cached split (which must exist): fresh, stale (with reasons) or unknown.

    Without `current` the cheap reader check runs; `build` passes the full `build_fingerprint`. Share one `memo`
    across calls to stat each folder and read each definition once."""
    split = Split(split)
    stored = load_metadata(definition, split).get("fingerprint")
    if stored is None:
        return SplitState(
            definition, split, "unknown", None, ("no fingerprint: built by the original tool or an older tti-eval",)
        )
    memo = {} if memo is None else memo
    model = _memo_spec(ModelProvider.registry, definition.model, memo)
    dataset = _memo_spec(DatasetProvider.registry, definition.dataset, memo)
    missing = [
        f"{kind} '{title}' has no definition"
        for kind, title, spec in (("model", definition.model, model), ("dataset", definition.dataset, dataset))
        if spec is None
    ]
    if missing:
        return SplitState(definition, split, "unknown", stored, tuple(missing))
    current = current if current is not None else _reader_fingerprint(model, dataset, stored, memo)
    reasons = explain_changes(stored, current)
    return SplitState(definition, split, "stale" if reasons else "fresh", stored, tuple(reasons))


def kept_as_cached(
    definition: EmbeddingDefinition, split: Split, draft_decode: bool = False, memo: Memo | None = None
) -> bool:
    """Whether `build` can keep a cached split without opening its dataset or loading its model (so without importing
    torch): the file is complete, its fingerprint is fresh by the readers' check, it was decoded as `draft_decode`
    asks, and nothing in it needs the dataset's type to re-check: no source identity of the type's own (for local
    sources the recorded file stats already say whether the images changed), or one that cannot have changed (a hub
    dataset's fingerprint while HF_HUB_OFFLINE is set), but not Encord's label versions.

    False leaves the decision to the full check, which opens the dataset: a missing, damaged or stale file, unknown
    provenance, or a source only its type can check."""
    from tti_eval.common.cache import array_shapes, embedding_path
    from tti_eval.common.errors import CacheError

    if not embedding_path(definition, split).is_file():
        return False
    try:
        array_shapes(definition, split)  # a 0-byte or truncated file is not "already cached"
        state = split_state(definition, split, memo=memo)
    except CacheError:
        return False
    if state.status != "fresh" or _draft_method(state.fingerprint) != _drafted_by(draft_decode):
        return False
    return (
        not state.fingerprint.get("images")
        or DatasetProvider.registry.spec(definition.dataset).source_identity_is_pinned()
    )


def pairs_kept_as_cached(
    pairs: Iterable[EmbeddingDefinition], splits: Iterable[Split], draft_decode: bool = False
) -> list[EmbeddingDefinition]:
    """The pairs whose every split in `splits` `build` keeps as cached without loading anything (`kept_as_cached`)."""
    memo: Memo = {}
    splits = [Split(split) for split in splits]
    return [pair for pair in pairs if all(kept_as_cached(pair, split, draft_decode, memo) for split in splits)]


def stale_warnings(pairs: Iterable[EmbeddingDefinition], splits: Iterable[Split]) -> list[str]:
    """One sentence per pair whose cached splits among `splits` are stale, naming the command that rebuilds them.

    Missing or unreadable files are left to the reader, which has its own sentence for them."""
    from tti_eval.common.cache import build_command, embeddings_exist
    from tti_eval.common.errors import CacheError

    memo: Memo = {}
    splits = [Split(split) for split in splits]
    warnings = []
    for pair in pairs:
        stale = []
        for split in (s for s in splits if embeddings_exist(pair, s)):
            try:
                stale.append(split_state(pair, split, memo=memo))
            except CacheError:
                continue
        stale = [state for state in stale if state.status == "stale"]
        if not stale:
            continue
        reasons = dict.fromkeys(reason for state in stale for reason in state.reasons)
        names = [state.split.value for state in stale]
        defaults = {Split.TRAIN, Split.VALIDATION}
        options = "" if {s.split for s in stale} <= defaults else "".join(f" --split {name}" for name in names)
        warnings.append(
            f"The cached {' and '.join(names)} embeddings of {pair} are stale ({'; '.join(reasons)}); "
            f"rebuild them with `{build_command(pair)}{options}`."
        )
    return warnings
