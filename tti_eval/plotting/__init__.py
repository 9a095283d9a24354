"""Pictures of cached embeddings and scores.

Submodules are imported on demand (`tti_eval.plotting.animation`, `tti_eval.plotting.reduction`, ...): matplotlib,
scikit-learn and UMAP cost seconds to import, and commands such as `tti-eval list` must not pay for them.
"""
