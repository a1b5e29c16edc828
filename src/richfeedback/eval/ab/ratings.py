"""Reading raters' exports and undoing the side randomisation: ratings of left/right become preferences of A/B.

An export (from the page's buttons) is JSON `{"format": "richfeedback-ab-ratings", "ab_id", "rater", "ratings":
[{"pair_id", "question", "value", "time"}]}` or CSV with the columns ab_id, rater, pair_id, question, value, time.
`value` is the five-point scale from -2 (left much better) to 2 (right much better).

A preference row (one per rater, pair and question; `preferences.jsonl`) is what every later step reads:
{"prompt", "image_a", "image_b" (absolute paths), "choice": "a" | "b" | "tie", "strength": 1 | 2 (0 for a tie),
"question", "rater", plus "pair_id", "prompt_index", "seed" and "left" (the system that was shown on the left)}.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from ...errors import UsageError
from .page import RATINGS_FORMAT

CSV_COLUMNS = ("ab_id", "rater", "pair_id", "question", "value")


def _rating(path: Path, where: str, ab_id, rater, pair_id, question, value, time) -> dict:
    try:
        number = int(value)
        if str(value).strip() not in (str(number), f"{number}.0") or not -2 <= number <= 2:
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"{path}{where}: value {value!r} is not on the five-point scale -2..2 "
                         "(-2 left much better, 0 about the same, 2 right much better)") from None
    if not str(rater or "").strip():
        raise UsageError(f"{path}{where}: no rater id; each export must name its rater (the page asks for it)")
    return {"ab_id": str(ab_id), "rater": str(rater).strip(), "pair_id": str(pair_id), "question": str(question),
            "value": number, "time": str(time or ""), "source": str(path)}


def read_ratings_file(path: str | os.PathLike) -> list[dict]:
    """Raw ratings (left/right values) from one JSON or CSV export, or UsageError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such ratings file (export it from the rating page: Export JSON / Export CSV)")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); export it again") from None
        if not isinstance(doc, dict) or doc.get("format") != RATINGS_FORMAT or not isinstance(doc.get("ratings"), list):
            raise UsageError(f"{path}: not a rating-page export (expected format {RATINGS_FORMAT!r} with a "
                             "'ratings' list)")
        if not all(isinstance(r, dict) for r in doc["ratings"]):
            raise UsageError(f"{path}: every entry of 'ratings' must be an object with pair_id, question and value")
        return [_rating(path, f" rating {i}", doc.get("ab_id"), r.get("rater", doc.get("rater")), r.get("pair_id"),
                        r.get("question"), r.get("value"), r.get("time"))
                for i, r in enumerate(doc["ratings"])]
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"{path}: CSV without the column(s) {', '.join(missing)}; expected "
                         f"{','.join(CSV_COLUMNS)},label,time as the rating page exports it")
    return [_rating(path, f":{line}", r["ab_id"], r["rater"], r["pair_id"], r["question"], r["value"], r.get("time"))
            for line, r in enumerate(reader, 2)]


def expand_rating_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder stands for its *.json and *.csv files."""
    paths: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in (".json", ".csv") and p.is_file())
            if not found:
                raise UsageError(f"{item}: no .json or .csv rating exports in this folder")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def to_preference(pair: dict, question: str, rater: str, value_left_right: int, ab_dir: Path) -> dict:
    """One preference row from a left/right value: the side randomisation recorded in `pair` is undone here."""
    value_b = value_left_right if pair["left"] == "a" else -value_left_right  # positive: B better
    return {
        "prompt": pair["prompt"], "image_a": str((ab_dir / pair["image_a"]).resolve()),
        "image_b": str((ab_dir / pair["image_b"]).resolve()),
        "choice": "b" if value_b > 0 else "a" if value_b < 0 else "tie", "strength": abs(value_b),
        "question": question, "rater": rater,
        "pair_id": pair["pair_id"], "prompt_index": pair["prompt_index"], "seed": pair["seed"], "left": pair["left"],
    }


def collect_preferences(ab_dir: str | os.PathLike, meta: dict, pairs: Sequence[dict],
                        rating_files: Sequence[str | os.PathLike]) -> list[dict]:
    """Every rater's preferences, merged from their exports.

    A rater who exported more than once (a partial export, then a full one) counts once per pair and question: the
    rating with the latest time wins. Exports of another comparison, unknown pairs and unknown questions are errors.
    """
    ab_dir = Path(ab_dir)
    by_id = {p["pair_id"]: p for p in pairs}
    questions = {q["name"] for q in meta["questions"]}
    latest: dict[tuple[str, str, str], dict] = {}
    for path in expand_rating_paths(rating_files):
        for rating in read_ratings_file(path):
            if rating["ab_id"] != meta["id"]:
                raise UsageError(f"{path} rates comparison {rating['ab_id']}, not this one ({meta['id']} in "
                                 f"{ab_dir}): pass the exports of this AB folder's page")
            if rating["pair_id"] not in by_id:
                raise UsageError(f"{path}: pair {rating['pair_id']!r} is not in {ab_dir / 'pairs.jsonl'}")
            if rating["question"] not in questions:
                raise UsageError(f"{path}: question {rating['question']!r} is not one of this comparison's "
                                 f"({', '.join(sorted(questions))})")
            key = (rating["rater"], rating["pair_id"], rating["question"])
            if key not in latest or rating["time"] >= latest[key]["time"]:
                latest[key] = rating
    if not latest:
        raise UsageError(f"no ratings in {', '.join(map(str, rating_files))}: rate some pairs before exporting")
    order = {p["pair_id"]: i for i, p in enumerate(pairs)}
    question_order = [q["name"] for q in meta["questions"]]
    ratings = sorted(latest.values(), key=lambda r: (r["rater"], order[r["pair_id"]],
                                                     question_order.index(r["question"])))
    return [to_preference(by_id[r["pair_id"]], r["question"], r["rater"], r["value"], ab_dir) for r in ratings]


def write_preferences(rows: Sequence[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
    return path
