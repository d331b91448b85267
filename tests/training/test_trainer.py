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
