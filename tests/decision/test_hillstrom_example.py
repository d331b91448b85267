"""The Hillstrom decision example (examples/hillstrom_decisions.py) on a generated fixture."""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hillstrom_decisions.py"
HEADER = ["recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie",
          "channel", "segment", "visit", "conversion", "spend"]
BUCKETS = ["1) $0 - $100", "2) $100 - $200", "6) $750 - $1,000"]
SEGMENTS = ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]


def write_fixture(path: Path, n: int = 3000, seed: int = 0) -> Path:
    """A CSV in the publisher's format with planted effects: the Mens e-mail lifts visits of
    customers who bought men's merchandise, the Womens e-mail those of women's buyers."""
    rng = np.random.default_rng(seed)
    mens = rng.integers(0, 2, n)
    womens = np.where(mens == 1, rng.integers(0, 2, n), 1)
    seg = rng.integers(0, 3, n)
    p = 0.10 + 0.15 * ((seg == 1) & (mens == 1)) + 0.15 * ((seg == 2) & (womens == 1))
    visit = (rng.random(n) < p).astype(int)
    conv = visit * (rng.random(n) < 0.2)
    spend = np.round(conv * rng.gamma(2.0, 50.0, n), 2)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)  # quotes the history buckets that hold a comma, as the file does
        wr.writerow(HEADER)
        for i in range(n):
            wr.writerow([int(rng.integers(1, 13)), BUCKETS[i % 3], round(float(rng.gamma(2, 120)),
                                                                         2),
                         mens[i], womens[i], ["Urban", "Surburban", "Rural"][i % 3],
                         int(rng.integers(0, 2)), ["Phone", "Web", "Multichannel"][i % 3],
                         SEGMENTS[seg[i]], visit[i], int(conv[i]), spend[i]])
    return path


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hillstrom_decisions", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(example, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hill")
    csv_path = write_fixture(tmp / "Kevin_Hillstrom_MineThatData_E-MailAnalytics_"
                                   "DataMiningChallenge_2008.03.20.csv")
    res = example.main(["--data", str(tmp), "--out", str(tmp / "out"), "--epochs", "10",
                        "--batch-size", "128",
                        "--n-boot", "50", "--threads", "1"])
    return res, tmp / "out", csv_path


def test_example_writes_its_outputs(run):
    res, out, _ = run
    for f in ("ope_table.csv", "ope_table.md", "report.md", "decision_config/decision.json",
              "decision_config/manifest.json"):
        assert (out / f).is_file(), f
    from hmum.decision.rules import load_rule

    rule = load_rule(out / "decision_config")
    assert rule.weights == "fixed" and rule.mode == "exclusive"
    assert rule.guardrails == [{"response": "visit", "floor": 0.0}]


def test_every_strategy_and_estimator_is_scored(run):
    res, _, _ = run
    t = res["table"]
    strategies = set(t.strategy)
    assert {"nobody (no e-mail)", "everyone mens_email", "everyone womens_email", "random",
            "visit only", "spend only"} <= strategies
    assert any(s.startswith("HMUM, business weights") for s in strategies)
    assert any(s.startswith("guardrail visit>=+0%") for s in strategies)
    assert set(t.estimator) == {"ipw", "snipw", "dr"}
    assert len(t) == 3 * len(strategies)
    for r in ("visit", "spend"):
        assert (t[f"change_{r}_lo"] <= t[f"change_{r}"] + 1e-12).all()
        assert (t[f"change_{r}"] <= t[f"change_{r}_hi"] + 1e-12).all()


def test_ipw_of_the_whole_population_strategies_by_hand(run):
    res, _, _ = run
    d = res["evaluation"]
    t = res["table"].set_index(["strategy", "estimator"])
    # IPW of "everyone arm a" with empirical propensities is the arm's mean response
    for a, name in enumerate(["nobody (no e-mail)", "everyone mens_email",
                              "everyone womens_email"]):
        mean = d.y[d.arm == a].mean(axis=0)
        assert t.loc[(name, "ipw"), "value_visit"] == pytest.approx(mean[0], rel=1e-9)
        assert t.loc[(name, "snipw"), "value_spend"] == pytest.approx(mean[1], rel=1e-9)
    # the planted effect: e-mailing everyone raises visits, and the data show it
    assert t.loc[("everyone mens_email", "dr"), "change_visit"] > 0.2


def test_personalized_decision_targets_the_planted_segments(run):
    res, _, _ = run
    d, arms = res["evaluation"], res["arms"]
    a = arms["visit only"]
    mens = d.features.column("mens").to_numpy().astype(str) == "1"
    womens = d.features.column("womens").to_numpy().astype(str) == "1"
    # "visit only" sends someone an e-mail; the Mens e-mail mostly to men's buyers
    assert (a > 0).mean() > 0.5
    assert (a[mens & ~womens] == 1).mean() > (a[~mens & womens] == 1).mean()


def test_bad_weights_stop_with_one_line(example, run):
    _, _, csv_path = run
    with pytest.raises(SystemExit, match="--weights: expected two numbers"):
        example.main(["--data", str(csv_path), "--weights", "1,-1"])
