"""scikit-learn's bundled handwritten digits: real images that ship inside a PyPI package, so no download."""

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tti_eval.common.base import Split
from tti_eval.dataset.base import Dataset
from tti_eval.dataset.images import to_rgb
from tti_eval.dataset.splits import SPLIT_SEED

# Numerals rather than words: they read naturally in prompts ("a handwritten digit 7") and keep plot legends short.
DIGIT_CLASS_NAMES = [str(digit) for digit in range(10)]
HELD_OUT_FRACTION = 0.3  # 70 % train; the held-out part is halved into validation and test (15 % each)


def digits_split_indices(labels: np.ndarray, split: Split) -> np.ndarray:
    """Sorted indices of a split into `labels` (all digits); stratified by class and fixed by `SPLIT_SEED`."""
    everything = np.arange(len(labels))
    if split is Split.ALL:
        return everything
    train, held_out = train_test_split(
        everything, test_size=HELD_OUT_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    validation, test = train_test_split(held_out, test_size=0.5, stratify=labels[held_out], random_state=SPLIT_SEED)
    return np.sort({Split.TRAIN: train, Split.VALIDATION: validation, Split.TEST: test}[split])


class DigitsDataset(Dataset):
    """1,797 scanned 8×8 digits (10 classes) drawn as dark ink on white, upscaled to `image_size` pixels."""

    def _setup(self, image_size: int = 32) -> None:  # an unknown definition field is an error, not ignored
        digits = load_digits()
        self.image_size = image_size
        self.class_names = list(DIGIT_CLASS_NAMES)
        indices = digits_split_indices(digits.target, self.split)
        # Pixel values are ink intensities 0..16; invert so the digits look like ink on paper.
        self._pixels = (255 - np.rint(digits.images[indices] * (255 / 16))).astype(np.uint8)
        self._labels = digits.target[indices].astype(np.int64)

    def __len__(self) -> int:
        return len(self._labels)

    def get_image_and_label(self, index: int) -> tuple[Image.Image, int]:
        image = Image.fromarray(self._pixels[index])  # uint8 [8, 8] -> greyscale
        image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return to_rgb(image), int(self._labels[index])
