"""Saving and restoring trained models, so a restarted broker forecasts before it retrains.

A model file is a joblib pickle of ``{"format", "metadata", "model"}``. Loading refuses (with
``IncompatibleModel``) a file of another format, feature version or scikit-learn version:
scikit-learn does not promise that a pickle works across versions, and retraining costs
under a second for the default ridge model, so the caller should retrain rather than risk
a silently different model.

Pickle runs code when loaded: load only files the broker wrote itself, from a directory
only it can write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
import sklearn

from carbon.forecast.features import FEATURE_VERSION
from carbon.forecast.model import TrainedModel

__all__ = ["MODEL_FORMAT", "IncompatibleModel", "load_model", "save_model"]

MODEL_FORMAT = 1


class IncompatibleModel(ValueError):
    """The file is not a model this version of the code can use; retrain instead."""


def save_model(model: TrainedModel, path: str | Path) -> Path:
    """Write `model` to `path` atomically (a temp file renamed over it) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": MODEL_FORMAT, "metadata": model.metadata(), "model": model}
    # Atomic replace: a crash mid-write must not leave a truncated model for the next start.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            joblib.dump(payload, fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_model(path: str | Path, *, zone: str | None = None) -> TrainedModel:
    """The model saved at `path`; `zone`, when given, must match the model's zone."""
    payload: Any = joblib.load(Path(path))
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise IncompatibleModel(f"{path}: not a model file of format {MODEL_FORMAT}")
    model = payload.get("model")
    if not isinstance(model, TrainedModel):
        raise IncompatibleModel(f"{path}: payload holds no TrainedModel")
    if model.spec.version != FEATURE_VERSION:
        raise IncompatibleModel(
            f"{path}: features version {model.spec.version}, this code uses {FEATURE_VERSION}"
        )
    if model.sklearn_version != sklearn.__version__:
        raise IncompatibleModel(
            f"{path}: trained with scikit-learn {model.sklearn_version}, "
            f"running {sklearn.__version__}"
        )
    if zone is not None and model.zone != zone:
        raise IncompatibleModel(f"{path}: model is for zone {model.zone!r}, not {zone!r}")
    return model
