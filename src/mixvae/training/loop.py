"""The one training loop: every method is an :class:`Objective` that this loop drives.

It owns the schedule (epochs or steps, warm-up progress, learning-rate milestones), one optimizer
per player, validation with early stopping, metrics in ``metrics.jsonl``, checkpoints
(``latest`` and ``best``), exact resume, the NaN policy and the precision (bf16 autocast, see
:mod:`mixvae.precision`). It knows nothing about a paper.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import precision, progress
from ..config import Config, config_to_dict
from ..data import Dataset
from ..errors import TrainingDiverged, UserError
from .. import parallel
from ..distributions import WHOLE, Shard
from ..objectives.base import Objective, StepContext
from .checkpoint import load_checkpoint, save_checkpoint, weights_only
from . import statecheck
from .tracking import MetricsLog
from .optim import make_optimizer


@dataclass
class LoopState:
    """Where training stands (saved in every checkpoint): steps done, the best validation loss
    (the objective's per-example loss) and its step, early-stopping count, why it stopped,
    rollbacks after a non-finite loss, and the training time in seconds."""

    step: int = 0                  # steps completed
    best_loss: float = math.inf    # best validation loss so far
    best_step: int = -1
    bad_evals: int = 0             # evaluations after warm-up without improvement
    stop_reason: str = ""          # why training ended early ('' while it runs)
    rollbacks: int = 0
    seconds: float = 0.0           # training wall time accumulated over sessions


class Trainer:
    """Drives ``objective`` on ``data`` for the budget of ``cfg.train`` (see the module docstring).
    ``run_dir``: the folder for metrics.jsonl and checkpoints (None: nothing is written); ``rank``
    / ``world``: this process among the processes sharing each batch; ``after_eval(trainer)``: a
    hook after every validation."""

    def __init__(self, cfg: Config, objective: Objective, data: Dataset, run_dir: Optional[Path],
                 device: torch.device = torch.device("cpu"), rank: int = 0, world: int = 1,
                 after_eval: Optional[Callable[["Trainer"], None]] = None, progress: bool = True):
        self.cfg, self.objective, self.data = cfg, objective, data
        self.run_dir, self.device, self.rank, self.world = run_dir, device, rank, world
        self.after_eval, self.progress = after_eval, progress
        t = cfg.train
        if t.batch_size % world:
            raise ValueError(f"train.batch_size {t.batch_size} is not divisible by {world} processes")
        self.steps_per_epoch = data.steps_per_epoch(t.batch_size)
        self.shard = Shard(rank, world)   # in a training step, posteriors draw noise for the whole batch, keep their share
        self.total_steps = t.max_steps if t.max_steps is not None else t.epochs * self.steps_per_epoch
        self.state = LoopState()
        if world > 1:   # BatchNorm statistics of the global batch (before optimizers see the parameters)
            for m in objective.modules().values():
                parallel.sync_batchnorm(m)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        for name in objective.players():
            self._build_player(name)
        is_main = rank == 0 and run_dir is not None
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(run_dir / "metrics.jsonl" if is_main else None)
        self.ckpt_dir = run_dir / "checkpoints" if is_main else None
        self._saved: dict[str, int] = {}   # checkpoint name -> step it was last written at
        self.best_state: Optional[dict] = None   # the best weights when there is no run folder
        self.latest_state: Optional[dict] = None   # ... and the latest state, for a rollback

    # ------------------------------------------------------------------ players and schedule
    def _build_player(self, name: str) -> None:
        t = self.cfg.train
        params = self.objective.players()[name]
        lr = self.objective.player_lr(name) or t.lr
        opt = make_optimizer(t.optimizer, params, lr, t.betas)
        if t.precision != "fp32":
            precision.clear_casts_after_steps(opt)
        self.optimizers[name] = parallel.GradientAveraging(opt) if self.world > 1 else opt
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(t.lr_milestones), gamma=t.lr_gamma)
        step = self.state.step if hasattr(self, "state") else 0
        if step:  # a player created mid-run: milestones passed and rollbacks still count
            self._set_scheduled_lr(opt, sched)
            sched.last_epoch = step
        self.schedulers[name] = sched

    def _set_scheduled_lr(self, opt, sched, initial: Optional[list] = None) -> None:
        """Set each group's rate to its initial rate x lr_gamma per milestone passed by the current
        step x 0.1 ** rollbacks (and the scheduler's base rates to initial x 0.1 ** rollbacks).
        ``initial``: the groups' initial rates (default: their ``initial_lr``)."""
        t = self.cfg.train
        factor = 0.1 ** self.state.rollbacks
        passed = sum(1 for m in t.lr_milestones if m <= self.state.step)
        initial = initial or [g["initial_lr"] for g in opt.param_groups]
        for g, lr in zip(opt.param_groups, initial):
            g["lr"] = lr * t.lr_gamma ** passed * factor
        sched.base_lrs = [lr * factor for lr in initial]

    def in_warmup(self, step: int, epoch: int) -> bool:
        """Whether 0-based ``step`` (in 0-based ``epoch``) is one of the warm-up's steps (or epochs)."""
        t = self.cfg.train
        return step < t.warmup_steps if t.warmup_steps else epoch < t.warmup_epochs

    def warmup_progress(self, step: int, epoch: int) -> float:
        """Fraction of the warm-up completed at ``step``: (step+1)/warmup_steps or (epoch+1)/warmup_epochs."""
        t = self.cfg.train
        if t.warmup_steps:
            return min(1.0, (step + 1) / t.warmup_steps)
        if t.warmup_epochs:
            return min(1.0, (epoch + 1) / t.warmup_epochs)
        return 1.0

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        """Everything resuming needs: module weights, objective, optimizer and scheduler states,
        the loop state and the random number generators' states."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": "mixvae-checkpoint-1",
            "modules": {k: m.state_dict() for k, m in self.objective.modules().items()},
            "objective": self.objective.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "loop": asdict(self.state),
            "rng": rng,
        }

    def save(self, name: str) -> None:
        """Write checkpoints/<name>.pt: 'latest' holds everything resuming needs; 'best' only the
        weights and the objective's state (what evaluating needs: a third of the size)."""
        if self._saved.get(name) == self.state.step:
            return
        if self.ckpt_dir is not None:
            state = self.checkpoint_state()
            if name == "best":
                state = weights_only(state)
            save_checkpoint(state, self.ckpt_dir / f"{name}.pt")
        elif self.run_dir is None:   # no run folder: the best weights, and what a rollback needs, in memory
            if name == "best":
                self.best_state = weights_only(copy.deepcopy(self.checkpoint_state()))
            elif self.cfg.train.nan_policy == "rollback":
                self.latest_state = copy.deepcopy(self.checkpoint_state())
        self._saved[name] = self.state.step

    def restore(self, state: dict, where: Optional[str] = None) -> None:
        """Restore everything saved by :meth:`checkpoint_state` (modules first: the objective
        state may change the model's structure, e.g. a converted prior). A state that does not fit
        this run (another model's checkpoint, a dictionary without its parts) is refused before
        anything is loaded: UserError naming ``where`` (default: the run's latest checkpoint)."""
        if where is None:
            where = str(self.run_dir / "checkpoints" / "latest.pt") if self.run_dir is not None else "checkpoint"
        statecheck.check_training_state(state, statecheck.loop_defaults(LoopState), where)
        statecheck.load_modules(self.objective, state["objective"], state["modules"], where)
        for name in self.objective.players():
            self._build_player(name)
        statecheck.check_players(state, self.optimizers, self.schedulers, where)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        for k, v in state["loop"].items():   # in place: fit() holds a reference to self.state
            setattr(self.state, k, v)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def resume(self) -> None:
        """Continue from ``checkpoints/latest.pt`` of the run folder (or its previous copy, if the
        latest is damaged). Every run writes a step-0 checkpoint before its first step, so a run
        folder without any is not one this loop can continue: that is refused, never restarted."""
        path = self.run_dir / "checkpoints" / "latest.pt"
        if not (path.exists() or path.with_name("latest.prev.pt").exists()):
            raise UserError(f"--resume {self.run_dir}: no checkpoint to continue from ({path} is missing); "
                            "start the run again in a new folder")
        self.restore(load_checkpoint(path))
        if self.state.step > self.total_steps:
            epochs = -(-self.state.step // self.steps_per_epoch)
            raise UserError(f"--resume {self.run_dir}: its budget of {self.total_steps} steps is below the "
                            f"{self.state.step} steps the run has done; give train.max_steps >= {self.state.step} "
                            f"(or train.epochs >= {epochs}, of {self.steps_per_epoch} steps each)")
        if self.rank == 0:
            for tmp in path.parent.glob(".*.tmp"):   # writes cut short by a crash
                tmp.unlink(missing_ok=True)
            self.log.truncate_after(self.state.step)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> float:
        """Mean validation loss. Runs on its own fixed random stream, so validating (or not)
        never changes the training run's random numbers."""
        self.objective.model.eval()
        total, n = 0.0, 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed + 1)
            for x in self.data.eval_batches("valid", max(self.cfg.train.batch_size, 500)):
                with precision.autocast(self.device, self.cfg.train.precision):
                    loss = self.objective.validation_loss(x.to(self.device))
                total, n = total + loss.sum().item(), n + loss.numel()
        self.objective.model.train()
        return total / max(n, 1)

    def _after_eval(self) -> None:
        """The caller's hook after each validation (pictures, curves), on its own random stream."""
        if self.after_eval is None or self.rank != 0:
            return
        self.objective.model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed + 2)
            self.after_eval(self)
        self.objective.model.train()

    def _end_of_epoch(self, epoch: int) -> None:
        t, s = self.cfg.train, self.state
        if (epoch + 1) % t.eval_every == 0 or s.step >= self.total_steps:
            loss = self.validate()
            warm = self.warmup_progress(s.step - 1, epoch) >= 1.0
            improved = loss < s.best_loss
            if improved:
                s.best_loss, s.best_step, s.bad_evals = loss, s.step, 0
                self.save("best")
            elif warm:
                s.bad_evals += 1
            self.log.write({"step": s.step, "epoch": epoch + 1, "split": "valid", "loss": loss,
                            "best_loss": s.best_loss, "time": round(s.seconds, 2)})
            self._after_eval()
            if t.patience is not None and warm and s.bad_evals >= t.patience:
                s.stop_reason = f"early stopping: no improvement in {t.patience} evaluations"
        self.save("latest")

    # ------------------------------------------------------------------ the loop
    def _check_finite(self, metrics: dict, step: int) -> Optional[str]:
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                return f"step {step}: loss term '{k}' is {v}"
        return None

    def _rollback(self, message: str) -> None:
        """Reload the last good checkpoint (kept in memory without a run folder) and set every
        learning rate to 0.1 ** rollbacks times its scheduled value: the group's initial rate times
        lr_gamma for each milestone passed by the restored step. The rate is set, not scaled: a checkpoint written after an earlier rollback
        already holds a reduced rate, and scaling it again would compound the reductions beyond the
        factor logged (``lr_factor``)."""
        path = self.run_dir / "checkpoints" / "latest.pt" if self.run_dir else None
        if (path is None and self.latest_state is None) or (path is not None and not path.exists()):
            raise TrainingDiverged(message + "; no checkpoint to roll back to")
        rollbacks = self.state.rollbacks + 1
        if rollbacks > 5:
            raise TrainingDiverged(message + f"; still diverging after {rollbacks - 1} rollbacks")
        self.restore(load_checkpoint(path) if path is not None else copy.deepcopy(self.latest_state))
        self.state.rollbacks = rollbacks
        for name, o in self.optimizers.items():
            base = self.objective.player_lr(name) or self.cfg.train.lr
            self._set_scheduled_lr(o, self.schedulers[name], [g.get("initial_lr", base) for g in o.param_groups])
        self.log.write({"step": self.state.step, "split": "event", "event": "rollback", "reason": message,
                        "lr_factor": 0.1 ** rollbacks})

    def fit(self) -> LoopState:
        """Train until the budget is spent or early stopping ends it (continuing from
        ``self.state``, e.g. after :meth:`resume`); returns the final loop state."""
        t, s = self.cfg.train, self.state
        self.objective.model.train()
        if s.step == 0:
            self.log.add_hparams(config_to_dict(self.cfg))
            self.save("latest")   # the step-0 state: a run killed before its first step resumes from it
        bar = progress.bar(total=self.total_steps, initial=s.step, desc="train", unit="step",
                           disable=not self.progress or self.rank > 0)
        running: dict[str, list[float]] = {}   # name -> [sum, steps that reported it] since the last record
        started = time.perf_counter()
        while s.step < self.total_steps and not s.stop_reason:
            epoch, start = divmod(s.step, self.steps_per_epoch)
            rolled_back = False
            for x in self.data.train_batches(self.cfg.seed, epoch, t.batch_size, start, self.rank, self.world):
                ctx = StepContext(step=s.step, epoch=epoch, warmup=self.warmup_progress(s.step, epoch),
                                  optimizers=self.optimizers, reset_player=self._build_player,
                                  in_warmup=self.in_warmup(s.step, epoch))
                model = self.objective.model
                model.shard = self.shard
                try:
                    with precision.autocast(self.device, t.precision):
                        metrics = self.objective.step(x.to(self.device), ctx)
                finally:
                    model.shard = WHOLE           # validation and evaluation see whole batches
                metrics = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
                bad = self._check_finite(metrics, s.step)
                if parallel.any_process(bad is not None):
                    bad = bad or f"step {s.step}: a loss term is not finite in another process"
                    if t.nan_policy == "stop":
                        raise TrainingDiverged(bad + " (train.nan_policy = stop)")
                    self._rollback(bad)
                    rolled_back = True
                    break  # continue from the restored step
                for sch in self.schedulers.values():
                    sch.step()
                s.step += 1
                for k, v in metrics.items():   # a term may exist in some steps only (e.g. after a warm-up)
                    acc = running.setdefault(k, [0.0, 0])
                    acc[0], acc[1] = acc[0] + float(v), acc[1] + 1
                now = time.perf_counter()
                s.seconds, started = s.seconds + (now - started), now
                if s.step % t.log_every == 0 or s.step == self.total_steps:
                    avg = {k: total / n for k, (total, n) in running.items()}
                    if self.world > 1:   # averaged over processes (each saw its share of the batch)
                        vec = parallel.global_mean(torch.tensor(list(avg.values()), dtype=torch.float64))
                        avg = dict(zip(avg, vec.tolist()))
                    lr = next(iter(self.optimizers.values())).param_groups[0]["lr"]
                    self.log.write({"step": s.step, "epoch": epoch + 1, "split": "train", **avg,
                                    "lr": lr, "time": round(s.seconds, 2)})
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(avg.items())[:4]})
                    running = {}
                bar.update(1)
                if s.step % t.checkpoint_every == 0:
                    self.save("latest")
                if s.step >= self.total_steps:
                    break
            if not rolled_back and (s.step % self.steps_per_epoch == 0 or s.step >= self.total_steps):
                self._end_of_epoch(epoch)   # also when a budget in steps ends mid-epoch
        bar.close()
        self.save("latest")
        self.log.flush()
        return s
