"""Run folders: create, train, reload and evaluate.

A run folder holds ``config.yaml`` (the full resolved config), ``run.json`` (where the data came
from, versions), ``metrics.jsonl``, ``checkpoints/{latest,best}.pt``, pictures, and ``eval.json``
after an evaluation. Everything needed to reload the model is in the folder.
"""
from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import __version__
from .config import Config, load_config, save_config
from .data import Dataset, resolve_data_dir
from .errors import UserError
from .factory import build_data, build_model, build_objective, resolve_device
from .metrics.latent import active_units, mode_usage, posterior_mean_variance
from .metrics.likelihood import bits_per_dim, log_likelihood
from .training.checkpoint import load_checkpoint
from .training.loop import Trainer


@dataclass
class Run:
    cfg: Config
    data: Dataset
    model: torch.nn.Module
    objective: object
    path: Optional[Path]
    device: torch.device


def set_threads(cfg: Config) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def prepare(cfg: Config, data_dir=None, run_dir: Optional[Path] = None) -> Run:
    """Build data, model and objective from a config, seeded; nothing is written."""
    set_threads(cfg)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    device = resolve_device(cfg.train.device)
    data = build_data(cfg, data_dir)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data).to(device)
    objective = build_objective(cfg, model)
    return Run(cfg, data, model, objective, run_dir, device)


def check_new_run_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not empty; use 'mixvae train --resume {out}' "
                        "to continue that run, or choose another folder")


def create_run_dir(run: Run, out: Path, data_dir) -> None:
    """Write config.yaml and run.json into a new folder (only after everything was built)."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(run.cfg, out / "config.yaml")
    meta = {"mixvae": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "data_dir": str(resolve_data_dir(data_dir).resolve()), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "data_shape": list(run.data.shape), "data_kind": run.data.kind}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")


def run_data_dir(path: Path, data_dir=None):
    """--data-dir, else MIXVAE_DATA, else the folder recorded when the run was created."""
    import os
    if data_dir or os.environ.get("MIXVAE_DATA"):
        return data_dir
    meta = path / "run.json"
    return json.loads(meta.read_text()).get("data_dir") if meta.exists() else None


def train(cfg: Config, out: Path, data_dir=None, resume: bool = False, progress: bool = True,
          evaluate_after: bool = True) -> dict:
    """Train a run (new or resumed), then reload its best weights and evaluate on the test set."""
    if not resume:
        check_new_run_dir(out)
    run = prepare(cfg, data_dir, out)
    if not resume:
        try:
            create_run_dir(run, out, data_dir)
        except OSError as e:
            raise UserError(f"cannot create the run folder {out} ({e.strerror})") from None
    from .viz import save_run_pictures
    trainer = Trainer(cfg, run.objective, run.data, out, run.device, progress=progress,
                      after_eval=lambda tr: save_run_pictures(tr.objective.model, tr.data, out))
    if resume:
        trainer.resume()
    try:
        state = trainer.fit()
    except BaseException:
        if not resume and not (out / "checkpoints").exists():
            shutil.rmtree(out, ignore_errors=True)   # nothing worth keeping was written
        raise
    summary = {"steps": state.step, "train_seconds": round(state.seconds, 1), "best_step": state.best_step,
               "best_valid_loss": state.best_loss, "stop_reason": state.stop_reason or "budget reached"}
    if evaluate_after:
        load_weights(run, out, "best" if run.objective.select_best else "latest")
        summary.update(evaluate(run))
        save_run_pictures(run.model, run.data, out)
        (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_weights(run: Run, path: Path, which: str = "best") -> str:
    """Load best.pt (or latest.pt if there is no best) into the run's modules; returns the file used."""
    ckpt = path / "checkpoints" / f"{which}.pt"
    if which == "best" and not ckpt.exists():
        ckpt = path / "checkpoints" / "latest.pt"
    state = load_checkpoint(ckpt)
    run.objective.load_state_dict(state.get("objective", {}))
    for k, m in run.objective.modules().items():
        m.load_state_dict(state["modules"][k])
    return ckpt.name


def open_run(path: Path, data_dir=None, which: str = "auto", overrides=()) -> Run:
    """Reload a run folder: its config, its data and its weights ('auto': best for likelihood
    training, latest for adversarial training)."""
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a run folder (no config.yaml)")
    cfg = load_config(path / "config.yaml", list(overrides))
    run = prepare(cfg, run_data_dir(path, data_dir), path)
    if which == "auto":
        which = "best" if run.objective.select_best else "latest"
    load_weights(run, path, which)
    run.model.eval()
    return run


def evaluate(run: Run, ll_samples: Optional[int] = None, split: str = "test", batch_size: int = 500,
             fid_samples: Optional[int] = None, probes: Optional[bool] = None) -> dict:
    """Metrics of a run on a split, chosen by what the run is (explicit arguments override):

    - every run: active units, prior mode usage and inactive modes (mixture priors);
    - likelihood-trained image models: importance-sampled log-likelihood (nats; bits/dim for 8-bit);
    - 2D data: histogram KL / JSD (authors' and textbook) and gnELBO, and a density picture;
    - adversarially trained image models: FID of samples and of reconstructions, latent probes.
    ``ll_samples`` / ``fid_samples`` of 0 skip that metric; None means the run's config default.
    """
    model, data, cfg = run.model, run.data, run.cfg
    model.eval()
    batches = lambda: (x.to(run.device) for x in data.eval_batches(split, batch_size))
    out: dict = {"split": split}
    adversarial = cfg.train.objective != "elbo"
    if ll_samples is None:
        ll_samples = cfg.eval.ll_samples if (data.is_image and not adversarial) else 0
    if ll_samples:
        t0 = time.perf_counter()
        ll = torch.cat([log_likelihood(model, x, ll_samples, cfg.eval.ll_chunk) for x in batches()])
        out.update({f"{split}_ll": ll.mean().item(),
                    f"{split}_ll_sem": (ll.std() / ll.numel() ** 0.5).item() if ll.numel() > 1 else 0.0,
                    f"{split}_ll_samples": ll_samples, f"{split}_examples": ll.numel(),
                    "ll_seconds": round(time.perf_counter() - t0, 1)})
        if model.likelihood.is_discrete_8bit:
            out["bits_per_dim"] = bits_per_dim(out[f"{split}_ll"], int(torch.tensor(data.shape).prod()))
    if data.sampler is not None and data.shape == (2,):
        out.update(evaluate_toy(run))
    if fid_samples is None:
        fid_samples = cfg.eval.fid_samples if (data.is_image and adversarial) else 0
    if fid_samples:
        out.update(evaluate_fid(run, fid_samples, split))
    if probes is None:
        probes = data.is_image and adversarial and data.test.labels is not None
    if probes:
        from .metrics.probes import probe_report, sampled_latents
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            lab = lambda s: getattr(data, s).labels
            z_tr = sampled_latents(model, (x.to(run.device) for x in data.eval_batches("train", batch_size)))
            z_te = sampled_latents(model, batches())
        out["probes"] = probe_report(z_tr, lab("train"), z_te, lab(split))
    au = active_units(posterior_mean_variance(model, batches()))
    out["active_units"] = sum(au.values())
    if len(au) > 1:
        out["active_units_by_level"] = au
    out["latent_dim"] = model.latent_dim
    usage = mode_usage(model, batches())
    if usage is not None:
        out.update(components=int(usage["weights"].numel()), inactive_modes=usage["inactive_modes"],
                   inactive_by_weight=usage["inactive_by_weight"],
                   max_usage=float(usage["usage"].max()), min_usage=float(usage["usage"].min()))
    out["likelihood"] = model.likelihood.kind
    return out


def evaluate_toy(run: Run) -> dict:
    """2D benchmark metrics (5000 points, 12 800 for gnELBO on a 1024^2 grid) and density.png."""
    from .data.toy2d import BOXES
    from .metrics.toy2d import density_grid, evaluate_2d
    from .viz import save_density_2d
    box = BOXES[run.data.name]
    res = evaluate_2d(run.model, run.data.sampler, box, seed=run.cfg.seed + 1000)
    if run.path is not None:
        save_density_2d(density_grid(run.model, box), box, run.path / "density.png", title="exp(-negELBO)")
    return res


def evaluate_fid(run: Run, n: int, split: str) -> dict:
    """FID (standard protocol) of n prior samples and of n reconstructions, both against n images of the split."""
    from .metrics.fid import InceptionFeatures, fid_from_features
    data, model = run.data, run.model
    real = data.scale(getattr(data, split).get(slice(0, n))).to(run.device)
    n = real.shape[0]
    feats = InceptionFeatures(run.device)
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(run.cfg.seed)
        samples = torch.cat([model.sample(min(500, n - i)) for i in range(0, n, 500)])
        recs = torch.cat([model.reconstruct(real[i:i + 500]) for i in range(0, n, 500)])
    f_real = feats.reference_features(data.unscale(real))
    return {"fid_samples": fid_from_features(f_real, feats.features(data.unscale(samples))),
            "fid_reconstructions": fid_from_features(f_real, feats.features(data.unscale(recs))),
            "fid_images": n, "fid_reference": f"{split} split", "fid_seconds": round(time.perf_counter() - t0, 1)}
