"""The original tool's numpy array type aliases, kept so that code annotated with them runs unchanged.

They are annotations only (`Annotated[NDArray[dtype], shape letters]`); nothing checks shapes at run time."""

from typing import Annotated, Literal, TypeVar

import numpy as np
import numpy.typing as npt

DType = TypeVar("DType", bound=np.generic)

NArray = Annotated[npt.NDArray[DType], Literal["N"]]
NCArray = Annotated[npt.NDArray[DType], Literal["N", "C"]]
NDArray = Annotated[npt.NDArray[DType], Literal["N", "D"]]
N2Array = Annotated[npt.NDArray[DType], Literal["N", 2]]

ProbabilityArray = NCArray[np.float32]
"""[N, C] class probabilities of N samples over C classes."""

ClassArray = NArray[np.int64]
"""[N] class indices (labels and predictions; int64 here, where the original annotated int32)."""

EmbeddingArray = NDArray[np.float32]
"""[N, D] embeddings of N samples in D dimensions."""

ReductionArray = N2Array[np.float32]
"""[N, 2] embeddings reduced to the plane (for plots and animations)."""
