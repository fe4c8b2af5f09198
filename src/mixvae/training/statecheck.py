"""Does a saved state fit what it is loaded into? One line naming the file and what does not fit.

A checkpoint or weights file can be readable and still wrong for a run: written by another
model (other widths, latent size or prior), missing its parts (a dictionary saved by hand), or
holding values of the wrong kind. Loading such a file with ``load_state_dict`` ends in a traceback
several screens long, or worse, succeeds and fails later. These checks run before anything is
loaded and raise :class:`UserError` with the file's name and the first thing that does not fit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Mapping

import torch

from ..errors import UserError

RESUME_KEYS = ("modules", "objective", "optimizers", "schedulers", "loop", "rng")


def _kind(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _names(keys, n: int = 3) -> str:
    keys = [str(k) for k in keys]
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def check_module_weights(module: torch.nn.Module, weights, where: str, name: str) -> None:
    """``weights`` is a state dict for ``module``: the same keys, tensors of the same shapes, finite."""
    if not isinstance(weights, Mapping):
        raise UserError(f"{where}: the weights of '{name}' are {_kind(weights)}; expected a dictionary of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    if missing or extra:
        parts = ([f"lacks {len(missing)} of this run's {name} weights ({_names(missing)})"] if missing else []) + \
                ([f"has {len(extra)} that it does not have ({_names(extra)})"] if extra else [])
        raise UserError(f"{where}: the weights do not fit this run's {name}: the file {' and '.join(parts)}; "
                        "it was written for another model (or config.yaml changed)")
    for k, mine in own.items():
        theirs = weights[k]
        if not isinstance(theirs, torch.Tensor):
            raise UserError(f"{where}: the weights do not fit this run's {name}: {k} is {_kind(theirs)}; expected a tensor")
        if theirs.shape != mine.shape:
            raise UserError(f"{where}: the weights do not fit this run's {name}: {k} has shape {tuple(theirs.shape)} "
                            f"in the file but {tuple(mine.shape)} in the model; it was written for another model "
                            "(or config.yaml changed)")
        if theirs.is_floating_point() != mine.is_floating_point() or theirs.is_complex():
            raise UserError(f"{where}: the weights do not fit this run's {name}: {k} is {theirs.dtype}, the model's is {mine.dtype}")
        if theirs.is_floating_point() and not bool(torch.isfinite(theirs).all()):
            raise UserError(f"{where}: {name}.{k} holds NaN or infinite values; the file is damaged")


def load_modules(objective, objective_state, modules, where: str) -> None:
    """Objective state first (it may change the model's structure, e.g. a converted prior), then
    every module's weights, each checked by :func:`check_module_weights` before it is loaded."""
    if not isinstance(objective_state, Mapping):
        raise UserError(f"{where}: its objective state is {_kind(objective_state)}; expected a dictionary")
    try:
        objective.load_state_dict(dict(objective_state))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"{where}: its objective state does not fit this run ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    own = objective.modules()
    if not isinstance(modules, Mapping):
        raise UserError(f"{where}: its module weights are {_kind(modules)}; expected a dictionary by module name")
    if not modules:
        raise UserError(f"{where}: holds no module weights (no 'modules' entry); it is not a checkpoint or weights "
                        "file written by mixvae")
    missing = [k for k in own if k not in modules]
    if missing:
        raise UserError(f"{where}: the weights do not fit this run: the file has none for {_names(missing)} "
                        f"(it has {_names(modules) or 'no modules'})")
    extra = [k for k in modules if k not in own]
    if extra:
        raise UserError(f"{where}: the weights do not fit this run: the file holds modules this run does not have "
                        f"({_names(extra)}); it was written by another objective")
    for k, m in own.items():
        check_module_weights(m, modules[k], where, k)
    for k, m in own.items():
        m.load_state_dict(modules[k])


def check_training_state(state, loop_defaults: dict, where: str) -> None:
    """A checkpoint to resume from: a dictionary with every part, a loop state of known fields and
    types, and a torch random state of the right size."""
    if not isinstance(state, Mapping):
        raise UserError(f"{where}: holds {_kind(state)}; expected a mixvae checkpoint (a dictionary)")
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise UserError(f"{where}: lacks {', '.join(repr(k) for k in missing)} of a mixvae checkpoint "
                        f"(it holds {_names(map(repr, state)) or 'nothing'}); it was not written by mixvae train")
    for k in ("optimizers", "schedulers", "loop", "rng"):
        if not isinstance(state[k], Mapping):
            raise UserError(f"{where}: its {k!r} is {_kind(state[k])}; expected a dictionary")
    for k, v in state["loop"].items():
        if k not in loop_defaults:
            raise UserError(f"{where}: its loop state has an unknown field {k!r}")
        want = type(loop_defaults[k])
        ok = (isinstance(v, str) if want is str else
              isinstance(v, int) and not isinstance(v, bool) if want is int else
              isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v))
        if not ok or (want is int and v < -1):
            raise UserError(f"{where}: its loop state {k} = {v!r:.60} is not valid; expected {want.__name__}")
    if state["loop"].get("step", 0) < 0:
        raise UserError(f"{where}: its loop state step = {state['loop']['step']} is negative")
    rng = state["rng"].get("torch")
    want = torch.get_rng_state()
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.shape != want.shape:
        raise UserError(f"{where}: its random state is {_kind(rng)}; expected a uint8 tensor of shape {tuple(want.shape)}")


def check_players(state: Mapping, optimizers: dict, schedulers: dict, where: str) -> None:
    """Every optimizer's and scheduler's saved state fits the one built for this run."""
    for name, opt in optimizers.items():
        saved = state["optimizers"].get(name)
        if saved is None:
            raise UserError(f"{where}: holds no optimizer state for the player {name!r} (it has "
                            f"{_names(state['optimizers']) or 'none'})")
        groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
        if (not isinstance(groups, list) or not isinstance(saved.get("state"), Mapping)
                or len(groups) != len(opt.param_groups)
                or any(not isinstance(g, Mapping) or not isinstance(g.get("params"), list)
                       or len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, opt.param_groups))):
            raise UserError(f"{where}: the optimizer state of {name!r} does not fit this run's parameters")
        params = {pid: p for g, mine in zip(groups, opt.param_groups) for pid, p in zip(g["params"], mine["params"])}
        for pid, entry in saved["state"].items():
            p = params.get(pid)
            if p is None or not isinstance(entry, Mapping):
                raise UserError(f"{where}: the optimizer state of {name!r} refers to a parameter it does not list")
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise UserError(f"{where}: the optimizer state of {name!r} has {key} of shape {tuple(value.shape)} "
                                    f"for a parameter of shape {tuple(p.shape)}")
    for name, sched in schedulers.items():
        saved = state["schedulers"].get(name)
        n = len(sched.optimizer.param_groups)
        if (not isinstance(saved, Mapping) or not isinstance(saved.get("last_epoch"), int)
                or not isinstance(saved.get("base_lrs"), list) or len(saved["base_lrs"]) != n
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in saved["base_lrs"])):
            raise UserError(f"{where}: the learning-rate schedule of {name!r} is missing or does not fit this run")


def loop_defaults(loop_state_cls) -> dict:
    """The fields of a fresh loop state (the training loop's counters) as a dictionary."""
    return dataclasses.asdict(loop_state_cls())


# ------------------------------------------------------------------------------- weights files
def weights_digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 (hex) of a weights file's content: every tensor's name, dtype, shape and bytes in name
    order, and every metadata entry but ``sha256`` itself. A file changed anywhere that is read
    back gives another digest."""
    h = hashlib.sha256()
    for k in sorted(metadata):
        if k != "sha256":
            h.update(f"M{len(k)}:{k}{len(metadata[k])}:{metadata[k]};".encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"T{len(k)}:{k}{t.dtype}{tuple(tensors[k].shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
