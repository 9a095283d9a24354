"""Datasets from the Hugging Face hub, or from a local folder `datasets.load_dataset` understands (e.g. imagefolder)."""

from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from tti_eval.common.base import Split
from tti_eval.common.errors import DefinitionError, TTIEvalError
from tti_eval.common.hub import require_hub
from tti_eval.dataset.base import Dataset
from tti_eval.dataset.images import decode_image
from tti_eval.dataset.spec import check_no_loading_script, local_source
from tti_eval.dataset.splits import CARVABLE_SPLITS, select_carved_split


class HFDataset(Dataset):
    """One split of a `datasets` dataset; `target_feature` names the label column (default `label`).

    Validation/test splits the source lacks are carved from its train split by the original tool's rule
    (`tti_eval.dataset.splits`). Rows are read one at a time by index, so no `datasets` transform or fingerprint
    ever sees the model or the DataLoader.
    """

    image_suffixes = None  # a local source may hold images or data files (parquet, arrow): every file counts

    def _setup(self, target_feature: str = "label", **load_kwargs: Any) -> None:
        splits = self._load(**load_kwargs)
        first = next(iter(splits.values()))
        if target_feature not in first.features:
            columns = ", ".join(first.column_names)
            raise DefinitionError(
                f"Dataset '{self.title}' has no column '{target_feature}' (columns: {columns}); "
                "set 'target_feature' to the label column."
            )
        self._image_column = self._find_image_column(first.features)
        self._target = target_feature
        label_feature = first.features[target_feature]
        if isinstance(label_feature, datasets.ClassLabel):
            self.class_names = list(label_feature.names)
            self._label_index: dict[Any, int] | None = None
        elif isinstance(label_feature, datasets.Value):
            # Labels stored as plain values (often strings): class-encode them over every split, so a class has the
            # same index in train and validation even when one split lacks it.
            values = sorted({value for split in splits.values() for value in split.unique(target_feature)})
            self.class_names = [str(value) for value in values]
            self._label_index = {value: index for index, value in enumerate(values)}
        else:
            raise DefinitionError(
                f"Column '{target_feature}' of dataset '{self.title}' holds {type(label_feature).__name__} values, "
                "not one class per image; set 'target_feature' to a single-label column."
            )
        # Undecoded: `decode_image` reads each row's file or bytes, as for every other dataset type.
        rows = self._select_split(splits).select_columns([self._image_column, target_feature])
        self._rows = rows.cast_column(self._image_column, datasets.Image(decode=False))

    def _load(self, **load_kwargs: Any) -> datasets.DatasetDict:
        local = self._local = local_source(self.title_in_source)
        if local:
            check_no_loading_script(self.title, local)
        source = str(local) if local else self.title_in_source
        if not local:
            require_hub(f"Dataset '{self.title}'", source)
        try:
            loaded = datasets.load_dataset(source, cache_dir=str(self.cache_dir), **load_kwargs)
        except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if local:
                raise TTIEvalError(
                    f"Cannot load dataset '{self.title}' from folder {local} ({reason}); "
                    "check that it holds images in <split>/<class>/ folders."
                ) from None
            raise TTIEvalError(
                f"Cannot load dataset '{self.title}': '{source}' is not on the Hugging Face hub or in the offline "
                f"cache ({reason}); check 'title_in_source' and your network."
            ) from None
        if not isinstance(loaded, datasets.DatasetDict) or not len(loaded):
            raise DefinitionError(f"Dataset '{self.title}' loaded no splits from '{source}'; check 'title_in_source'.")
        self._source_fingerprints = {name: split._fingerprint for name, split in loaded.items()}
        return loaded

    def _find_image_column(self, features: datasets.Features) -> str:
        images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        if not images:
            raise DefinitionError(
                f"Dataset '{self.title}' has no image column (columns: {', '.join(features)}); "
                "point 'title_in_source' at an image dataset."
            )
        return "image" if "image" in images else images[0]

    def _select_split(self, splits: datasets.DatasetDict) -> datasets.Dataset:
        if self.split is Split.ALL:
            return datasets.concatenate_datasets(list(splits.values()))
        if self.split is not Split.TRAIN and self.split.value in splits:
            return splits[self.split.value]
        if Split.TRAIN.value not in splits:
            raise DefinitionError(
                f"Dataset '{self.title}' has no '{self.split.value}' split and no train split to carve it from "
                f"(splits: {', '.join(splits)}); choose another dataset or split."
            )
        train = splits[Split.TRAIN.value]
        missing = [split for split in CARVABLE_SPLITS if split.value not in splits]
        if not missing:
            return train
        return train.select(select_carved_split(self, len(train), missing))

    def source_paths(self) -> list[Path]:
        return [self._local] if self._local else []

    def source_identity(self) -> dict[str, Any]:
        # `datasets` fingerprints each split it loads from what it was built from (for the hub: the repository's
        # revision and data files), and caches that on disk, so this costs nothing beyond the load.
        return {} if self._local else {"fingerprints": self._source_fingerprints}

    def __len__(self) -> int:
        return len(self._rows)

    def get_image_and_label(self, index: int) -> tuple[Image.Image, int]:
        row = self._rows[index]
        label = row[self._target]
        if self._label_index is not None:
            label = self._label_index[label]
        image = row[self._image_column]  # {"bytes": ..., "path": ...}; either may be missing
        item = image["path"] or f"#{index} of the {self.split.value} split"
        return decode_image(image["bytes"] or image["path"], item, self.title, self.min_image_size), int(label)
