import pytest
import torch

from hmum.models.hum import HUM, HUMConfig
from hmum.training.losses import control_gate_kl, hum_loss


def build(K=2, R=2, M=4, bpt=None, card=(4, 6, 3)):
    torch.manual_seed(0)
    cfg = HUMConfig(n_experts=M, branches_per_treatment=bpt, expert_sizes=[16, 8],
                    tower_sizes=[8], embed_dim=8)
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
    loss, _ = hum_loss(m(x), arm, y, m.y_std, m.branch_treatment, kl_weight=1.0)
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
    loss, logs = hum_loss(m(x), torch.zeros(32, dtype=torch.long), torch.rand(32, 2), m.y_std,
                          m.branch_treatment)
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
    out = m(x)
    l0, logs0 = hum_loss(out, arm, y, m.y_std, m.branch_treatment, kl_weight=0.0)
    l1, logs1 = hum_loss(out, arm, y, m.y_std, m.branch_treatment, kl_weight=1.0)
    assert logs0["kl"] == 0.0 and logs1["kl"] > 0
    torch.testing.assert_close(l1 - l0, torch.tensor(logs1["kl"]), rtol=1e-3, atol=1e-5)


def test_hand_computed_loss():
    """One control row and one treated row, K=1 with a single branch, R=1."""
    from hmum.models.hum import HUMOutput
    out = HUMOutput(
        y_treated=torch.tensor([[[2.0]], [[5.0]]]),
        y_control=torch.tensor([[[1.0]], [[4.0]]]),
        gate_control=torch.full((2, 1, 1, 2), 0.5),
    )
    arm = torch.tensor([0, 1])
    y = torch.tensor([[3.0], [3.0]])
    # row 0 (control): (3-1)^2/2^2 = 1 ; row 1 (treated): (3-5)^2/2^2 = 1 ; mean over 2 rows
    loss, logs = hum_loss(out, arm, y, torch.tensor([2.0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(1.0) and logs["kl"] == 0.0
