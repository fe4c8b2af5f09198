"""mixvae report: one self-contained HTML page, checked in a real headless browser (Chromium)."""
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mixvae.app.cli import main

TINY = ["data.name=digits", "model.hidden=[16]", "model.latent_dim=3", "model.prior.kind=vampprior",
        "model.prior.components=4", "train.epochs=2", "train.warmup_epochs=1", "train.batch_size=50",
        "eval.ll_samples=5"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]
# Appended to a copy of the page: after loading, the title says how many pictures decoded.
COUNT_IMAGES = ("<script>window.addEventListener('load', () => { const i = [...document.images]; "
                "document.title = 'loaded ' + i.filter(x => x.complete && x.naturalWidth > 0).length + ' of ' + i.length; });"
                "</script>")


def train(run, *extra):
    sets = [a for o in TINY + list(extra) for a in ("--set", o)]
    assert main(["train", "configs/vampprior/_base.yaml", "--out", str(run), "--quiet"] + sets) == 0


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    import os
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    here = os.getcwd()
    os.chdir(root)
    try:
        base = tmp_path_factory.mktemp("runs")
        train(base / "a")
        train(base / "b", "model.prior.components=6", "seed=3")
    finally:
        os.chdir(here)
    return base / "a", base / "b"


def test_report_holds_config_differences_metrics_and_every_picture(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "r.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    page = out.read_text()
    assert "model.prior.components" in page and "seed" in page            # keys that differ
    diff_table = page.split("Keys whose values differ")[1].split("</table>")[0]
    assert "model.hidden" not in diff_table                                # ... and only those
    ll_a = json.loads((a / "eval.json").read_text())["test_ll"]
    assert f"{ll_a:.4g}" in page
    pictures = [p for p in ("curves.png", "samples.png", "reconstructions.png", "pseudo_inputs.png")]
    assert page.count("data:image/png;base64,") == 2 * len(pictures) + 2  # + interpolations of both runs
    assert "src=\"http" not in page and "src=\"file" not in page           # self-contained
    assert main(["report", str(a)]) == 0 and (a / "report.html").is_file()  # one run: RUN/report.html
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_report_labels_tell_runs_of_the_same_folder_name_apart(tmp_path):
    from mixvae.app.report import _labels
    assert _labels([tmp_path / "a" / "seed1", tmp_path / "b" / "seed1"]) == ["a/seed1", "b/seed1"]
    assert _labels([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium_with_all_images_loaded(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "r.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    shot = tmp_path / "shot.png"
    res = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400",
                          f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-1500:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.05               # text, tables and pictures, not blank
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", COUNT_IMAGES + "</body>"))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    title = dom.split("<title>")[1].split("</title>")[0]
    loaded, total = title.removeprefix("loaded ").split(" of ")
    assert int(total) == 10 and loaded == total, title
