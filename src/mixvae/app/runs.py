"""Run folders: create, train, reload and evaluate.

A run folder holds ``config.yaml`` (the full resolved config), ``run.json`` (where the data came
from, versions), ``metrics.jsonl``, ``checkpoints/{latest,best}.pt``, pictures, and ``eval.json``
after an evaluation. Everything needed to reload the model is in the folder. A process that
writes a run folder (training or resuming it) holds the folder's lock (``.lock``) for the whole
run, so a second writer stops with one line instead of interleaving its output with the first.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import yaml

from .. import __version__, precision, progress
from ..config import Config, config_to_dict, load_config, save_config
from ..data import Dataset, resolve_data_dir
from .. import safeio
from ..errors import UserError
from ..factory import build_data, build_model, build_objective, check_training_data, resolve_auto, resolve_device
from ..metrics.latent import active_units, mode_usage, posterior_mean_variance
from ..metrics.likelihood import bits_per_dim, elbo_parts, log_likelihood
from ..metrics.reconstruction import latent_statistics, reconstruction_report
from .. import parallel
from ..parallel import ProcessInfo
from ..registry import OBJECTIVES
from ..training.checkpoint import load_checkpoint_from
from ..training import statecheck
from ..training.loop import Trainer


@dataclass
class Run:
    cfg: Config
    data: Dataset
    model: torch.nn.Module
    objective: object
    path: Optional[Path]
    device: torch.device
    weights_file: Optional[str] = None   # what the weights were loaded from (open_run): "checkpoints/best.pt", ...


def set_threads(cfg: Config) -> None:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def deterministic_algorithms(on: bool, device: torch.device) -> None:
    """``torch.use_deterministic_algorithms(on)``. On CUDA, cuBLAS is deterministic only with a fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``), which must be in the environment before CUDA starts:
    it is set here when unset and CUDA has not started yet, else refused with one line."""
    if on and device.type == "cuda" and not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        if torch.cuda.is_initialized():
            raise UserError("train.deterministic = true on CUDA needs the environment variable "
                            "CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts, and CUDA already started in this "
                            "process; set the variable and start the process again")
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(on)


def prepare(cfg: Config, data_dir=None, run_dir: Optional[Path] = None, data: Optional[Dataset] = None) -> Run:
    """Build data (unless given), model and objective from a config, seeded; nothing is written."""
    set_threads(cfg)
    device = resolve_device(cfg.train.device)
    deterministic_algorithms(cfg.train.deterministic, device)
    data = data if data is not None else build_data(cfg, data_dir)
    resolve_auto(cfg, data)   # config.yaml states the likelihood and pseudo-input initialisation used
    torch.manual_seed(cfg.seed)
    try:
        model = build_model(cfg, data).to(device)
    except (RuntimeError, MemoryError) as e:   # e.g. widths or a latent size far too large to allocate
        raise UserError(f"cannot build the model of this config: {str(e).splitlines()[0][:160]}") from None
    objective = build_objective(cfg, model)
    for m in objective.modules().values():     # e.g. a discriminator built by the objective
        m.to(device)
    return Run(cfg, data, model, objective, run_dir, device)


try:
    import fcntl
except ImportError:   # not POSIX (Windows): run folders are not locked
    fcntl = None

LOCK_FILE = ".lock"


class RunLock:
    """The exclusive lock of a run folder: ``flock`` on ``FOLDER/.lock``, which holds the writer's pid.

    The operating system releases it when the process ends in any way (exit, exception, SIGKILL),
    so the lock of a dead process is never stale and needs no cleaning up. Use as a context manager
    or call :meth:`release`. Raises :class:`UserError` if another live process holds it."""

    def __init__(self, folder: Path):
        self.folder, self.fd = folder, None
        if fcntl is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot lock the run folder {folder} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"run folder {folder} is being written by another mixvae process (pid {holder}); "
                            "wait for it to end, or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)   # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def holder_of(folder: Path) -> Optional[str]:
    """The pid (as written) of the live process holding ``folder``'s lock, or None."""
    if fcntl is None or not (folder / LOCK_FILE).is_file():
        return None
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    finally:
        os.close(fd)


def check_new_run_dir(out: Path, locked: bool = False) -> None:
    """Refuse an --out that another process writes, or that exists with content (a lock file left
    by a finished run aside). ``locked``: this process holds the folder's lock already."""
    holder = holder_of(out) if out.is_dir() and not locked else None
    if holder is not None:
        raise UserError(f"run folder {out} is being written by another mixvae process (pid {holder}); "
                        "wait for it to end, or choose another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; expected a run folder (a new or an empty one)")
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise UserError(f"--out {out} already exists and is not empty; use 'mixvae train --resume {out}' "
                        "to continue that run, or choose another folder")


def create_run_dir(run: Run, out: Path, data_dir) -> RunLock:
    """Lock a new folder and write config.yaml and run.json into it (only after everything was
    built). Returns the held lock; the folder is checked again under it, so of two processes
    creating the same folder at once exactly one goes on."""
    lock = RunLock(out)
    try:
        check_new_run_dir(out, locked=True)
    except UserError:
        lock.release()
        raise
    save_config(run.cfg, out / "config.yaml")
    meta = {"mixvae": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "data_dir": str(resolve_data_dir(data_dir).resolve()), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "data_shape": list(run.data.shape), "data_kind": run.data.kind, "data": run.data.spec()}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return lock


def run_data_dir(path: Path, data_dir=None):
    """--data-dir, else MIXVAE_DATA, else the folder recorded when the run was created."""
    import os
    if data_dir or os.environ.get("MIXVAE_DATA"):
        return data_dir
    meta = path / "run.json"
    if not meta.exists():
        return None
    try:
        info = json.loads(safeio.read_text(meta, limit=1 << 20))
    except ValueError as e:
        raise UserError(f"{meta}: not valid JSON ({str(e)[:120]}); repair it or give --data-dir") from None
    if not isinstance(info, dict) or not isinstance(info.get("data_dir"), (str, type(None))):
        raise UserError(f"{meta}: expected a JSON object whose data_dir is a path; repair it or give --data-dir")
    return info.get("data_dir")


def train(cfg: Config, out: Path, data_dir=None, resume: bool = False, progress: bool = True,
          evaluate_after: bool = True, proc: ProcessInfo = ProcessInfo()) -> dict:
    """Train a run (new or resumed), then reload its best weights and evaluate on the test set.

    The folder's lock is held from the first write to the last. With several processes (``proc``
    from :func:`parallel.init_from_env`) every process trains its share of each batch and only
    rank 0 locks and writes the run folder."""
    if proc.world > 1 and cfg.train.device.startswith("cuda"):
        cfg.train.device = f"cuda:{proc.local_rank}"
    locks: list[RunLock] = []
    try:
        return _train(cfg, out, data_dir, resume, progress, evaluate_after, proc, locks)
    finally:
        for lock in locks:
            lock.release()


def _on_main(proc: ProcessInfo, action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0; its UserError (or failed write) stops every process with that line."""
    problem = None
    if proc.is_main:
        try:
            action()
        except UserError as e:
            problem = str(e)
        except OSError as e:
            problem = f"cannot write the run folder: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")
    problem = parallel.broadcast_object(problem)
    if problem:
        raise UserError(problem)


def _train(cfg, out, data_dir, resume, progress, evaluate_after, proc, locks) -> dict:
    from .viz import save_run_pictures
    if resume:
        _on_main(proc, lambda: locks.append(RunLock(out)))
    else:
        _on_main(proc, lambda: check_new_run_dir(out))   # before the (slow) data loading
    run = prepare(cfg, data_dir, out)
    if not resume:
        check_training_data(cfg.model.likelihood, run.data, "model.likelihood")
        _on_main(proc, lambda: locks.append(create_run_dir(run, out, data_dir)))
    trainer = None
    try:
        trainer = Trainer(cfg, run.objective, run.data, out, run.device, rank=proc.rank, world=proc.world,
                          progress=progress, after_eval=lambda tr: picture_run(tr, out))
        if resume:
            trainer.resume()
            _on_main(proc, lambda: save_config(cfg, out / "config.yaml"))   # its budget may have changed (--set)
        state = trainer.fit()
    except BaseException:
        if trainer is not None:
            trainer.log.close()
        if proc.is_main and not resume and (trainer is None or trainer.state.step == 0):
            shutil.rmtree(out, ignore_errors=True)   # no training step was done: nothing worth keeping
        raise
    summary = {"steps": state.step, "steps_per_epoch": trainer.steps_per_epoch,
               "train_seconds": round(state.seconds, 1), "best_step": state.best_step,
               "best_valid_loss": state.best_loss if math.isfinite(state.best_loss) else None, "stop_reason": state.stop_reason or "budget reached"}
    if proc.world > 1:
        summary["processes"] = proc.world
    if evaluate_after:
        parallel.barrier()                            # rank 0 has written the last checkpoint
        load_weights(run, out, "best" if run.objective.select_best else "latest")
        summary.update(evaluate(run, proc=proc))

        def record():
            save_run_pictures(run.model, run.data, out)
            numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and k not in ("steps", "steps_per_epoch")}
            trainer.log.write({"step": state.step, "split": "eval", **numbers})
            (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
        _on_main(proc, record)        # a failed write stops every process (none waits for rank 0 in vain)
    trainer.log.close()
    return summary


def picture_run(trainer: Trainer, out: Path) -> None:
    """After each validation: the run's pictures and curves.png; the pictures also go to TensorBoard
    at the first 10 validations and every 10th after (a long run's event file stays small)."""
    import numpy as np
    from PIL import Image
    from .viz import save_curves, save_run_pictures
    trainer.validations = getattr(trainer, "validations", 0) + 1
    to_tensorboard = trainer.validations <= 10 or trainer.validations % 10 == 0
    for path in save_run_pictures(trainer.objective.model, trainer.data, out):
        if to_tensorboard:
            with Image.open(path) as im:
                trainer.log.add_image(path.stem, np.asarray(im.convert("RGB")), trainer.state.step)
    save_curves(out / "metrics.jsonl", out / "curves.png")


def _load_state(run: Run, objective_state: dict, modules: dict, where: str) -> None:
    """Objective state first (it may change the model's structure, e.g. a converted prior), then
    weights; a file that does not fit the run is one line naming it and what does not fit."""
    statecheck.load_modules(run.objective, objective_state, modules, where)


WEIGHTS_FILE = "model.safetensors"   # a finished run's final weights (its checkpoints may be gone)


def load_weights(run: Run, path: Path, which: str = "best") -> str:
    """Load best.pt (or latest.pt if there is no best) into the run's modules; a run folder without
    checkpoints (a finished, published run) loads its model.safetensors. Returns the file used,
    relative to the run folder ("checkpoints/best.prev.pt" where best.pt was missing).
    A damaged latest.pt falls back to its previous copy; a damaged best.pt is refused (an older
    best is not the best)."""
    ckpt = path / "checkpoints" / f"{which}.pt"
    if which == "best" and not ckpt.exists() and not ckpt.with_name("best.prev.pt").exists():
        ckpt = path / "checkpoints" / "latest.pt"
    if not (path / "checkpoints").is_dir() and (path / WEIGHTS_FILE).is_file():
        import_weights(run, path / WEIGHTS_FILE)
        return WEIGHTS_FILE
    state, used = load_checkpoint_from(ckpt, fallback=ckpt.name == "latest.pt" or not ckpt.exists())
    _load_state(run, state.get("objective", {}), state.get("modules", {}), str(used))
    return f"checkpoints/{used.name}"


def export_weights(run: Run, file: Path) -> Path:
    """Write the weights of every module as safetensors (tensors only; the objective's state, e.g.
    whether the prior was converted, goes into the file's string metadata as JSON)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    tensors = {f"{name}/{k}": v.detach().cpu().contiguous()
               for name, m in run.objective.modules().items() for k, v in m.state_dict().items()}
    meta = {"format": "mixvae-weights-1", "objective_state": json.dumps(run.objective.state_dict()),
            "mixvae": __version__, "config": yaml.safe_dump(config_to_dict(run.cfg), sort_keys=False),
            "data": json.dumps(run.data.spec())}
    meta["sha256"] = statecheck.weights_digest(tensors, meta)   # checked on import: a damaged file is refused
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(file), metadata=meta)
    except (OSError, SafetensorError) as e:
        raise UserError(f"cannot write {file} ({getattr(e, 'strerror', None) or e})") from None
    return file


def import_weights(run: Run, file: Path) -> None:
    """Load weights written by :func:`export_weights` (safetensors: no code runs when reading)."""
    from safetensors import SafetensorError, safe_open
    safeio.open_regular(file, "weights file ").close()   # not a folder, device or FIFO
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        objective_state = json.loads(meta.get("objective_state", "{}"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{file}: not a safetensors file of mixvae weights ({' '.join(str(e).split())[:200]})") from None
    if "sha256" in meta and statecheck.weights_digest(tensors, meta) != meta["sha256"]:
        raise UserError(f"{file}: damaged (its content does not match the checksum it was written with); "
                        "export the weights again")
    modules: dict[str, dict] = {}
    for key, t in tensors.items():
        name, _, k = key.partition("/")
        modules.setdefault(name, {})[k] = t
    _load_state(run, objective_state, modules, str(file))


def recorded_data_spec(path: Path, cfg: Config) -> Optional[dict]:
    """The data of a run folder as its run.json describes them (:meth:`Dataset.spec`; older run
    folders: data_shape and data_kind), or None where it does not say their shape."""
    try:
        meta = json.loads(safeio.read_text(path / "run.json", limit=1 << 20)) if (path / "run.json").is_file() else {}
    except (OSError, ValueError) as e:
        raise UserError(f"{path}/run.json: not valid JSON ({str(e)[:120]})") from None
    if not isinstance(meta, dict):
        return None
    spec = meta.get("data") or {"name": cfg.data.name, "kind": meta.get("data_kind", "continuous"),
                                "shape": meta.get("data_shape"), "scale": cfg.data.scale}
    return spec if isinstance(spec, dict) and isinstance(spec.get("shape"), list) and spec["shape"] else None


def open_run(path: Path, data_dir=None, which: str = "auto", overrides=(), weights: Optional[Path] = None,
             needs_data: bool = True) -> Run:
    """Reload a run folder: its config, its data and its weights ('auto': best for likelihood
    training, latest for adversarial training; or a safetensors file given as ``weights``).
    With ``needs_data`` false (sampling, exporting), a run whose data cannot be loaded here (a
    ``mixvae.fit`` run on in-memory examples, files missing offline) opens with the data as its
    run.json describes them, without examples."""
    check_run_folder(path)
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a run folder (no config.yaml)")
    cfg = load_config(path / "config.yaml", list(overrides))
    try:
        run = prepare(cfg, run_data_dir(path, data_dir), path)
    except UserError:
        spec = None if needs_data else recorded_data_spec(path, cfg)
        if spec is None:
            raise
        run = prepare(cfg, run_dir=path, data=Dataset.from_spec(spec))
    if weights is not None:
        import_weights(run, weights)
        run.weights_file = str(weights)
    else:
        if which == "auto":
            which = "best" if run.objective.select_best else "latest"
        run.weights_file = load_weights(run, path, which)
    run.model.eval()
    return run


def evaluate(run: Run, ll_samples: Optional[int] = None, split: str = "test", batch_size: int = 500,
             fid_samples: Optional[int] = None, probes: Optional[bool] = None,
             proc: ProcessInfo = ProcessInfo()) -> dict:
    """Metrics of a run on a split, chosen by what the run is (explicit arguments override):

    - every run: active units, prior mode usage and inactive modes (mixture priors);
    - likelihood-trained image models: importance-sampled log-likelihood (nats; bits/dim for 8-bit)
      and its per-image histogram (ll_histogram.png in the run folder), the ELBO's parts;
    - 2D data: histogram KL / JSD (authors' and textbook) and gnELBO, and a density picture;
    - adversarially trained image models: FID of samples and of reconstructions, latent probes.
    ``ll_samples`` / ``fid_samples`` of 0 skip that metric; None means the run's config default.
    With several processes, the log-likelihood and FID images are shared out and gathered; every
    process returns the same numbers. Everything runs in ``eval.precision`` (fp32 by default).
    """
    with precision.autocast(run.device, run.cfg.eval.precision):
        out = _evaluate(run, ll_samples, split, batch_size, fid_samples, probes, proc)
    out["precision"] = run.cfg.eval.precision
    return out


def _evaluate(run: Run, ll_samples, split, batch_size, fid_samples, probes, proc) -> dict:
    model, data, cfg = run.model, run.data, run.cfg
    model.eval()
    batches = lambda: (x.to(run.device) for x in data.eval_batches(split, batch_size))
    out: dict = {"split": split}
    metrics = OBJECTIVES.get(cfg.train.objective).info.get("metrics", ())   # what the objective's runs report
    if ll_samples is None:
        ll_samples = cfg.eval.ll_samples if (data.is_image and "ll" in metrics) else 0
    if ll_samples:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed + proc.rank)
            shares = (x[proc.rank::proc.world] for x in batches())          # every process its rows
            n_split = len(getattr(data, split))
            with progress.bar(total=len(range(proc.rank, n_split, proc.world)), unit="img",
                              desc=f"log-likelihood (S={ll_samples})", disable=not proc.is_main) as b:
                ll = torch.cat([torch.zeros(0)] + [log_likelihood(model, x, ll_samples, cfg.eval.ll_chunk, bar=b).cpu()
                                                   for x in shares if x.shape[0]])
        ll = parallel.gather_rows(ll)
        out.update({f"{split}_ll": ll.mean().item(),
                    f"{split}_ll_sem": (ll.std() / ll.numel() ** 0.5).item() if ll.numel() > 1 else 0.0,
                    f"{split}_ll_samples": ll_samples, f"{split}_examples": ll.numel(),
                    "ll_seconds": round(time.perf_counter() - t0, 1)})
        if run.path is not None and proc.is_main:
            from .viz import save_ll_histogram
            save_ll_histogram(ll, run.path / "ll_histogram.png", title=f"{split}: {ll.numel()} images, S = {ll_samples}")
        dims = int(torch.tensor(data.shape).prod())
        if data.kind == "8bit" and model.likelihood.is_discrete:
            out["bits_per_dim"] = bits_per_dim(out[f"{split}_ll"], dims)
        elif data.kind == "8bit":   # a density on the model's range: each 8-bit value's bin has width (hi - lo) / 256
            lo, hi = data.value_range
            out["bits_per_dim"] = bits_per_dim(out[f"{split}_ll"] - dims * math.log(256 / (hi - lo)), dims)
        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            parts = elbo_parts(model, batches())
        out.update({f"{split}_{k}": v for k, v in parts.items()})
    if data.sampler is not None and data.shape == (2,):
        out.update(evaluate_toy(run, write=proc.is_main))
    if fid_samples is None:
        fid_samples = cfg.eval.fid_samples if (data.is_image and "fid" in metrics) else 0
    if fid_samples:
        out.update(evaluate_fid(run, fid_samples, split, proc))
    if probes is None:
        probes = data.is_image and "probes" in metrics and data.test.labels is not None
    if probes:
        from ..metrics.probes import probe_report, sampled_latents
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            lab = lambda s: getattr(data, s).labels
            z_tr = sampled_latents(model, (x.to(run.device) for x in data.eval_batches("train", batch_size)))
            z_te = sampled_latents(model, batches())
        out["probes"] = probe_report(z_tr, lab("train"), z_te, lab(split))
    if data.is_image:
        out.update(reconstruction_report(model, batches(), data.unscale))
    if "latent_stats" in metrics:
        out["latent_stats"] = latent_statistics(model, batches())
    au = active_units(posterior_mean_variance(model, batches()))
    out["active_units"] = sum(au.values())
    if len(au) > 1:
        out["active_units_by_level"] = au
    out["latent_dim"] = model.latent_dim
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)             # its z ~ q(z|x): the same figures from train and from eval
        usage = mode_usage(model, batches())
    if usage is not None:
        out.update(components=int(usage["weights"].numel()), inactive_modes=usage["inactive_modes"],
                   inactive_by_weight=usage["inactive_by_weight"],
                   max_usage=float(usage["usage"].max()), min_usage=float(usage["usage"].min()))
    out["likelihood"] = model.likelihood.kind
    return out


def evaluate_toy(run: Run, write: bool = True) -> dict:
    """2D benchmark metrics (5000 points; gnELBO on 12 800 points and an eval.toy_grid^2 grid) and density.png."""
    from ..data.toy2d import BOXES
    from ..metrics.toy2d import density_grid, evaluate_2d
    from .viz import save_density_2d
    box = BOXES[run.data.name]
    res = evaluate_2d(run.model, run.data.sampler, box, seed=run.cfg.seed + 1000, grid=run.cfg.eval.toy_grid)
    if run.path is not None and write:
        save_density_2d(density_grid(run.model, box), box, run.path / "density.png", title="exp(-negELBO)")
    return res


def evaluate_fid(run: Run, n: int, split: str, proc: ProcessInfo = ProcessInfo()) -> dict:
    """FID (standard protocol) of n prior samples against n images of the split, and of the
    reconstructions of m of those images (m = eval.fid_reconstructions, default n) against the same
    n images. The split's features are cached on disk when one process evaluates."""
    from ..metrics.fid import InceptionFeatures, fid_from_features
    data, model = run.data, run.model
    real = data.scale(getattr(data, split).get(slice(0, n))).to(run.device)
    n = real.shape[0]
    m = min(n, run.cfg.eval.fid_reconstructions or n)
    feats = InceptionFeatures(run.device)
    t0 = time.perf_counter()
    mine = lambda count: [i for k, i in enumerate(range(0, count, 500)) if k % proc.world == proc.rank]
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(run.cfg.seed + proc.rank)
        samples = [model.sample(min(500, n - i)) for i in mine(n)]
        recs = [model.reconstruct(real[i:min(i + 500, m)]) for i in mine(m)]
    features = lambda parts: parallel.gather_rows(torch.from_numpy(feats.features(data.unscale(torch.cat(parts))))
                                                  if parts else torch.zeros(0, 2048, dtype=torch.float64)).numpy()
    if proc.world == 1:
        f_real = feats.reference_features(data.unscale(real))
    else:
        f_real = features([real[i:i + 500] for i in mine(n)])
    return {"fid_samples": fid_from_features(f_real, features(samples)),
            "fid_reconstructions": fid_from_features(f_real, features(recs)),
            "fid_images": n, "fid_reconstructed_images": m, "fid_reference": f"{split} split",
            "fid_seconds": round(time.perf_counter() - t0, 1)}


def prepare_seeds(cfg: Config, seeds: list[int], data_dir=None, data: Optional[Dataset] = None):
    """The runs of ``cfg`` at each of ``seeds``, each prepared as its separate run would be (its
    seed's weights, and the random state its preparation leaves, captured as the member's stream),
    as one stacked ensemble: (ensemble, data whose batches are stacked by seed, the first run,
    whose model now holds every member's weights)."""
    from ..members import generator_at_global
    from ..training import ensemble
    ensemble.check(cfg, seeds)                # before the (slow) preparation of every member
    members, generators = [], []
    for s in seeds:
        member_cfg = copy.deepcopy(cfg)
        member_cfg.seed = int(s)
        run = prepare(member_cfg, data_dir, data=data)
        data = run.data
        members.append(run)
        generators.append(generator_at_global(run.device))
    ens = ensemble.Ensemble(members, generators)
    return ens, ensemble.StackedBatches(data, ens.seeds), members[0]


def check_run_folder(path: Path, what: str = "") -> None:
    """Refuse, in one sentence, a folder of ``mixvae train --seeds`` where one run's folder is
    expected: the ensemble's own folder (stacked weights) or the folder holding the members."""
    where = f"{what} {path}" if what else str(path)
    marker = path / "seeds.json"
    if marker.is_file() and "members" in json.loads(marker.read_text()):
        raise UserError(f"{where}: the stacked weights of the seeds trained by mixvae train --seeds; resume them "
                        f"with --resume {path.parent}, or give one member's folder ({path.parent / 'seed<S>'})")
    if not (path / "config.yaml").is_file() and (path / "ensemble" / "seeds.json").is_file():
        raise UserError(f"{where}: the seeds trained by mixvae train --seeds; give one member's folder "
                        f"({path / 'seed<S>'})")


def _left_by_ensemble(out: Path, seeds: list[int]) -> bool:
    """Whether the member folder ``out`` is as an ensemble of ``seeds`` wrote it: its seeds.json
    names them, and its run stands at the step recorded there (not trained on alone since)."""
    marker = out / "seeds.json"
    if not marker.is_file():
        return False
    written = json.loads(marker.read_text())
    latest = out / "checkpoints" / "latest.pt"
    if latest.is_file():
        step = load_checkpoint_from(latest)[0]["loop"]["step"]
    elif (out / "eval.json").is_file():
        step = json.loads((out / "eval.json").read_text()).get("steps")
    else:
        step = written.get("step")        # cut short while it was written
    return written.get("seeds") == seeds and step == written.get("step")


def train_seeds(cfg: Config, seeds: list[int], outs: list[Path], work: Path, data_dir=None, resume: bool = False,
                progress: bool = True, evaluate_after: bool = True) -> list[dict]:
    """Train ``cfg`` at each of ``seeds`` in one process, as a stacked ensemble
    (:mod:`mixvae.training.ensemble`), in the run folder ``work`` (checkpoints, metrics; resumable
    like any run with ``resume``); then give each member the run folder ``outs[i]`` its separate
    run would have left (config.yaml with its seed, its checkpoint, its rows of metrics.jsonl, and
    seeds.json with the seeds and the step it was written at) and evaluate it there, as ``train``
    does. Returns the members' summaries; their ``train_seconds`` is the ensemble's, shared by all."""
    from dataclasses import replace
    from ..training import ensemble
    from ..training.checkpoint import save_checkpoint
    from ..training.tracking import read_records
    if len(outs) != len(seeds):
        raise UserError(f"{len(seeds)} seeds need as many run folders, got {len(outs)}")
    for out in outs:
        if not resume:
            check_new_run_dir(out)
        elif out.exists() and (not _left_by_ensemble(out, list(seeds)) or holder_of(out)):
            raise UserError(f"run folder {out} is not as the ensemble in {work} left it (another run's folder, or a "
                            "member trained on alone since); move it away to let the ensemble write it")
    lock = RunLock(work) if resume else None
    if not resume:
        check_new_run_dir(work)
    try:
        ens, data, first = prepare_seeds(cfg, seeds, data_dir)
        if not resume:
            check_training_data(cfg.model.likelihood, data, "model.likelihood")
            lock = create_run_dir(first, work, data_dir)
            (work / "seeds.json").write_text(json.dumps({"seeds": ens.seeds, "members": [str(o) for o in outs]}) + "\n")
        trainer = Trainer(first.cfg, ens, data, work, first.device, progress=progress)
        try:
            if resume:
                trainer.resume()
                save_config(first.cfg, work / "config.yaml")    # its budget may have changed (--set)
            trainer.fit()
        finally:
            trainer.log.close()
        final = trainer.checkpoint_state()
    except BaseException:
        if not resume and lock is not None and not (work / "checkpoints" / "latest.pt").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()
    records = [r for r, _ in read_records(work / "metrics.jsonl")[0]]
    step, summaries = final["loop"]["step"], []
    for i, (seed, out) in enumerate(zip(ens.seeds, outs)):
        member_cfg = copy.deepcopy(first.cfg)
        member_cfg.seed = seed
        written = out.is_dir() and json.loads((out / "seeds.json").read_text()).get("step") == step
        if written and not (out / "checkpoints").is_dir():     # finished since (e.g. a kept grid cell)
            summaries.append(json.loads((out / "eval.json").read_text()))
            continue
        if not written:      # the member's folder, written whole under a temporary name, then renamed
            tmp = out.with_name(f".{out.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            with create_run_dir(replace(first, cfg=member_cfg), tmp, data_dir):
                save_checkpoint(ensemble.member_state(final, i), tmp / "checkpoints" / "latest.pt")
                with open(tmp / "metrics.jsonl", "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in ensemble.member_records(records, seed))
                (tmp / "seeds.json").write_text(json.dumps({"seeds": ens.seeds, "step": step}) + "\n")
            shutil.rmtree(out, ignore_errors=True)     # (an earlier state of this ensemble's member, checked above)
            tmp.rename(out)
        summaries.append(train(member_cfg, out, data_dir, resume=True, progress=False, evaluate_after=evaluate_after))
    return summaries
