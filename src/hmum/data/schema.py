"""The experiment schema: which columns are features, the arm, the responses.

A schema names, for one randomized-experiment table:

* feature fields, each ``categorical`` or ``numeric`` (F fields in all);
* the arm column and the arm names (``arms[0]`` is control, ``arms[1:]`` are the
  K treatments); the column may hold arm indices 0..K or arm names;
* the R responses with their kind (``continuous``, ``count``, ``binary``);
* optionally a user id column;
* optionally ground-truth columns (simulated data): the true expected value of
  response r under arm a is the column ``ground_truth_column(arm_name, r_name)``,
  and under all treatments together ``ground_truth_column(ALL_TREATMENTS, r_name)``.

Schemas are saved to and loaded from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hmum.exceptions import ConfigError, format_validation_error

FeatureKind = Literal["categorical", "numeric"]
ResponseKind = Literal["continuous", "count", "binary"]

#: Name used in ground-truth columns for "every treatment at once" (e.g. t1 & t2).
ALL_TREATMENTS = "all"
GROUND_TRUTH_PREFIX = "mu__"


def ground_truth_column(arm_name: str, response: str) -> str:
    """Column holding the true E[y_response | x, arm] of simulated data."""
    return f"{GROUND_TRUTH_PREFIX}{arm_name}__{response}"


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    kind: FeatureKind


class ResponseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    kind: ResponseKind = "continuous"
    #: continuous only: False for a response that may be negative (e.g. a profit).
    nonnegative: bool = True


class Schema(BaseModel):
    """Column roles of an experiment table (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    features: list[FeatureSpec] = Field(min_length=1)
    arm_column: str = "arm"
    arms: list[str] = Field(min_length=2, description="arms[0] is control")
    responses: list[ResponseSpec] = Field(min_length=1)
    user_id: str | None = None
    ground_truth: bool = False

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"arm names must be unique, got {v}")
        if ALL_TREATMENTS in v:
            raise ValueError(f"arm name {ALL_TREATMENTS!r} is reserved for ground truth")
        return v

    @model_validator(mode="after")
    def _unique_columns(self) -> Schema:
        cols = self.input_columns()
        seen: set[str] = set()
        dup = sorted({c for c in cols if c in seen or seen.add(c)})
        if dup:
            raise ValueError(f"a column may play only one role; repeated: {dup}")
        return self

    # --- sizes -----------------------------------------------------------
    @property
    def K(self) -> int:  # noqa: N802 - the paper's symbol
        """Number of treatments (arms other than control)."""
        return len(self.arms) - 1

    @property
    def R(self) -> int:  # noqa: N802
        return len(self.responses)

    @property
    def F(self) -> int:  # noqa: N802
        return len(self.features)

    # --- column lists ----------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def response_names(self) -> list[str]:
        return [r.name for r in self.responses]

    def input_columns(self) -> list[str]:
        """Every column the schema reads (features, arm, responses, user id)."""
        cols = [*self.feature_names, self.arm_column, *self.response_names]
        if self.user_id:
            cols.append(self.user_id)
        return cols

    def ground_truth_columns(self) -> dict[tuple[str, str], str]:
        """(arm name or ALL_TREATMENTS, response) -> column, when ground truth is present."""
        if not self.ground_truth:
            return {}
        names = [*self.arms]
        if self.K > 1:
            names.append(ALL_TREATMENTS)
        return {
            (a, r): ground_truth_column(a, r) for a in names for r in self.response_names
        }

    # --- persistence -----------------------------------------------------
    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> Schema:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"schema file not found: {p}")
        try:
            raw = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON: {e}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            # one line naming the file and each field, not pydantic's multi-line dump
            raise ConfigError(format_validation_error(e, source=str(p))) from None
