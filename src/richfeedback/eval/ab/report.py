"""What `ab results` and `ab auto` write: results.json, a Markdown report and a PNG chart, next to the preferences."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from ...imaging import save_png
from .ratings import write_preferences
from .stats import study_summary

# Colours of the chart: A better, about the same, B better.
COLOURS = {"a": (214, 96, 77), "tie": (189, 189, 189), "b": (67, 147, 195)}


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(value: Optional[float], ci: Optional[Sequence], digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "–"
    sign = "+" if signed else ""
    lo, hi = ci if ci else (None, None)
    bounds = "[" + ", ".join("–" if b is None else f"{b:{sign}.{digits}f}" for b in (lo, hi)) + "]"
    return f"{value:{sign}.{digits}f} {bounds}"


def markdown_report(meta: dict, summary: dict, source: str) -> str:
    """The tables of one study as Markdown: win rates per question, agreement between raters, each rater."""
    systems = meta["systems"]
    boot = summary["bootstrap"]
    lines = [
        f"# A/B results: {meta.get('title') or meta['id']}",
        "",
        f"- **A**: `{systems['a']['spec']}`",
        f"- **B**: `{systems['b']['spec']}`",
        f"- {meta['num_pairs']} pairs ({meta['num_prompts']} prompts x {len(meta['seeds'])} seeds; A and B share "
        f"prompt and seed; sides randomised with seed {meta['side_seed']}); comparison id `{meta['id']}`",
        f"- raters: {source}",
        f"- win rate of B: ties count half a win; a pair's score is the mean over its raters. Preference: the "
        f"five-point answer from B's side (+2 B much better, -2 A much better). 95% intervals: percentile bootstrap "
        f"over {boot['unit']}s ({boot['resamples']} resamples, seed {boot['seed']}). Bradley-Terry: B's strength "
        f"over A on the Elo scale, 400 log10(w / (1 - w)).",
        "",
        "| question | pairs | ratings | A better | same | B better | win rate of B [95% CI] | preference of B "
        "[95% CI] | Bradley-Terry B - A (Elo) [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, q in summary["questions"].items():
        lines.append(
            f"| {name} | {q['pairs']} | {q['ratings']} | {q['a_better']} | {q['same']} | {q['b_better']} | "
            f"{_interval(q['win_rate_b'], q['win_rate_b_ci'])} | "
            f"{_interval(q['preference_b'], q['preference_b_ci'], 2, signed=True)} | "
            f"{_interval(q['elo_b_minus_a'], q['elo_b_minus_a_ci'], 0, signed=True)} |")
    several = any(q["raters"] > 1 for q in summary["questions"].values())
    if several:
        lines += ["", "## Majority of raters per pair", "",
                  "| question | A better | no majority / same | B better |", "|---|---|---|---|"]
        for name, q in summary["questions"].items():
            m = q["majority"]
            lines.append(f"| {name} | {m['a']} | {m['tie']} | {m['b']} |")
        lines += ["", "## Agreement between raters", "",
                  "Over the pairs that two or more raters rated: the share of rater pairs giving the same three-way "
                  "answer (A / same / B) and the same five-point answer, Fleiss' kappa on the three-way answer, and "
                  "Cohen's kappa (three-way) for each pair of raters.", "",
                  "| question | pairs with 2+ raters | agreement (A/same/B) | agreement (5-point) | Fleiss' kappa | "
                  "Cohen's kappa per rater pair |", "|---|---|---|---|---|---|"]
        for name, q in summary["questions"].items():
            a = q["agreement"]
            cohen = "; ".join(f"{c['raters'][0]}-{c['raters'][1]}: {_fmt(c['kappa'], 2)} ({c['pairs']})"
                              for c in a["cohen_kappa_3way"]) or "–"
            lines.append(f"| {name} | {a['pairs_with_several_raters']} | {_fmt(a['percent_agreement_3way'])} | "
                         f"{_fmt(a['percent_agreement_5point'])} | {_fmt(a['fleiss_kappa_3way'])} | {cohen} |")
        lines += ["", "## Each rater", "", "| rater | " + " | ".join(summary["questions"]) + " |",
                  "|---|" + "---|" * len(summary["questions"])]
        raters = sorted({r for q in summary["questions"].values() for r in q["per_rater"]})
        for rater in raters:
            cells = []
            for q in summary["questions"].values():
                mine = q["per_rater"].get(rater)
                cells.append("–" if mine is None else f"{mine['win_rate_b']:.3f} ({mine['pairs']})")
            lines.append(f"| {rater} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Cells: the rater's win rate of B (pairs rated).")
    return "\n".join(lines) + "\n"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """`text`, shortened in the middle with an ellipsis until it fits in `width` pixels (long paths)."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 8 and draw.textlength(text[: keep // 2] + "…" + text[len(text) - keep // 2 :], font=font) > width:
        keep -= 2
    return text[: keep // 2] + "…" + text[len(text) - keep // 2 :]


def win_rate_chart(summary: dict, title_lines: Sequence[str]) -> Image.Image:
    """One row per question: the shares of A better / same / B better, and B's win rate with its 95% interval."""
    questions = summary["questions"]
    left, width, row_h = 130, 520, 54
    legend_y = 12 + 20 * len(title_lines)
    top = legend_y + 28
    canvas = Image.new("RGB", (left + width + 40, top + row_h * len(questions) + 40), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = _font(15), _font(12)
    for i, line in enumerate(title_lines):
        draw.text((12, 8 + 20 * i), _fit(draw, line, font, canvas.width - 24), fill="black", font=font)
    x = 12
    for key, label in (("a", "A better"), ("tie", "about the same"), ("b", "B better")):
        draw.rectangle([x, legend_y, x + 12, legend_y + 12], fill=COLOURS[key])
        draw.text((x + 17, legend_y - 1), label, fill="black", font=small)
        x += 30 + int(draw.textlength(label, font=small))
    draw.line([x, legend_y + 6, x + 18, legend_y + 6], fill="black", width=2)
    draw.text((x + 23, legend_y - 1), "win rate of B, 95% interval", fill="black", font=small)
    for i, (name, q) in enumerate(questions.items()):
        y = top + i * row_h
        draw.text((12, y + 12), name, fill="black", font=font)
        total = max(q["ratings"], 1)
        x0 = left
        for key, count in (("a", q["a_better"]), ("tie", q["same"]), ("b", q["b_better"])):
            x1 = x0 + width * count / total
            if count:
                draw.rectangle([x0, y + 6, x1, y + 30], fill=COLOURS[key])
            x0 = x1
        if q["win_rate_b"] is not None:
            lo, hi = q["win_rate_b_ci"]
            cx, cy = left + width * q["win_rate_b"], y + 40
            draw.line([left + width * lo, cy, left + width * hi, cy], fill="black", width=2)
            for bound in (lo, hi):
                draw.line([left + width * bound, cy - 5, left + width * bound, cy + 5], fill="black", width=2)
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill="black")
            draw.text((left + width + 6, y + 10), f"{q['win_rate_b']:.2f}", fill="black", font=small)
    bottom = top + row_h * len(questions)
    mid = left + width / 2
    for yy in range(top, bottom, 6):  # a dashed line at 0.5: no difference
        draw.line([mid, yy, mid, yy + 3], fill=(90, 90, 90))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        tx = left + width * tick
        draw.line([tx, bottom, tx, bottom + 4], fill="black")
        draw.text((tx - 10, bottom + 6), f"{tick:.2f}", fill="black", font=small)
    return canvas


def write_study(out_dir: str | os.PathLike, meta: dict, rows: Sequence[dict], source: str,
                n_resamples: int = 2000, seed: int = 0, unit: str = "prompt") -> dict:
    """preferences.jsonl, results.json, report.md and chart.png in `out_dir`; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_preferences(rows, out / "preferences.jsonl")
    summary = study_summary(rows, [q["name"] for q in meta["questions"]], n_resamples, seed, unit)
    summary = {"ab_id": meta["id"], "systems": meta["systems"], "source": source, **summary}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out / "results.json")
    tmp = out / "report.md.tmp"
    tmp.write_text(markdown_report(meta, summary, source))
    os.replace(tmp, out / "report.md")
    title = [f"B: {meta['systems']['b']['spec']}", f"A: {meta['systems']['a']['spec']}", f"raters: {source}"]
    save_png(win_rate_chart(summary, title), out / "chart.png")
    return summary
