"""Every validation error has a test that checks its message."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmum.data.io import DataError, iter_batches, read_table
from hmum.data.validate import load_experiment, validate_table
from tests.data.test_schema import make_schema


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
