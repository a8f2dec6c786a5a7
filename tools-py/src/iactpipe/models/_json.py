"""JSON encoding of model-file metadata (kept free of heavy imports: event-type files use it too)."""

from pathlib import Path

import numpy as np


def json_default(value):
    """``json.dumps`` default for model metadata: numpy scalars and arrays, paths."""
    if isinstance(value, np.integer | np.floating | np.bool_):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in model metadata")
