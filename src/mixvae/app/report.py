"""``mixvae report RUN [RUN ...]``: one self-contained HTML page about one or several run folders.

The page holds, for the runs side by side: the config keys whose values differ (and each run's
whole config), the final metrics of eval.json, the training curves, every picture of the run
folder with a line saying what it shows, and eval.json itself. Pictures are embedded as data URIs,
so the file can be mailed or archived alone.
"""
from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from .. import __version__, safeio
from ..config import parse_yaml
from ..errors import UserError
from .viz import PICTURES, save_curves

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.runs { display: flex; flex-wrap: wrap; gap: 2em; } .run { flex: 1 1 420px; }
figure { margin: 0.5em 0 1.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
"""


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _cell(v) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, (int, bool)) or v is None:
        return f'<td class="num">{html.escape(str(v))}</td>'
    return f"<td>{html.escape(json.dumps(v) if isinstance(v, (list, dict)) else str(v))}</td>"


def _read_run(path: Path) -> dict:
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path} is not a run folder (no config.yaml)")
    try:
        config = parse_yaml(safeio.read_text(path / "config.yaml", limit=safeio.MAX_CONFIG_BYTES),
                            str(path / "config.yaml")) or {}
        result = (json.loads(safeio.read_text(path / "eval.json", limit=1 << 24))
                  if (path / "eval.json").is_file() else {})
    except ValueError as e:
        raise UserError(f"{path}: config.yaml or eval.json is not readable ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(config, dict) or not isinstance(result, dict):
        raise UserError(f"{path}: config.yaml and eval.json must each hold a mapping")
    if not (path / "curves.png").is_file() and (path / "metrics.jsonl").is_file():
        save_curves(path / "metrics.jsonl", path / "curves.png")
    return {"path": path, "config": _flatten(config), "eval": result}


def _labels(paths: list[Path]) -> list[str]:
    """Column labels for run folders: the shortest tails of their paths that tell them apart
    (``a/seed1`` and ``b/seed1``, not ``seed1`` twice)."""
    parts = [Path(p).parts for p in paths]
    for k in range(1, max(len(q) for q in parts) + 1):
        labels = ["/".join(q[-k:]) for q in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]     # the same folder given twice


def write_report(paths: list[Path], out: Path) -> Path:
    """Write the HTML page about the run folders ``paths`` to ``out``; returns ``out``."""
    runs = [_read_run(Path(p)) for p in paths]
    names = _labels([r["path"] for r in runs])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mixvae report: {html.escape(', '.join(names))}"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>mixvae report: {html.escape(', '.join(names))}</h1>",
             f"<p>Written {time.strftime('%Y-%m-%d %H:%M')} by mixvae {__version__} from "
             + ", ".join(f"<code>{html.escape(str(r['path']))}</code>" for r in runs) + ".</p>"]

    keys = sorted(set().union(*(r["config"] for r in runs)))
    differ = [k for k in keys if len({json.dumps(r["config"].get(k), sort_keys=True) for r in runs}) > 1]
    parts.append("<h2>Configuration</h2>")
    if len(runs) > 1:
        if differ:
            rows = "".join(f"<tr><th>{html.escape(k)}</th>{''.join(_cell(r['config'].get(k)) for r in runs)}</tr>"
                           for k in differ)
            parts.append(f"<p>Keys whose values differ between the runs:</p><table><tr><th>key</th>{head}</tr>{rows}</table>")
        else:
            parts.append("<p>The runs have the same configuration.</p>")
    for name, r in zip(names, runs):
        rows = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in r["config"].items())
        parts.append(f"<details><summary>whole config of {html.escape(name)}</summary><table>{rows}</table></details>")

    parts.append("<h2>Final metrics (eval.json)</h2>")
    metric_keys = [k for k in dict.fromkeys(k for r in runs for k in r["eval"])
                   if any(isinstance(r["eval"].get(k), (int, float, str)) for r in runs)]
    if metric_keys:
        rows = "".join(f"<tr><th>{html.escape(k)}</th>{''.join(_cell(r['eval'].get(k)) for r in runs)}</tr>"
                       for k in metric_keys)
        parts.append(f"<table><tr><th>metric</th>{head}</tr>{rows}</table>")
    else:
        parts.append("<p>No run has been evaluated yet (no eval.json).</p>")

    parts.append("<h2>Curves and pictures</h2><div class='runs'>")
    for name, r in zip(names, runs):
        parts.append(f"<div class='run'><h3>{html.escape(name)}</h3>")
        for picture, caption in PICTURES.items():
            f = r["path"] / picture
            if f.is_file():
                parts.append(f"<figure>{_img(f, picture)}<figcaption><b>{picture}</b>: {html.escape(caption)}"
                             "</figcaption></figure>")
        if r["eval"]:
            parts.append(f"<details><summary>eval.json</summary><pre>{html.escape(json.dumps(r['eval'], indent=2))}"
                         "</pre></details>")
        parts.append("</div>")
    parts.append("</div></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out
