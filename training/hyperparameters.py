"""Typed hyperparameters from what the sagemaker-training toolkit decoded.

SageMaker clients encode values three ways (raw strings, ``json.dumps``, ``str()``); the
toolkit ``json.loads`` each and keeps the raw string when that fails. So ``epochs`` arrives
as 3 or "3", and a boolean as true or "True": coerce each with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lineage.errors import LineageError
from lineage.transforms import DEFAULT_IMAGE_SIZE


class HyperparameterError(LineageError):
    pass


@dataclass(frozen=True)
class TrainingHyperparameters:
    dvc_tag: str
    epochs: int = 3
    learning_rate: float = 0.001
    batch_size: int = 64
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 42
    model_name: str | None = None
    pretrained: str = "none"
    register: bool = True
    reproduces: str | None = None  # the run this one re-executes (lineage reproduce --retrain)


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise HyperparameterError(f"hyperparameter {name}={value!r} is not an integer")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise HyperparameterError(
            f"hyperparameter {name}={value!r} is not an integer", f'pass {name} like "3"'
        )
    if number < minimum:
        raise HyperparameterError(f"hyperparameter {name}={number} must be >= {minimum}")
    return number


def _as_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HyperparameterError(
            f"hyperparameter {name}={value!r} is not a number", f'pass {name} like "0.001"'
        ) from None
    if not number > 0:
        raise HyperparameterError(f"hyperparameter {name}={number} must be > 0")
    return number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise HyperparameterError(f"hyperparameter {name}={value!r} is not a boolean")


KNOWN = {
    "dvc_tag",
    "epochs",
    "learning_rate",
    "batch_size",
    "image_size",
    "seed",
    "model_name",
    "pretrained",
    "register",
    "reproduces",
}


def parse(values: dict[str, Any]) -> TrainingHyperparameters:
    unknown = sorted(set(values) - KNOWN)
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameters {unknown}", f"known: {', '.join(sorted(KNOWN))}"
        )
    tag = values.get("dvc_tag")
    if not tag or not isinstance(tag, str | int | float):
        raise HyperparameterError(
            "hyperparameter dvc_tag is missing", "pass the dataset tag printed by `lineage process`"
        )
    defaults = TrainingHyperparameters(dvc_tag=str(tag))
    model_name = values.get("model_name")
    return TrainingHyperparameters(
        dvc_tag=str(tag),
        epochs=_as_int("epochs", values.get("epochs", defaults.epochs), 1),
        learning_rate=_as_float(
            "learning_rate", values.get("learning_rate", defaults.learning_rate)
        ),
        batch_size=_as_int("batch_size", values.get("batch_size", defaults.batch_size), 2),
        image_size=_as_int("image_size", values.get("image_size", defaults.image_size), 32),
        seed=_as_int("seed", values.get("seed", defaults.seed), 0),
        model_name=str(model_name) if model_name not in (None, "") else None,
        pretrained=str(values.get("pretrained", defaults.pretrained)),
        register=_as_bool("register", values.get("register", True)),
        reproduces=str(values["reproduces"]) if values.get("reproduces") else None,
    )
