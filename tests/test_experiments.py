"""The results commands at a tiny size: bench2d and the image-table scripts run end to end, keep
finished cells, never re-run them, and write tables and pictures."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mixvae.app.cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_bench2d_tiny(tmp_path, capsys):
    out = tmp_path / "2d"
    args = ["bench2d", "--out", str(out), "--iterations", "16", "--warmup", "6", "--seeds", "2", "--datasets", "rings",
            "--methods", "vae", "learned_prior", "--configs", str(ROOT / "configs"), "--set", "eval.toy_grid=32",
            "--set", "data.epoch_size=8"]
    assert main(args) == 0
    table = (out / "TABLE.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| rings")]
    assert len(rows) == 2 and all("±" in r for r in rows)             # two seeds: mean ± std
    assert ("Written by `mixvae bench2d --iterations 16 --warmup 6 --set eval.toy_grid=32 --set data.epoch_size=8 "
            "--seeds N --out OUT`") in table                              # the call that makes these cells again
    cells = sorted((out / "cells").iterdir())
    assert [c.name for c in cells] == ["rings-learned_prior-16it-seed92", "rings-learned_prior-16it-seed93",
                                       "rings-vae-16it-seed92", "rings-vae-16it-seed93"]
    r = json.loads((cells[0] / "eval.json").read_text())
    assert r["steps"] == 16 and r["grid"] == 32 and "--set train.warmup_steps=6" in r["command"]
    assert "sintro.convert_to_mog_step=6" in r["command"] or "convert_to_mog_step=" in r["command"]
    assert (out / "rings.png").exists() and (cells[0] / "density.png").exists()
    stamp = (cells[0] / "eval.json").stat().st_mtime
    capsys.readouterr()
    assert main(args) == 0                                             # finished cells are not re-run
    assert (cells[0] / "eval.json").stat().st_mtime == stamp
    assert "16 iterations per run (6 of them plain-VAE warm-up)" in capsys.readouterr().out


def test_bench2d_table_only_reproduces_the_kept_table(tmp_path, capsys):
    """The 2D table in the repo is exactly what `mixvae bench2d --table-only` writes from its kept cells."""
    out = tmp_path / "2d"
    shutil.copytree(ROOT / "results" / "2d" / "cells", out / "cells")
    assert main(["bench2d", "--table-only", "--out", str(out)]) == 0
    assert (out / "TABLE.md").read_text() == (ROOT / "results" / "2d" / "TABLE.md").read_text()
    assert capsys.readouterr().out.strip() == (out / "TABLE.md").read_text().strip()
    assert sorted(p.name for p in out.glob("*.png")) == ["2spirals.png", "8gaussians.png", "checkerboard.png",
                                                          "rings.png"]


def test_bench2d_verdicts_follow_the_standard_error_of_the_difference():
    from mixvae.app.bench2d import comparison, verdict
    assert verdict([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]).startswith("wins (12.2 ")      # difference 1, SE 0.0816
    assert verdict([2.0, 2.1, 1.9], [1.0, 1.1, 0.9]).startswith("loses (12.2 ")
    assert verdict([1.0, 1.2, 0.8], [1.1, 1.3, 0.9]).startswith("ties (0.6 ")        # difference 0.1, SE 0.163
    assert verdict([1.0], [2.0, 2.1]) == "one seed: no verdict"
    assert verdict([1.0, 1.0], [2.0, 2.0]) == "wins (no spread)" and verdict([1.0, 1.0], [1.0, 1.0]) == "ties (no spread)"
    cell = lambda kl, jsd: {"kl": kl, "jsd": jsd}
    groups = {("rings", "learned_prior", 30000): [cell(1.0, 5.0), cell(1.2, 5.2)],
              ("rings", "sintro", 30000): [cell(2.0, 5.0), cell(2.2, 5.2)],
              ("rings", "vae", 30000): [cell(9.0, 9.0), cell(9.0, 9.0)],
              ("2spirals", "learned_prior", 6000): [cell(1.0, 1.0)]}                 # no S-IntroVAE cell: no line
    groups[("8gaussians", "learned_prior", 30000)] = [cell(3.0, 1.0), cell(3.2, 1.2)]
    groups[("8gaussians", "sintro", 30000)] = [cell(2.0, 1.0), cell(2.2, 1.2)]
    groups[("checkerboard", "learned_prior", 30000)] = [cell(3.0, 1.0)]            # one seed: no verdict, not counted
    groups[("checkerboard", "sintro", 30000)] = [cell(2.0, 1.0), cell(2.2, 1.2)]
    lines = comparison(groups)
    assert len(lines) == 5 and lines[3].startswith("- rings (30000 iterations, seeds 2 / 2): KL 1.100 against 2.100: wins")
    assert "JSD 5.100 against 5.100: ties (0.0 standard errors)" in lines[3] and "gnELBO" not in lines[3]
    assert lines[1].startswith("- 8gaussians (30000 iterations, seeds 2 / 2): KL 3.100 against 2.100: loses")
    assert lines[2].startswith("- checkerboard (30000 iterations, seeds 1 / 2): KL 3.000 against 2.100: one seed")
    assert lines[4] == ("- at 30000 iterations, the claim that the learned prior matches or beats S-IntroVAE holds for "
                        "KL on 1 of 2 data sets (wins: 1, ties: 0, losses: 1); JSD on 2 of 2 data sets "
                        "(wins: 0, ties: 2, losses: 0)")


def script(name, *args):
    """An experiment script on synthetic data (offline: a missing file fails instead of downloading)."""
    env = {**os.environ, "MIXVAE_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args], capture_output=True, text=True,
                          env=env, timeout=900)       # a guard against a hang only: these take well under a minute


def test_sintro_images_script_tiny(tmp_path, fake_data):
    data_dir = fake_data.get("mnist")[0]
    res = script("sintro_images.py", "--results", str(tmp_path / "r"), "--work", str(tmp_path / "w"), "--data", "mnist",
                 "--methods", "learned_prior_rent", "--train-subset", "256", "--epochs", "2", "--warmup-epochs", "1",
                 "--channels", "4", "8", "--fid-samples", "16", "--fid-reconstructions", "8", "--data-dir", str(data_dir), "--set", "train.batch_size=64")
    assert res.returncode == 0, res.stderr[-2000:]
    row = [line for line in (tmp_path / "r" / "TABLE.md").read_text().splitlines() if line.startswith("| MNIST")]
    assert len(row) == 1 and "of 10" in row[0]                          # inactive modes of a MoG(10)
    cell = json.loads(next((tmp_path / "r" / "cells").glob("*/eval.json")).read_text())
    assert cell["fid_images"] == 16 and 0 <= cell["probes"]["svm_few"] <= 1 and cell["steps"] == 8


def test_gamix_table_script_tiny(tmp_path, fake_data):
    data_dir = fake_data.get("frey-faces")[0]
    res = script("gamix_table.py", "--results", str(tmp_path / "r"), "--work", str(tmp_path / "w"), "--data",
                 "frey_faces", "--set", "train.max_steps=3", "--set", "eval.fid_samples=0", "--set", "model.channels=[8,4]",
                 "--set", "gamix.disc_width=8", "--data-dir", str(data_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "9,932,466 parameters (paper: 9,932,466)" in res.stdout
    rows = [line for line in (tmp_path / "r" / "TABLE.md").read_text().splitlines() if line.startswith("| Frey")]
    assert len(rows) == 2                                              # GAMIX and the plain VAE
    for cell in (tmp_path / "r" / "cells").glob("*/eval.json"):
        r = json.loads(cell.read_text())
        assert r["psnr"] > 0 and len(r["latent_stats"]["sigma2"]) == 32


def test_2d_protocol_script_tiny_keeps_cells_that_mixvae_eval_reproduces(tmp_path, capsys):
    """experiments/sintro2d_protocol.py at a tiny budget: each cell trains in its results folder,
    keeps its weights (no checkpoints once finished), the table names the script, and `mixvae eval
    <cell>` gives the cell's figures again from the kept weights."""
    results = tmp_path / "2d_protocol"
    cmd = [sys.executable, str(ROOT / "experiments" / "sintro2d_protocol.py"), "--datasets", "rings", "--methods",
           "vae", "learned_prior", "--seeds", "7", "--iterations", "16", "--warmup", "6", "--results", str(results),
           "--set", "eval.toy_grid=32", "--set", "data.epoch_size=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cells = sorted((results / "cells").iterdir())
    assert [c.name for c in cells] == ["rings-learned_prior-16it-seed7", "rings-vae-16it-seed7"]
    for c in cells:
        assert {"eval.json", "model.safetensors", "config.yaml", "density.png", "curves.png"} <= {p.name for p in c.iterdir()}
        assert not (c / "checkpoints").exists()
    table = (results / "TABLE.md").read_text()
    assert "experiments/sintro2d_protocol.py" in table and "compressed" in table   # 16 iterations: compressed
    assert "Incomplete" not in table                                              # both cells of the grid finished
    kept = json.loads((cells[0] / "eval.json").read_text())
    assert kept["steps"] == 16 and kept["seed"] == 7 and kept["method"] == "learned_prior"
    # the commands recorded name the grid's own methods and results folder, so they rerun it there
    assert kept["command"].endswith(f"--methods learned_prior --seeds 7 --results {os.path.relpath(results, ROOT)}")
    assert "--methods vae learned_prior --seeds S ... --results" in table
    capsys.readouterr()
    assert main(["eval", str(cells[0]), "--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("kl", "jsd", "kl_mass", "jsd_mass", "gnelbo"):
        assert again[k] == pytest.approx(kept[k], rel=1e-6, abs=1e-9), k
    proc = subprocess.run(cmd[:2] + ["--datasets", "rings", "--methods", "vae", "sintro", "--seeds", "7",
                                     "--iterations", "16", "--results", str(results), "--status"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("rings-vae-16it-seed7: done, KL ")
    assert lines[1:] == ["rings-sintro-16it-seed7: not started", "1 of 2 cells done.",
                         "sintro: 16 steps left (no finished cell to time it by)"]
    files = lambda: {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    before = files()
    proc = subprocess.run(cmd + ["--verify"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert files() == before                              # verifying writes nothing
    assert [line.split(":")[0] + ": " + line.split(": ")[1].split(" ")[0] for line in proc.stdout.splitlines()] == \
        ["rings-vae-16it-seed7: reproduced", "rings-learned_prior-16it-seed7: reproduced"]
    kept["kl"] *= 1.001                                   # a figure that its weights do not give
    (cells[0] / "eval.json").write_text(json.dumps(kept))
    proc = subprocess.run(cmd + ["--verify"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "rings-learned_prior-16it-seed7: DIFFERS (largest relative difference 1.0e-03" in proc.stdout


def test_2d_protocol_script_stack_trains_a_rows_seeds_as_their_separate_cells(tmp_path):
    """--stack: the learned-prior row's two new seeds train as one ensemble and leave the cells
    (figures to 1e-5, the recorded commands naming --stack / --seeds) that separate training leaves."""
    base = [sys.executable, str(ROOT / "experiments" / "sintro2d_protocol.py"), "--datasets", "rings", "--methods",
            "learned_prior", "--seeds", "7", "8", "--iterations", "12", "--warmup", "5",
            "--set", "eval.toy_grid=32", "--set", "data.epoch_size=6"]
    for name, extra in (("stacked", ["--stack"]), ("separate", [])):
        proc = subprocess.run(base + ["--results", str(tmp_path / name)] + extra, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "stacked" / "ensembles").exists() or not any((tmp_path / "stacked" / "ensembles").iterdir())
    for seed in (7, 8):
        cell = f"cells/rings-learned_prior-12it-seed{seed}/eval.json"
        stacked, alone = (json.loads((tmp_path / n / cell).read_text()) for n in ("stacked", "separate"))
        for k in ("kl", "jsd", "kl_mass", "gnelbo"):
            assert stacked[k] == pytest.approx(alone[k], rel=1e-5), k
        assert "--seeds 7 8 --stack" in stacked["command"] and "--seeds 7 8 --set" in stacked["train_command"]
        assert stacked["steps"] == 12 and stacked["best_valid_loss"] is None


def test_2d_protocol_script_leaves_a_cell_another_process_trains(tmp_path):
    """Two processes of the protocol script share the cells: one whose folder is locked by another
    live process is skipped (named on stderr), the next one is trained."""
    from mixvae.app.runs import RunLock
    results = tmp_path / "2d_protocol"
    busy = results / "cells" / "rings-vae-16it-seed7"
    with RunLock(busy):                      # this test process holds it, as a second script would
        proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "sintro2d_protocol.py"), "--datasets", "rings",
                               "--methods", "vae", "--seeds", "7", "8", "--iterations", "16", "--warmup", "6",
                               "--results", str(results), "--set", "eval.toy_grid=32", "--set", "data.epoch_size=8"],
                              capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"rings-vae-16it-seed7: trained by process {os.getpid()}, skipped" in proc.stderr
    assert not (busy / "eval.json").exists() and (results / "cells" / "rings-vae-16it-seed8" / "eval.json").exists()
    table = (results / "TABLE.md").read_text()
    assert table.startswith("**Incomplete: 1 of 2 cells finished** (1 row x seeds 7, 8)")


def test_bench2d_refuses_a_kept_cell_made_with_another_warmup_or_overrides(tmp_path):
    """A cell folder is named by data, method, budget and seed; one kept from a run with another
    warm-up or other --set overrides is refused with one line instead of being reused silently."""
    from mixvae.app import bench2d
    from mixvae.errors import UserError
    kept = tmp_path / "cells" / "rings-vae-16it-seed7"
    kept.mkdir(parents=True)
    (kept / "eval.json").write_text(json.dumps({"warmup": 6, "overrides": []}))
    run = lambda **kw: bench2d.run(tmp_path, ROOT / "configs", ["rings"], ["vae"], 1, 16, 7, **kw)
    with pytest.raises(UserError, match="kept from a run with warmup 6, not 5"):
        run(warmup=5)
    with pytest.raises(UserError, match=r"kept from a run with overrides \[\], not \['eval.toy_grid=32'\]"):
        run(warmup=6, extra=("eval.toy_grid=32",))
    # the settings count, not their text: order and repeats of --set do not make a cell another one
    from mixvae.app.grid import check_kept
    (kept / "eval.json").write_text(json.dumps({"overrides": ["eval.toy_grid=32", "train.lr=0.1"]}))
    check_kept(kept, {"overrides": ["train.lr=0.1", "eval.toy_grid=32", "eval.toy_grid=32"]})
    with pytest.raises(UserError, match="kept from a run with overrides"):
        check_kept(kept, {"overrides": ["eval.toy_grid=32", "train.lr=0.1", "train.lr=0.2"]})
    assert bench2d.Budget(6000, 3000).overrides(bench2d.preset_path(ROOT / "configs", "rings", "sintro"))[1] == \
        "train.warmup_steps=3000"                          # a longer warm-up than the preset's is used as given


def test_a_grid_refuses_a_kept_cell_made_with_other_settings(tmp_path):
    """run_grid reuses a kept cell only if every setting it recorded matches the one asked for now."""
    from mixvae.app.grid import Cell, run_grid
    from mixvae.errors import UserError
    kept = tmp_path / "cells" / "a-seed0"
    kept.mkdir(parents=True)
    (kept / "eval.json").write_text(json.dumps({"epochs": 30, "channels": [4, 8], "kl": 1.0}))
    cell = lambda **meta: Cell("a-seed0", ROOT / "configs" / "vampprior" / "vae_vampprior_dynamic_mnist.yaml", [], meta)
    table = lambda results: "table"
    assert run_grid([cell(epochs=30, channels=(4, 8), tag="new")], tmp_path / "w", tmp_path, table) == "table"
    with pytest.raises(UserError, match="kept from a run with epochs 30, not 3;"):
        run_grid([cell(epochs=3, channels=(4, 8))], tmp_path / "w", tmp_path, table)


def test_precision_table_sets_each_bf16_2d_run_among_its_own_budgets_fp32_seeds(tmp_path, monkeypatch):
    """experiments/precision_accuracy.py: the 6000-iteration and the protocol's bf16 runs are each
    compared with the fp32 seeds of their own budget; the protocol's fp32 partner is a kept seed."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import precision_accuracy as pa
    finally:
        sys.path.remove(str(ROOT / "experiments"))

    def cell(folder, name, **r):
        (folder / name).mkdir(parents=True)
        (folder / name / "eval.json").write_text(json.dumps({"jsd": 1.0, "gnelbo": 0.1, "train_seconds": 60, **r}))

    toy = dict(data="8gaussians", method="learned_prior")
    for seed, kl in [(92, 2.0), (93, 1.0), (94, 3.0)]:
        cell(tmp_path / "protocol", f"s{seed}", seed=seed, kl=kl, iterations=30000, precision="fp32", **toy)
        cell(tmp_path / "short", f"s{seed}", seed=seed, kl=10 * kl, iterations=6000, precision="fp32", **toy)
    cell(tmp_path / "short", "other", seed=95, kl=99.0, iterations=6000, precision="fp32", data="rings",
         method="learned_prior")                                                       # another data set: not a seed
    results = tmp_path / "precision"
    cell(results / "cells", "p", experiment="2d_protocol", precision="bf16", seed=92, kl=2.5, iterations=30000)
    cell(results / "cells", "s", experiment="2d", precision="bf16", seed=92, kl=35.0, iterations=6000)
    monkeypatch.setattr(pa, "TOY_BUDGETS", {"2d": (6000, tmp_path / "short"), "2d_protocol": (30000, tmp_path / "protocol")})
    monkeypatch.setattr(pa, "ROOT", tmp_path)
    text = pa.table(results)
    assert ("2D, 30000 iterations: bf16 KL **2.50**; fp32 KL over seeds 92, 93, 94 (protocol): 2.00 ± 1.00, "
            "range 1.00 to 3.00: within the range of the fp32 seeds, +0.5 standard deviations") in text
    assert "The same seed in fp32: KL 2.00 (bf16 - fp32 = +0.50)." in text
    assert "2D, 6000 iterations: bf16 KL **35.00**; fp32 KL over seeds 92, 93, 94 (short): 20.00 ± 10.00" in text
    assert "outside the range" in text
    assert "| S-IntroVAE + learned MoG(64), 8gaussians, 30000 iterations, seed 92 | bf16 | KL 2.50," in text
    assert pa.toy_cell("2d_protocol", "bf16", 30000).overrides[-2:] == ["train.precision=bf16", "train.threads=1"]


def test_a_grid_does_not_resume_an_unfinished_cell_with_other_settings(tmp_path):
    """An interrupted cell's work folder continues only with the settings it was started with; with
    another --set the grid says which key differs instead of recording settings that did not train it."""
    from mixvae.app import runs
    from mixvae.app.grid import run_cell
    from mixvae.config import load_config
    from mixvae.errors import UserError
    preset = ROOT / "configs" / "sintro" / "2d_rings_vae.yaml"
    sets = ["train.max_steps=6", "train.warmup_steps=0", "train.lr_milestones=[]", "data.epoch_size=3",
            "eval.toy_grid=16", "train.threads=1"]
    runs.train(load_config(preset, sets), tmp_path / "work", progress=False, evaluate_after=False)
    assert (tmp_path / "work" / "checkpoints" / "latest.pt").exists()
    with pytest.raises(UserError, match=r"train.lr = 0.0002, not 0.01; delete that folder"):
        run_cell(preset, sets + ["train.lr=0.01"], tmp_path / "work", tmp_path / "dest", progress=False)
    assert not (tmp_path / "dest").exists()
    assert run_cell(preset, sets, tmp_path / "work", tmp_path / "dest", progress=False)["steps"] == 6
