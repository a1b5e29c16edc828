"""`ab auto`: automatic raters for an AB folder, written in the same format and tables as human ratings.

* `oracle` (ShapesWorld prompts only) judges what a careful person would, exactly:
  alignment - the larger share of the prompt's content words drawn right wins (much better by a quarter or more);
  plausibility - the smaller artifact area wins; areas within the oracle's smallest artifact (6 pixels of 64x64)
  are about the same; much better when only one image is free of artifacts;
  overall - the image that satisfies the whole prompt wins (much better) when only one does; otherwise the
  plausibility rule decides (slightly better at most); aesthetics - not judged (ShapesWorld has no exact
  aesthetics), so the question is left out.
* a reward model (`load_reward_model` name, `NAME=WEIGHTS` for a local file, `...,adapter=DIR` with a reward adapter
  of `richfeedback adapter train`) answers one question: rahf:X answers
  X, aesthetic answers aesthetics, clipscore alignment, every other model overall. The higher score wins; a score
  difference of at most `tie_margin` is about the same, and a difference above the median difference of the
  study's non-tied pairs is "much better".

Each rater writes AB/auto/<rater>/ (preferences.jsonl, results.json, report.md, chart.png); AB/auto/report.md
puts every automatic rater run so far side by side.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import UsageError
from ...imaging import load_rgb
from .export import read_ab
from .ratings import to_preference
from .report import _interval, write_study

ORACLE = "oracle"
REWARD_QUESTIONS = {
    "rahf:plausibility": "plausibility", "rahf:alignment": "alignment", "rahf:aesthetics": "aesthetics",
    "rahf:overall": "overall", "aesthetic": "aesthetics", "clipscore": "alignment",
}
ALIGNMENT_MUCH_BETTER = 0.25  # share of content words


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def oracle_values(report_a, report_b, min_artifact_area: float) -> dict[str, int]:
    """Five-point answers from B's side (+2 B much better ... -2 A much better) for the oracle's three questions."""

    def word_share(report) -> float:
        content = [w.satisfied for w in report.words if w.kind != "other"]
        return float(np.mean(content)) if content else 1.0

    delta = word_share(report_b) - word_share(report_a)
    alignment = _sign(delta) * (2 if abs(delta) >= ALIGNMENT_MUCH_BETTER else 1)
    area = report_a.artifact_area - report_b.artifact_area  # positive: B has less
    plausibility = 0 if abs(area) < min_artifact_area else _sign(area) * (
        2 if report_a.has_artifact != report_b.has_artifact else 1)
    if report_a.prompt_correct != report_b.prompt_correct:
        overall = 2 if report_b.prompt_correct else -2
    else:
        overall = _sign(plausibility)
    return {"alignment": alignment, "plausibility": plausibility, "overall": overall}


def oracle_preferences(ab_dir: Path, meta: dict, pairs: Sequence[dict], progress: bool = True) -> list[dict]:
    from tqdm.auto import tqdm

    from ...shapesworld.oracle import OracleConfig, evaluate

    asked = [q["name"] for q in meta["questions"] if q["name"] in ("alignment", "plausibility", "overall")]
    if not asked:
        raise UsageError("the oracle answers overall, plausibility and alignment; this comparison asks none of them")
    min_area = OracleConfig().min_artifact_area
    rows, unjudged = [], []
    for pair in tqdm(pairs, desc="oracle", disable=not progress):
        try:
            report_a = evaluate(pair["prompt"], load_rgb(ab_dir / pair["image_a"]))
            report_b = evaluate(pair["prompt"], load_rgb(ab_dir / pair["image_b"]))
        except ValueError as err:  # a prompt outside ShapesWorld's grammar, or an unreadable image
            unjudged.append(f"{pair['pair_id']}: {err}")
            continue
        values = oracle_values(report_a, report_b, min_area)
        for question in asked:
            rows.append(_auto_row(pair, question, ORACLE, values[question], ab_dir))
    if not rows:
        raise UsageError(f"the oracle judged no pair of {ab_dir} (it reads ShapesWorld prompts only): "
                         f"{unjudged[0] if unjudged else ''}")
    return rows


def _auto_row(pair: dict, question: str, rater: str, value_b: int, ab_dir: Path) -> dict:
    # to_preference takes a left/right value; give it the one that means `value_b` after un-randomising.
    return to_preference(pair, question, rater, value_b if pair["left"] == "a" else -value_b, ab_dir)


def reward_values(scores_a: np.ndarray, scores_b: np.ndarray, tie_margin: float = 0.0) -> np.ndarray:
    """Five-point answers from B's side from two score arrays: ties within the margin, "much better" above the
    median non-tied difference."""
    delta = np.asarray(scores_b, dtype=np.float64) - np.asarray(scores_a, dtype=np.float64)
    decided = np.abs(delta) > tie_margin
    if not decided.any():
        return np.zeros(len(delta), dtype=int)
    strong = np.median(np.abs(delta[decided]))
    strength = np.where(np.abs(delta) > strong, 2, 1)
    return np.where(decided, np.sign(delta).astype(int) * strength, 0)


def reward_preferences(ab_dir: Path, meta: dict, pairs: Sequence[dict], name: str, weights: Optional[str],
                       tie_margin: float = 0.0, device: str = "cpu", batch_size: int = 16,
                       adapter: Optional[str] = None, rater: Optional[str] = None) -> list[dict]:
    from ...reward_models import load_reward_model

    question = REWARD_QUESTIONS.get(name, "overall")
    if question not in {q["name"] for q in meta["questions"]}:
        raise UsageError(f"{name} answers the question {question!r}, which this comparison does not ask "
                         f"({', '.join(q['name'] for q in meta['questions'])})")
    try:
        extra = {} if adapter is None else {"adapter": adapter}
        model = load_reward_model(name, weights=weights, device=device, max_batch_size=batch_size, **extra)
    except KeyError as err:
        raise UsageError(str(err.args[0])) from None
    prompts = [p["prompt"] for p in pairs]
    scores_a = model.score(prompts, [str(ab_dir / p["image_a"]) for p in pairs]).numpy()
    scores_b = model.score(prompts, [str(ab_dir / p["image_b"]) for p in pairs]).numpy()
    values = reward_values(scores_a, scores_b, tie_margin)
    rows = []
    for pair, value, score_a, score_b in zip(pairs, values, scores_a, scores_b):
        row = _auto_row(pair, question, rater or name, int(value), ab_dir)
        rows.append({**row, "score_a": float(score_a), "score_b": float(score_b)})
    return rows


def rater_folder_name(name: str) -> str:
    return name.replace(":", "-").replace("/", "-").replace("+", "-")


def run_auto(ab_dir: str | os.PathLike, models: Sequence[str], tie_margin: float = 0.0, device: str = "cpu",
             batch_size: int = 16, n_resamples: int = 2000, seed: int = 0, unit: str = "prompt",
             progress: bool = True) -> dict[str, dict]:
    """Rate every pair with each model ("oracle", or a reward model NAME[=WEIGHTS][,adapter=DIR]); returns
    {rater: summary}, the rater being the model's name (with its adapter folder's name, if any)."""
    from ...reward_models.cli import ModelSpec

    ab_dir = Path(ab_dir)
    meta, pairs = read_ab(ab_dir)
    results = {}
    for text in models:
        if text == ORACLE:
            rater = ORACLE
            rows = oracle_preferences(ab_dir, meta, pairs, progress)
            source = "the ShapesWorld oracle (automatic; aesthetics not judged)"
        else:
            spec = ModelSpec.parse(text)  # NAME[=WEIGHTS][,adapter=DIR], as `richfeedback score` reads it
            rater = spec.column
            rows = reward_preferences(ab_dir, meta, pairs, spec.name, spec.weights, tie_margin, device, batch_size,
                                      adapter=spec.adapter, rater=rater)
            source = f"reward model {rater} (automatic; tie margin {tie_margin:g})"
        results[rater] = write_study(ab_dir / "auto" / rater_folder_name(rater), meta, rows, source,
                                     n_resamples, seed, unit)
    write_auto_overview(ab_dir, meta)
    return results


def write_auto_overview(ab_dir: Path, meta: dict) -> Path:
    """AB/auto/report.md: every automatic rater's win rate of B per question, side by side."""
    questions = [q["name"] for q in meta["questions"]]
    lines = [f"# Automatic raters: B = `{meta['systems']['b']['spec']}` against A = `{meta['systems']['a']['spec']}`",
             "", f"{meta['num_pairs']} pairs; win rate of B (ties half) with its 95% bootstrap interval; "
             "each rater's own report is in its folder.", "",
             "| rater | " + " | ".join(questions) + " |", "|---|" + "---|" * len(questions)]
    for path in sorted((ab_dir / "auto").glob("*/results.json")):
        summary = json.loads(path.read_text())
        if summary.get("ab_id") != meta["id"]:
            continue
        cells = []
        for question in questions:
            q = summary["questions"].get(question)
            cells.append("–" if q is None else _interval(q["win_rate_b"], q["win_rate_b_ci"]))
        lines.append(f"| [{path.parent.name}]({path.parent.name}/report.md) | " + " | ".join(cells) + " |")
    out = ab_dir / "auto" / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    return out
