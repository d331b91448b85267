import pytest
import torch

from hmum.training.trainer import Trainer, TrainerConfig


def test_early_stopping_counts_epochs_without_improvement():
    """Patience p: the best epoch, then p worse ones, then stop (p + 1 epochs in all).

    Training pulls w toward +1 while the validation loss is lowest at w = -1, so
    every epoch after the first is worse. (Shared by the single and distributed loops.)
    """
    w = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(w.weight)

    def loss_fn(model, batch):
        target = batch[0][:, 0].mean()
        return ((model.weight.sum() - target) ** 2), {}

    train = (torch.ones(8, 1),)
    valid = (-torch.ones(8, 1),)
    for p in (1, 3):
        torch.nn.init.zeros_(w.weight)
        cfg = TrainerConfig(lr=0.1, batch_size=8, max_epochs=20, early_stopping_patience=p)
        h = Trainer(cfg).fit(w, loss_fn, train, valid)
        assert h.best_epoch == 1
        assert len(h.epochs) == p + 1 and h.stopped_early


class _Recorder(torch.nn.Module):
    """One weight trained by plain SGD-like Adam steps; records its value after each step."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def _quadratic(model, batch):
    return ((model.w - batch[0].mean()) ** 2).sum(), {}


def _iterates(cfg, n_rows=3):
    """The live weight after each optimizer step, and the trainer's final (EMA) weight."""
    seen = []

    def loss_fn(model, batch):
        if model.training:
            seen.append(float(model.w.detach()))  # before this step = after the previous
        return _quadratic(model, batch)

    m = _Recorder()
    Trainer(cfg).fit(m, loss_fn, (torch.full((n_rows, 1), 2.0),), (torch.full((2, 1), 2.0),))
    return seen, m


def test_ema_is_the_hand_computed_average_of_a_three_step_run():
    """Horizon H = 2: step 1 averages (takes) the first iterate, then decay 1 - 1/2."""
    cfg = TrainerConfig(lr=0.5, batch_size=1, max_epochs=1, ema_steps=2,
                        early_stopping_patience=5)
    seen, m = _iterates(cfg)
    live = _iterates(TrainerConfig(lr=0.5, batch_size=1, max_epochs=2))[0]
    # live[t] is the weight before step t+1, i.e. after step t
    p1, p2, p3 = live[1], live[2], live[3]
    assert seen == live[:3]  # the same live trajectory with EMA on
    e1 = p1                      # t = 1: weight 1
    e2 = e1 + 0.5 * (p2 - e1)    # t = 2: weight max(1/2, 1/2)
    e3 = e2 + 0.5 * (p3 - e2)    # t = 3: weight max(1/2, 1/3)
    w = float(m.w.detach())
    assert w == pytest.approx(e3, rel=1e-6)
    assert w != pytest.approx(p3)  # not simply the last iterate


def test_ema_share_scales_the_horizon_with_the_run():
    cfg = TrainerConfig(max_epochs=10, ema_share=0.25)
    assert cfg.ema_horizon(steps_per_epoch=40) == pytest.approx(100.0)
    assert TrainerConfig(ema_decay=0.98).ema_horizon(7) == pytest.approx(50.0)
    assert TrainerConfig().ema_horizon(7) is None


def test_only_one_ema_horizon_may_be_set():
    with pytest.raises(ValueError, match="at most one of ema_decay, ema_steps, ema_share"):
        TrainerConfig(ema_steps=10, ema_share=0.1)


def test_resume_with_ema_equals_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64)
    data = (x, y)

    def loss_fn(model, batch):
        return ((model(batch[0]).squeeze(-1) - batch[1]) ** 2).mean(), {}

    class Killed(Exception):
        pass

    def run(ckpt=None, resume=False, kill_after=None):
        torch.manual_seed(1)
        m = torch.nn.Linear(3, 1)
        cfg = TrainerConfig(lr=0.05, batch_size=16, max_epochs=6, ema_share=0.3,
                            early_stopping_patience=50, seed=3)

        def log(rec):
            if rec["epoch"] == kill_after:
                raise Killed  # before this epoch's checkpoint: the last one holds epoch - 1

        try:
            Trainer(cfg, checkpoint_dir=ckpt, log=log).fit(m, loss_fn, data, data,
                                                           resume=resume)
        except Killed:
            pass
        return m

    straight = run()
    ckpt = tmp_path / "ckpt"
    run(ckpt, kill_after=4)
    resumed = run(ckpt, resume=True)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
