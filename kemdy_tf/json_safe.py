"""Strict-JSON conversion shared by the evaluation and analysis reports."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd


def to_json_safe(value):
    """Plain JSON types: numpy scalars unwrapped, NaN/inf -> None, paths -> str."""
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return to_json_safe(value.to_dict(orient="records"))
    if isinstance(value, np.ndarray):
        return to_json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value
