"""The ``mixvae`` command: train, eval, sample, interpolate, export, bench2d, demo.

Bad input (a config, an argument, a data file) ends with one line on stderr and exit code 2.
Started by torchrun, each machine prints that line once (see :func:`_report`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

from ..errors import TrainingDiverged, UserError

EXIT_USAGE = 2
EXIT_DIVERGED = 3   # a loss became NaN or infinite (train.nan_policy = stop)
MAX_THREADS = 1024
MAX_SAMPLES = 10_000       # sample -n: pictures in one grid
MAX_GRID_SIDE = 1_000      # interpolate --pairs / --steps


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's own usage dump is several lines)
        raise UserError(f"{self.prog}: {message}")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder with the data sets (default: $MIXVAE_DATA, "
                   "else ~/.cache/mixvae/data; files missing there are downloaded)")
    p.add_argument("--threads", type=int, default=None, help=f"CPU threads for torch (1..{MAX_THREADS})")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="import a Python module or .py file first, e.g. one that registers a prior, an "
                   "architecture, an objective or a data set (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixvae", description="VAEs with multimodal priors and introspective / adversarial training.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model from a YAML preset", description=
                       "Train a model. The run folder (--out) receives config.yaml, metrics.jsonl, checkpoints, "
                       "pictures and eval.json (test log-likelihood etc. of the best checkpoint).")
    p.add_argument("config", nargs="?", help="YAML config (a preset in configs/); omit with --resume")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=30 (repeatable)")
    p.add_argument("--out", type=Path, help="new run folder")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder from its latest checkpoint")
    p.add_argument("--no-eval", action="store_true", help="skip the final test evaluation")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="train the config at each of these seeds in one process, as a stacked ensemble (Soft-IntroVAE "
                        "objectives): --out DIR then holds the run folder DIR/seed<S> of each, as its separate run "
                        "would have left it, and DIR/ensemble (resume with --resume DIR)")
    _add_common(p)

    p = sub.add_parser("eval", help="evaluate a run on its test set", description=
                       "Importance-sampled log-likelihood (nats; bits/dim for 8-bit data), active units and "
                       "prior mode usage of a run's best checkpoint.")
    p.add_argument("run", type=Path)
    p.add_argument("--ll-samples", type=int, default=None, help="importance samples per image "
                   "(default: the run's eval.ll_samples for likelihood-trained image models; 0 skips)")
    p.add_argument("--fid-samples", type=int, default=None, help="images for FID of samples and reconstructions "
                   "(default: the run's eval.fid_samples for adversarially trained image models; 0 skips)")
    p.add_argument("--probes", action=argparse.BooleanOptionalAction, default=None,
                   help="linear-SVM and kNN probes on sampled latents (default: on for adversarial image runs)")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--checkpoint", choices=("auto", "best", "latest"), default="auto",
                   help="auto: best validation loss for likelihood training, latest otherwise")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--weights", type=Path, default=None, help="evaluate these safetensors weights (from mixvae export)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value for this evaluation (e.g. data.test_subset=1000)")
    _add_common(p)

    p = sub.add_parser("sample", help="draw samples from a run's model into a picture")
    p.add_argument("run", type=Path)
    p.add_argument("-n", type=int, default=64, help=f"number of samples (1..{MAX_SAMPLES})")
    p.add_argument("--out", type=Path, default=Path("samples.png"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", choices=("auto", "best", "latest"), default="auto")
    p.add_argument("--weights", type=Path, default=None, help="use these safetensors weights (from mixvae export)")
    _add_common(p)

    p = sub.add_parser("interpolate", help="pictures of interpolations between encoded test images, or latent walks",
                       description="Interpolate linearly between the posterior means of pairs of test images "
                       "(one row per pair), or with --walk move one test image's code along chosen latent "
                       "dimensions by -k..k posterior standard deviations (one row per dimension).")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, default=Path("interpolations.png"))
    p.add_argument("--pairs", type=int, default=None, help="image pairs (rows; default 8; not with --walk)")
    p.add_argument("--steps", type=int, default=10, help="pictures per row")
    p.add_argument("--walk", action="store_true", help="latent walks instead of interpolations")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="--walk: latent dimensions to walk (default: the first 8)")
    p.add_argument("-k", type=float, default=None, help="--walk: from -k to +k posterior standard deviations (default 20)")
    p.add_argument("--seed", type=int, default=0, help="chooses the test images")
    p.add_argument("--checkpoint", choices=("auto", "best", "latest"), default="auto")
    p.add_argument("--weights", type=Path, default=None, help="use these safetensors weights (from mixvae export)")
    _add_common(p)

    p = sub.add_parser("export", help="write a run's weights as safetensors (loading them never runs code)")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument("--checkpoint", choices=("auto", "best", "latest"), default="auto")
    _add_common(p)

    p = sub.add_parser("bench2d", help="the 2D density benchmark: methods x data sets x seeds, a table and pictures",
                       description="Train and evaluate every (data set, method, seed) cell of the 2D benchmark that "
                       "is not finished yet (finished cells are kept in OUT/cells and never re-run), then write "
                       "OUT/TABLE.md (mean ± std over seeds) and one picture per data set.")
    p.add_argument("--out", type=Path, default=Path("results/2d"), help="results folder (default: results/2d)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell, counted from the preset's seed (default: 3)")
    p.add_argument("--first-seed", type=int, default=None, help="first seed (default: the preset's, 92)")
    p.add_argument("--iterations", type=int, default=30000, help="iterations per run (default: the papers' 30000)")
    p.add_argument("--warmup", type=int, default=2000, help="plain-VAE warm-up iterations (default: the papers' 2000)")
    p.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="8gaussians 2spirals checkerboard rings (the default), 25gaussians")
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                   help="vae sintro learned_prior (default), fixed_mog, learned_prior_encoder")
    p.add_argument("--configs", type=Path, default=None, help="presets folder (default: ./configs, else the repo's)")
    p.add_argument("--work", type=Path, default=None, help="checkpoints of unfinished cells (default: OUT/work)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value in every cell (e.g. --set eval.toy_grid=256)")
    p.add_argument("--table-only", action="store_true", help="only rewrite the table and pictures")
    _add_common(p)

    p = sub.add_parser("report", help="one self-contained HTML page about run folders (config, metrics, curves, pictures)",
                       description="Write an HTML page about one or several run folders: the config keys that differ, "
                       "the final metrics side by side, the training curves and every picture, with eval.json.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    p.add_argument("--out", type=Path, default=None, help="the .html file (default: RUN/report.html for one run, "
                   "else report.html)")
    _add_common(p)

    p = sub.add_parser("demo", help="a short end-to-end run: train, evaluate, pictures (a few minutes on a CPU)",
                       description="Train a VAE with a VampPrior on MNIST (when it is in the data folder or can be "
                       "downloaded) or else on scikit-learn's 8x8 digits, evaluate it and write its pictures.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: 8 on MNIST, up to 150 on digits)")
    _add_common(p)
    return parser


def _import_plugin(name: str) -> None:
    """Import ``name``: a path to a .py file, or a module name on the Python path. It runs the
    code the user named, as Python's own imports do (never code found in a run folder)."""
    import importlib
    import importlib.util
    path = Path(name)
    try:
        if path.suffix == ".py":
            if not path.is_file():
                raise UserError(f"--plugin {name}: no such file")
            spec = importlib.util.spec_from_file_location(f"mixvae_plugin_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except UserError:
        raise
    except Exception as e:   # the plugin's own error, in one line
        raise UserError(f"--plugin {name}: importing it failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _positive(name: str, value, most: int | None = None) -> None:
    if value is not None and (value < 1 or (most is not None and value > most)):
        expected = "a positive integer" if most is None else f"an integer in 1..{most}"
        raise UserError(f"{name} = {value} is not valid; expected {expected}")


def _picture_out(path: Path, two_d: bool = False) -> None:
    """Refuse, before any work, a picture path whose suffix names no format we can write, or
    that is a folder."""
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; expected a picture file such as samples.png")
    if two_d:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
        known = {f".{e}" for e in Figure().canvas.get_supported_filetypes()}
    else:
        from PIL import Image
        Image.init()
        known = {e for e, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if path.suffix.lower() not in known:
        raise UserError(f"--out {path}: cannot write pictures of type {path.suffix or '(no suffix)'!r}; "
                        "use .png (or .jpg)")


# What --set may change when a run resumes: its budget and how it is run and evaluated. Anything else
# (the model, the data, the optimizer) would be recorded in config.yaml without being what trained it.
RESUMABLE = ("train.epochs", "train.max_steps", "train.patience", "train.threads", "train.device", "train.log_every",
             "train.checkpoint_every", "eval.")


def _check_resume_changes(run, saved, cfg) -> None:
    from ..config import config_changes
    for key, old, new in config_changes(saved, cfg):
        if not key.startswith(RESUMABLE):
            raise UserError(f"--resume {run}: --set {key}={new} differs from the run's {old!r}; a resumed run keeps "
                            f"its settings except {', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)} "
                            "(start a new run with --out for others)")


def cmd_train(args) -> int:
    from .. import parallel
    from . import runs

    if args.seeds or (args.resume is not None and (args.resume / ENSEMBLE / "seeds.json").is_file()):
        return _train_seeds(args)
    if args.resume is not None:
        runs.check_run_folder(args.resume, "--resume")
    cfg, data_dir = _config_to_train(args, args.resume, "mixvae train: give a config file and --out RUN (or --resume RUN)")
    out = args.resume if args.resume is not None else args.out
    with parallel.process_group(cfg.train.device) as proc:   # several processes when started by torchrun
        summary = runs.train(cfg, out, data_dir, resume=args.resume is not None,
                             progress=not args.quiet and proc.is_main, evaluate_after=not args.no_eval, proc=proc)
    if proc.is_main:
        print(json.dumps(summary))
    return 0


ENSEMBLE = "ensemble"   # the stacked ensemble's own run folder inside a --seeds folder


def _config_to_train(args, run: Optional[Path], usage: str):
    """(config, data folder) of mixvae train: with --resume, the config.yaml of the run folder
    ``run`` with --set applied (only what a resume may change) and the data folder recorded there;
    else the config file given with --set (``usage``: the line for a missing config or --out).
    --threads applies to both."""
    from . import runs
    from ..config import load_config
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise UserError("give either --out (a new run) or --resume RUN, not both")
        if not (run / "config.yaml").is_file():
            raise UserError(f"--resume {args.resume}: not a run folder (no config.yaml)")
        cfg = load_config(run / "config.yaml", args.overrides)
        _check_resume_changes(run, load_config(run / "config.yaml"), cfg)
        data_dir = runs.run_data_dir(run, args.data_dir)
    else:
        if args.config is None or args.out is None:
            raise UserError(usage)
        cfg, data_dir = load_config(args.config, args.overrides), args.data_dir
    if args.threads:
        cfg.train.threads = args.threads
    return cfg, data_dir


def _train_seeds(args) -> int:
    """mixvae train --seeds: the members' run folders DIR/seed<S> and the ensemble's DIR/ensemble."""
    from . import runs
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--seeds trains several seeds in one process; start it without torchrun")
    folder = args.resume if args.resume is not None else args.out
    work = None if folder is None else folder / ENSEMBLE
    if args.resume is not None:
        if not (work / "seeds.json").is_file():
            raise UserError(f"--resume {folder}: not a folder of mixvae train --seeds (no {work / 'seeds.json'})")
        seeds = json.loads((work / "seeds.json").read_text())["seeds"]
        if args.seeds and list(args.seeds) != seeds:
            raise UserError(f"--resume {folder}: its seeds are {seeds}, not {list(args.seeds)}")
    cfg, data_dir = _config_to_train(args, work, "mixvae train --seeds: give a config file and --out DIR (or --resume DIR)")
    if args.resume is None:
        seeds = list(args.seeds)
        runs.check_new_run_dir(folder)
    summaries = runs.train_seeds(cfg, seeds, [folder / f"seed{s}" for s in seeds], work, data_dir,
                                 resume=args.resume is not None, progress=not args.quiet,
                                 evaluate_after=not args.no_eval)
    print(json.dumps({f"seed{s}": summary for s, summary in zip(seeds, summaries)}))
    return 0


def _open(args, overrides=(), needs_data: bool = True):
    """The run a command reads, with its --checkpoint or --weights and its --threads (which
    replaces the run's own train.threads); see runs.open_run for ``needs_data``."""
    from . import runs
    weights = getattr(args, "weights", None)
    if weights is not None and args.checkpoint != "auto":
        raise UserError(f"--weights {weights} and --checkpoint {args.checkpoint}: give one of them")
    threads = [f"train.threads={args.threads}"] if args.threads else []
    return runs.open_run(args.run, args.data_dir, args.checkpoint, list(overrides) + threads, weights=weights,
                         needs_data=needs_data)


def cmd_eval(args) -> int:
    from . import runs

    for name, v in (("--ll-samples", args.ll_samples), ("--fid-samples", args.fid_samples)):
        if v is not None and v < 0:
            raise UserError(f"{name} = {v} is not valid; expected 0 (skip) or a positive integer")
    run = _open(args, args.overrides)
    run.path = None           # eval reads the run folder and writes nothing there (its pictures are train's)
    result = runs.evaluate(run, args.ll_samples, args.split, fid_samples=args.fid_samples, probes=args.probes)
    # the file the weights came from: --weights, or the checkpoint that --checkpoint found (best.prev.pt
    # where best.pt is missing, latest.pt where a run has no best, model.safetensors for a published run)
    source = {"weights": run.weights_file} if args.weights is not None else {"checkpoint": run.weights_file}
    result = {"run": str(args.run), **source, **result}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
    return 0


def cmd_sample(args) -> int:
    import torch

    from .viz import save_grid, save_scatter_2d

    _positive("-n", args.n, MAX_SAMPLES)
    run = _open(args, needs_data=False)
    _picture_out(args.out, two_d=not run.data.is_image)
    torch.manual_seed(args.seed)
    x = run.model.sample(args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if run.data.is_image:
        save_grid(run.data.unscale(x), args.out)
    else:
        save_scatter_2d({"samples": x}, args.out)
    print(str(args.out))
    return 0


def _mnist_files(data_dir) -> bool:
    """Whether MNIST's four files are in the data folder, downloading them (checksummed) where the
    machine is online; False offline."""
    from ..data.download import find_or_download, resolve_data_dir
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    try:
        for name in names:
            find_or_download(resolve_data_dir(data_dir), "mnist", name)
    except UserError:
        return False
    return True


DEMOS = {   # data set -> what the demo trains on it
    "mnist": {"data": {"name": "mnist", "test_subset": 2000},
              "model": {"latent_dim": 40, "prior": {"kind": "vampprior", "components": 500}},
              "train": {"epochs": 8, "warmup_epochs": 4}},
    "digits": {"data": {"name": "digits"},   # scikit-learn's 8x8 digits, 17 gray levels: discretised logistic
               "model": {"latent_dim": 8, "prior": {"kind": "vampprior", "components": 50}},
               "train": {"epochs": 150, "warmup_epochs": 30, "patience": 6, "eval_every": 5}},
}


def cmd_demo(args) -> int:
    import time

    from . import runs
    from ..config import config_from_dict, _deep_merge
    from .viz import PICTURES

    _positive("--epochs", args.epochs)
    name = "mnist" if _mnist_files(args.data_dir) else "digits"
    base = {"seed": 1, "model": {"arch": "vae", "hidden": [300, 300]},
            "train": {"batch_size": 100, "lr": 5e-4, "optimizer": "adam-normgrad", "threads": args.threads},
            "eval": {"ll_samples": 1000}}
    spec = _deep_merge(base, DEMOS[name])
    if args.epochs:
        spec["train"].update(epochs=args.epochs, warmup_epochs=max(1, args.epochs // 5))
    cfg = config_from_dict(spec, "demo")
    out = args.out
    print(f"mixvae demo: VAE + VampPrior (K={cfg.model.prior.components}, {cfg.model.latent_dim} latent dims) on "
          f"{name}{'' if name == 'mnist' else ' (MNIST is not in the data folder and cannot be downloaded)'}, "
          f"up to {cfg.train.epochs} epochs -> {out}", file=sys.stderr)
    t0 = time.perf_counter()
    r = runs.train(cfg, out, args.data_dir, progress=not args.quiet)
    minutes = (time.perf_counter() - t0) / 60
    print(json.dumps(r))
    lines = [f"mixvae demo: done in {minutes:.1f} min; test log-likelihood {r['test_ll']:.2f} nats "
             f"(S = {r['test_ll_samples']}, {r['test_examples']} test images), {r['active_units']} of "
             f"{r['latent_dim']} latent units active, likelihood {r['likelihood']}. In {out}/:"]
    for f in sorted(out.iterdir()):
        if f.name in PICTURES:
            lines.append(f"  {f.name:<20} {PICTURES[f.name]}")
    lines.append(f"  {'eval.json':<20} every number of the final evaluation; metrics.jsonl: the training log")
    lines.append(f"  (tensorboard --logdir {out.parent} shows the curves and pictures; mixvae sample {out} draws more)")
    print("\n".join(lines), file=sys.stderr)
    return 0


def cmd_interpolate(args) -> int:
    import torch

    from .viz import interpolations, latent_walk, save_grid

    given = [name for name, v in (("--pairs", args.pairs), ("--dims", args.dims), ("-k", args.k))
             if v is not None and (name == "--pairs") == args.walk]
    if given:
        raise UserError(f"{given[0]} is for {'interpolations' if args.walk else 'latent walks (--walk)'}; "
                        f"{'drop it or drop --walk' if args.walk else 'add --walk or drop it'}")
    asked_pairs = args.pairs is not None
    args.pairs = 8 if args.pairs is None else args.pairs
    args.k = 20.0 if args.k is None else args.k
    _positive("--pairs", args.pairs, MAX_GRID_SIDE)
    _positive("--steps", args.steps, MAX_GRID_SIDE)
    if not (math.isfinite(args.k) and args.k > 0):
        raise UserError(f"-k = {args.k} is not valid; expected a positive number of standard deviations")
    _picture_out(args.out)
    run = _open(args)
    if not run.data.is_image or not hasattr(run.model, "encoder"):
        raise UserError(f"{args.run}: interpolate needs a single-level model of images")
    dims = args.dims if args.dims is not None else list(range(min(8, run.model.latent_dim)))
    bad = [d for d in dims if not 0 <= d < run.model.latent_dim]
    if bad:
        raise UserError(f"--dims {bad} is not valid; expected latent dimensions in [0, {run.model.latent_dim - 1}]")
    test = run.data.test
    if not asked_pairs:
        args.pairs = max(1, min(args.pairs, len(test) // 2))
    if not args.walk and 2 * args.pairs > len(test):
        raise UserError(f"--pairs {args.pairs} needs {2 * args.pairs} test images; {args.run} has {len(test)} "
                        f"(at most {len(test) // 2} pairs)")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))
    x = run.data.scale(test.get(idx[: 2 * args.pairs])).to(run.device)
    if args.walk:
        grid = latent_walk(run.model, x[:1], dims, args.k, args.steps)
    else:
        grid = interpolations(run.model, x[:args.pairs], x[args.pairs:], args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_grid(run.data.unscale(grid), args.out, nrow=args.steps)
    print(str(args.out))
    return 0


def cmd_export(args) -> int:
    from . import runs

    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; expected a file such as weights.safetensors")
    run = _open(args, needs_data=False)
    print(str(runs.export_weights(run, args.out)))
    return 0


def cmd_bench2d(args) -> int:
    from . import bench2d

    _positive("--seeds", args.seeds)
    _positive("--iterations", args.iterations)
    _positive("--warmup", args.warmup)
    configs = args.configs or (Path("configs") if (Path("configs") / "sintro").is_dir()
                               else Path(__file__).resolve().parents[3] / "configs")
    if not (configs / "sintro").is_dir():
        raise UserError(f"--configs {configs}: no sintro/ presets there; give the repo's configs folder")
    if args.table_only:
        text = bench2d.rewrite_table(args.out)
    else:
        text = bench2d.run(args.out, configs, args.datasets or bench2d.PAPER, args.methods or bench2d.DEFAULT_METHODS,
                           args.seeds, args.iterations, args.first_seed, args.work, args.data_dir, warmup=args.warmup,
                           extra=tuple(args.overrides),
                           log=lambda s: print(s, file=sys.stderr, flush=True))
    print(text)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    out = args.out or (args.runs[0] / "report.html" if len(args.runs) == 1 else Path("report.html"))
    print(str(write_report(args.runs, out)))
    return 0


COMMANDS = {"report": cmd_report, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "demo": cmd_demo, "bench2d": cmd_bench2d,
            "export": cmd_export, "interpolate": cmd_interpolate}


# Under torchrun, every process of a machine usually meets the same bad input (the same config and
# files) at about the same time. The machine's first process (LOCAL_RANK 0) prints the line at
# once; the others wait this long before printing theirs, and torchrun, seeing the first process
# end, stops them meanwhile, so the line appears once. An error only one other process meets is
# still printed, after the wait.
OTHER_PROCESSES_WAIT_S = 15.0


def _one_line(text: str, limit: int = 2000) -> str:
    text = str(text).replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit] + "..."


def _report(line: str) -> None:
    """Print the final line on stderr: at once alone or on a machine's first process, after
    OTHER_PROCESSES_WAIT_S on the other processes started by torchrun (see above)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and os.environ.get("LOCAL_RANK", "0") != "0":
        sys.stderr.flush()
        time.sleep(OTHER_PROCESSES_WAIT_S)
    print(line, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _positive("--threads", args.threads, MAX_THREADS)
        if args.threads:          # commands that open a run also pass it on as train.threads (see _open)
            import torch
            torch.set_num_threads(args.threads)
        from .. import progress
        progress.set_enabled(not args.quiet)
        for plugin in args.plugin:
            _import_plugin(plugin)
        return COMMANDS[args.command](args)
    except UserError as e:
        _report(f"mixvae: error: {_one_line(e)}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mixvae: interrupted", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        _report(f"mixvae: training stopped: {_one_line(e)}; the run folder keeps the checkpoints written before "
                "(lower train.lr, raise sintro.beta_neg, or set train.nan_policy = rollback)")
        return EXIT_DIVERGED
    except OSError as e:    # a file or folder the user named cannot be read or written (permissions, full disk)
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _report(f"mixvae: error: {_one_line(where + (e.strerror or str(e)))}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
