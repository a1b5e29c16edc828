"""What `inpaint-fix` writes, per image and for the run:

    OUT/fixed/NAME.png            the output image (the input itself when nothing beat it), + fixed/manifest.jsonl
    OUT/masks/NAME.png            the repainted mask (white = repainted)
    OUT/overlays/NAME.png         the heatmap over the input
    OUT/strips/NAME.png           before | heatmap | mask | after, with scores
    OUT/candidates/NAME.png       every composited candidate with its score (* = kept)
    OUT/reports/NAME.json         scores before and after, the chosen candidate and its seed, the mask's area, settings
    OUT/summary.json, OUT/index.html

Every file is written atomically; the report is written last, so an image with a report is complete and a rerun
skips it when its settings and models are the same (`InpaintFixer.models`: where the inpainting and
heatmap models came from, the reward, and fingerprints of the weights behind the heatmaps, the reward and the
artifact segmenter).
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..files import write_text_atomically
from ..imaging import heatmap_overlay, make_grid, save_png


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(data, indent=2))


def image_names(paths: Sequence[Path]) -> list[str]:
    """One output name per input: its stem, with -2, -3, ... where two inputs share a stem."""
    seen: Counter = Counter()
    names = []
    for path in paths:
        seen[path.stem] += 1
        names.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return names


def settings_dict(settings) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(settings), default=str))


def read_report(out: Path, name: str, path: Path, settings, models: Optional[dict] = None) -> Optional[dict]:
    """The finished report of this input under these settings and models (`InpaintFixer.models`), if a previous
    run wrote it."""
    report_path = out / "reports" / f"{name}.json"
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError:
        return None
    same = (report.get("input") == str(path) and report.get("settings") == settings_dict(settings)
            and report.get("models") == models)
    return report if same and report.get("status") != "error" else None


def mask_overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 255), alpha: float = 0.6) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.array(colour, np.float32)
    return out.round().astype(np.uint8)


def _scale_for(image: np.ndarray) -> int:
    return max(1, 256 // max(image.shape[:2]))  # small images are shown enlarged (nearest neighbour)


def write_image_outputs(out: Path, name: str, path: Path, prompt: str, image: np.ndarray, result, fixer,
                        input_note: Optional[str], rahf_before: dict, rahf_after: dict,
                        mask_file: Optional[Path] = None, heatmap_file: Optional[Path] = None) -> dict:
    """Write one image's files and return its report."""
    reward = fixer.reward_name
    outputs = {
        "fixed": f"fixed/{name}.png", "mask": f"masks/{name}.png", "overlay": f"overlays/{name}.png",
        "strip": f"strips/{name}.png",
    }
    save_png(result.image, out / outputs["fixed"])
    save_png(result.mask.astype(np.uint8) * 255, out / outputs["mask"])
    overlay = heatmap_overlay(image, result.heatmap)
    save_png(overlay, out / outputs["overlay"])
    scale = _scale_for(image)
    score_after = (result.original_score if result.chosen is None or result.original_score is None
                   else result.candidate_scores[result.chosen])
    before = "" if result.original_score is None else f" {result.original_score:.3f}"
    after = "" if score_after is None else f" {score_after:.3f}"
    captions = [f"before{before}", "heatmap", f"mask {100 * result.mask_area:.1f}%", f"after{after}"]
    strip = make_grid([image, overlay, mask_overlay(image, result.mask), result.image], ncols=4, scale=scale,
                      captions=captions, caption_height=12)
    save_png(strip, out / outputs["strip"])
    if result.candidates:
        outputs["candidates"] = f"candidates/{name}.png"
        captions = [f"{'*' if k == result.chosen else ''}{k}: {s:.3f}" for k, s in enumerate(result.candidate_scores)]
        grid = make_grid(result.candidates, ncols=min(8, len(result.candidates)), scale=scale, captions=captions,
                         caption_height=12)
        save_png(grid, out / outputs["candidates"])
    report = {
        "input": str(path),
        "name": name,
        "prompt": prompt,
        "status": result.status,
        "message": result.message,
        "input_note": input_note,
        "size": [int(image.shape[1]), int(image.shape[0])],
        "mask": {
            "source": result.mask_source,
            "file": str(mask_file or heatmap_file) if (mask_file or heatmap_file) else None,
            "threshold": result.threshold,
            "heatmap_max": float(result.heatmap.max()),
            "area": result.mask_area,
            "pixels": int(result.mask.sum()),
        },
        "reward": reward,
        "score_before": result.original_score,
        "score_after": score_after,
        "rahf_before": rahf_before,
        "rahf_after": rahf_after,
        "chosen": None if result.chosen is None else {"index": result.chosen, "seed": result.seeds[result.chosen]},
        "candidates": [{"index": k, "seed": seed, "score": score,
                        **({} if result.alignment is None else {"rahf_alignment": result.alignment[k + 1],
                                                                "allowed": result.eligible[k]})}
                       for k, (seed, score) in enumerate(zip(result.seeds, result.candidate_scores))],
        **({} if result.alignment is None else {"rahf_alignment_before": result.alignment[0]}),
        "pixels_changed_outside_mask": int((result.image != image).any(-1)[~result.mask].sum()),
        "settings": settings_dict(fixer.settings),
        "models": fixer.models,
        "outputs": outputs,
    }
    _write_json(out / "reports" / f"{name}.json", report)  # last: its presence means the image is done
    return report


def write_error_report(out: Path, name: str, path: Path, prompt: str, error: str, settings,
                       models: Optional[dict] = None) -> dict:
    report = {"input": str(path), "name": name, "prompt": prompt, "status": "error", "message": error,
              "settings": settings_dict(settings), "models": models}
    _write_json(out / "reports" / f"{name}.json", report)
    return report


def write_summary(out: Path, reports: Sequence[dict]) -> dict:
    """summary.json, fixed/manifest.jsonl (so `richfeedback oracle OUT/fixed` and `score` read the outputs like
    a generate folder) and index.html."""
    counts = Counter(r["status"] for r in reports)
    done = [r for r in reports if r["status"] != "error" and r.get("score_before") is not None]

    def mean(key):
        return float(np.mean([r[key] for r in done])) if done else None

    summary = {
        "num_images": len(reports),
        "fixed": counts.get("fixed", 0),
        "kept_original": counts.get("kept_original", 0),
        "nothing_to_fix": counts.get("nothing_to_fix", 0),
        "errors": [{"input": r["input"], "message": r["message"]} for r in reports if r["status"] == "error"],
        "reward": reports[0].get("reward") if reports else None,
        "mean_score_before": mean("score_before"),
        "mean_score_after": mean("score_after"),
        "mean_mask_area": (float(np.mean([r["mask"]["area"] for r in reports if "mask" in r]))
                           if any("mask" in r for r in reports) else None),
    }
    _write_json(out / "summary.json", summary)
    rows = [{"file_name": Path(r["outputs"]["fixed"]).name, "prompt": r["prompt"], "source": r["input"],
             "status": r["status"]} for r in reports if r["status"] != "error"]
    if rows:
        write_text_atomically(out / "fixed" / "manifest.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    _write_index(out, reports, summary)
    return summary


def _write_index(out: Path, reports: Sequence[dict], summary: dict) -> None:
    cells = []
    for r in reports:
        head = f"<b>{html.escape(r['name'])}</b> {html.escape(r['status'])}: {html.escape(r['message'])}"
        if r["status"] == "error":
            cells.append(f"<tr><td>{head}</td></tr>")
            continue
        cells.append(f"<tr><td>{head}<br><i>{html.escape(r['prompt'])}</i><br>"
                     f"<img src=\"{r['outputs']['strip']}\"></td></tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>inpaint-fix</title></head><body>"
            f"<h1>inpaint-fix</h1><p>{summary['fixed']} fixed, {summary['kept_original']} kept, "
            f"{summary['nothing_to_fix']} with nothing to fix, {len(summary['errors'])} errors; reward "
            f"{html.escape(str(summary['reward']))}</p><table>{''.join(cells)}</table></body></html>")
    write_text_atomically(out / "index.html", page)
