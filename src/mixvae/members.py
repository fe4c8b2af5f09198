"""Several members (seeds) of one run computed at once: the map over members, and their random streams.

A stacked ensemble (:mod:`mixvae.training.ensemble`) holds M members' weights as tensors with a
leading member dimension (M, ...). :class:`Members` maps a function over them with
``torch.func.vmap``: inside the function the modules hold one member's weights and every random
number comes from that member's own generator, drawn in the order the member's separate run would
draw it (:func:`normal`, :func:`multinomial`; the distributions draw through them). A member
therefore sees exactly the random numbers of its separate run, and ends where that run ends up to
float rounding.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_map

_generators: list[torch.Generator] = []       # the members' random streams, by member index
_token: Optional[torch.Tensor] = None          # inside Members.map: this member's index (a batched 0-d tensor)


def active() -> bool:
    """Whether the caller runs inside :meth:`Members.map` (one member of a stacked ensemble)."""
    return _token is not None


# ------------------------------------------------------------------ random numbers, per member
@torch.library.custom_op("mixvae::member_normal", mutates_args=())
def _member_normal(token: torch.Tensor, shape: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=_generators[int(token)], dtype=dtype, device=device)


def _outside_vmap():
    """A context in which random operations run as they would outside vmap (the rules below draw
    each member's numbers themselves, from its own generator)."""
    return torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.FuncTorchVmapMode))


@_member_normal.register_vmap
def _member_normal_vmap(info, in_dims, token, shape, dtype, device):
    with _outside_vmap():       # (the tokens live on the CPU: reading them never waits for a GPU)
        return torch.stack([torch.randn(shape, generator=_generators[i], dtype=dtype, device=device)
                            for i in token.tolist()]), 0


@torch.library.custom_op("mixvae::member_multinomial", mutates_args=())
def _member_multinomial(token: torch.Tensor, probs: torch.Tensor, n: int) -> torch.Tensor:
    return torch.multinomial(probs, n, replacement=True, generator=_generators[int(token)])


@_member_multinomial.register_vmap
def _member_multinomial_vmap(info, in_dims, token, probs, n):
    rows = probs.movedim(in_dims[1], 0) if in_dims[1] is not None else None
    with _outside_vmap():
        return torch.stack([torch.multinomial(probs if rows is None else rows[j], n, replacement=True,
                                              generator=_generators[i]) for j, i in enumerate(token.tolist())]), 0


def normal(shape, dtype=None, device=None) -> torch.Tensor:
    """Standard normals of ``shape``: from the global generator (``torch.randn``), or inside
    :meth:`Members.map` from each member's generator (on its device)."""
    if _token is None:
        return torch.randn(tuple(shape), dtype=dtype, device=device)
    return _member_normal(_token, [int(s) for s in shape], dtype or torch.get_default_dtype(),
                          torch.device(device) if device is not None else _generators[0].device)


def multinomial(probs: torch.Tensor, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n`` indices drawn with replacement from ``probs`` (K,): ``torch.multinomial`` on
    ``generator`` (default the global one), or inside :meth:`Members.map` on each member's."""
    if _token is None or generator is not None:
        return torch.multinomial(probs, n, replacement=True, generator=generator)
    return _member_multinomial(_token, probs, n)


# ------------------------------------------------------------------ code that vmap cannot batch
class _OneByOne(torch.autograd.Function):
    """``fn`` applied to each member's slices in turn (see :func:`one_by_one`). Used only inside
    :meth:`Members.map`, where vmap calls :meth:`vmap`; that rule's operations build autograd's
    graph as they would outside vmap, so the Function's own backward is never reached."""

    @staticmethod
    def forward(grad_mode, fn, *args):      # (reached when no argument is batched: one plain call serves all)
        return _plain(fn, *args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("one_by_one is differentiable only inside Members.map")

    @staticmethod
    def vmap(info, in_dims, grad_mode, fn, *args):
        rows = [a.movedim(d, 0) if d is not None else None for a, d in zip(args, in_dims[2:])]
        with torch.set_grad_enabled(grad_mode):
            return torch.stack([_plain(fn, *(a if r is None else r[i] for a, r in zip(args, rows)))
                                for i in range(info.batch_size)]), 0


def _plain(fn: Callable, *args):
    """``fn(*args)`` as outside any map (its mixtures, branches and kernels as in a separate run)."""
    global _token
    inside, _token = _token, None
    try:
        return fn(*args)
    finally:
        _token = inside


def one_by_one(fn: Callable, *args) -> torch.Tensor:
    """``fn(*args)`` (one tensor result). Inside :meth:`Members.map`, ``fn`` runs once per member
    on that member's tensors, outside vmap, and the results are stacked: for code that vmap cannot
    batch (data-dependent branches, C kernels, hand-written backward passes), which then computes,
    and differentiates, exactly as in each member's separate run. ``fn`` draws no random numbers."""
    if _token is None:
        return fn(*args)
    return _OneByOne.apply(torch.is_grad_enabled(), fn, *args)


# ------------------------------------------------------------------ the map over members
class _Apply(nn.Module):
    """Calls a function with the modules it holds (so that ``functional_call`` can swap their weights)."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.mods = nn.ModuleDict(modules)

    def forward(self, fn, *args):
        return fn(*args)


def stack_into(first: nn.Module, others: list[nn.Module]) -> None:
    """Give ``first`` the weights of all members: each floating-point parameter and buffer becomes
    (M, ...) with ``first``'s own values at 0 and ``others``' after it (M = 1 + len(others)); a
    tensor that several modules share stays shared. Other buffers (flags, counters) must be equal in
    all members and are shared by them."""
    done: dict[int, torch.Tensor] = {}      # id of a tensor of ``first`` -> its stacked form
    for name, mod in first.named_modules():
        peers = [dict(o.named_modules())[name] for o in others]
        for table, kind in ((mod._parameters, "param"), (mod._buffers, "buffer")):
            for attr, t in list(table.items()):
                if t is None:
                    continue
                if id(t) in done:
                    table[attr] = done[id(t)]
                    continue
                values = [t] + [getattr(p, attr) for p in peers]
                if not t.is_floating_point():
                    if any(not torch.equal(v, t) for v in values):
                        raise ValueError(f"the members' {name + '.' if name else ''}{attr} differ; an ensemble shares it")
                    continue
                joined = torch.stack([v.detach() for v in values])
                done[id(t)] = table[attr] = nn.Parameter(joined, requires_grad=t.requires_grad) if kind == "param" \
                    else joined


def _global_rng(device: torch.device):
    """(read, write) the state of the global generator of ``device``."""
    if device.type == "cuda":
        return (lambda: torch.cuda.get_rng_state(device)), (lambda state: torch.cuda.set_rng_state(state, device))
    return torch.get_rng_state, torch.set_rng_state


def generator_at_global(device: torch.device) -> torch.Generator:
    """A generator in the state the global one of ``device`` has now (what a separate run draws from next)."""
    g = torch.Generator(device=device)
    g.set_state(_global_rng(device)[0]())
    return g


@contextlib.contextmanager
def _global_stream(g: torch.Generator):
    """The global generator of ``g``'s device continues ``g``'s stream for the block; ``g`` then
    holds where the block left it, and the global generator is back where it was."""
    get, put = _global_rng(g.device)
    kept = get()
    put(g.get_state())
    try:
        yield
    finally:
        g.set_state(get())
        put(kept)


class Members:
    """M members held in ``modules`` (name -> module) whose floating-point parameters and buffers
    have a leading member dimension (:func:`stack_into`); other buffers (flags, counters) are
    shared. ``generators``: each member's random stream, all on the device of the weights."""

    def __init__(self, modules: dict[str, nn.Module], generators: list[torch.Generator]):
        self.apply_to = _Apply(modules)
        self.generators = generators
        self.size = len(generators)

    def build(self, make: Callable[..., nn.Module], *args) -> nn.Module:
        """``make(*args)`` for each member, on its slices of the tensors in ``args`` (also inside
        tuples, dicts and distributions), stacked into one module (:func:`stack_into`)."""
        made = []
        for i, g in enumerate(self.generators):
            with _global_stream(g):     # what make draws (e.g. an initialisation) comes from the member's stream
                made.append(make(*tree_map(lambda a: a[i] if isinstance(a, torch.Tensor) else a, args)))
        stack_into(made[0], made[1:])
        return made[0]

    def _state(self) -> tuple[dict, dict]:
        """Every parameter and buffer (non-persistent ones too) by name, and its member dimension:
        0 for floating-point tensors (stacked), None for the shared rest."""
        mods = self.apply_to
        state = dict(mods.named_parameters()) | dict(mods.named_buffers())
        return state, {k: 0 if v.is_floating_point() else None for k, v in state.items()}

    def map(self, fn: Callable, *args):
        """``fn(*args)`` for every member at once; tensor arguments (also inside tuples, dicts and
        distributions) have a leading member dimension, and so do the tensors of the result."""
        global _generators
        state, dims = self._state()
        tokens = torch.arange(self.size)        # on the CPU: the random rules read them

        def one(state, token, *args):
            global _token
            outer, _token = _token, token
            try:
                return functional_call(self.apply_to, state, (fn, *args), strict=False)
            finally:
                _token = outer

        arg_dims = tuple(tree_map(lambda a: 0 if isinstance(a, torch.Tensor) else None, a) for a in args)
        outer = _generators
        _generators = self.generators
        try:
            return vmap(one, in_dims=(dims, 0, *arg_dims), randomness="error")(state, tokens, *args)
        finally:
            _generators = outer
