"""Dataset loaders: small fixtures written in each publisher's layout, then the real
files of ../shared/data (skipped when absent) against their PROVENANCE statistics."""

import gzip

import numpy as np
import pytest

from hmum.data.datasets import (
    DATASETS,
    DatasetNotFoundError,
    load_acic2016,
    load_benchmark,
    load_criteo,
    load_hillstrom,
    load_ihdp,
    load_lazada,
    load_simulator,
    load_social_pressure,
    load_starbucks,
    shared_data_dir,
)
from hmum.exceptions import DataError


def write_csv(path, header, rows, *, gz=False):
    lines = ([",".join(header)] if header else []) + [",".join(map(str, r)) for r in rows]
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def kinds(d):
    return {f.name: f.kind for f in d.schema.features}


def check_split(parts, n_per_arm, sizes_per_arm, key):
    """Parts are disjoint, cover the rows, and hold the expected rows per arm."""
    keys = [set(key(p).tolist()) for p in parts]
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == sum(n_per_arm)
    for p, sizes in zip(parts, sizes_per_arm, strict=True):
        assert np.bincount(p.arm, minlength=len(n_per_arm)).tolist() == sizes


# --------------------------------------------------------------------------------------
# Criteo
# --------------------------------------------------------------------------------------

CRITEO_HEADER = [*(f"f{i}" for i in range(12)), "treatment", "conversion", "visit", "exposure"]


def criteo_rows(n=40):
    rows = []
    for i in range(n):
        treated = int(i % 4 != 0)  # 30 treated, 10 control
        visit = int(i % 5 == 0)
        conv = int(i % 10 == 0)
        expo = int(treated and i % 3 == 0)
        rows.append([float(i), *(round(0.5 * i + j, 3) for j in range(1, 12)),
                     treated, conv, visit, expo])
    return rows


def test_criteo_fixture(tmp_path):
    rows = criteo_rows()
    f = write_csv(tmp_path / "criteo-uplift-v2.1.csv", CRITEO_HEADER, rows)
    d = load_criteo(f)
    assert d.schema.arms == ["control", "treated"] and d.schema.response_names == ["visit"]
    assert d.arm.tolist() == [r[12] for r in rows]
    assert d.y[:, 0].tolist() == [r[14] for r in rows]
    assert set(kinds(d).values()) == {"numeric"} and d.schema.F == 12
    # exposure is post-treatment: kept aside, never a feature
    assert "exposure" not in d.features.column_names
    assert d.extra["exposure"].tolist() == [r[15] for r in rows]
    both = load_criteo(f, responses=("visit", "conversion"))
    assert both.schema.R == 2 and both.y[:, 1].tolist() == [r[13] for r in rows]
    assert both.schema.responses[1].kind == "binary"


def test_criteo_benchmark_split(tmp_path):
    # a gzip file found inside its folder
    write_csv(tmp_path / "criteo-uplift-v2.1.csv.gz", CRITEO_HEADER, criteo_rows(), gz=True)
    (s,) = load_benchmark("criteo", tmp_path, seed=3)
    assert s.name == "criteo"
    # 8:1:1 within each arm: control 10 -> 8/1/1, treated 30 -> 24/3/3
    check_split([s.train, s.valid, s.test], [10, 30], [[8, 24], [1, 3], [1, 3]],
                key=lambda p: p.features.column("f0").to_numpy())
    (again,) = load_benchmark("criteo", tmp_path, seed=3)
    assert again.test.features.column("f0").to_pylist() == s.test.features.column("f0").to_pylist()
    others = [load_benchmark("criteo", tmp_path, seed=k)[0].test.features.column("f0").to_pylist()
              for k in range(4, 8)]
    assert any(o != s.test.features.column("f0").to_pylist() for o in others)


# --------------------------------------------------------------------------------------
# Lazada (DESCN release: lzd_data_public/full_trainset.csv, full_testset.csv)
# --------------------------------------------------------------------------------------

LAZADA_HEADER = ["data_id", "label", "is_treat", *(f"f{i}" for i in range(83))]


def lazada_rows(n, start, n_treated):
    return [[start + i, int(i % 3 == 0), int(i < n_treated),
             *(round(0.1 * i + j, 2) for j in range(83))] for i in range(n)]


@pytest.fixture
def lazada_dir(tmp_path):
    d = tmp_path / "lzd_data_public"
    d.mkdir()
    write_csv(d / "full_trainset.csv", LAZADA_HEADER, lazada_rows(40, 0, 10))  # biased: 10 treated
    write_csv(d / "full_testset.csv", LAZADA_HEADER, lazada_rows(12, 1000, 6))
    return d


def test_lazada_fixture(lazada_dir):
    tt = load_lazada(lazada_dir, categorical=["f0"])
    train, test = tt
    assert train.user_id.tolist() == list(range(40))
    assert test.user_id.tolist() == list(range(1000, 1012))
    assert train.arm.tolist() == [int(i < 10) for i in range(40)]
    assert test.y[:, 0].tolist() == [float(i % 3 == 0) for i in range(12)]
    assert train.schema.response_names == ["label"] and train.schema.F == 83
    assert kinds(train)["f0"] == "categorical" and kinds(train)["f1"] == "numeric"

    (s,) = load_benchmark("lazada", lazada_dir, seed=1)
    # train / valid: 9:1 of the biased file per arm (30 control, 10 treated); test: whole file
    check_split([s.train, s.valid], [30, 10], [[27, 9], [3, 1]], key=lambda p: p.user_id)
    assert set(s.train.user_id) | set(s.valid.user_id) == set(range(40))
    assert s.test.user_id.tolist() == list(range(1000, 1012))
    assert not DATASETS["lazada"].randomized


# --------------------------------------------------------------------------------------
# Hillstrom (MineThatData CSV)
# --------------------------------------------------------------------------------------

HILLSTROM_HEADER = ["recency", "history_segment", "history", "mens", "womens", "zip_code",
                    "newbie", "channel", "segment", "visit", "conversion", "spend"]
_SEGMENTS = ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]
_BUCKETS = ["1) $0 - $100", "2) $100 - $200", '"6) $750 - $1,000"']
_ZIPS = ["Surburban", "Rural", "Urban"]
_CHANNELS = ["Phone", "Web", "Multichannel"]


def hillstrom_rows(n=30):
    rows = []
    for i in range(n):
        conv = int(i % 7 == 0)
        rows.append([1 + i % 12, _BUCKETS[i % 3], round(29.99 + 10.5 * i, 2), i % 2,
                     (i + 1) % 2, _ZIPS[i % 3], int(i % 4 == 0), _CHANNELS[(i // 3) % 3],
                     _SEGMENTS[(i // 2) % 3], int(i % 5 == 0 or conv), conv,
                     round(25.5 * conv * (1 + i % 3), 2)])
    return rows


def test_hillstrom_fixture(tmp_path):
    rows = hillstrom_rows()
    f = write_csv(tmp_path / "Kevin_Hillstrom_MineThatData_E-MailAnalytics_DataMiningChallenge_"
                  "2008.03.20.csv", HILLSTROM_HEADER, rows)
    d = load_hillstrom(tmp_path)  # the folder: the file is found by name
    assert d.schema.arms == ["no_email", "mens_email", "womens_email"]
    assert d.arm.tolist() == [_SEGMENTS.index(r[8]) for r in rows]
    assert d.schema.response_names == ["visit", "conversion", "spend"]
    assert [r.kind for r in d.schema.responses] == ["binary", "binary", "continuous"]
    assert d.schema.responses[2].nonnegative
    np.testing.assert_array_equal(d.y, np.array([r[9:12] for r in rows], dtype=float))
    k = kinds(d)
    assert k["recency"] == k["history"] == "numeric"
    assert {k[c] for c in ("history_segment", "mens", "womens", "zip_code", "newbie",
                           "channel")} == {"categorical"}
    assert d.features.column("history_segment")[2].as_py() == "6) $750 - $1,000"
    assert "segment" not in d.features.column_names

    spend = load_hillstrom(f, responses=["spend"])
    assert spend.schema.R == 1 and spend.y[:, 0].max() == pytest.approx(76.5)
    (s,) = load_benchmark("hillstrom", f, seed=0)
    check_split([s.train, s.valid, s.test], [10, 10, 10],
                [[8, 8, 8], [1, 1, 1], [1, 1, 1]],
                key=lambda p: p.features.column("history").to_numpy())


# --------------------------------------------------------------------------------------
# Starbucks, social pressure
# --------------------------------------------------------------------------------------

STARBUCKS_HEADER = ["ID", "Promotion", "purchase", *(f"V{i}" for i in range(1, 8))]


def starbucks_rows(n, start):
    return [[start + i, "Yes" if i % 2 else "No", int(i % 5 == 1), i % 4, 30 + 0.5 * i,
             -1 + 0.1 * i, 1 + i % 2, 1 + i % 4, 1 + i % 3, 1 + i % 2] for i in range(n)]


def test_starbucks_fixture(tmp_path):
    write_csv(tmp_path / "Training.csv", STARBUCKS_HEADER, starbucks_rows(40, 1))
    write_csv(tmp_path / "Test.csv", STARBUCKS_HEADER, starbucks_rows(10, 500))
    train, test = load_starbucks(tmp_path)
    assert train.schema.arms == ["no_promotion", "promotion"]
    assert train.arm.tolist() == [i % 2 for i in range(40)]
    assert train.y[:, 0].tolist() == [float(i % 5 == 1) for i in range(40)]
    assert test.user_id.tolist() == list(range(500, 510))
    k = kinds(train)
    assert k["V2"] == k["V3"] == "numeric"
    assert {k[f"V{i}"] for i in (1, 4, 5, 6, 7)} == {"categorical"}
    (s,) = load_benchmark("starbucks", tmp_path, seed=2)
    check_split([s.train, s.valid], [20, 20], [[18, 18], [2, 2]], key=lambda p: p.user_id)
    assert s.test.user_id.tolist() == list(range(500, 510))


SOCIAL_HEADER = ["sex", "yob", "g2000", "g2002", "g2004", "p2000", "p2002", "p2004",
                 "treatment", "voted", "hh_size"]
_SOCIAL_ARMS = [" Control", " Civic Duty", " Hawthorne", " Self", " Neighbors"]


def test_social_pressure_fixture(tmp_path):
    rows = [["male" if i % 2 else "female", 1940 + i, "yes", "no" if i % 3 else "yes", "yes",
             "no", "yes" if i % 2 else "no", "Yes" if i % 4 == 0 else "No",
             _SOCIAL_ARMS[i % 5], "Yes" if i % 3 == 0 else "No", 1 + i % 4] for i in range(50)]
    f = write_csv(tmp_path / "social_pressure.csv", SOCIAL_HEADER, rows)
    d = load_social_pressure(f)
    assert d.schema.arms == ["control", "civic_duty", "hawthorne", "self", "neighbors"]
    assert d.arm.tolist() == [i % 5 for i in range(50)]
    assert d.y[:, 0].tolist() == [float(i % 3 == 0) for i in range(50)]
    assert d.schema.responses[0].kind == "binary"
    # capitalised answers (p2004) become the same categories as the others
    assert d.features.column("p2004").to_pylist()[:2] == ["yes", "no"]
    k = kinds(d)
    assert k["yob"] == k["hh_size"] == "numeric" and k["sex"] == "categorical"
    (s,) = load_benchmark("social_pressure", tmp_path, seed=0)
    check_split([s.train, s.valid, s.test], [10] * 5, [[8] * 5, [1] * 5, [1] * 5],
                key=lambda p: p.features.column("yob").to_numpy())


# --------------------------------------------------------------------------------------
# IHDP, ACIC 2016
# --------------------------------------------------------------------------------------


def ihdp_rows(rep, n=20):
    rows = []
    for i in range(n):
        t = int(i % 4 == 0)
        mu0, mu1 = rep + 0.1 * i, rep + 0.1 * i + 4.0
        yf = (mu1 if t else mu0) + 0.01
        ycf = (mu0 if t else mu1) - 0.01
        rows.append([t, yf, ycf, mu0, mu1, *(round(0.3 * i - j, 2) for j in range(6)),
                     *((i + j) % 2 for j in range(19))])
    return rows


@pytest.fixture
def ihdp_dir(tmp_path):
    for rep in (1, 2, 10):
        write_csv(tmp_path / f"ihdp_npci_{rep}.csv.gz", None, ihdp_rows(rep), gz=True)
    return tmp_path


def test_ihdp_fixture(ihdp_dir):
    reps = load_ihdp(ihdp_dir)
    assert len(reps) == 3
    # sorted by replication number (1, 2, 10), not by name
    assert [d.mu[0, 0, 0] for d in reps] == pytest.approx([1.0, 2.0, 10.0])
    d = reps[0]
    rows = ihdp_rows(1)
    assert d.arm.tolist() == [r[0] for r in rows]
    assert d.mu.shape == (20, 2, 1) and d.schema.response_names == ["y"]
    np.testing.assert_allclose(d.tau[:, 0, 0], 4.0)
    np.testing.assert_allclose(d.y[:, 0], [r[1] for r in rows])
    np.testing.assert_allclose(d.extra["y_cfactual"][:, 0], [r[2] for r in rows])
    assert not d.schema.responses[0].nonnegative
    k = kinds(d)
    assert k["x1"] == k["x6"] == "numeric" and k["x7"] == k["x25"] == "categorical"

    assert [x.mu[0, 0, 0] for x in load_ihdp(ihdp_dir, replications=[10])] == [10.0]
    splits = load_benchmark("ihdp", ihdp_dir, seed=0, replications=2)
    assert [s.name for s in splits] == ["ihdp/1", "ihdp/2"]
    # 63/27/10 within each arm, cuts at round(0.63 n) and round(0.9 n):
    # control 15 -> 9/5/1, treated 5 -> 3/1/1
    s = splits[0]
    check_split([s.train, s.valid, s.test], [15, 5], [[9, 3], [5, 1], [1, 1]],
                key=lambda p: p.features.column("x1").to_numpy())
    assert s.test.mu is not None and s.test.mu.shape == (len(s.test), 2, 1)


def test_ihdp_header_accepted(tmp_path):
    from hmum.data.datasets.semisynthetic import IHDP_COLUMNS

    f = write_csv(tmp_path / "ihdp_npci_4.csv", IHDP_COLUMNS, ihdp_rows(4))
    (d,) = load_ihdp(f)
    assert d.mu[0, 1, 0] == pytest.approx(8.0)


def acic_x_rows(n):
    rows = []
    for i in range(n):
        r = [round(20 + i * 0.5, 1) for _ in range(58)]
        r[1], r[20], r[23] = f'"{"ABC"[i % 3]}"', f'"{"JK"[i % 2]}"', f'"{"BDE"[i % 3]}"'
        r[2] = i % 2
        rows.append(r)
    return rows


def acic_sim_rows(n, k):
    return [[int(i % 3 == 0), 1.0 * i, 1.0 * i + k, 0.5 * i, 0.5 * i + k] for i in range(n)]


@pytest.fixture
def acic_dir(tmp_path):
    write_csv(tmp_path / "x.csv", [f'"x_{i}"' for i in range(1, 59)], acic_x_rows(30))
    for k in (1, 2):
        write_csv(tmp_path / f"zymu_{k}.csv", ['"z"', '"y0"', '"y1"', '"mu0"', '"mu1"'],
                  acic_sim_rows(30, k))
    return tmp_path


def test_acic_fixture(acic_dir):
    d1, d2 = load_acic2016(acic_dir)
    z = np.array([int(i % 3 == 0) for i in range(30)])
    assert d1.arm.tolist() == z.tolist()
    # observed y: y1 (= i + k) where z = 1, else y0 (= i)
    np.testing.assert_allclose(d2.y[:, 0], np.arange(30) + 2 * z)
    np.testing.assert_allclose(d2.extra["y_cfactual"][:, 0], np.arange(30) + 2 * (1 - z))
    np.testing.assert_allclose(d1.tau[:, 0, 0], 1.0)
    np.testing.assert_allclose(d2.tau[:, 0, 0], 2.0)
    k = kinds(d1)
    assert [c for c, v in k.items() if v == "categorical"] == ["x_2", "x_21", "x_24"]
    assert d1.features.column("x_2").to_pylist()[:3] == ["A", "B", "C"]
    splits = load_benchmark("acic2016", acic_dir, seed=5, replications=[2])
    assert [s.name for s in splits] == ["acic2016/2"]
    assert sum(len(p) for p in (splits[0].train, splits[0].valid, splits[0].test)) == 30


def test_acic_rows_must_align(acic_dir):
    write_csv(acic_dir / "zymu_3.csv", ["z", "y0", "y1", "mu0", "mu1"], acic_sim_rows(29, 3))
    with pytest.raises(DataError, match="29 rows"):
        load_acic2016(acic_dir, replications=[3])


# --------------------------------------------------------------------------------------
# Simulator, registry
# --------------------------------------------------------------------------------------


def test_simulator_in_memory_and_from_folder(tmp_path):
    from hmum.data.simulator import SimulatorConfig, simulate

    d = load_simulator(n_users=300, seed=4)
    assert len(d) == 300 and d.schema.K == 2 and d.schema.R == 2
    assert d.mu.shape == (300, 3, 2) and d.mu_all.shape == (300, 2)
    splits = load_benchmark("simulator", n_users=300, seed=4, eval_users=0)
    again = load_benchmark("simulator", n_users=300, seed=4, eval_users=0)
    np.testing.assert_array_equal(splits[0].test.y, again[0].test.y)
    assert sum(len(p) for p in (splits[0].train, splits[0].valid, splits[0].test)) == 300
    # default: the test rows are a fresh population of another seed, with its truth
    fresh = load_benchmark("simulator", n_users=300, seed=4, eval_users=500)[0]
    np.testing.assert_array_equal(fresh.train.y, splits[0].train.y)
    assert len(fresh.test) == 500 and fresh.test.mu.shape == (500, 3, 2)
    other = load_simulator(n_users=500, seed=4)
    assert not np.allclose(fresh.test.mu, other.mu)  # not the training seed's users

    simulate(SimulatorConfig(n_users=200, seed=4, n_requests=10, n_items=100), tmp_path)
    disk = load_simulator(tmp_path)
    mem = load_simulator(n_users=200, seed=4)
    np.testing.assert_allclose(disk.mu, mem.mu, rtol=1e-6)
    np.testing.assert_array_equal(disk.arm, mem.arm)


def test_registry_and_shared_dir(tmp_path, monkeypatch):
    assert set(DATASETS) == {"simulator", "criteo", "lazada", "hillstrom", "starbucks",
                             "social_pressure", "ihdp", "acic2016"}
    assert DATASETS["ihdp"].ground_truth and not DATASETS["criteo"].ground_truth
    monkeypatch.setenv("HMUM_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path
    with pytest.raises(DatasetNotFoundError, match="criteo_uplift_sample10k"):
        load_criteo()
    monkeypatch.setenv("HMUM_DATA", str(tmp_path / "nowhere"))
    assert shared_data_dir() is None


def _isolated(monkeypatch, cwd):
    """No data-home variable set; the current folder is ``cwd``."""
    monkeypatch.delenv("HMUM_DATA", raising=False)
    monkeypatch.delenv("HMUM_SHARED_DATA", raising=False)
    monkeypatch.chdir(cwd)


def test_data_home_order_path_then_env_then_dev_default(tmp_path, monkeypatch):
    """Issue 14 #7: path=, then $HMUM_DATA, then ../shared/data relative to the current
    folder; nothing relative to where hmum is installed."""
    rows, header = criteo_rows(), CRITEO_HEADER
    homes = {}
    for name in ("env", "dev", "explicit"):
        folder = tmp_path / name / "shared" / "data" / "criteo_uplift_sample10k"
        folder.mkdir(parents=True)
        write_csv(folder / "criteo.csv", header, rows[: {"env": 40, "dev": 30,
                                                         "explicit": 20}[name]])
        homes[name] = folder.parent
    work = tmp_path / "dev" / "checkout"
    work.mkdir()
    _isolated(monkeypatch, work)
    # 3. the development default, relative to the current folder
    assert shared_data_dir() == homes["dev"]
    assert len(load_criteo()) == 30
    # 2. $HMUM_DATA wins over it (and its older name still works)
    monkeypatch.setenv("HMUM_SHARED_DATA", str(homes["env"]))
    assert shared_data_dir() == homes["env"]
    monkeypatch.delenv("HMUM_SHARED_DATA")
    monkeypatch.setenv("HMUM_DATA", str(homes["env"]))
    assert shared_data_dir() == homes["env"] and len(load_criteo()) == 40
    # 1. an explicit path wins over both
    assert len(load_criteo(homes["explicit"] / "criteo_uplift_sample10k")) == 20


def test_no_data_home_names_all_three_places(tmp_path, monkeypatch):
    _isolated(monkeypatch, tmp_path)  # no ../shared/data beside tmp_path
    assert shared_data_dir() is None
    with pytest.raises(DatasetNotFoundError) as e:
        load_criteo()
    msg = str(e.value)
    assert "criteo: no data folder found" in msg
    assert "--path on the command line, path= in Python" in msg
    assert "$HMUM_DATA is not set" in msg
    assert f"{(tmp_path / '..' / 'shared' / 'data').resolve()} does not exist" in msg
    monkeypatch.setenv("HMUM_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match=r"\$HMUM_DATA is .*nowhere, which is not a "
                       "folder"):
        load_criteo()


def test_data_home_without_the_dataset_names_the_folder(tmp_path, monkeypatch):
    _isolated(monkeypatch, tmp_path)
    monkeypatch.setenv("HMUM_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"starbucks_promotion does not exist .*"
                       r"from \$HMUM_DATA"):
        load_starbucks()


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_missing_column_names_expected_and_found(tmp_path):
    rows = [r[:8] + r[9:] for r in hillstrom_rows()]  # no "segment"
    f = write_csv(tmp_path / "hillstrom.csv", HILLSTROM_HEADER[:8] + HILLSTROM_HEADER[9:], rows)
    with pytest.raises(DataError) as e:
        load_hillstrom(f)
    msg = str(e.value)
    assert "hillstrom" in msg and "missing column(s) [segment]" in msg
    assert "expected columns [recency, history_segment" in msg and "found columns" in msg


def test_lazada_missing_features_compact_message(lazada_dir):
    header = LAZADA_HEADER[:-2]
    write_csv(lazada_dir / "full_testset.csv", header, [r[:-2] for r in lazada_rows(5, 0, 2)])
    with pytest.raises(DataError, match=r"missing column\(s\) \[f81, f82\].*f0\.\.f82"):
        load_lazada(lazada_dir)


def test_wrong_path_names_path_and_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_starbucks(tmp_path / "nope")
    assert isinstance(e.value, DataError)
    assert "nope" in str(e.value) and "Training.csv" in str(e.value)


def test_folder_without_the_file(tmp_path):
    write_csv(tmp_path / "Training.csv", STARBUCKS_HEADER, starbucks_rows(4, 1))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetNotFoundError, match=r"Test\.csv.*'Training\.csv', 'notes\.txt'"):
        load_starbucks(tmp_path)


def test_unknown_arm_value(tmp_path):
    rows = starbucks_rows(6, 1)
    rows[3][1] = "Maybe"
    write_csv(tmp_path / "Training.csv", STARBUCKS_HEADER, rows)
    write_csv(tmp_path / "Test.csv", STARBUCKS_HEADER, starbucks_rows(4, 100))
    with pytest.raises(DataError, match=r"'Promotion'.*\['No', 'Yes'\].*'Maybe'"):
        load_starbucks(tmp_path)


def test_bad_response_value_gets_standard_error(tmp_path):
    rows = criteo_rows()
    rows[5][14] = 2  # visit
    f = write_csv(tmp_path / "criteo.csv", CRITEO_HEADER, rows)
    with pytest.raises(DataError, match="response 'visit': expected binary values 0/1"):
        load_criteo(f)


def test_not_shipped_needs_path():
    with pytest.raises(DataError, match="pass path="):
        load_benchmark("lazada")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'movielens'"):
        load_benchmark("movielens")
    with pytest.raises(ValueError, match="responses must be"):
        load_criteo(tmp_path, responses=("exposure",))


def test_ihdp_wrong_column_count(tmp_path):
    write_csv(tmp_path / "ihdp_npci_1.csv", None, [r[:-1] for r in ihdp_rows(1)])
    with pytest.raises(DataError, match="29 fields.*expected 30 columns"):
        load_ihdp(tmp_path)


# --------------------------------------------------------------------------------------
# the real files (../shared/data), against their PROVENANCE.md statistics
# --------------------------------------------------------------------------------------


def test_real_criteo(shared_data):
    d = load_criteo(shared_data / "criteo_uplift_sample10k", responses=("visit", "conversion"))
    assert len(d) == 10_000
    assert np.bincount(d.arm).tolist() == [1_466, 8_534]
    np.testing.assert_allclose(d.y[d.arm == 1].mean(0), [0.05074, 0.00316], atol=5e-6)
    np.testing.assert_allclose(d.y[d.arm == 0].mean(0), [0.03206, 0.00136], atol=5e-6)
    assert d.extra["exposure"].sum() == 341 and d.extra["exposure"][d.arm == 0].sum() == 0
    (s,) = load_benchmark("criteo", shared_data / "criteo_uplift_sample10k")
    assert (len(s.train), len(s.valid), len(s.test)) == (8_000, 1_000, 1_000)


def test_real_starbucks(shared_data):
    train, test = load_starbucks(shared_data / "starbucks_promotion")
    for d, n, counts, rates in ((train, 84_534, [42_170, 42_364], [0.00756, 0.01702]),
                                (test, 41_650, [20_902, 20_748], [0.00675, 0.01634])):
        assert len(d) == n and np.bincount(d.arm).tolist() == counts
        np.testing.assert_allclose([d.y[d.arm == a, 0].mean() for a in (0, 1)], rates,
                                   atol=5e-6)
    assert not set(train.user_id) & set(test.user_id)


def test_real_social_pressure(shared_data):
    d = load_social_pressure(shared_data / "social_pressure_ggl2008")
    assert len(d) == 344_084 and d.schema.K == 4
    assert np.bincount(d.arm).tolist() == [191_243, 38_218, 38_204, 38_218, 38_201]
    voted = [d.y[d.arm == a, 0].mean() for a in range(5)]
    np.testing.assert_allclose(voted, [0.29664, 0.31454, 0.32237, 0.34515, 0.37795], atol=5e-6)
    assert set(d.features.column("p2004").to_pylist()) == {"yes", "no"}


IHDP_ATE = [4.0161, 4.0508, 4.0992, 4.2737, 4.1624, 4.0040, 3.9905, 3.8537, 10.4660, 4.5860]


def test_real_ihdp(shared_data):
    reps = load_ihdp(shared_data / "ihdp_npci")
    assert len(reps) == 10
    for d, ate in zip(reps, IHDP_ATE, strict=True):
        assert len(d) == 747 and np.bincount(d.arm).tolist() == [608, 139]
        assert d.tau.mean() == pytest.approx(ate, abs=5e-5)
    np.testing.assert_allclose([reps[0].y[reps[0].arm == a, 0].mean() for a in (0, 1)],
                               [2.4113, 6.4324], atol=5e-5)
    splits = load_benchmark("ihdp", shared_data / "ihdp_npci", replications=2)
    assert [s.name for s in splits] == ["ihdp/1", "ihdp/2"]
    assert [len(splits[0].train), len(splits[0].valid), len(splits[0].test)] == [471, 201, 75]


ACIC_STATS = {1: (858, 2.1281, 7.0286, 3.4467), 2: (1_497, 4.6792, 35.4355, 30.2368),
              10: (1_191, 4.2234, -34.1121, -38.5444)}


def test_real_acic2016(shared_data):
    reps = load_acic2016(shared_data / "acic2016", replications=[1, 2, 10])
    for d, (k, (n1, sate, y1, y0)) in zip(reps, ACIC_STATS.items(), strict=True):
        assert len(d) == 4_802 and np.bincount(d.arm).tolist() == [4_802 - n1, n1], k
        assert d.tau.mean() == pytest.approx(sate, abs=5e-5)
        np.testing.assert_allclose([d.y[d.arm == 1, 0].mean(), d.y[d.arm == 0, 0].mean()],
                                   [y1, y0], atol=5e-5)
    assert d.schema.F == 58 and sum(v == "categorical" for v in kinds(d).values()) == 3
