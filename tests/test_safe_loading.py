"""Nothing a file holds can run code: checkpoints, weights, pickled data, archives."""
import json
import pickle
from pathlib import Path

import torch

from mixvae.app import runs
from mixvae.app.cli import main
from tests.test_cli import ROOT, TINY, one_line_error, sets


class Exploit:
    """Unpickling this would create a file (a stand-in for any code an attacker wants to run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def small_run(tmp_path, capsys, name="run"):
    run = tmp_path / name
    over = TINY + ["model.prior.kind=mog", "model.prior.components=3", "train.max_steps=10"]
    code = main(["train", str(ROOT / "configs/vampprior/_base.yaml"), "--out", str(run), "--quiet"] + sets(over))
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return run


def test_malicious_checkpoint_runs_nothing_and_is_one_clear_line(tmp_path, capsys):
    run = small_run(tmp_path, capsys)
    marker = tmp_path / "pwned"
    for name in ("best.pt", "latest.pt", "latest.prev.pt", "best.prev.pt"):
        path = run / "checkpoints" / name
        if path.exists() or name.startswith("best"):
            torch.save({"modules": Exploit(marker)}, path)         # torch.save pickles the object
    code = main(["eval", str(run), "--json"])
    err = capsys.readouterr().err
    assert one_line_error(code, err) and "cannot load checkpoint" in err
    assert not marker.exists()
    # the plain pickle module would have run it: the file really is an exploit
    pickle.loads(pickle.dumps(Exploit(marker)))
    assert marker.exists()


def test_safetensors_export_and_import_round_trip(tmp_path, capsys):
    run = small_run(tmp_path, capsys)
    out = tmp_path / "w.safetensors"
    assert main(["export", str(run), "--out", str(out)]) == 0
    capsys.readouterr()
    a = runs.open_run(run)
    b = runs.open_run(run, weights=out)
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k
    code = main(["eval", str(run), "--weights", str(out), "--ll-samples", "5", "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["test_ll"] < 0
    # not a safetensors file / weights of another model: one line, exit 2
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert one_line_error(main(["eval", str(run), "--weights", str(bad)]), capsys.readouterr().err)
    other = small_run(tmp_path, capsys, "other")
    other_cfg = (other / "config.yaml").read_text().replace("latent_dim: 4", "latent_dim: 5")
    (other / "config.yaml").write_text(other_cfg)
    code = main(["eval", str(other), "--weights", str(out)])
    err = capsys.readouterr().err
    assert one_line_error(code, err) and "do not fit" in err


def test_converted_prior_survives_export(tmp_path, capsys):
    over = ["seed=0", "data.name=8gaussians", "data.epoch_size=6", "model.arch=mlp2d", "model.latent_dim=2",
            "model.hidden=[8]", "model.prior.kind=vampprior", "model.prior.components=3",
            "model.prior.pseudo_init=[0.0,1.0]", "train.objective=sintro", "train.max_steps=6",
            "train.batch_size=16", "train.warmup_steps=3", "sintro.convert_to_mog_step=2", "sintro.kl_samples=2",
            "sintro.beta_neg=0.9", "sintro.beta_kl=0.3", "sintro.beta_rec=0.2"]
    run = tmp_path / "r"
    assert main(["train", str(ROOT / "configs/vampprior/_base.yaml"), "--out", str(run), "--quiet", "--no-eval"]
                + sets(over)) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "w.safetensors")]) == 0
    b = runs.open_run(run, weights=tmp_path / "w.safetensors")
    assert type(b.model.prior).__name__ == "MoGPrior"
    torch.testing.assert_close(b.model.prior.means, runs.open_run(run).model.prior.means)
