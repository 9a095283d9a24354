"""What `--help` says about the built-in evaluators, 2-D reductions and animation defaults, without importing them.

Their declarations (`tti_eval.evaluation`, `tti_eval.plotting.reduction`) import numpy and pydantic, which would make
every start of the command line pay for them; this is a copy of the few words the options need, and
tests/test_startup.py fails when it no longer matches the declarations.
"""

EVALUATOR_DESCRIPTIONS = {  # in the registry's order, the original tool's table order
    "zero_shot": "zero-shot classification by the class (prompt) embeddings",
    "linear_probe": "logistic regression fit on the train images",
    "wKNN": "weighted k-nearest-neighbour vote of train images",
    "I2IR": "image-to-image retrieval of validation images by train images",
}
LINEAR_PROBE_DEFAULTS = {"C": 1.0, "C_grid": (1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3)}
REDUCTIONS = ("umap", "pca", "tsne")
DEFAULT_REDUCTION = "umap"
ANIMATION_FRAMES = 40
