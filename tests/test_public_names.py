"""Code written against the original tool imports these names (its `__init__` files, tests and notebooks)."""

import importlib
from typing import get_args

import numpy as np
import numpy.typing as npt
import pytest

ORIGINAL_PUBLIC_NAMES = {
    "tti_eval.common": [
        "ClassArray",
        "EmbeddingArray",
        "EmbeddingDefinition",
        "Embeddings",
        "ProbabilityArray",
        "ReductionArray",
        "Split",
    ],
    "tti_eval.common.base": ["EmbeddingDefinition", "Embeddings", "SafeName", "Split"],
    "tti_eval.common.numpy_types": [
        "ClassArray",
        "DType",
        "EmbeddingArray",
        "N2Array",
        "NArray",
        "NCArray",
        "NDArray",
        "ProbabilityArray",
        "ReductionArray",
    ],
    "tti_eval.compute": ["compute_embeddings_from_definition"],
    "tti_eval.dataset": ["Dataset", "DatasetProvider", "Split"],
    "tti_eval.dataset.types": ["EncordDataset", "HFDataset"],
    "tti_eval.dataset.types.encord_ds": ["EncordDataset"],
    "tti_eval.dataset.types.hugging_face": ["HFDataset"],
    "tti_eval.evaluation": [
        "ClassificationModel",
        "EvaluationModel",
        "I2IRetrievalEvaluator",
        "LinearProbeClassifier",
        "WeightedKNNClassifier",
        "ZeroShotClassifier",
    ],
    "tti_eval.evaluation.base": ["ClassificationModel", "EvaluationModel"],
    "tti_eval.evaluation.knn": ["WeightedKNNClassifier"],
    "tti_eval.evaluation.utils": ["normalize", "softmax"],
    "tti_eval.model": ["Model", "ModelProvider"],
    "tti_eval.model.types": ["HFModel", "LocalCLIPModel", "OpenCLIPModel"],
    "tti_eval.model.types.hugging_face": ["HFModel"],
    "tti_eval.model.types.local_clip_model": ["LocalCLIPModel"],
    "tti_eval.model.types.open_clip_model": ["OpenCLIPModel"],
}


@pytest.mark.parametrize("module", sorted(ORIGINAL_PUBLIC_NAMES))
def test_the_original_tools_public_names_import(module):
    imported = importlib.import_module(module)
    missing = [name for name in ORIGINAL_PUBLIC_NAMES[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lacks {missing}"


def test_array_aliases_describe_numpy_arrays_of_our_dtypes():
    from tti_eval.common import ClassArray, EmbeddingArray, ProbabilityArray, ReductionArray

    assert get_args(EmbeddingArray)[0] == npt.NDArray[np.float32]
    assert get_args(ProbabilityArray)[0] == npt.NDArray[np.float32]
    assert get_args(ReductionArray)[0] == npt.NDArray[np.float32]
    assert get_args(ClassArray)[0] == npt.NDArray[np.int64]  # what labels and predictions are here


def test_type_modules_import_only_the_type_asked_for():
    import subprocess
    import sys

    code = (
        "import sys\nfrom tti_eval.dataset.types import EncordDataset\n"
        "print(sorted({'datasets', 'open_clip', 'transformers'} & set(sys.modules)))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )
