"""A/B evaluation: are the 95% intervals honest, and does the tooling stay quick with hundreds of pairs?

1. Interval coverage on simulated studies (no model involved). Each study has a known true win rate of B; we count
   how often the bootstrap interval of `ab results` contains it, resampling whole prompts (our default) or single
   pairs. Scenarios: independent pairs; correlated seeds (each prompt favours one system, which then wins 90% of
   its seeds, as happens when a prompt is beyond one generator); and a small study. Target: coverage near 0.95
   for the prompt bootstrap in every scenario. Reported with the mean interval width.
2. Scale: an AB folder of 600 pairs (150 prompts x 4 seeds, 4 questions) and three simulated raters: the time of
   `ab make` from pre-generated images, the page's size, the time of `ab results` (2,000 resamples), and, when
   Debian's chromium is installed, the page's own time per rating (keydown to re-render, 2,400 ratings by
   keyboard in headless Chromium) and per export. These are absolute times on a shared 2-core machine, reported
   to show the order of magnitude; no comparison is claimed from them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from richfeedback.eval.ab.export import make_ab, parse_questions, read_ab
from richfeedback.eval.ab.ratings import collect_preferences
from richfeedback.eval.ab.report import write_study
from richfeedback.eval.ab.stats import question_summary
from richfeedback.generation import GenerationJob


def simulate(rng, scenario: str) -> tuple[list[dict], float]:
    """Preference rows of one simulated study and its true win rate of B (ties half)."""
    rows = []
    if scenario == "independent pairs":
        n_prompts, seeds, truth = 40, 2, 0.5 + 0.2 * 0.5
        for p in range(n_prompts):
            for s in range(seeds):
                choice = rng.choice(["b", "tie", "a"], p=[0.5, 0.2, 0.3])
                rows.append({"pair_id": f"{p}-{s}", "prompt": str(p), "choice": choice, "strength": 1,
                             "rater": "sim"})
        return rows, truth
    n_prompts, seeds = (40, 4) if scenario == "correlated seeds" else (10, 2)
    for p in range(n_prompts):
        favours_b = rng.random() < 0.6
        for s in range(seeds):
            b_wins = rng.random() < (0.9 if favours_b else 0.1)
            rows.append({"pair_id": f"{p}-{s}", "prompt": str(p), "choice": "b" if b_wins else "a", "strength": 1,
                         "rater": "sim"})
    return rows, 0.6 * 0.9 + 0.4 * 0.1


def coverage_rows(n_studies: int) -> list[dict]:
    rows = []
    for scenario in ("independent pairs", "correlated seeds", "small study"):
        rng = np.random.default_rng(0)
        hits = {"prompt": [], "pair": []}
        widths = {"prompt": [], "pair": []}
        for study in range(n_studies):
            prefs, truth = simulate(rng, scenario)
            for unit in hits:
                lo, hi = question_summary(prefs, n_resamples=1000, seed=study, unit=unit)["win_rate_b_ci"]
                hits[unit].append(lo <= truth <= hi)
                widths[unit].append(hi - lo)
        for unit in hits:
            rows.append({"case": f"coverage: {scenario}", "bootstrap_unit": unit, "studies": n_studies,
                         "pairs_per_study": len(prefs), "coverage_95": float(np.mean(hits[unit])),
                         "mean_width": float(np.mean(widths[unit]))})
    return rows


def image_folder(out: Path, prompts, seeds, shade: int) -> Path:
    out.mkdir(parents=True)
    rows = []
    tile = np.full((64, 64, 3), shade, np.uint8)
    for prompt in prompts:
        for seed in seeds:
            job = GenerationJob(prompt, seed)
            Image.fromarray(tile).save(out / job.file_name)
            rows.append({"file_name": job.file_name, "prompt": prompt, "seed": seed})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def simulated_exports(ab: Path, out: Path, n_raters: int = 3) -> list[Path]:
    """Raters who see B better on 60% of pairs, each answering the truth with probability 0.8, else at random."""
    meta, pairs = read_ab(ab)
    rng = np.random.default_rng(1)
    truth = {p["pair_id"]: (1 if rng.random() < 0.6 else -1) for p in pairs}
    paths = []
    for r in range(n_raters):
        ratings = []
        for pair in pairs:
            for q in meta["questions"]:
                value_b = truth[pair["pair_id"]] if rng.random() < 0.8 else int(rng.integers(-2, 3))
                value_lr = value_b if pair["left"] == "a" else -value_b
                ratings.append({"pair_id": pair["pair_id"], "question": q["name"], "value": value_lr,
                                "time": "2026-01-01T00:00:00Z"})
        path = out / f"rater{r}.json"
        path.write_text(json.dumps({"format": "richfeedback-ab-ratings", "ab_id": meta["id"], "rater": f"r{r}",
                                    "ratings": ratings}))
        paths.append(path)
    return paths


def page_timing(ab: Path, n_pairs: int, n_questions: int) -> dict:
    """Per-rating and export time of the page in headless Chromium, ratings dispatched as keydown events."""
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        return {"page_ms_per_rating": None, "page_export_ms": None}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tempfile.mkdtemp(prefix='bench-ab-')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get((ab / "index.html").resolve().as_uri())
        n = n_pairs * n_questions
        ms = driver.execute_script(f"""
            const t0 = performance.now();
            for (let i = 0; i < {n}; i++) document.dispatchEvent(new KeyboardEvent("keydown", {{key: "4"}}));
            return performance.now() - t0;""")
        done = driver.find_element("id", "progress-text").text
        assert done.startswith(f"{n_pairs} of {n_pairs}"), done
        driver.find_element("id", "rater").send_keys("bench")
        export_ms = driver.execute_script("""
            const t0 = performance.now(); exportRows(); return performance.now() - t0;""")
    finally:
        driver.quit()
    return {"page_ms_per_rating": ms / n, "page_export_ms": export_ms}


def scale_row(n_prompts: int, seeds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prompts = [f"prompt number {i}" for i in range(n_prompts)]
        a = image_folder(tmp / "a", prompts, range(seeds), 100)
        b = image_folder(tmp / "b", prompts, range(seeds), 200)
        start = time.perf_counter()
        ab = make_ab(str(a), str(b), prompts, list(range(seeds)), tmp / "AB", progress=False,
                     questions=parse_questions(["overall,plausibility,alignment,aesthetics"]))
        make_s = time.perf_counter() - start
        exports = simulated_exports(ab, tmp)
        start = time.perf_counter()
        meta, pairs = read_ab(ab)
        rows = collect_preferences(ab, meta, pairs, exports)
        summary = write_study(tmp / "results", meta, rows, "simulated raters")
        results_s = time.perf_counter() - start
        kappa = summary["questions"]["overall"]["agreement"]["fleiss_kappa_3way"]
        return {"case": f"scale: {len(pairs)} pairs x 4 questions x 3 raters", "pairs": len(pairs),
                "ab_make_s": make_s, "page_kB": (ab / "index.html").stat().st_size / 1024,
                "ab_results_s": results_s, "fleiss_kappa_overall": kappa, **page_timing(ab, len(pairs), 4)}


def run(quick: bool = False) -> dict:
    rows = coverage_rows(100 if quick else 400)
    rows.append(scale_row(50 if quick else 150, 4))
    return {"rows": rows}


if __name__ == "__main__":
    for row in run(quick=True)["rows"]:
        print(row)
