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
#: ``Schema.infer``: an integer feature with at most this many distinct values is a code
CATEGORICAL_MAX_LEVELS = 10


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

    # --- proposing a schema ----------------------------------------------
    @classmethod
    def infer(cls, df, *, arm: str, responses: list[str], user_id: str | None = None,
              control: str | None = None, features: list[str] | None = None) -> Schema:
        """A proposed schema for the pandas DataFrame ``df`` (N rows): check it, save it
        (``to_json``) and edit it.

        * features: ``features``, else every column but the arm, the responses, the user
          id and ground-truth columns (``mu__*``). Numeric dtypes are ``numeric``, except
          integer columns with at most ``CATEGORICAL_MAX_LEVELS`` distinct values (codes);
          strings, booleans and pandas categoricals are ``categorical``.
        * responses: ``binary`` if the values are within {0, 1}, ``count`` if they are
          non-negative integers, else ``continuous`` (``nonnegative`` from the minimum).
        * arms: the arm column's distinct values; control is ``control`` or the first in
          sorted order. An integer arm column holds arm indices (0 = control), named by
          their value.

        Raises ValueError naming a missing column or a response that is not numeric.
        """
        import numpy as np
        import pandas as pd

        named = [arm, *responses, *([user_id] if user_id else [])]
        missing = [c for c in [*named, *(features or [])] if c not in df.columns]
        if missing:
            raise ValueError(f"column(s) {missing} not in the frame; it has {list(df.columns)}")
        if features is None:
            features = [str(c) for c in df.columns
                        if c not in named and not str(c).startswith(GROUND_TRUTH_PREFIX)]
        feats = []
        for c in features:
            col = df[c]
            if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
                kind = "categorical"
            elif (pd.api.types.is_integer_dtype(col)
                  and col.nunique(dropna=True) <= CATEGORICAL_MAX_LEVELS):
                kind = "categorical"
            else:
                kind = "numeric"
            feats.append(FeatureSpec(name=c, kind=kind))
        specs = []
        for r in responses:
            col = df[r]
            if pd.api.types.is_bool_dtype(col):
                specs.append(ResponseSpec(name=r, kind="binary"))
                continue
            if not pd.api.types.is_numeric_dtype(col):
                raise ValueError(f"response column {r!r}: expected numbers, received dtype "
                                 f"{col.dtype}")
            v = col.dropna().to_numpy(dtype=np.float64)
            if v.size and np.isin(v, (0.0, 1.0)).all():
                specs.append(ResponseSpec(name=r, kind="binary"))
            elif v.size and (v >= 0).all() and (v == np.round(v)).all():
                specs.append(ResponseSpec(name=r, kind="count"))
            else:
                specs.append(ResponseSpec(name=r, kind="continuous",
                                          nonnegative=bool(v.size and (v >= 0).all())))
        values = df[arm].dropna().unique()
        if pd.api.types.is_integer_dtype(df[arm]):
            names = [str(v) for v in sorted(int(v) for v in values)]
            if names != [str(i) for i in range(len(names))]:
                raise ValueError(f"arm column {arm!r} holds integers {names}: integer arms are "
                                 "indices 0..K (0 = control); map them to 0..K or to names")
            if control is not None and str(control) != names[0]:
                raise ValueError(f"arm column {arm!r} holds integer arm indices, where 0 is "
                                 f"control; control={control!r} cannot be another arm")
        else:
            names = sorted(str(v) for v in values)
            if control is not None:
                if str(control) not in names:
                    raise ValueError(f"control={control!r} is not a value of the arm column "
                                     f"{arm!r}: {names}")
                names.remove(str(control))
                names.insert(0, str(control))
        return cls(features=feats, arm_column=arm, arms=names, responses=specs,
                   user_id=user_id,
                   ground_truth=any(str(c).startswith(GROUND_TRUTH_PREFIX) for c in df.columns))

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
