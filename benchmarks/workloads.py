"""The benchmarked workloads: each builds mixvae's implementation and its plain baseline on the same
inputs and returns a :class:`Workload` (see run.py for how they are measured)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

import baselines
from mixvae import precision
from mixvae.config import config_from_dict, load_config
from mixvae.data.datasets import Dataset, Split
from mixvae.factory import build_model, build_objective
from mixvae.metrics.likelihood import log_likelihood
from mixvae.objectives.base import StepContext
from mixvae.training.optim import make_optimizer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = False      # run.py --tiny: the workloads that scale with a count of images run at a small one
PRECISION = "fp32"   # run.py --precision: every workload runs under precision.autocast(device, PRECISION)


def in_precision(fn: Callable[[], object]) -> Callable[[], object]:
    """fn run in PRECISION on the default device, as the training loop and the evaluation run it."""
    device, p = torch.get_default_device(), PRECISION
    def call():
        with precision.autocast(device, p):
            return fn()
    return call


@dataclass
class Workload:
    label: str
    fn: Callable[[], object]
    baseline: Optional[Callable[[], object]] = None
    flops: Optional[float] = None          # None: counted on one call of fn
    note: str = ""
    timing: dict = field(default_factory=dict)
    matmul_share: bool = True              # time the matrix products alone at their shapes (MLP workloads)
    bf16: bool = True                      # also measured in bf16 (FID features are always float32)


def fake_images(n: int, shape=(1, 28, 28), binary: bool = True) -> Dataset:
    x = torch.rand(n, *shape)
    s = Split((x < 0.2).to(torch.uint8), 1.0) if binary else Split(x, 1.0)
    return Dataset("mnist" if binary else "fashion-mnist", "binary" if binary else "continuous", s, s, s)


def _step(cfg, data, x, in_warmup=False, obj=None):
    obj = build_objective(cfg, build_model(cfg, data)) if obj is None else obj
    opts = {k: make_optimizer(cfg.train.optimizer, v, cfg.train.lr, cfg.train.betas) for k, v in obj.players().items()}
    for o in opts.values():
        precision.clear_casts_after_steps(o)       # as the loop does under bf16 (a no-op in fp32)
    return obj, opts, in_precision(lambda: obj.step(x, StepContext(1000, 10, 1.0, opts, in_warmup=in_warmup)))


def vae_step(prior: str, arch: str = "vae") -> Workload:
    cfg = config_from_dict({"model": {"arch": arch, "prior": {"kind": prior, "components": 500}}})
    data = fake_images(1000)
    x = data.train.get(slice(0, 100))
    _, _, fn = _step(cfg, data, x)
    base = baselines.vae_step(prior) if arch == "vae" else None
    label = f"{arch.upper()} step, {'VampPrior K=500' if prior == 'vampprior' else 'standard prior'} (batch 100)"
    return Workload(label, fn, base, note="gated MLP 784-300-300-40")


def log_likelihood_workload(images: int = 8, memory_only: bool = False) -> Workload:
    cfg = config_from_dict({"model": {"arch": "vae", "prior": {"kind": "vampprior", "components": 500}}})
    model = build_model(cfg, fake_images(10)).eval()
    x = fake_images(images).test.get()
    fn = in_precision(lambda: log_likelihood(model, x, 5000))
    if memory_only:
        return Workload(f"log-likelihood, S=5000, VampPrior, {images} images (memory)", fn,
                        note="one call: peak memory does not grow with the number of images",
                        timing=dict(min_time=0.0, warmup=0, min_calls=1), matmul_share=False, flops=0.0)
    return Workload(f"log-likelihood, S=5000, VampPrior K=500 ({images} images)", fn,
                    baselines.log_likelihood(model, x, 5000), note="chunks of 4096 (image, sample) pairs",
                    timing=dict(min_time=2.0, warmup=1, min_calls=3))


SINTRO_2D = (CONFIGS / "sintro" / "2d_8gaussians_learned_prior.yaml",
             ["model.prior.kind=mog", "model.prior.learn_weights=true", "sintro.convert_to_mog_step=null"])


def sintro_2d_parts(lib):
    """(objective, config, data, x) of the learned-prior 2D iteration built by the package ``lib``
    (mixvae, or an earlier version of it, see :func:`import_previous`): the adversarial phase with a
    learned MoG(64) after the conversion, clipping on, distinct variances."""
    import importlib
    mod = lambda name: importlib.import_module(f"{lib.__name__}.{name}")
    cfg = mod("config").load_config(*SINTRO_2D)
    data, x = points_2d(lib)
    torch.manual_seed(0)
    model = mod("factory").build_model(cfg, data)
    obj = mod("factory").build_objective(cfg, model)
    with torch.no_grad():
        obj.model.prior.logvars.normal_(0, 0.3)        # distinct variances, as after a conversion
    return obj, cfg, data, x


def points_2d(lib):
    """(data set, batch of 512 points on the default device) of 8gaussians, from the package ``lib``."""
    import importlib
    data = importlib.import_module(f"{lib.__name__}.data").load_dataset("8gaussians")
    with torch.device("cpu"):                          # the sampler draws with a CPU generator
        x = data.sampler(512, torch.Generator().manual_seed(0))
    return data, x.to(torch.get_default_device())


def plain_step(lib, obj, cfg, x) -> Callable[[], object]:
    """One fp32 training step of ``obj`` with the package ``lib``'s optimizers and StepContext; its
    logged terms as numbers."""
    import importlib
    optim = importlib.import_module(f"{lib.__name__}.training.optim")
    context = importlib.import_module(f"{lib.__name__}.objectives.base").StepContext
    opts = {k: optim.make_optimizer(cfg.train.optimizer, v, cfg.train.lr, cfg.train.betas)
            for k, v in obj.players().items()}
    return lambda: {k: float(v) for k, v in obj.step(x, context(1000, 10, 1.0, opts)).items()}   # as the loop logs them


def sintro_2d() -> Workload:
    """Adversarial-phase iteration with a learned MoG(64) (after conversion, clipping on)."""
    import mixvae
    obj, cfg, data, x = sintro_2d_parts(mixvae)
    _, _, fn = _step(cfg, data, x, obj=obj)
    return Workload("Soft-IntroVAE 2D iteration, learned MoG(64) (batch 512)", fn, baselines.soft_intro_2d(),
                    note="MLP 2-256x4-2, 100-sample KLs")


def sintro_2d_vanilla() -> Workload:
    """Adversarial-phase iteration with the standard prior (exact KLs): the networks' share of the
    learned-prior iteration above."""
    import mixvae
    _, _, fn = _step(load_config(CONFIGS / "sintro" / "2d_8gaussians_sintro.yaml"), *points_2d(mixvae))
    return Workload("Soft-IntroVAE 2D iteration, standard prior (batch 512)", fn, note="MLP 2-256x4-2, exact KLs")


def sintro_2d_members(members: int):
    """The learned-prior 2D iteration of ``members`` seeds: (one step of each separately, one step of
    all as a stacked ensemble, each member's initial random state). Member m's weights come from
    seed m; its separate step draws from the global generator, set to its state by the caller."""
    import copy
    import types
    import mixvae
    from mixvae.members import generator_at_global
    from mixvae.training.ensemble import Ensemble
    separate, runs, states, xs = [], [], [], []
    for m in range(members):
        for into in (separate, runs):
            obj, cfg, data, x = sintro_2d_parts(mixvae)
            torch.manual_seed(m)
            with torch.no_grad():                      # each member its own weights
                for p in obj.model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            cfg = copy.deepcopy(cfg)
            cfg.seed = m
            into.append((obj, cfg))
        states.append(generator_at_global(x.device))
        xs.append(x)
    ens = Ensemble([types.SimpleNamespace(cfg=c, objective=o, model=o.model) for o, c in runs], states)
    steps = [plain_step(mixvae, o, c, x) for (o, c), x in zip(separate, xs)]
    return steps, plain_step(mixvae, ens, runs[0][1], torch.stack(xs)), [g.get_state() for g in states]


# The implementation of the learned-prior 2D iteration when the speed issue was filed (issue 19):
# `make bench` times today's against it, both in one process, alternately.
PREVIOUS = "338d7f5"


def import_previous(commit: str = PREVIOUS):
    """mixvae as of ``commit``, taken from this repository's git history into a temporary folder and
    imported as the package ``mixvae_previous`` (its imports are relative); raises RuntimeError with
    the reason where that history is not available (e.g. an exported source tree)."""
    import atexit
    import importlib.util
    import shutil
    import subprocess
    import sys
    import tempfile
    root = CONFIGS.parent
    folder = Path(tempfile.mkdtemp(prefix="mixvae-previous-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)     # kept while the process may import from it
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", commit, "src/mixvae"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"the implementation of {commit} is not in this checkout's git history ({e})") from None
    init = folder / "src" / "mixvae" / "__init__.py"
    spec = importlib.util.spec_from_file_location("mixvae_previous", init, submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mixvae_previous"] = module
    spec.loader.exec_module(module)
    return module


def sintro_images(batch: int = 32) -> Workload:
    cfg = load_config(CONFIGS / "sintro" / "mnist_learned_prior.yaml",
                      ["model.prior.kind=mog", "model.prior.learn_weights=true", "data.binarize=none",
                       "sintro.convert_to_mog_epoch=null"])
    data = fake_images(200, binary=False)
    x = data.train.get(slice(0, batch))
    obj, _, fn = _step(cfg, data, x)
    with torch.no_grad():
        obj.model.prior.logvars.normal_(0, 0.3)        # distinct variances, as after a conversion
    base_model = build_model(cfg, data)
    base = baselines.soft_intro_images(base_model.encoder, base_model.decoder, 32, cfg.model.prior.components, x)
    return Workload(f"Soft-IntroVAE image iteration 28x28, learned MoG(10) (batch {batch})", fn, base,
                    note="ResNet widths [64, 128], z 32", timing=dict(min_time=3.0, warmup=2, min_calls=3),
                    matmul_share=False)


def gamix_iteration(batch: int = 32) -> Workload:
    cfg = load_config(CONFIGS / "gamix" / "cifar10_32.yaml", ["data.name=npz"])
    data = fake_images(200, shape=(3, 32, 32), binary=False)
    x = data.train.get(slice(0, batch)) * 2 - 1
    obj, _, fn = _step(cfg, data, x)
    from mixvae.nets.gamix import PatchGAN
    m = build_model(cfg, data)
    base = baselines.gamix(m.encoder, m.decoder, PatchGAN(data.shape, cfg.gamix.disc_width), x)
    return Workload(f"GAMIX iteration 32x32 (batch {batch})", fn, base,
                    note="ResNetV2 width 32, PatchGAN width 32", timing=dict(min_time=3.0, warmup=2, min_calls=3),
                    matmul_share=False)


def fid_features(images: int = 50) -> Workload:
    from mixvae.metrics.fid import InceptionFeatures, load_inception
    images = 2 if TINY else images
    device = torch.get_default_device()
    x = torch.rand(images, 1, 28, 28)
    ext = InceptionFeatures(device)
    return Workload(f"FID Inception features, {images} images 28x28 -> 299x299", lambda: ext.features(x),
                    baselines.inception_features(load_inception(device), x), note="InceptionV3 pool features",
                    timing=dict(min_time=3.0, warmup=1, min_calls=3), matmul_share=False, bf16=False)


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "vae_standard": lambda: vae_step("standard"),
    "vae_vampprior": lambda: vae_step("vampprior"),
    "hvae_vampprior": lambda: vae_step("vampprior", "hvae"),
    "ll_vampprior": lambda: log_likelihood_workload(8),
    "ll_memory_512": lambda: log_likelihood_workload(16 if TINY else 512, memory_only=True),
    "sintro_2d": sintro_2d,
    "sintro_2d_vanilla": sintro_2d_vanilla,
    "sintro_images": sintro_images,
    "gamix": gamix_iteration,
    "fid_features": fid_features,
}
