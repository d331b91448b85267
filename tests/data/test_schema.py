import pytest
from pydantic import ValidationError

from hmum.data.schema import ResponseSpec, Schema, ground_truth_column
from tests.data.helpers import make_schema


def test_sizes_and_columns():
    s = make_schema()
    assert (s.K, s.R, s.F) == (2, 2, 2)
    assert s.input_columns() == ["region", "age", "arm", "usage_time", "views", "user_id"]
    assert s.ground_truth_columns() == {}


def test_json_round_trip(tmp_path):
    s = make_schema(ground_truth=True)
    s.to_json(tmp_path / "schema.json")
    assert Schema.from_json(tmp_path / "schema.json") == s
    gt = s.ground_truth_columns()
    assert gt[("t1", "views")] == ground_truth_column("t1", "views")
    assert ("all", "usage_time") in gt


def test_duplicate_arm_names_rejected():
    with pytest.raises(ValidationError, match="arm names must be unique"):
        make_schema(arms=["c", "t", "t"])


def test_column_with_two_roles_rejected():
    with pytest.raises(ValidationError, match="repeated: \\['age'\\]"):
        make_schema(arm_column="age")


def test_unknown_response_kind_rejected():
    with pytest.raises(ValidationError, match="kind"):
        ResponseSpec(name="x", kind="ordinal")


def test_missing_schema_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="schema file not found"):
        Schema.from_json(tmp_path / "nope.json")


def test_schema_file_not_json(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Schema.from_json(tmp_path / "s.json")


def test_schema_file_errors_are_one_line_naming_file_and_field(tmp_path):
    from hmum.exceptions import ConfigError

    raw = make_schema().model_dump()
    raw["responses"][0]["kind"] = "continous"
    raw["arms"] = ["control"]
    p = tmp_path / "schema.json"
    p.write_text(__import__("json").dumps(raw))
    with pytest.raises(ConfigError) as e:
        Schema.from_json(p)
    msg = str(e.value)
    assert "\n" not in msg and "https://" not in msg
    assert msg.startswith(f"{p}: ")
    assert "arms: expected at least 2 item(s), got ['control']" in msg
    assert "responses[0].kind: expected one of continuous, count, binary, got 'continous'" in msg
