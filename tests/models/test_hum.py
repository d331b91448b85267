"""HUM: the network (eq. 2-5: branches, masking, the KL term, the loss) and what its
estimator adds (y0* from the branch controls, parallel branches for K = 1, recovery).

Shapes, determinism, artifacts and refusals of every model: the common check
(test_estimator_checks.py); the shared estimator machinery: test_base.py."""

import numpy as np
import pytest
import torch

from hmum.models.hum import HUM, HUMConfig, HUMEstimator, control_gate_kl, hum_loss
from hmum.models.registry import get_model
from tests.models.helpers import HUM_SMALL as SMALL
from tests.models.helpers import fit_hum as fit
from tests.synth import make_experiment


def build(K=2, R=2, M=4, bpt=None, card=(4, 6, 3), query="pass", gate="pass"):
    torch.manual_seed(0)
    cfg = HUMConfig(n_experts=M, branches_per_treatment=bpt, expert_sizes=[16, 8],
                    tower_sizes=[8], embed_dim=8, selector_query=query, gate_query=gate)
    return HUM(list(card), K, ["softplus"] * R, torch.full((R,), 5.0), torch.ones(R), cfg)


@pytest.mark.parametrize(("K", "R", "M"), [(1, 1, 1), (2, 2, 4), (3, 1, 2), (4, 3, 3)])
def test_shapes(K, R, M):
    m = build(K, R, M)
    x = torch.randint(0, 3, (17, 3))
    out = m(x)
    B = m.B
    assert out.y_treated.shape == (17, B, R)
    assert out.y_control.shape == (17, B, R)
    assert out.gate_control.shape == (17, B, R, M)
    torch.testing.assert_close(out.gate_control.sum(-1), torch.ones(17, B, R))
    y_hat, y0b = m.potential_outcomes(out)
    assert y_hat.shape == (17, K + 1, R)
    assert y0b.shape == (17, K, R)
    assert (y_hat > 0).all()  # softplus link: positive responses stay positive


def test_single_treatment_uses_parallel_branches():
    m = build(K=1)
    assert m.B == 3 and m.branch_treatment.tolist() == [1, 1, 1]
    assert build(K=1, bpt=2).B == 2


def test_y0_star_is_the_mean_of_branch_controls():
    m = build(K=3)
    out = m(torch.randint(0, 3, (9, 3)))
    y_hat, y0b = m.potential_outcomes(out)
    torch.testing.assert_close(y_hat[:, 0], y0b.mean(1))
    assert (y_hat[:, 0] >= y0b.min(1).values - 1e-6).all()
    assert (y_hat[:, 0] <= y0b.max(1).values + 1e-6).all()


def _hand_output(links):
    """A HUMOutput with K=2, one branch each, R=len(links), hand-set values (N=1)."""
    from hmum.models.hum import HUMOutput

    yt = torch.tensor([[[2.0, 0.6, 1.0], [6.0, 0.9, -1.0]]])[..., : len(links)]  # (1, B, R)
    y0 = torch.tensor([[[4.0, 0.5, 3.0], [2.0, 0.2, 1.0]]])[..., : len(links)]
    return HUMOutput(yt, y0, torch.zeros(1, 2, len(links), 1))


def test_within_branch_uplift_is_each_branchs_own_difference():
    links = ["softplus", "sigmoid", "identity"]
    m = HUM([3], 2, links, torch.ones(3), torch.ones(3), HUMConfig(n_experts=1))
    assert m.uplift == "within_branch"  # the measured default
    y_hat, y0b = m.potential_outcomes(_hand_output(links))
    y0 = torch.tensor([3.0, 0.35, 2.0])  # mean of the branches' controls
    torch.testing.assert_close(y_hat[0, 0], y0)
    # positive response: ratio y0* y^k / y^{0,k}; binary: y0* + difference, in [0, 1];
    # signed: y0* + difference
    torch.testing.assert_close(y_hat[0, 1], torch.tensor([3.0 * 2 / 4, 0.35 + 0.1, 2.0 - 2.0]))
    torch.testing.assert_close(y_hat[0, 2], torch.tensor([3.0 * 6 / 2, 1.0, 2.0 - 2.0]))
    torch.testing.assert_close(y0b[0], torch.tensor([[4.0, 0.5, 3.0], [2.0, 0.2, 1.0]]))


def test_paper_uplift_is_the_treated_estimate_against_y0_star():
    links = ["softplus", "sigmoid", "identity"]
    cfg = HUMConfig(n_experts=1, uplift="paper")
    m = HUM([3], 2, links, torch.ones(3), torch.ones(3), cfg)
    y_hat, _ = m.potential_outcomes(_hand_output(links))
    torch.testing.assert_close(y_hat[0, 1:], torch.tensor([[2.0, 0.6, 1.0], [6.0, 0.9, -1.0]]))


def test_artifacts_written_before_the_uplift_option_keep_the_papers_rule(tmp_path, fitted,
                                                                        data):
    from hmum.models.artifacts import read_artifact

    jsons, weights = read_artifact(fitted.save(tmp_path / "m"))
    assert jsons["config"]["model"]["uplift"] == "within_branch"
    del jsons["config"]["model"]["uplift"]
    old = HUMEstimator._from_artifact(jsons, weights)
    assert old.module_.uplift == "paper" and fitted.module_.uplift == "within_branch"
    paper, within = old.predict_outcomes(data), fitted.predict_outcomes(data)
    np.testing.assert_allclose(paper[:, 0], within[:, 0])  # same y0*, another uplift rule
    assert not np.allclose(paper[:, 1:], within[:, 1:])


def _block_grad_norms(m: HUM, b: int) -> dict[str, float]:
    """Gradient norms of everything that belongs to branch b only."""
    M, R = m.mmoe.M, m.R
    out = {"selector": m.selector.W.grad[b].norm().item()}
    for i, layer in enumerate(m.mmoe.experts.layers):
        out[f"expert{i}"] = layer.weight.grad[b * M:(b + 1) * M].norm().item()
    for i, layer in enumerate(m.mmoe.towers.layers):
        out[f"tower{i}"] = layer.weight.grad[b * R:(b + 1) * R].norm().item()
    out["gate"] = m.mmoe.gates.weight.grad[b].norm().item()
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_masking_arm_k_rows_train_only_branch_k(k):
    m = build(K=3)
    x = torch.randint(0, 3, (32, 3))
    arm = torch.full((32,), k)
    y = torch.rand(32, 2) * 10
    loss, _ = hum_loss(m.forward_factual(x, arm), y, m.losses, m.y_mean, m.y_std, kl_weight=1.0)
    loss.backward()
    for b in range(m.B):
        norms = _block_grad_norms(m, b)
        if b == k - 1:
            assert all(v > 0 for v in norms.values()), norms
        else:
            assert all(v == 0 for v in norms.values()), (b, norms)


def test_control_rows_train_every_branch():
    m = build(K=3)
    x = torch.randint(0, 3, (32, 3))
    arm = torch.zeros(32, dtype=torch.long)
    loss, logs = hum_loss(m.forward_factual(x, arm), torch.rand(32, 2), m.losses, m.y_mean,
                          m.y_std)
    loss.backward()
    assert logs["kl"] > 0
    for b in range(m.B):
        assert _block_grad_norms(m, b)["tower0"] > 0


def test_kl_zero_when_gates_agree_positive_otherwise():
    g = torch.softmax(torch.randn(5, 1, 2, 4), -1).expand(5, 3, 2, 4)
    assert control_gate_kl(g).abs().max() < 1e-6
    g2 = torch.softmax(torch.randn(5, 3, 2, 4), -1)
    assert (control_gate_kl(g2) >= 0).all() and control_gate_kl(g2).sum() > 0


def test_kl_weight_zero_drops_the_term():
    m = build(K=2)
    x = torch.randint(0, 3, (8, 3))
    arm = torch.zeros(8, dtype=torch.long)
    y = torch.rand(8, 2)
    out = m.forward_factual(x, arm)
    l0, logs0 = hum_loss(out, y, m.losses, m.y_mean, m.y_std, kl_weight=0.0)
    l1, logs1 = hum_loss(out, y, m.losses, m.y_mean, m.y_std, kl_weight=1.0)
    assert logs0["kl"] == 0.0 and logs1["kl"] > 0
    torch.testing.assert_close(l1 - l0, torch.tensor(logs1["kl"]), rtol=1e-3, atol=1e-5)


def test_hand_computed_loss():
    """One control row and one treated row, K=1 with a single branch, R=1."""
    from hmum.models.hum import FactualOutput
    # slots: the treated pass holds row 1 (prediction 5), the control pass row 0 (prediction 1)
    out = FactualOutput(
        y_treated=torch.tensor([[[5.0]]]),  # (B=1, n_t=1, R=1)
        rows_treated=torch.tensor([[1]]),
        valid_treated=torch.ones(1, 1, dtype=torch.bool),
        y_control=torch.tensor([[[1.0]]]),  # (B=1, n_0=1, R=1)
        rows_control=torch.tensor([0]),
        valid_control=torch.ones(1, dtype=torch.bool),
        gate_control=torch.full((1, 1, 1, 2), 0.5),
    )
    y = torch.tensor([[3.0], [3.0]])
    # row 0 (control): (3-1)^2/2^2 = 1 ; row 1 (treated): (3-5)^2/2^2 = 1 ; mean over 2 rows
    loss, logs = hum_loss(out, y, ["mse"], torch.tensor([3.0]), torch.tensor([2.0]))
    assert loss.item() == pytest.approx(1.0) and logs["kl"] == 0.0


def _dense_reference_loss(m: HUM, x, arm, y, kl_weight):
    """eq. 5 on the full forward (every pass on every row), masked afterwards."""
    from hmum.nn.links import deviance
    out = m(x)
    yy = y.unsqueeze(1)
    d_t = deviance(out.y_treated, yy, m.losses, m.y_mean, m.y_std).sum(-1)  # (N, B)
    d_c = deviance(out.y_control, yy, m.losses, m.y_mean, m.y_std).sum(-1)
    treated = (arm.unsqueeze(1) == m.branch_treatment.unsqueeze(0)).float()
    control = (arm == 0).float().unsqueeze(1)
    kl = (control_gate_kl(out.gate_control).sum(-1) * control).sum()
    return ((d_t * treated).sum() + (d_c * control).sum() + kl_weight * kl) / len(arm)


@pytest.mark.parametrize(("K", "bpt", "losses", "arms", "query"), [
    (2, None, ["mse", "mse"], "balanced", ("pass", "pass")),
    (3, None, ["gamma", "poisson"], "balanced", ("pass", "pass")),
    (1, 3, ["mse", "gamma"], "balanced", ("pass", "pass")),
    # a large control arm (the treated passes are padded apart from it), and none at all
    (3, None, ["mse", "gamma"], "mostly control", ("pass", "pass")),
    (2, None, ["mse", "poisson"], "no control", ("pass", "pass")),
    # the selector and / or the gates queried by the branch's treatment
    (3, None, ["gamma", "poisson"], "balanced", ("branch", "pass")),
    (1, 3, ["mse", "gamma"], "mostly control", ("pass", "branch")),
    (2, None, ["gamma", "mse"], "balanced", ("branch", "branch")),
])
def test_factual_forward_equals_the_dense_masked_loss(K, bpt, losses, arms, query):
    """The sparse training forward gives eq. 5's loss and gradients of the full forward."""
    m = build(K=K, bpt=bpt, query=query[0], gate=query[1])
    m.losses = losses
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (40, 3), generator=g)
    arm = torch.randint(0, K + 1, (40,), generator=g)
    if arms == "balanced":
        arm[:3] = 0  # both kinds of rows present
    elif arms == "mostly control":
        arm[:34] = 0
    else:
        arm = torch.randint(1, K + 1, (40,), generator=g)
    y = torch.rand(40, 2, generator=g) * 10 + 0.1
    loss, _ = hum_loss(m.forward_factual(x, arm), y, m.losses, m.y_mean, m.y_std, kl_weight=0.7)
    loss.backward()
    grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    ref = _dense_reference_loss(m, x, arm, y, 0.7)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, (p.grad for p in m.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("query", ["pass", "branch"])
def test_branch_queries_make_both_passes_weigh_fields_and_experts_alike(query):
    """pass (eq. 2 and 4): each pass weighs the fields and mixes the experts by its own
    treatment; branch: both passes of a branch by t(b), so for one row their field
    weights and gates are equal, and they differ only through e_t in the experts' input."""
    m = build(K=2, query=query, gate=query)
    x = torch.randint(0, 3, (5, 3))
    e_t = m._pass_embeddings()
    sel_t, w_t = m.selector(m.embed(x), e_t[:, :1])  # (B, 1, 5, d), (B, 1, H, F)
    _, w_c = m.selector(m.embed(x), m._queries(e_t)[:, 1:] if query == "branch" else e_t[:, 1:])
    _, g_t = m.mmoe(sel_t, context=e_t[:, :1])
    # the control pass's gates on the same field summary, with the configured gate query
    _, g_c = m.mmoe(sel_t, context=e_t[:, 1:],
                    gate_context=e_t[:, :1] if query == "branch" else None)
    assert torch.allclose(w_c, w_t) == (query == "branch")
    assert torch.allclose(g_c, g_t) == (query == "branch")
    # and the model's own forward uses them: its control gates equal the treated ones
    gates_c = m(x).gate_control  # (5, B, R, M)
    _, g_model_t = m._heads(m.embed(x), e_t, m._queries(e_t))
    assert torch.allclose(gates_c, g_model_t[:, 0].transpose(0, 1)) == (query == "branch")


# --- the estimator ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return make_experiment(n=1500, K=2, R=2, effect=0.5)


@pytest.fixture(scope="module")
def fitted(data):
    return fit(data)


def test_estimator_y0_star_is_the_mean_of_the_branch_controls(fitted, data):
    out = fitted.predict_all(data)
    assert out["y0_branch"].shape == (1500, 2, 2)
    np.testing.assert_allclose(out["y_hat"][:, 0], out["y0_branch"].mean(1), rtol=1e-6)


def test_hum_learns_heterogeneous_effect():
    """Strong known effect: HUM's PEHE is far below the zero-uplift predictor's."""
    d = make_experiment(n=6000, K=2, R=2, effect=0.5, seed=3)
    est = HUMEstimator(d.schema, model=SMALL, trainer={"batch_size": 256, "max_epochs": 10})
    est.fit(d)
    tau_true = d.mu[:, 1:] - d.mu[:, :1]
    pehe = np.sqrt(((est.predict_uplift(d) - tau_true) ** 2).mean(0))
    pehe_zero = np.sqrt((tau_true ** 2).mean(0))
    assert (pehe < 0.5 * pehe_zero).all(), (pehe, pehe_zero)
    # on fresh rows, the Qini of HUM's ranking is clearly positive in every (k, r) cell
    # and close to the Qini of the true uplift used as the score
    from hmum.metrics import ground_truth_table
    test = make_experiment(n=3000, K=2, R=2, effect=0.5, seed=4)
    tab = ground_truth_table(test.y, test.mu[:, 1:] - test.mu[:, :1],
                             est.predict_uplift(test), test.arm, kind="continuous")
    assert (tab["qini"] > 0.1).all(), tab
    assert (tab["qini"] > 0.7 * tab["oracle_qini"]).all(), tab


def test_single_treatment_and_three_responses():
    d = make_experiment(n=900, K=1, R=3, kinds=["continuous", "count", "continuous"])
    est = fit(d, epochs=2)
    assert est.predict_outcomes(d).shape == (900, 2, 3)
    assert est.module_.B == 1  # one branch per treatment by default, also when K = 1


def test_branches_none_is_the_papers_rule():
    """None: three branches when K = 1 (paper §5.2.2), one per treatment when K > 1."""
    assert HUMConfig(branches_per_treatment=None).n_branches_per_treatment(1) == 3
    assert HUMConfig(branches_per_treatment=None).n_branches_per_treatment(2) == 1
    assert HUMConfig().n_branches_per_treatment(1) == 1
    d = make_experiment(n=600, K=1, R=1)
    paper = get_model("hum_paper", d.schema, model={"expert_sizes": [8], "embed_dim": 4},
                      trainer={"max_epochs": 1})
    paper.fit(d)
    assert paper.module_.B == 3


def test_hum_paper_keeps_the_wide_experts():
    """The default experts are [64, 32]; ``hum_paper`` keeps the first [128, 64]."""
    d = make_experiment(n=50, K=2, R=1)
    assert get_model("hum", d.schema)._configs()[0].expert_sizes == [64, 32]
    assert get_model("hum_paper", d.schema)._configs()[0].expert_sizes == [128, 64]
