"""hmum explain: permutation importance on the predicted uplift ranks a planted driver first."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hmum.data.schema import FeatureSpec, ResponseSpec, Schema
from hmum.data.validate import validate_table
from hmum.workflows.explain import permutation_importance
from tests.cli_output import assert_one_line_error, flat

FEATURES = ["age", "region", "driver", "noise"]


class LinearUplift:
    """A model whose uplift is known: tau[:, 0, 0] = 2 * driver, tau[:, 1, 1] = age."""

    def __init__(self, schema):
        self.schema = schema

    def predict_uplift(self, data):
        f = data.features
        d = f.column("driver").to_numpy()
        a = f.column("age").to_numpy()
        tau = np.zeros((len(data), 2, 2))
        tau[:, 0, 0] = 2 * d
        tau[:, 1, 1] = a
        return tau


def _frame(n, seed):
    """A user's own format: uplift of promo_a on minutes driven by 'driver' only."""
    rng = np.random.default_rng(seed)
    age, driver, noise = rng.normal(size=(3, n))
    region = rng.choice(["n", "s", "e"], n)
    group = rng.choice(["ctl", "promo_a", "promo_b"], n)
    minutes = 8 + age + 0.5 * (region == "n") + 2.0 * (group == "promo_a") * driver
    plays = 3 + 0.5 * age + 0.3 * (group == "promo_b")
    return pd.DataFrame({"age": age, "region": region, "driver": driver, "noise": noise,
                         "group": group, "minutes": minutes + 0.3 * rng.normal(size=n),
                         "plays": plays + 0.3 * rng.normal(size=n)})


SCHEMA = Schema(features=[FeatureSpec(name="age", kind="numeric"),
                          FeatureSpec(name="region", kind="categorical"),
                          FeatureSpec(name="driver", kind="numeric"),
                          FeatureSpec(name="noise", kind="numeric")],
                arm_column="group", arms=["ctl", "promo_a", "promo_b"],
                responses=[ResponseSpec(name="minutes"), ResponseSpec(name="plays")])


def test_importance_of_a_known_model_hand_checked():
    import pyarrow as pa

    d = validate_table(pa.Table.from_pandas(_frame(2000, 0)), SCHEMA)
    t = permutation_importance(LinearUplift(SCHEMA), d, repeats=3, rows=None)
    assert len(t) == 2 * 2 * 4
    a = t[(t.treatment == "promo_a") & (t.response == "minutes")].set_index("feature")
    # E|2d - 2d'| for independent standard normals = 2 * 2 / sqrt(pi)
    assert a.loc["driver", "importance"] == pytest.approx(4 / np.sqrt(np.pi), rel=0.08)
    assert a.loc["driver", "rank"] == 1 and a.loc["driver", "share"] == pytest.approx(1.0)
    assert a.loc[["age", "region", "noise"], "importance"].max() == 0.0
    b = t[(t.treatment == "promo_b") & (t.response == "plays")].set_index("feature")
    assert b["importance"].idxmax() == "age" and b.loc["age", "std"] > 0
    zero = t[(t.treatment == "promo_b") & (t.response == "minutes")]
    assert (zero["importance"] == 0).all() and (zero["share"] == 0).all()


def test_repeats_validated():
    with pytest.raises(ValueError, match="repeats"):
        permutation_importance(LinearUplift(SCHEMA), None, repeats=0)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from hmum.models.registry import get_model

    out = tmp_path_factory.mktemp("explain")
    df = _frame(6000, 1)
    df.to_csv(out / "users.csv", index=False)
    est = get_model("tlearner", SCHEMA, trainer={"max_epochs": 3, "batch_size": 256, "seed": 0})
    est.fit(df)
    est.save(out / "model")
    return out


def test_explain_cli_ranks_the_planted_driver_first(fitted, tmp_path):
    from hmum.cli.app import app

    res = CliRunner().invoke(app, ["explain", "--model", str(fitted / "model"), "--data",
                                   str(fitted / "users.csv"), "--repeats", "2", "--rows",
                                   "3000", "--out", str(tmp_path / "ex")])
    assert res.exit_code == 0, res.output
    assert "promo_a on minutes" in flat(res)
    t = pd.read_csv(tmp_path / "ex" / "importance.csv")
    a = t[(t.treatment == "promo_a") & (t.response == "minutes")].set_index("feature")
    assert a["importance"].idxmax() == "driver", a
    assert a.loc["driver", "importance"] > 3 * a.drop(index="driver")["importance"].max()
    for k in ("promo_a", "promo_b"):
        for r in ("minutes", "plays"):
            assert (tmp_path / "ex" / f"importance_{k}_{r}.png").stat().st_size > 1000
    assert (tmp_path / "ex" / "importance.md").read_text().count("| rank |") == 4


def test_explain_cli_errors(fitted, tmp_path):
    from hmum.cli.app import app

    res = CliRunner().invoke(app, ["explain", "--model", str(fitted / "model"), "--data",
                                   str(fitted / "users.csv"), "--repeats", "0", "--out",
                                   str(tmp_path / "ex")])
    assert_one_line_error(res, "--repeats", ">= 1")
