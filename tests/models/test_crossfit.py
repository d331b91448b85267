"""Cross-fit members and their reliability shrinkage (hmum.models.crossfit,
``TrainerConfig.crossfit``): the statistics against hand-computed values, the combination
of members, the per-fold loss, and fitted models (artifacts, resume, recovery on ground
truth)."""

import numpy as np
import pytest
import torch

from hmum.data.datasets.simulated import bench_simulator
from hmum.metrics.truth import uplift_errors
from hmum.models.crossfit import (
    EVERY_MEMBER,
    CrossFitModule,
    fold_ids,
    member_loss,
    reliability_moments,
    shrinkage,
)
from hmum.models.hum import HUMEstimator
from hmum.models.registry import get_model, load_estimator
from tests.models.helpers import HUM_SMALL, fit_killed_at
from tests.synth import make_experiment


def test_shrinkage_matches_the_hand_computed_reliability():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(50, 1, 2))
    u = np.stack([s + rng.normal(scale=[0.5, 2.0], size=(50, 1, 2)) for _ in range(3)])
    center, alpha = shrinkage(reliability_moments(u))
    bar = u.mean(0)
    for r in range(2):
        a, b, c = (u[j, :, 0, r] for j in range(3))
        cov = np.cov(np.stack([a, b, c]), bias=True)
        off = (cov.sum() - np.trace(cov)) / 6
        assert alpha[0, r] == pytest.approx(np.clip(off / bar[:, 0, r].var(), 0, 1), rel=1e-9)
        assert center[0, r] == pytest.approx(bar[:, 0, r].mean(), rel=1e-9)
    assert alpha[0, 0] > 0.75 > alpha[0, 1] > 0.1  # more noise, more shrinkage


def test_moments_of_parts_add_up_to_the_whole():
    u = np.random.default_rng(1).normal(size=(2, 40, 2, 3))
    a, b = reliability_moments(u[:, :15]), reliability_moments(u[:, 15:])
    whole = shrinkage(reliability_moments(u))
    parts = shrinkage({k: a[k] + b[k] for k in a})
    for w, p in zip(whole, parts, strict=True):
        np.testing.assert_allclose(w, p, rtol=1e-12)


def test_unrelated_members_are_shrunk_to_the_mean_and_constant_uplift_is_kept():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(2, 20_000, 1, 1))  # members that agree on nothing
    center, alpha = shrinkage(reliability_moments(noise))
    assert alpha[0, 0] < 0.03
    flat = np.full((2, 10, 1, 1), 0.3)
    center, alpha = shrinkage(reliability_moments(flat))
    assert alpha[0, 0] == 0.0 and center[0, 0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match=">= 2 members"):
        shrinkage(reliability_moments(noise[:1]))


def test_combine_shrinks_the_log_ratio_or_the_difference():
    mod = CrossFitModule([torch.nn.Identity(), torch.nn.Identity()], [True, False], 1)
    mod.set_shrinkage(np.array([[np.log(1.1), 2.0]]), np.array([[0.5, 0.25]]))
    # two members, one user: y0 = (100, 10) and (100, 14); treated (121, 16) and (144, 18)
    y = [torch.tensor([[[100.0, 10.0], [121.0, 16.0]]]),
         torch.tensor([[[100.0, 14.0], [144.0, 18.0]]])]
    out = mod.combine([{"y_hat": y[0], "extra": torch.ones(1)},
                       {"y_hat": y[1], "extra": torch.zeros(1)}])["y_hat"][0].double()
    u_bar = (np.log(1.21) + np.log(1.44)) / 2
    ratio = 100 * np.exp(np.log(1.1) + 0.5 * (u_bar - np.log(1.1)))
    diff = 12 + 2.0 + 0.25 * ((6 + 4) / 2 - 2.0)
    np.testing.assert_allclose(out.numpy(), [[100, 12], [ratio, diff]], rtol=1e-6)


def test_fold_ids_are_seeded_balanced_and_follow_the_rows():
    g = torch.Generator().manual_seed(0)
    rows = (torch.randint(0, 50, (10_000, 3), generator=g, dtype=torch.int32),
            torch.randint(0, 3, (10_000,), generator=g), torch.rand(10_000, 2, generator=g))
    f = fold_ids(rows, 2, seed=3)
    assert f.dtype == torch.int64 and set(f.unique().tolist()) == {0, 1}
    assert abs(float((f == 0).float().mean()) - 0.5) < 0.02
    perm = torch.randperm(10_000, generator=g)[:500]  # another order, a subset: same folds
    assert torch.equal(fold_ids(tuple(t[perm] for t in rows), 2, seed=3), f[perm])
    assert not torch.equal(fold_ids(rows, 2, seed=4), f)
    four = fold_ids(rows, 4, seed=3)
    assert set(four.unique().tolist()) == {0, 1, 2, 3}


def test_member_loss_scores_each_member_on_its_own_rows():
    members = [torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)]
    mod = CrossFitModule(members, [False], 1)

    def loss(m, batch):
        x, _, y = batch
        return ((m(x) - y) ** 2).mean(), {"mse": 1.0}

    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
    fold = torch.tensor([0, 0, 0, 1])
    total, logs = member_loss(loss)(mod, (x, torch.zeros(4), y, fold))
    w0, w1 = (float(m.weight.detach()) for m in members)
    hand = 0.75 * np.mean([(w0 * v - 1) ** 2 for v in (1, 2, 3)]) + 0.25 * (w1 * 4 - 1) ** 2
    assert float(total.detach()) == pytest.approx(hand, rel=1e-6) and logs == {"mse": 1.0}
    total.backward()
    assert members[1].weight.grad is not None and float(members[1].weight.grad) != 0
    # validation rows (EVERY_MEMBER): each member on all of them, the mean of the members
    every = torch.full((4,), EVERY_MEMBER, dtype=torch.int64)
    total, _ = member_loss(loss)(mod, (x, torch.zeros(4), y, every))
    mean = np.mean([np.mean([(w * v - 1) ** 2 for v in (1, 2, 3, 4)]) for w in (w0, w1)])
    assert float(total.detach()) == pytest.approx(mean, rel=1e-6)
    # a member without rows in the batch still takes part, with zero gradient
    members[1].weight.grad = None
    member_loss(loss)(mod, (x, torch.zeros(4), y, torch.zeros(4, dtype=torch.int64)))[0].backward()
    assert float(members[1].weight.grad) == 0.0


@pytest.fixture(scope="module")
def data():
    return make_experiment(n=1500, K=2, R=2, effect=0.5)


def crossfit_hum(data, **trainer):
    cfg = {"batch_size": 256, "max_epochs": 3, "early_stopping_patience": 9, "crossfit": 2,
           **trainer}
    return HUMEstimator(data.schema, model=HUM_SMALL, trainer=cfg)


def test_fitted_members_save_and_load_with_their_shrinkage(tmp_path, data):
    est = crossfit_hum(data).fit(data)
    assert isinstance(est.module_, CrossFitModule) and len(est.module_.members) == 2
    alpha = est.module_.alpha.numpy()
    assert alpha.shape == (2, 2) and ((alpha >= 0) & (alpha <= 1)).all()
    est.save(tmp_path / "m")
    back = load_estimator(tmp_path / "m")
    np.testing.assert_array_equal(back.module_.alpha.numpy(), alpha)
    np.testing.assert_array_equal(back.predict_outcomes(data), est.predict_outcomes(data))
    one = HUMEstimator(data.schema, model=HUM_SMALL,
                       trainer={"batch_size": 256, "max_epochs": 3, "crossfit": 1}).fit(data)
    assert not isinstance(one.module_, CrossFitModule)


def test_crossfit_resume_equals_an_uninterrupted_run(tmp_path, data):
    full = crossfit_hum(data).fit(data)
    fit_killed_at(crossfit_hum(data), data, 2, tmp_path / "ck")
    resumed = crossfit_hum(data)
    resumed.fit(data, checkpoint_dir=tmp_path / "ck", resume=True)
    np.testing.assert_array_equal(resumed.predict_outcomes(data), full.predict_outcomes(data))


def test_on_pure_noise_the_shrinkage_removes_most_of_the_spurious_uplift():
    # effect_scale 0: every true uplift is 0, so all estimated heterogeneity is noise
    sp = bench_simulator(None, 0, n_users=20_000, effect_scale=0.0, eval_users=20_000)[0]
    mse = {}
    for cf in (1, 2):
        est = get_model("slearner", sp.train.schema,
                        trainer={"seed": 0, "max_epochs": 8, "crossfit": cf})
        est.fit(sp.train, sp.valid)
        t = uplift_errors(sp.test.mu, est.predict_outcomes(sp.test).astype(np.float64))
        mse[cf] = t["pehe"].to_numpy() ** 2
        if cf == 2:
            # two members can agree on noise by chance (cells of alpha > 0.5 happen), but
            # on average most of it goes
            assert est.module_.alpha.numpy().mean() < 0.5
    assert mse[2].sum() < 0.7 * mse[1].sum(), mse


def test_artifacts_written_before_the_option_load_as_one_network(tmp_path, data):
    from hmum.models.artifacts import read_artifact

    one = HUMEstimator(data.schema, model=HUM_SMALL,
                       trainer={"batch_size": 256, "max_epochs": 2, "crossfit": 1}).fit(data)
    jsons, weights = read_artifact(one.save(tmp_path / "m"))
    del jsons["config"]["trainer"]["crossfit"]  # HUM's default is now 2 members
    old = HUMEstimator._from_artifact(jsons, weights)
    assert not isinstance(old.module_, CrossFitModule)
    np.testing.assert_array_equal(old.predict_outcomes(data), one.predict_outcomes(data))
