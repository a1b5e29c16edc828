"""`ab simulate`: a simulated human study on ShapesWorld, so that the whole human path can run without people.

Each simulated rater answers the page's questions the way the RichHF-style raters of `shapesworld.raters` score
images: it sees each image's latent qualities (plausibility, alignment, aesthetics, overall, computed from what the
oracle reads in the image: its objects, artifact regions and word judgements), on the 5-point Likert scale, with
Gaussian noise of `noise` Likert points per image (`RaterConfig.score_sigma`; a rater's leniency is shared by the two
images of a pair and cancels). The difference d of the two noisy scores becomes the five-point answer: |d| < 0.5
about the same, < 1.5 slightly better, else much better.

The raters' exports are written in the page's JSON format (AB/simulated/ratings-sim<i>-<id>.json), so
`ab results` reads them like any human's; `simulate_study` also writes their results to AB/simulated/results.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np

from ...errors import UsageError
from ...imaging import load_rgb
from .export import read_ab
from .page import RATINGS_FORMAT
from .ratings import collect_preferences
from .report import write_study

SIMULATED_QUESTIONS = ("plausibility", "alignment", "aesthetics", "overall")


def latent_qualities(prompt: str, image) -> dict[str, float]:
    """The qualities ShapesWorld's simulated raters see in an image, from the oracle's reading of it."""
    from scipy import ndimage

    from ...shapesworld import raters
    from ...shapesworld.oracle import evaluate

    report = evaluate(prompt, image)
    components, n = ndimage.label(report.artifact_map)
    areas = [float((components == i).mean()) for i in range(1, n + 1)]
    plausibility = raters.plausibility(areas)
    alignment = raters.alignment(report.word_labels(), [w.kind != "other" for w in report.words],
                                 report.extra_objects)
    aesthetics = raters.aesthetics([o.as_scene_object() for o in report.objects], report.artifact_area)
    return {"plausibility": plausibility, "alignment": alignment, "aesthetics": aesthetics,
            "overall": raters.overall(plausibility, alignment, aesthetics)}


def five_point_answer(likert_difference: float) -> int:
    """A Likert difference (B minus A) as the page's scale from B's side: -2..2."""
    size = abs(likert_difference)
    return 0 if size < 0.5 else int(np.sign(likert_difference)) * (1 if size < 1.5 else 2)


def simulate_study(ab_dir: str | os.PathLike, n_raters: int = 3, noise: float = 0.5, seed: int = 0,
                   n_resamples: int = 2000, progress: bool = True) -> tuple[list[Path], dict]:
    """Write `n_raters` simulated exports and their results; returns (export paths, summary)."""
    from tqdm.auto import tqdm

    ab_dir = Path(ab_dir)
    meta, pairs = read_ab(ab_dir)
    questions = [q["name"] for q in meta["questions"] if q["name"] in SIMULATED_QUESTIONS]
    if not questions:
        raise UsageError(f"simulated raters answer {', '.join(SIMULATED_QUESTIONS)}; {ab_dir} asks none of them")
    if n_raters < 1:
        raise UsageError("--raters must be at least 1")
    qualities = []
    for pair in tqdm(pairs, desc="oracle", disable=not progress):
        try:
            qualities.append({side: latent_qualities(pair["prompt"], load_rgb(ab_dir / pair[f"image_{side}"]))
                              for side in "ab"})
        except ValueError as err:
            raise UsageError(f"simulated raters need ShapesWorld prompts and images; pair {pair['pair_id']}: "
                             f"{err}") from None
    rng = np.random.default_rng(seed)
    out = ab_dir / "simulated"
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    paths = []
    for r in range(n_raters):
        ratings = []
        for pair, q in zip(pairs, qualities):
            for question in questions:
                # 4 Likert points span the [0, 1] quality; each image's score gets its own noise.
                noise_b, noise_a = rng.normal(0.0, noise, 2)
                difference = 4.0 * (q["b"][question] - q["a"][question]) + noise_b - noise_a
                value_b = five_point_answer(difference)
                ratings.append({"pair_id": pair["pair_id"], "question": question,
                                "value": value_b if pair["left"] == "a" else -value_b, "time": now})
        path = out / f"ratings-sim{r}-{meta['id']}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"format": RATINGS_FORMAT, "version": 1, "ab_id": meta["id"], "rater": f"sim{r}",
                                   "exported_at": now, "questions": questions, "ratings": ratings}) + "\n")
        os.replace(tmp, path)
        paths.append(path)
    rows = collect_preferences(ab_dir, meta, pairs, paths)
    source = f"{n_raters} simulated raters (ShapesWorld qualities read by the oracle, {noise:g} Likert-point noise)"
    summary = write_study(out / "results", meta, rows, source, n_resamples, seed)
    return paths, summary
