"""Every validation error has a test that checks its message."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmum.data.io import iter_batches, read_table
from hmum.data.validate import load_experiment, validate_table
from hmum.exceptions import DataError
from tests.data.helpers import make_schema


def make_table(n=12, **overrides):
    rng = np.random.default_rng(0)
    cols = {
        "region": pa.array(rng.choice(["north", "south", "east"], n)),
        "age": pa.array(rng.uniform(18, 70, n)),
        "arm": pa.array(np.arange(n) % 3),
        "usage_time": pa.array(rng.exponential(10, n)),
        "views": pa.array(rng.poisson(5, n).astype(float)),
        "user_id": pa.array(np.arange(n)),
    }
    cols.update(overrides)
    return pa.table(cols)


def test_valid_table():
    d = validate_table(make_table(), make_schema())
    assert d.y.shape == (12, 2) and d.arm.dtype == np.int64
    assert d.features.column_names == ["region", "age"]
    assert len(d) == 12 and d.n_dropped == 0


def test_missing_column():
    t = make_table().drop_columns(["views"])
    with pytest.raises(DataError, match=r"missing column\(s\) \['views'\]"):
        validate_table(t, make_schema())


def test_arm_out_of_range():
    t = make_table(arm=pa.array([0, 1, 2, 3] * 3))
    with pytest.raises(DataError, match=r"'arm': expected arm indices in \[0, 2\].*received \[3.0\]"):
        validate_table(t, make_schema())


def test_arm_negative():
    t = make_table(arm=pa.array([0, 1, 2, -1] * 3))
    with pytest.raises(DataError, match=r"received \[-1.0\]"):
        validate_table(t, make_schema())


def test_arm_names_accepted_and_unknown_rejected():
    ok = make_table(arm=pa.array(["control", "t1", "t2"] * 4))
    assert validate_table(ok, make_schema()).arm.tolist() == [0, 1, 2] * 4
    bad = make_table(arm=pa.array(["control", "t1", "t9"] * 4))
    with pytest.raises(DataError, match=r"unknown arm name\(s\) \['t9'\]"):
        validate_table(bad, make_schema())


def test_arm_with_no_rows():
    t = make_table(arm=pa.array([0, 1] * 6))
    with pytest.raises(DataError, match=r"arm\(s\) \['t2'\] have none"):
        validate_table(t, make_schema())


def test_arm_missing_value():
    t = make_table(arm=pa.array([0, 1, None] * 4, type=pa.int64()))
    with pytest.raises(DataError, match="received 4 missing value"):
        validate_table(t, make_schema())


def test_nan_and_inf_response():
    y = np.ones(12)
    y[3], y[7] = np.nan, np.inf
    t = make_table(usage_time=pa.array(y))
    with pytest.raises(DataError, match=r"\['usage_time'\]: expected finite numbers.*2 row\(s\) \(rows \[3, 7\]\)"):
        validate_table(t, make_schema())


def test_drop_invalid_responses_reports_count():
    y = np.ones(12)
    y[3] = np.nan
    d = validate_table(make_table(usage_time=pa.array(y)), make_schema(), drop_invalid_responses=True)
    assert d.n_dropped == 1 and len(d) == 11 and d.arm.shape == (11,)


def test_non_numeric_value_in_numeric_feature():
    ages = ["30", "41", "n/a"] + ["50"] * 9
    t = make_table(age=pa.array(ages))
    with pytest.raises(DataError, match=r"column 'age': expected numeric values, received non-numeric 'n/a' \(row 2\)"):
        validate_table(t, make_schema())


def test_numeric_strings_and_blanks_parse():
    ages = ["30", " 41 ", ""] + ["50"] * 9
    d = validate_table(make_table(age=pa.array(ages)), make_schema())
    age = d.features.column("age").to_numpy()
    assert age[0] == 30 and age[1] == 41 and np.isnan(age[2])


def test_negative_count_rejected():
    t = make_table(views=pa.array([-1.0] + [1.0] * 11))
    with pytest.raises(DataError, match="response 'views': expected a count"):
        validate_table(t, make_schema())


def test_binary_response_values():
    from hmum.data.schema import ResponseSpec
    s = make_schema(responses=[ResponseSpec(name="usage_time", kind="binary")])
    t = make_table(usage_time=pa.array([0.0, 1.0, 2.0] * 4))
    with pytest.raises(DataError, match=r"expected binary values 0/1, received \[2.0\]"):
        validate_table(t, s)


def test_empty_table():
    t = make_table().slice(0, 0)
    with pytest.raises(DataError, match=r"the table is empty \(0 rows\)"):
        validate_table(t, make_schema())


def test_duplicate_column_names_in_table():
    t = make_table()
    t = pa.Table.from_arrays(t.columns + [t.column("age")], names=t.column_names + ["age"])
    with pytest.raises(DataError, match=r"duplicate column names \['age'\]"):
        validate_table(t, make_schema())


def test_scoring_mode_needs_features_only():
    t = make_table().select(["region", "age", "user_id"])
    d = validate_table(t, make_schema(), require_arm=False, require_responses=False)
    assert d.arm is None and d.y is None and d.user_id.tolist() == list(range(12))


# --- files ---------------------------------------------------------------------

def test_empty_csv_file(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(p)


def test_csv_header_only(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("region,age,arm,usage_time,views\n")
    with pytest.raises(DataError, match="header but no rows"):
        read_table(p)


def test_csv_duplicate_column_names(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        read_table(p)


def test_parquet_duplicate_column_names(tmp_path):
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]), p)
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        read_table(p)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "x.xlsx"
    p.write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(p)


def test_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_table(tmp_path / "none.parquet")


def test_missing_column_in_file(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(make_table(), p)
    with pytest.raises(DataError, match=r"missing column\(s\) \['nope'\]"):
        read_table(p, columns=["age", "nope"])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_iter_batches_streams_everything(tmp_path, fmt):
    t = make_table(n=1000)
    p = tmp_path / f"t.{fmt}"
    if fmt == "parquet":
        pq.write_table(t, p, row_group_size=128)
    else:
        import pyarrow.csv as pacsv
        pacsv.write_csv(t, p)
    chunks = list(iter_batches(p, batch_rows=300))
    assert all(c.num_rows <= 300 for c in chunks)
    joined = pa.concat_tables(chunks)
    assert joined.num_rows == 1000
    np.testing.assert_allclose(joined.column("age").to_numpy(), t.column("age").to_numpy())


def test_load_experiment_csv_and_parquet_agree(tmp_path):
    import pyarrow.csv as pacsv
    t = make_table(n=60)
    pq.write_table(t, tmp_path / "t.parquet")
    pacsv.write_csv(t, tmp_path / "t.csv")
    a = load_experiment(tmp_path / "t.parquet", make_schema())
    b = load_experiment(tmp_path / "t.csv", make_schema())
    np.testing.assert_array_equal(a.arm, b.arm)
    np.testing.assert_allclose(a.y, b.y)


def test_check_fit_data_names_what_is_wrong():
    from hmum.data.validate import check_fit_data
    from tests.synth import make_experiment

    d = make_experiment(n=30, K=2, R=1)
    check_fit_data(d, d.schema, "train")  # fine
    with pytest.raises(TypeError, match=r"train: expected ExperimentData .* got dict"):
        check_fit_data({}, d.schema, "train")
    no_y = make_experiment(n=30, K=2, R=1)
    no_y.y = None
    with pytest.raises(ValueError, match="valid: training data needs the arm and the responses"):
        check_fit_data(no_y, d.schema, "valid")
    other = make_experiment(n=30, K=1, R=1)
    with pytest.raises(ValueError, match=r"train: its schema \(arms \['control', 't1'\], responses \['y0'\]\) does not match the estimator's \(arms \['control', 't1', 't2'\]"):
        check_fit_data(other, d.schema, "train")


# --- issue 13: responses a float32 model cannot hold; counts with fractions -------------


def test_response_beyond_float32_refused():
    """1e308 is finite in float64 but inf in float32: the loss went NaN mid-training."""
    y = np.ones(12)
    y[4], y[9] = 1e308, -1e39
    t = make_table(usage_time=pa.array(y))
    with pytest.raises(DataError, match=r"\['usage_time'\]: expected \|value\| <= 3\.403e\+38 .* "
                                        r"received values up to 1e\+308 in 2 row\(s\) \(rows \[4, 9\]\)"):
        validate_table(t, make_schema())


def test_response_at_float32_max_accepted():
    y = np.ones(12)
    y[0] = float(np.finfo(np.float32).max)
    assert validate_table(make_table(usage_time=pa.array(y)), make_schema()).y[0, 0] == y[0]


def test_drop_invalid_responses_drops_out_of_range_rows():
    y = np.ones(12)
    y[4] = 1e308
    d = validate_table(make_table(usage_time=pa.array(y)), make_schema(),
                       drop_invalid_responses=True)
    assert d.n_dropped == 1 and len(d) == 11 and np.abs(d.y).max() < 1e38


def test_fractional_count_refused():
    views = np.arange(12, dtype=float)
    views[2], views[5] = 1.5, 0.25
    t = make_table(views=pa.array(views))
    with pytest.raises(DataError, match=r"response 'views': expected whole numbers \(kind 'count'\), "
                                        r"received fractional values \[0.25, 1.5\] in 2 row\(s\) "
                                        r"\(rows \[2, 5\]\)"):
        validate_table(t, make_schema())


def test_drop_hint_names_the_cli_flag_under_cli_flags():
    from hmum.exceptions import cli_flags

    y = np.ones(12)
    y[3] = np.nan
    t = make_table(usage_time=pa.array(y))
    with pytest.raises(DataError, match=r"pass drop_invalid_responses=True to drop them"):
        validate_table(t, make_schema())
    with cli_flags(drop_invalid_responses="--drop-invalid-responses"):
        with pytest.raises(DataError, match=r"pass --drop-invalid-responses to drop them"):
            validate_table(t, make_schema())


# --- issue 13: file errors name the file; a ';'-separated CSV gets a hint ---------------


def test_semicolon_csv_gets_a_delimiter_hint(tmp_path):
    p = tmp_path / "d.csv"
    make_table().to_pandas().to_csv(p, sep=";", index=False)
    with pytest.raises(DataError, match=r"d\.csv: missing column.*looks ';'-separated.*"
                                        r"comma-separated"):
        load_experiment(p, make_schema())
    with pytest.raises(DataError, match=r"looks ';'-separated"):
        read_table(p, columns=["region"])


def test_corrupt_parquet_error_names_the_file(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(DataError, match=r"broken\.parquet: cannot read it as Parquet: .*magic"):
        load_experiment(p, make_schema())


def test_truncated_parquet_error_names_the_file(tmp_path):
    p = tmp_path / "cut.parquet"
    pq.write_table(make_table(), p)
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"cut\.parquet: cannot read it as Parquet"):
        read_table(p)


# --- issue 13: fingerprints of the table a model was split from --------------------------


def test_fingerprint_depends_on_ids_rows_and_order():
    from hmum.data.validate import data_fingerprint

    s = make_schema()
    d = validate_table(make_table(n=30), s)
    fp = data_fingerprint(d)
    assert fp["rows"] == 30 and fp["key"] == "user_id" and len(fp["hash"]) == 32
    assert data_fingerprint(validate_table(make_table(n=30), s)) == fp  # deterministic
    assert data_fingerprint(d.take(np.arange(29))) != fp  # a subset
    assert data_fingerprint(d.take(np.r_[1, 0, 2:30])) != fp  # same ids, other order
    other = make_table(n=30, user_id=pa.array(np.arange(30) + 1))
    assert data_fingerprint(validate_table(other, s))["hash"] != fp["hash"]
    # without user ids the rows themselves are hashed: any changed value shows
    no_id = make_schema(user_id=None)
    fr = data_fingerprint(validate_table(make_table(n=30), no_id))
    assert fr["key"] == "rows"
    y = make_table(n=30).column("usage_time").to_numpy().copy()
    y[17] += 1e-9
    changed = validate_table(make_table(n=30, usage_time=pa.array(y)), no_id)
    assert data_fingerprint(changed)["hash"] != fr["hash"]


@pytest.mark.parametrize("user_id", [True, False])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_fingerprint_streamed_equals_loaded(tmp_path, user_id, fmt):
    from hmum.data.validate import data_fingerprint, file_fingerprint

    s = make_schema(user_id="user_id" if user_id else None)
    t = make_table(n=500, user_id=pa.array([f"u{i:04d}" for i in range(500)]))
    p = tmp_path / f"d.{fmt}"
    if fmt == "parquet":
        pq.write_table(t, p, row_group_size=70)
    else:
        t.to_pandas().to_csv(p, index=False)
    whole = data_fingerprint(load_experiment(p, s))
    assert whole["key"] == ("user_id" if user_id else "rows")
    assert file_fingerprint(p, s, batch_rows=33) == whole
    assert file_fingerprint(p, s) == whole


def _with_truth(t, schema, joint=("usage_time", "views")):
    """``t`` plus per-arm truth columns and the 'all' ones of the responses ``joint``."""
    from hmum.data.schema import ALL_TREATMENTS, ground_truth_column

    cols = {}
    for i, a in enumerate(schema.arms):
        for r in schema.response_names:
            cols[ground_truth_column(a, r)] = np.full(t.num_rows, 1.0 + i)
    for r in joint:
        cols[ground_truth_column(ALL_TREATMENTS, r)] = np.full(t.num_rows, 9.0)
    for name, v in cols.items():
        t = t.append_column(name, pa.array(v))
    return t


def test_partial_truth_without_the_all_columns_is_accepted():
    from hmum.data.validate import PARTIAL_TRUTH_NOTE, partial_truth

    schema = make_schema().model_copy(update={"ground_truth": True})
    d = validate_table(_with_truth(make_table(), schema, joint=()), schema)
    assert d.mu.shape == (12, 3, 2) and d.mu_all is None and partial_truth(d)
    assert "mu__all__<response>" in PARTIAL_TRUTH_NOTE
    full = validate_table(_with_truth(make_table(), schema), schema)
    assert full.mu_all.shape == (12, 2) and not partial_truth(full)


def test_some_but_not_all_of_the_all_columns_is_refused():
    schema = make_schema().model_copy(update={"ground_truth": True})
    t = _with_truth(make_table(), schema, joint=("views",))
    with pytest.raises(DataError, match=r"missing column\(s\) \['mu__all__usage_time'\]"):
        validate_table(t, schema)


def test_per_arm_truth_is_still_required():
    schema = make_schema().model_copy(update={"ground_truth": True})
    t = _with_truth(make_table(), schema, joint=()).drop_columns(["mu__t1__views"])
    with pytest.raises(DataError, match=r"missing column\(s\) \['mu__t1__views'\]"):
        validate_table(t, schema)
