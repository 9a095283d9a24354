"""A plain folder of images, `root/<split>/<class>/*.jpg`, read directly: no `datasets`, no Arrow cache."""

from pathlib import Path

from tti_eval.common.base import Split
from tti_eval.common.errors import DefinitionError
from tti_eval.dataset.base import IMAGE_SUFFIXES, ImageFileDataset
from tti_eval.dataset.splits import CARVABLE_SPLITS, select_carved_split

# The folder names `datasets`' imagefolder accepts for each split, so both types read the same tree the same way.
SPLIT_FOLDER_NAMES = {
    Split.TRAIN: ("train", "training"),
    Split.VALIDATION: ("validation", "valid", "dev", "val"),
    Split.TEST: ("test", "testing", "eval", "evaluation"),
}


class ImageFolderDataset(ImageFileDataset):
    """`title_in_source` is the root folder. Class names are the sorted class folder names of all splits together, so
    a class keeps its index in every split. Only a tree without a validation folder is carved, by the same rule as
    `HFDataset` (15 % of train per missing split, seed 42): a tree with train and validation folders is used as it is,
    and asking it for a test split it lacks is an error rather than a silent 15 % taken from train. A missing train
    folder is an error.
    """

    def _setup(self) -> None:  # no extra definition fields: the base turns any into a one-sentence error
        root = self._root = Path(self.title_in_source).expanduser()
        if not root.is_dir():
            raise DefinitionError(f"Dataset folder {root} does not exist; fix 'title_in_source' in the definition.")
        folders = {split: self._split_folder(root, split) for split in SPLIT_FOLDER_NAMES}
        if folders[Split.TRAIN] is None:
            raise DefinitionError(
                f"Dataset folder {root} has no train/ folder; lay it out as {root}/train/<class>/<image>."
            )
        class_folders = {split: _class_folders(folder) for split, folder in folders.items() if folder is not None}
        self.class_names = sorted({name for names in class_folders.values() for name in names})
        self._items = self._select_split(folders, class_folders)

    def _split_folder(self, root: Path, split: Split) -> Path | None:
        found = [root / name for name in SPLIT_FOLDER_NAMES[split] if (root / name).is_dir()]
        if len(found) > 1:
            names = ", ".join(folder.name for folder in found)
            raise DefinitionError(f"Dataset folder {root} has several {split.value} folders ({names}); keep one.")
        return found[0] if found else None

    def _list_split(self, class_folders: dict[str, Path]) -> list[tuple[Path, int]]:
        index = {name: i for i, name in enumerate(self.class_names)}
        return [
            (file, index[name])
            for name, folder in sorted(class_folders.items())
            for file in sorted(folder.iterdir())
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
        ]

    def _select_split(
        self, folders: dict[Split, Path | None], class_folders: dict[Split, dict[str, Path]]
    ) -> list[tuple[Path, int]]:
        if self.split is Split.ALL:
            return [item for split in class_folders for item in self._list_split(class_folders[split])]
        if self.split is not Split.TRAIN and folders[self.split] is not None:
            return self._list_split(class_folders[self.split])
        train = self._list_split(class_folders[Split.TRAIN])
        if folders[Split.VALIDATION] is not None:
            if self.split is Split.TEST:
                raise DefinitionError(
                    f"Dataset folder {self._root} has train and validation folders but no test folder; add "
                    f"{self._root}/test/<class>/<image> or leave test out of --split."
                )
            return train
        missing = [split for split in CARVABLE_SPLITS if folders[split] is None]
        return [train[i] for i in select_carved_split(self, len(train), missing)]

    def source_paths(self) -> list[Path]:
        # The whole tree: a split's images depend on the train folder (carving) and on which split folders exist.
        return [self._root]


def _class_folders(split_folder: Path) -> dict[str, Path]:
    # Hidden folders (.ipynb_checkpoints, .git) are tool litter, not classes.
    return {f.name: f for f in split_folder.iterdir() if f.is_dir() and not f.name.startswith(".")}
