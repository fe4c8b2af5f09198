"""The Python API: build a model, fit it on your data, measure it, save it and load it back::

    import mixvae
    model = mixvae.build("vae", data=x_train, prior="vampprior", components=500)
    mixvae.fit(model, x_train, epochs=30, warmup_epochs=10)
    ll = mixvae.log_likelihood(model, x_test, samples=5000)          # (N,) nats
    mixvae.save_images(mixvae.sample(model, 64), "samples.png")

Data are torch tensors or numpy arrays: images (N, C, H, W) with C = 1 or 3, or (N, H, W), with
floats in [0, 1] or uint8; vectors (N, D). The kind of data (binary, 8-bit, other quantised,
continuous) is read off the values and picks the default likelihood, as for files. ``fit`` also
takes any re-iterable source of batches (a DataLoader) with validation examples in memory.

Everything runs the library's one training loop and objectives; with ``out=FOLDER`` a fit writes
the same run folder as ``mixvae train`` (config.yaml, metrics.jsonl, checkpoints, pictures,
TensorBoard events), which :func:`load` and the command line reopen.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import numbers
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from .config import Config, PriorConfig, config_from_dict, config_to_dict, load_config, save_config
from .data import BatchStream, Dataset, from_tensors
from .data.datasets import _as_split, from_model_range, to_model_range
from .errors import UserError
from .factory import (build_model, build_objective, check_likelihood, check_training_data, likelihood_kind,
                      resolve_auto, resolve_device)
from .models import LatentVariableModel
from .models.base import evaluating
from .registry import OBJECTIVES, PRIORS

Data = Union[torch.Tensor, Any]   # a tensor, a numpy array, or (for fit) an iterable of batches
PRESETS = Path(__file__).resolve().parents[2] / "configs"   # the repository's presets, in a checkout
_PRIOR_KEYS = {f.name for f in dataclasses.fields(PriorConfig)} - {"kind"}
_SECTIONS = tuple(k for k, v in config_to_dict(Config()).items() if isinstance(v, dict))   # data, model, train, ...
_FIT_DATA_KEYS = ("scale", "binarize", "train_subset", "valid_size", "split_seed")   # what fit applies to examples


def _data(data, name: str = "data") -> Dataset:
    """``data`` for :func:`build`: its training part as :func:`fit` will split it (a ``vampprior-data``
    prior picks its pseudo-inputs there), or every example where there are too few to split."""
    if isinstance(data, Dataset):
        return data
    if data is None:
        raise UserError(f"mixvae.build: {name} is required: a tensor or array of examples")
    try:
        try:
            return from_tensors(data)
        except UserError:
            return from_tensors(data, valid=data)     # too few to split (bad data fail here again, with their reason)
    except UserError as e:
        raise UserError(f"mixvae.build: {name}: {str(e).removeprefix('train ')}") from None


def build(arch: str = "vae", *, data, seed: int = 0, prior: Optional[str] = None, **options) -> LatentVariableModel:
    """A model for ``data`` (examples (N, *data_shape) as a tensor / array, or a Dataset: only their
    shape and kind are used, and the training images of a ``vampprior-data`` prior).

    ``arch``: ``vae`` | ``hvae`` | ``convhvae`` | ``mlp2d`` | ``resnet`` | ``resnetv2``, or a preset: a
    YAML path or a name under configs/ (``"vampprior/vae_vampprior_static_mnist"``), whose model
    section builds the model and whose other sections come with it in ``model.config``: :func:`fit`
    then trains with the preset's objective, training settings and data scale unless told otherwise.
    ``prior``: ``standard`` | ``mog`` | ``vampprior`` | ``vampprior-data``.
    ``options``: keys of the config's ``model`` section (``latent_dim``, ``hidden``, ``likelihood``,
    ...) and of ``model.prior`` (``components``, ``learn_weights``, ``pseudo_init``, ...).
    The model carries its config as ``model.config``; its latents have ``latent_dim`` dimensions
    and :func:`sample` draws (n, *data_shape) in the range the data came in.
    """
    ds = _data(data)
    if arch.endswith((".yaml", ".yml")) or "/" in arch:
        path = Path(arch) if Path(arch).suffix else PRESETS / f"{arch}.yaml"
        spec = config_to_dict(load_config(path))
    else:
        spec = {"model": {"arch": arch}}
    spec["seed"] = seed
    model_spec = spec.setdefault("model", {})
    prior_spec = model_spec.setdefault("prior", {})
    if prior is not None:
        prior_spec["kind"] = prior
    for k, v in options.items():
        (prior_spec if k in _PRIOR_KEYS else model_spec)[k] = v
    cfg = config_from_dict(spec, "mixvae.build")
    reads = PRIORS.get(cfg.model.prior.kind, "mixvae.build").info.get("options")
    for k in options:
        if k in _PRIOR_KEYS and reads is not None and k not in reads:
            raise UserError(f"mixvae.build: the {cfg.model.prior.kind} prior does not use {k}; it reads "
                            f"{', '.join(reads) or 'no options'}")
    cfg.data.name = ds.name
    if cfg.data.binarize == "auto" and ds.kind != "binary" and likelihood_kind(cfg, ds) == "bernoulli":
        cfg.data.binarize = "dynamic"    # a Bernoulli model of gray data sees them binarised, every batch anew
    if cfg.data.binarize == "dynamic" and ds.kind != "binary":
        ds = from_tensors(ds.train.get(), ds.valid.get(), dynamic_binarize=True)
    resolve_auto(cfg, ds)
    with torch.random.fork_rng(devices=[]):     # seeded weights; the caller's random state stays as it was
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, ds)
    model.config = cfg
    return model


def _fit_config(model, objective: Optional[str], seed: Optional[int], options: dict) -> Config:
    base = copy.deepcopy(getattr(model, "config", None)) or Config()
    spec = config_to_dict(base)
    if getattr(model, "config", None) is None:
        spec["model"]["arch"] = "custom"
    if objective is not None:
        spec["train"]["objective"] = objective
    if seed is not None:
        spec["seed"] = seed
    for k, v in options.items():
        if k in _SECTIONS and isinstance(v, dict):
            spec[k].update(v)
        elif isinstance(v, dict):
            raise UserError(f"mixvae.fit: {k}={{...}} is not a section of the config; expected one of "
                            f"{', '.join(x for x in _SECTIONS if x not in ('train', 'model'))} "
                            "(train keys go as plain keywords: epochs=3)")
        else:
            spec["train"][k] = v
    return config_from_dict(spec, "mixvae.fit")


def fit(model: LatentVariableModel, train: Data, valid: Optional[Data] = None, *, out: Optional[Union[str, Path]] = None,
        objective: Optional[str] = None, seed: Optional[int] = None, steps_per_epoch: Optional[int] = None,
        progress: bool = True, **options) -> dict:
    """Train ``model`` in place with the library's training loop; returns the history.

    ``train``: examples (N, *data_shape) (tensor / array; a seeded 10% is held out for validation
    unless ``valid`` is given) or an iterable of batches (then ``valid`` examples are required and ``steps_per_epoch``
    if it has no length). ``options``: keys of the config's ``train`` section (``epochs``,
    ``batch_size``, ``lr``, ``optimizer``, ``warmup_epochs``, ``patience``, ``max_steps``, ...), or a
    whole section as a dict (``sintro={"beta_neg": 256}``); ``device`` moves the model there first
    (else it trains where its parameters are), and ``threads`` and ``deterministic`` hold while the
    fit runs and are restored afterwards; ``data={...}``: ``scale``, ``binarize``, ``train_subset``,
    ``valid_size``, ``split_seed``. ``objective``: ``elbo`` | ``sintro`` | ``gamix`` (default: the
    model's config's, ``elbo`` for a model built from an architecture). ``out``: a new run folder to
    write (checkpoints, metrics, pictures).
    At the end the model holds the weights with the best validation loss (likelihood training) or
    the last ones (adversarial training), in eval mode; ``model.config`` stays the model's own (the
    next fit starts from it, not from this one's options), with the data layout this fit used
    (``data.scale``, ``data.binarize``). If the fit raises (a diverged loss, bad batches), the model
    ends as a finished fit would where this fit reached best weights (likelihood training), and
    otherwise gets back the weights and the train / eval mode it had before; an interrupted fit
    (KeyboardInterrupt) ends as a finished fit would. ``nan_policy="rollback"`` works without
    ``out`` too (the state is kept in memory).
    uint8 batches of an iterable are read on the scale of uint8 ``valid`` examples; beside float or
    bool ones, as 0/1 where those are binary (and not binarised every batch), else as 0..255.
    Returns ``{"steps", "best_step", "best_valid_loss",
    "stop_reason", "seconds", "records"}``: the validation loss is the objective's per-example loss
    (-ELBO in nats for likelihood training); records are the metrics.jsonl lines.
    """
    from .app.runs import RunLock, check_new_run_dir, deterministic_algorithms, picture_run, set_threads
    from .training.loop import Trainer
    if isinstance(options.get("device"), torch.device):
        options["device"] = str(options["device"])
    cfg = _fit_config(model, objective, seed, options)
    given = options.get("data") if isinstance(options.get("data"), dict) else {}
    for key in given:
        if key not in _FIT_DATA_KEYS:
            raise UserError(f"mixvae.fit: data.{key} applies to data sets read from files, not to examples given to "
                            f"fit; fit reads data.{', data.'.join(_FIT_DATA_KEYS)}")
    in_memory = isinstance(train, torch.Tensor) or hasattr(train, "__array__")
    if steps_per_epoch is not None and in_memory:
        raise UserError("mixvae.fit: steps_per_epoch is for an iterable of batches; with examples in memory an "
                        "epoch is every example once (set max_steps to stop earlier)")
    if "batch_size" in options and not in_memory and not isinstance(train, Dataset):
        raise UserError("mixvae.fit: batch_size is for examples in memory; an iterable of batches brings its own")
    if "train_subset" in given and not in_memory:
        raise UserError("mixvae.fit: data.train_subset keeps the first examples of a tensor or array, not of an "
                        "iterable of batches")
    layout = dict(dynamic_binarize=cfg.data.binarize == "dynamic", symmetric=cfg.data.scale == "symmetric")
    if isinstance(train, Dataset):
        data = train
    elif in_memory:
        if cfg.data.train_subset is not None:
            if cfg.data.train_subset > len(train):
                raise UserError(f"mixvae.fit: data.train_subset = {cfg.data.train_subset} is more than the "
                                f"{len(train)} examples given")
            train = train[:cfg.data.train_subset]
        data = from_tensors(train, valid, valid_size=cfg.data.valid_size, split_seed=cfg.data.split_seed, **layout)
    else:
        if valid is None:
            raise UserError("fit on an iterable of batches needs valid= examples (a tensor or array)")
        examples = _as_split(valid, "valid")
        held_out = from_tensors(examples.get(), examples.get(), split_seed=cfg.data.split_seed,
                                **layout)                                        # every example validates
        as_uint8 = np.asarray(valid).dtype == np.uint8 if not isinstance(valid, torch.Tensor) else \
            valid.dtype == torch.uint8
        data = BatchStream(train, held_out, steps_per_epoch,     # uint8 batches on uint8 examples' scale
                           examples.max_value if as_uint8 else None)
    _check_shape(model, data.shape, "fit", "the data")
    if isinstance(train, Dataset) and cfg.data.binarize == "dynamic" and not train.dynamic_binarize:
        raise UserError("mixvae.fit: the model's config binarises its data every batch (data.binarize = dynamic), "
                        "but the Dataset given does not; build it with from_tensors(..., dynamic_binarize=True)")
    if getattr(model, "likelihood", None) is not None:
        check_likelihood(model.likelihood.kind, data, "mixvae.fit")
        check_training_data(model.likelihood.kind, data, "mixvae.fit")
    if "device" in options:
        model.to(resolve_device(cfg.train.device))
    device = next(model.parameters()).device
    objective_ = build_objective(cfg, model)
    for m in objective_.modules().values():
        m.to(device)
    run_dir = Path(out) if out is not None else None
    lock = None
    if run_dir is not None:
        check_new_run_dir(run_dir)
        lock = RunLock(run_dir)   # held until fit returns; see mixvae.app.runs.RunLock
        try:
            check_new_run_dir(run_dir, locked=True)   # again under the lock: one of two racing fits goes on
        except UserError:
            lock.release()
            raise
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "run.json").write_text(json.dumps({"data": data.spec(), "data_shape": list(data.shape),
                                                      "data_kind": data.kind, "created_by": "mixvae.fit"}, indent=2))
    settings = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    before, was_training = _snapshot(objective_), model.training     # what a failed fit goes back to
    trainer = None
    try:
        set_threads(cfg)
        if cfg.train.deterministic:
            deterministic_algorithms(True, device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):   # the caller's stays
            torch.manual_seed(cfg.seed)
            trainer = Trainer(cfg, objective_, data, run_dir, device, progress=progress,
                              after_eval=(lambda tr: picture_run(tr, run_dir)) if run_dir is not None else None)
            state = trainer.fit()
    except BaseException as e:
        best = _best_state(trainer, run_dir) if trainer is not None and objective_.select_best else None
        if best is None and not isinstance(e, KeyboardInterrupt):    # nothing of this fit worth keeping
            _restore(objective_, before)
            model.train(was_training)
        else:                                                        # ends as a finished fit would
            if best is not None:
                _restore(objective_, best)
            _finished(model, cfg, objective_)
        raise
    finally:
        torch.set_num_threads(settings[0])
        torch.use_deterministic_algorithms(settings[1], warn_only=settings[2])
        if trainer is not None:
            trainer.log.close()
        if lock is not None:
            lock.release()
    if objective_.select_best:
        best = _best_state(trainer, run_dir)
        if best is not None:
            _restore(objective_, best)
    _finished(model, cfg, objective_)
    return {"steps": state.step, "best_step": state.best_step, "best_valid_loss": state.best_loss,
            "stop_reason": state.stop_reason or "budget reached", "seconds": round(state.seconds, 1),
            "records": trainer.log.records}


def _finished(model, cfg: Config, objective) -> None:
    """The model after a fit with config ``cfg`` by ``objective``: in eval mode, its config its own
    again (the next fit starts from it, not from this one's options) but for the data layout it
    trained on, which sample / reconstruct / log_likelihood need, and for what the objective
    changed in the model (a later fit's run folder must rebuild it)."""
    model.eval()
    kept = _fit_config(model, None, None, {})
    kept.data.scale, kept.data.binarize = cfg.data.scale, cfg.data.binarize
    model.config = objective.current_config(kept)    # e.g. a prior the fit converted


def _best_state(trainer, run_dir: Optional[Path]) -> Optional[dict]:
    """The best weights a fit saved (its run folder's best.pt, or kept in memory), or None."""
    from .training.checkpoint import load_checkpoint
    path = run_dir / "checkpoints" / "best.pt" if run_dir is not None else None
    if path is not None and path.exists():
        return load_checkpoint(path, fallback=False)
    return trainer.best_state


def _snapshot(objective) -> dict:
    """A copy of the weights and objective state of ``objective`` (what a checkpoint's 'best' holds)."""
    return {"modules": {k: copy.deepcopy(m.state_dict()) for k, m in objective.modules().items()},
            "objective": copy.deepcopy(objective.state_dict())}


def _restore(objective, state: dict) -> None:
    """Load a :func:`_snapshot` or a checkpoint's weights into ``objective``'s modules (its state
    first: it may rebuild the prior, e.g. a VampPrior converted to a MoG during the fit)."""
    objective.load_state_dict(state.get("objective", {}))
    for k, m in objective.modules().items():
        m.load_state_dict(state["modules"][k])


def _symmetric(model) -> bool:
    """Whether the model sees data in [-1, 1] (trained with data.scale = symmetric)."""
    cfg = getattr(model, "config", None)
    return cfg is not None and cfg.data.scale == "symmetric"


def _count(value, name: str, where: str) -> int:
    """``value`` if it is a whole number >= 1, else one sentence naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise UserError(f"mixvae.{where}: {name} = {value!r}; expected a whole number >= 1")
    return int(value)


def _check_shape(model, shape, where: str, what: str = "x") -> None:
    want = tuple(getattr(model, "data_shape", ()) or ())
    if want and tuple(shape) != want:
        raise UserError(f"mixvae.{where}: {what} has examples of shape {tuple(shape)}, but the model was built for "
                        f"examples of shape {want}")


def _examples(model, x, where: str) -> torch.Tensor:
    """x as the model sees it: on its device, in [-1, 1] for a model trained with data.scale = symmetric.
    uint8 values are 0..255, except 0/1 for a Bernoulli model when every value is 0 or 1."""
    device = next(model.parameters()).device
    binary = getattr(getattr(model, "likelihood", None), "kind", None) == "bernoulli"
    t = _as_split(x, "x", None if binary else 255.0).get()
    _check_shape(model, t.shape[1:], where)
    return to_model_range(t.to(device), _symmetric(model))


def _scored(model, t: torch.Tensor, where: str) -> torch.Tensor:
    """``t`` (examples as the model sees them), refused where the model's likelihood gives no density
    of them: a Bernoulli model scores binary values only (the log-likelihood of gray values under it
    is no log-likelihood of anything); values within 1e-4 of 0 or 1 count as binary, as when the
    data's kind is read, and are rounded."""
    if getattr(getattr(model, "likelihood", None), "kind", None) != "bernoulli":
        return t
    r = t.round()
    if not bool((((r == 0) | (r == 1)) & ((t - r).abs() < 1e-4)).all()):
        raise UserError(f"mixvae.{where}: the model's Bernoulli likelihood is a distribution of binary values, but x "
                        "has values between 0 and 1; binarise them first (e.g. torch.bernoulli(x), as for training), "
                        "or build the model on data like x")
    return r


def _as_given(model, y: torch.Tensor) -> torch.Tensor:
    """The model's output back in the user's range ([0, 1] from [-1, 1] for a symmetric model), on the CPU."""
    return from_model_range(y, _symmetric(model)).cpu()


def sample(model: LatentVariableModel, n: int, seed: Optional[int] = None) -> torch.Tensor:
    """n draws z ~ p(z) decoded to the likelihood's mean, (n, *data_shape) on the CPU, on the scale
    the data were given in (images: [0, 1] also for a model that sees [-1, 1], whose
    ``model.sample(n)`` is in [-1, 1]; a Gaussian likelihood's mean is not confined to the data's
    range). Without ``seed`` the draws come from (and advance) torch's global random state, as
    ``torch.randn`` does; ``seed`` makes them repeatable without touching it."""
    n = _count(n, "n", "sample")
    with evaluating(model), _seeded(model, seed):
        return _as_given(model, model.sample(n))


def reconstruct(model: LatentVariableModel, x: Data, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """x (N, *data_shape), as the data were given, decoded from its posterior mean: the
    likelihood's mean on the same scale (see :func:`sample`), (N, *data_shape) on the CPU. Where
    that mean is itself drawn (PixelHVAE's autoregressive decoder samples pixel by pixel), ``seed``
    fixes the draws; the global random state is left as it was."""
    with evaluating(model), _seeded(model, seed):
        return torch.cat([_as_given(model, model.reconstruct(b)) for b in _batches(model, x, batch_size, "reconstruct")])


@contextmanager
def _seeded(model, seed: Optional[int]):
    """Inside: torch's random state seeded with ``seed``, the caller's restored afterwards (also on
    the model's GPU); ``seed`` None: the global state itself, used and advanced."""
    if seed is None:
        yield
        return
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _batches(model, x, batch_size: int, where: str):
    batch_size = _count(batch_size, "batch_size", where)
    t = _examples(model, x, where)
    return (t[i:i + batch_size] for i in range(0, t.shape[0], batch_size))


def log_likelihood(model: LatentVariableModel, x: Data, samples: int = 5000, batch_size: int = 500,
                   seed: int = 0, chunk: int = 4096, progress: bool = True) -> torch.Tensor:
    """Importance-sampled log p(x) per example of x (N, *data_shape), in nats, shape (N,), with
    ``samples`` draws from q(z|x) (evaluated ``chunk`` (example, sample) pairs at a time); a
    progress bar unless ``progress`` is false. The density is of x as the model sees it: for a
    Gaussian model trained with ``data.scale: symmetric`` (values in [-1, 1]), add D ln 2 for the
    density of x in [0, 1] (D = the number of values per example). A Bernoulli model scores binary
    x only."""
    from .metrics.likelihood import log_likelihood as ll
    from .progress import bar
    samples, batch_size, chunk = (_count(v, name, "log_likelihood") for v, name in
                                  ((samples, "samples"), (batch_size, "batch_size"), (chunk, "chunk")))
    t = _scored(model, _examples(model, x, "log_likelihood"), "log_likelihood")
    with _seeded(model, seed), bar(total=t.shape[0], desc=f"log-likelihood (S={samples})", unit="img",
                                    disable=not progress) as b:
        return torch.cat([ll(model, t[i:i + batch_size], samples, chunk, bar=b).cpu()
                          for i in range(0, t.shape[0], batch_size)])


def elbo(model: LatentVariableModel, x: Data, batch_size: int = 500, seed: int = 0) -> dict:
    """The single-sample ELBO and its parts averaged over the examples of x (N, *data_shape), in
    nats per example: ``{"elbo", "rec" (= -E log p(x|z)), "kl" (= E[log q(z|x) - log p(z)])}``, of x
    as the model sees it (see :func:`log_likelihood`)."""
    from .metrics.likelihood import elbo_parts
    with _seeded(model, seed):
        return elbo_parts(model, (_scored(model, b, "elbo") for b in _batches(model, x, batch_size, "elbo")))


def active_units(model: LatentVariableModel, x: Data, threshold: float = 0.01, batch_size: int = 500) -> dict:
    """Active latent units over the examples of x (N, *data_shape): the number of dimensions d with
    Var_x E_q[z_d] > ``threshold`` (in squared latent units), per latent level: ``{"z": 37}`` or
    ``{"z2": .., "z1": ..}``."""
    from .metrics.latent import active_units as au, posterior_mean_variance
    return au(posterior_mean_variance(model, _batches(model, x, batch_size, "active_units")), threshold)


def save_images(images: torch.Tensor, path: Union[str, Path], nrow: Optional[int] = None) -> Path:
    """Write images (N, C, H, W) or (N, H, W) in [0, 1] or uint8 (a tensor or array; values outside
    [0, 1] are clipped) as one PNG grid of ``nrow`` images per row (default: about square); returns the path."""
    from .app.viz import save_grid
    t = torch.as_tensor(images if isinstance(images, torch.Tensor) else np.asarray(images)).detach().cpu()
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype != torch.uint8 and not t.is_floating_point():
        raise UserError(f"mixvae.save_images: images of dtype {t.dtype}; expected floats in [0, 1] or uint8 "
                        "(for values 0..255 use images.to(torch.uint8))")
    elif t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise UserError("mixvae.save_images: the images contain NaN or infinite values")
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t
    t = t.unsqueeze(1) if t.dim() == 3 else t
    if t.dim() != 4 or t.shape[0] == 0 or t.shape[1] not in (1, 3):
        raise UserError(f"mixvae.save_images: images of shape {tuple(t.shape)}; expected N x C x H x W (C = 1 or 3) "
                        "or N x H x W with N > 0")
    if nrow is not None:
        _count(nrow, "nrow", "save_images")
    from PIL import Image
    if Path(path).suffix.lower() not in Image.registered_extensions():
        raise UserError(f"mixvae.save_images: {path} has no picture file extension; expected e.g. .png")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_grid(t.float(), path, nrow)


def _rebuild(cfg: Config, spec: dict) -> LatentVariableModel:
    data = Dataset.from_spec(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data)
    model.config = cfg
    return model


def _weights_file(path: Path, select_best: bool = True) -> tuple[dict, dict]:
    """(modules' state dicts, objective state) of a run folder's checkpoint (the best one first when
    ``select_best``, as for likelihood training, else the latest, as for adversarial training) or its
    model.safetensors, or of a .safetensors file."""
    from safetensors import SafetensorError, safe_open

    from .training.checkpoint import load_checkpoint
    if path.is_dir():
        for name in ("best.pt", "latest.pt") if select_best else ("latest.pt", "best.pt"):
            if (path / "checkpoints" / name).is_file():
                state = load_checkpoint(path / "checkpoints" / name)
                return state.get("modules", {}), state.get("objective", {})
        path = path / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{path}: no weights there (a run folder's checkpoints or model.safetensors, or a .safetensors file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a safetensors file of mixvae weights ({e})") from None
    from .training.statecheck import weights_digest
    if "sha256" in meta and weights_digest(tensors, meta) != meta["sha256"]:
        raise UserError(f"{path}: damaged (its content does not match the checksum it was written with)")
    modules: dict[str, dict] = {}
    for key, t in tensors.items():
        name, _, k = key.partition("/")
        modules.setdefault(name, {})[k] = t
    return modules, json.loads(meta.get("objective_state", "{}"))


def load_weights(model: LatentVariableModel, path: Union[str, Path]) -> LatentVariableModel:
    """Load weights into a model you built (e.g. with your own networks) from a run folder
    (its best checkpoint for likelihood training, its latest for adversarial training, else
    model.safetensors) or a .safetensors file; returns the model.
    (A run whose VampPrior was converted to a MoG needs :func:`load`, which rebuilds that prior.)"""
    path = Path(path)
    select_best = True
    if (path / "config.yaml").is_file():
        select_best = OBJECTIVES.get(load_config(path / "config.yaml").train.objective).build.select_best
    modules, _ = _weights_file(path, select_best)
    if "model" not in modules:
        raise UserError(f"{path}: holds no model weights")
    try:
        model.load_state_dict(modules["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit this model ({' '.join(str(e).split())[:400]})") from None
    return model.eval()


def load(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> LatentVariableModel:
    """The model of a run folder (its config.yaml; the weights that ``mixvae eval`` reads: best for
    likelihood training, latest for adversarial training, else model.safetensors)
    or of a .safetensors file written by ``mixvae export``, in eval mode. No data are needed and no
    code runs when the files are read."""
    import yaml
    from .app.runs import check_run_folder
    path = Path(path)
    if not path.exists():
        raise UserError(f"mixvae.load: {path} does not exist; expected a run folder or a .safetensors file")
    if path.is_dir():
        check_run_folder(path)
        if not (path / "config.yaml").is_file():
            raise UserError(f"{path} is not a run folder (no config.yaml)")
        from .app.runs import recorded_data_spec
        cfg = load_config(path / "config.yaml")
        spec = recorded_data_spec(path, cfg)
        if spec is None:
            raise UserError(f"{path}/run.json does not record the data's shape; reopen it with mixvae.app.runs.open_run")
    else:
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise UserError(f"{path}: not a safetensors file of mixvae weights ({e})") from None
        if "config" not in meta or "data" not in meta:
            raise UserError(f"{path} has no config in its metadata (written before mixvae 0.2); build the model "
                            "and use mixvae.load_weights(model, file)")
        cfg = config_from_dict(yaml.safe_load(meta["config"]), str(path))
        spec = json.loads(meta["data"])
    model = _rebuild(cfg, spec)
    objective = build_objective(cfg, model)
    modules, objective_state = _weights_file(path, objective.select_best)
    try:
        objective.load_state_dict(objective_state)
        for k, m in objective.modules().items():
            m.load_state_dict(modules[k])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{path}: the weights do not fit the model of its config ({str(e).splitlines()[0][:200]})") from None
    return model.to(resolve_device(str(device), "mixvae.load: device")).eval()
