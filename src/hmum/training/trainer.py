"""The trainer: loop, optimizer, LR schedule, early stopping, checkpoints.

Models only do ``forward``; the trainer owns everything else. It is generic:
``loss_fn(model, batch) -> (loss, logs)`` says how a batch (a tuple of tensor
slices) becomes a scalar loss, so HUM, the baselines and the value-weight model
share one loop.

Checkpoints (``checkpoint_dir``) hold no pickle: tensors (model, best model,
optimizer state) in safetensors, everything else in JSON. A run started again
with ``resume=True`` continues after the last finished epoch and ends with the
same weights as an uninterrupted run.

Distributed data parallel (``dist=`` a ``DistContext``, see ``hmum.training.ddp``;
launched by ``hmum.training.distributed``): the model is wrapped in DDP, each rank iterates
over its own rows (``ShardBatches``: the same number of steps everywhere, loss
weighted so the averaged gradient is that of the mean over all ranks' rows), the
validation loss is summed over ranks so the LR schedule and early stopping decide
the same on every rank, and only rank 0 writes checkpoints. Without ``dist`` the
loop is the single-process one, unchanged.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load, load_file, save_file
from torch import nn

from hmum.data.batching import BatchIterator
from hmum.training.ddp import DistContext, ShardBatches, sum_over_ranks, wrap_ddp

LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, dict[str, float]]]


class TrainerConfig(BaseModel):
    """Training settings; defaults are the paper's appendix A.1."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(4096, ge=1)
    max_epochs: int = Field(30, ge=1)
    lr_factor: float = Field(0.6, gt=0, lt=1, description="ReduceLROnPlateau factor")
    lr_patience: int = Field(2, ge=0, description="ReduceLROnPlateau patience (epochs)")
    early_stopping_patience: int = Field(
        5, ge=1, description="stop after this many epochs without validation improvement"
    )
    weight_decay: float = Field(0.0, ge=0)
    ema_decay: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="validate and keep an exponential moving average of the weights with "
        "this decay (horizon 1/(1-decay) steps); None = off (the paper)",
    )
    ema_steps: int | None = Field(
        None, ge=1, description="EMA horizon H in optimizer steps (decay 1 - 1/H)",
    )
    ema_share: float | None = Field(
        None, gt=0.0, le=1.0,
        description="EMA horizon as a share of the run's planned steps (steps per epoch x "
        "max_epochs), so it scales with the data",
    )
    crossfit: int = Field(
        1, ge=1, le=8,
        description="members trained on disjoint folds of the rows; >= 2 shrinks the "
        "uplift by its measured reliability (hmum.models.crossfit); 1 = one network",
    )
    seed: int = 0
    num_threads: int | None = Field(None, ge=1, description="torch threads; None = leave as is")
    device: str = "cpu"

    @model_validator(mode="after")
    def _one_ema_horizon(self):
        given = [n for n in ("ema_decay", "ema_steps", "ema_share") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of ema_decay, ema_steps, ema_share; got {given}")
        return self

    def ema_horizon(self, steps_per_epoch: int) -> float | None:
        """The EMA horizon H in optimizer steps (decay 1 - 1/H), or None when EMA is off."""
        if self.ema_decay is not None:
            return 1.0 / (1.0 - self.ema_decay)
        if self.ema_steps is not None:
            return float(self.ema_steps)
        if self.ema_share is not None:
            return max(1.0, self.ema_share * steps_per_epoch * self.max_epochs)
        return None


class TrainingHistory(BaseModel):
    epochs: list[dict] = Field(default_factory=list)
    best_epoch: int = -1
    best_valid_loss: float = math.inf
    stopped_early: bool = False


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors and JSON-able values."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().clone().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for pid, st in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


def _swap(params: list[torch.Tensor], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Put ``values`` into ``params`` in place; return the values they held."""
    with torch.no_grad():
        old = [p.detach().clone() for p in params]
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
    return old


class Trainer:
    """Fits a model with Adam + ReduceLROnPlateau + early stopping on validation loss.

    Args:
        config: TrainerConfig.
        checkpoint_dir: where to keep the last checkpoint (None: no checkpoints).
        progress: show a rich progress bar with the loss per epoch.
        log: callable receiving one dict per finished epoch.
        dist: this worker's DistContext for data-parallel training (None: one process).
            Every rank calls ``fit`` with its own rows; progress, log and
            checkpoints happen on rank 0 only.
    """

    def __init__(
        self,
        config: TrainerConfig | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        progress: bool = False,
        log: Callable[[dict], None] | None = None,
        dist: DistContext | None = None,
    ) -> None:
        self.config = config or TrainerConfig()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        main = dist is None or dist.is_main
        self.progress = progress and main
        self.log = log if main else None
        self.dist = dist

    # ------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train: Sequence[torch.Tensor],
        valid: Sequence[torch.Tensor],
        *,
        resume: bool = False,
    ) -> TrainingHistory:
        """Train ``model`` in place; at the end it holds the best validation weights.

        train / valid: aligned tensors, first dimension = rows (e.g. x (N, F),
        arm (N,), y (N, R)). Each batch passed to ``loss_fn`` is a tuple of slices.
        With ``dist``: this rank's rows only.
        """
        cfg = self.config
        old_threads = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        try:
            return self._fit(model, loss_fn, train, valid, resume)
        finally:
            torch.set_num_threads(old_threads)

    def _fit(self, model, loss_fn, train, valid, resume) -> TrainingHistory:
        cfg = self.config
        device = torch.device(cfg.device)
        model.to(device)
        train = [t.to(device) for t in train]
        valid = [t.to(device) for t in valid]
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience
        )
        dist = self.dist
        if dist is not None and device != dist.device:
            raise ValueError(
                f"TrainerConfig.device is {cfg.device!r} but this worker's device is "
                f"{str(dist.device)!r}; set device to the DistContext's device"
            )
        if dist is None:
            batches = BatchIterator(train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
        else:
            batches = ShardBatches(train, batch_size=cfg.batch_size, seed=cfg.seed, ctx=dist)
        history = TrainingHistory()
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        bad_epochs = 0
        start_epoch = 0
        params = [p for p in model.parameters() if p.requires_grad]
        horizon = cfg.ema_horizon(len(batches))
        ema = [p.detach().clone() for p in params] if horizon is not None else None
        # EMA steps taken; the first H steps average every iterate so far (decay
        # min(1 - 1/H, 1 - 1/t)), so the start-up weights never linger in the average
        self._ema_t = 0
        checkpoint = self._read_checkpoint(device) if resume and self.checkpoint_dir else None
        if checkpoint is not None:
            start_epoch, bad_epochs, history, best_state = self._load_checkpoint(
                checkpoint, model, opt, sched, ema
            )
        if dist is None:
            def step(batch):
                return loss_fn(model, batch)
        else:
            # after loading a checkpoint: DDP starts from rank 0's weights
            ddp = wrap_ddp(dist, model, loss_fn, tuple(t[:64] for t in train))

            def step(batch):
                return ddp(*batch)

        bar = None
        if self.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} batches"),
                TextColumn("{task.fields[msg]}"),
                TimeElapsedColumn(),
            )
            bar.start()
            task = bar.add_task("train", total=len(batches), epoch=start_epoch + 1, msg="")
        try:
            for epoch in range(start_epoch, cfg.max_epochs):
                t0 = time.perf_counter()
                model.train()
                batches.set_epoch(epoch)
                tot, rows = 0.0, 0
                if bar:
                    bar.reset(task, total=len(batches), epoch=epoch + 1, msg="")
                for item in batches:
                    batch, weight = (item, None) if dist is None else item
                    loss, _ = step(batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"training loss became {float(loss)} at epoch {epoch + 1}; "
                            "lower the learning rate or check the responses' scale"
                        )
                    opt.zero_grad(set_to_none=True)
                    (loss if weight is None else loss * weight).backward()
                    opt.step()
                    if ema is not None:
                        self._ema_t += 1
                        with torch.no_grad():
                            torch._foreach_lerp_(ema, params, max(1.0 / horizon,
                                                                  1.0 / self._ema_t))
                    n = batch[0].shape[0] if weight != 0.0 else 0  # 0: a stand-in row
                    tot += float(loss.detach()) * n
                    rows += n
                    if bar:
                        bar.update(task, advance=1)
                if dist is not None:
                    summed = sum_over_ranks(dist, {"tot": tot, "rows": float(rows)})
                    tot, rows = summed["tot"], int(summed["rows"])
                train_loss = tot / max(rows, 1)
                live = _swap(params, ema) if ema is not None else None  # validate the average
                valid_loss, valid_logs = self.evaluate(model, loss_fn, valid)
                sched.step(valid_loss)
                improved = valid_loss < history.best_valid_loss
                if improved:
                    history.best_valid_loss = valid_loss
                    history.best_epoch = epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                if live is not None:
                    _swap(params, live)  # training continues from the live weights
                rec = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    **{f"valid_{k}": v for k, v in valid_logs.items()},
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,
                    "rows_per_s": rows / max(time.perf_counter() - t0, 1e-9),
                }
                history.epochs.append(rec)
                if bar:
                    bar.update(
                        task, msg=f"train {train_loss:.4f}  valid {valid_loss:.4f}"
                        + ("  *" if improved else "")
                    )
                    bar.console.print(
                        f"epoch {epoch + 1}: train {train_loss:.4f} valid {valid_loss:.4f} "
                        f"lr {rec['lr']:.2e} ({rec['seconds']:.1f}s)"
                    )
                if self.log:
                    self.log(rec)
                stop = bad_epochs >= cfg.early_stopping_patience
                history.stopped_early = stop
                if self.checkpoint_dir and (dist is None or dist.is_main):
                    self._save_checkpoint(model, opt, sched, epoch + 1, bad_epochs, history,
                                          best_state, ema)
                if stop:
                    break
        finally:
            if bar:
                bar.stop()
        model.load_state_dict(best_state)
        return history

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loss_fn: LossFn, data: Sequence[torch.Tensor]
    ) -> tuple[float, dict[str, float]]:
        """Mean loss (and logs) over ``data``, weighted by batch rows.

        With ``dist``: over every rank's ``data`` (sums gathered in rank order, so
        every rank gets the same floats). Runs the plain model: no collective per batch.
        """
        model.eval()
        tot, rows, logs_sum = 0.0, 0, {}
        if data[0].shape[0]:
            for batch in BatchIterator(data, batch_size=max(self.config.batch_size, 8192)):
                loss, logs = loss_fn(model, batch)
                n = batch[0].shape[0]
                tot += float(loss) * n
                rows += n
                for k, v in logs.items():
                    logs_sum[k] = logs_sum.get(k, 0.0) + v * n
        if self.dist is not None:
            summed = sum_over_ranks(
                self.dist, {"loss": tot, "rows": float(rows),
                            **{f"log.{k}": v for k, v in logs_sum.items()}}
            )
            tot, rows = summed["loss"], int(summed["rows"])
            logs_sum = {k[4:]: v for k, v in summed.items() if k.startswith("log.")}
        return tot / max(rows, 1), {k: v / max(rows, 1) for k, v in logs_sum.items()}

    # --- checkpoints ----------------------------------------------------------
    def _save_checkpoint(self, model, opt, sched, epoch, bad_epochs, history, best_state, ema):
        d = self.checkpoint_dir
        tmp = d.with_name(d.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        opt_tensors, opt_meta = _flatten_optimizer(opt.state_dict())
        tensors = {
            f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()
        }
        tensors.update({f"best.{k}": v.cpu().contiguous() for k, v in best_state.items()})
        tensors.update({k: v.cpu() for k, v in opt_tensors.items()})
        if ema is not None:
            tensors.update({f"ema.{i}": v.cpu().contiguous() for i, v in enumerate(ema)})
        save_file(tensors, tmp / "tensors.safetensors")
        state = {
            **({"world_size": self.dist.world_size} if self.dist is not None else {}),
            "epoch": epoch,
            "bad_epochs": bad_epochs,
            "history": history.model_dump(),
            "optimizer": opt_meta,
            "scheduler": sched.state_dict(),
            "ema_steps_taken": self._ema_t,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        # swap in the new checkpoint in two renames; a crash leaves one whole copy
        old = d.with_name(d.name + ".old")
        if d.exists():
            if old.exists():
                shutil.rmtree(old)
            d.rename(old)
        tmp.rename(d)
        if old.exists():
            shutil.rmtree(old)

    def _read_checkpoint(self, device) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """(state, tensors) of the last checkpoint, or None when there is none.

        Distributed: rank 0 reads the files and sends their bytes to every rank, so
        the folder need only be visible to rank 0.
        """
        d = self.checkpoint_dir
        if self.dist is None:
            if not (d / "state.json").exists():
                return None
            return (json.loads((d / "state.json").read_text()),
                    load_file(d / "tensors.safetensors", device=str(device)))
        raw = None
        if self.dist.is_main and (d / "state.json").exists():
            raw = ((d / "state.json").read_text(), (d / "tensors.safetensors").read_bytes())
        raw = self.dist.broadcast_object(raw)
        if raw is None:
            return None
        return json.loads(raw[0]), {k: v.to(device) for k, v in load(raw[1]).items()}

    def _load_checkpoint(self, checkpoint, model, opt, sched, ema):
        state, tensors = checkpoint
        saved_world = state.get("world_size", 1)
        if self.dist is not None and saved_world != self.dist.world_size:
            warnings.warn(
                f"resuming a checkpoint written by {saved_world} worker(s) with "
                f"{self.dist.world_size}: training continues, but the row order differs "
                "from an uninterrupted run", stacklevel=3,
            )
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        opt.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        sched.load_state_dict(state["scheduler"])
        history = TrainingHistory.model_validate(state["history"])
        if ema is not None:
            for i, v in enumerate(ema):
                v.copy_(tensors[f"ema.{i}"])
            self._ema_t = int(state.get("ema_steps_taken", 0))
        return state["epoch"], state["bad_epochs"], history, best
