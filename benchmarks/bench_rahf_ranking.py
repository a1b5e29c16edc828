"""Does RAHF pick the generator's good images? The embedded RAHF against the one fine-tuned on generated feedback.

The use that matters is filtering a pool for fine-tuning: keep the 2 best of a prompt's images by a RAHF score and
train on them. So on generated images of prompts neither RAHF was trained on, for each model and each way to rank
(alignment, plausibility, overall, alignment + 0.5 * plausibility):
  * `top2_prompt_acc`: the oracle's full-prompt accuracy of the 2 images kept per prompt, next to the pool average
    (keeping at random), the oracle's own top 2 by `oracle:quality` (word accuracy + 0.5 x no artifact: what the
    fine-tuning pool is filtered by) and by `oracle:prompt_correct` (the most any ranking can keep);
  * `top2_word_acc`: the oracle's word accuracy of the same images;
  * `srcc_in_prompt`: Spearman correlation of the score with the oracle's word accuracy among one prompt's images,
    averaged over prompts where neither is constant.
Ranking sets: `pool` is the fine-tuning pool of the embedded generator (runs/finetune-embedded/pool, 8 images per
prompt; its first 256 prompts, which were left out of the fine-tuned RAHF's data); `gen-test` is the test split of the generated
feedback dataset (prompts held out by the split). Beside them the paper's metrics (score PLCC, heatmap CC, misaligned
word F1 pooled) on the synthetic ShapesWorld test split (rebuilt by seed, as `bench_rahf_shapesworld`) and on
`gen-test`: the fine-tuned model should not lose what it knew on the synthetic data.

Quick mode: 32 pool prompts, no gen-test ranking, 100 synthetic test images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from richfeedback.imaging import load_rgb
from richfeedback.reward_models.rahf.data import SCORE_COLUMNS
from richfeedback.reward_models.rahf.evaluate import compute_metrics, predict_split
from richfeedback.reward_models.rahf.predict import EMBEDDED_RAHF, load_rahf
from richfeedback.reward_models.rahf.reward import RAHFReward
from richfeedback.shapesworld import oracle
from richfeedback.shapesworld.dataset import load_shapesworld_dataset, make_dataset

ROOT = Path(__file__).resolve().parents[1]
POOL = Path(os.environ.get("RICHFEEDBACK_BENCH_POOL", ROOT / "runs/finetune-embedded/pool"))
POOL_PROMPTS = 256
GENERATED_DATA = Path(os.environ.get("RICHFEEDBACK_BENCH_GENERATED_DATA", ROOT / "runs/rahf-generated/data"))
MODELS = {"embedded": EMBEDDED_RAHF,
          "generated-ft": Path(os.environ.get("RICHFEEDBACK_RAHF_GENERATED", ROOT / "runs/rahf-shapes-generated/best"))}
SELECTORS = {
    "alignment": lambda s: s["alignment"],
    "plausibility": lambda s: s["plausibility"],
    "overall": lambda s: s["overall"],
    "align+0.5plaus": lambda s: s["alignment"] + 0.5 * s["plausibility"],
}
KEEP = 2


def oracle_truth(prompts, images) -> dict[str, np.ndarray]:
    correct, word_acc, artifact_free = [], [], []
    for prompt, image in zip(prompts, images):
        report = oracle.evaluate(prompt, image)
        labels = report.word_labels()
        correct.append(float(report.prompt_correct))
        word_acc.append(sum(labels) / len(labels) if labels else 1.0)
        artifact_free.append(float(not report.has_artifact))
    correct, word_acc, artifact_free = map(np.asarray, (correct, word_acc, artifact_free))
    return {"correct": correct, "word_acc": word_acc, "quality": word_acc + 0.5 * artifact_free}


def groups_of(prompts) -> list[np.ndarray]:
    """Indices of each prompt's images, in first-seen order."""
    index: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        index.setdefault(p, []).append(i)
    return [np.asarray(v) for v in index.values()]


def top_k_mean(groups, ranking: np.ndarray, value: np.ndarray, k: int = KEEP) -> float:
    """Mean of `value` over the `k` images of each prompt with the highest `ranking` (ties: first image first)."""
    kept = [g[np.argsort(-ranking[g], kind="stable")[:k]] for g in groups]
    return float(np.mean(np.concatenate([value[g] for g in kept])))


def srcc_in_prompt(groups, score: np.ndarray, truth: np.ndarray) -> float:
    found = [spearmanr(score[g], truth[g])[0] for g in groups if np.ptp(score[g]) > 0 and np.ptp(truth[g]) > 0]
    return float(np.mean(found)) if found else float("nan")


def ranking_rows(set_name: str, prompts, images, models: dict, rater_scores: dict | None = None) -> list[dict]:
    """Ranking rows for the keep-at-random and oracle baselines, each model and selector, and (`rater_scores`: the
    dataset's consolidated scores, name -> (N,)) the simulated raters' own labels: the most a model trained to
    reproduce those labels can hope for."""
    truth = oracle_truth(prompts, images)
    groups = groups_of(prompts)
    base = {"set": set_name, "prompts": len(groups), "images": len(prompts)}
    rows = [{**base, "model": "(keep at random)", "ranked_by": "-", "top2_prompt_acc": float(truth["correct"].mean()),
             "top2_word_acc": float(truth["word_acc"].mean())},
            {**base, "model": "oracle", "ranked_by": "oracle:quality",
             "top2_prompt_acc": top_k_mean(groups, truth["quality"], truth["correct"]),
             "top2_word_acc": top_k_mean(groups, truth["quality"], truth["word_acc"])},
            # the most any ranking can keep: every correct image first
            {**base, "model": "oracle", "ranked_by": "oracle:prompt_correct",
             "top2_prompt_acc": top_k_mean(groups, truth["correct"], truth["correct"]),
             "top2_word_acc": top_k_mean(groups, truth["correct"], truth["word_acc"])}]
    scored = {}
    for name, (model, processor) in models.items():
        found = RAHFReward(model, processor, "overall").all_scores(prompts, images)
        scored[name] = {k: v.numpy() for k, v in found.items()}
    if rater_scores is not None:
        scored["raters' labels"] = {k: np.asarray(v, dtype=np.float64) for k, v in rater_scores.items()}
    for model_name, scores in scored.items():
        for selector, pick in SELECTORS.items():
            ranking = pick(scores)
            rows.append({**base, "model": model_name, "ranked_by": selector,
                         "top2_prompt_acc": top_k_mean(groups, ranking, truth["correct"]),
                         "top2_word_acc": top_k_mean(groups, ranking, truth["word_acc"]),
                         "srcc_in_prompt": srcc_in_prompt(groups, ranking, truth["word_acc"])})
    return rows


def paper_rows(set_name: str, split, models: dict) -> list[dict]:
    rows = []
    for model_name, (model, processor) in models.items():
        m = compute_metrics(predict_split(model, processor, split))
        rows.append({"set": f"{set_name} (paper metrics)", "images": len(split), "model": model_name,
                     **{f"plcc_{n}": m[f"score/{n}/plcc"] for n in ("plausibility", "alignment", "aesthetics",
                                                                     "overall")},
                     "cc_implaus": m["heatmap/implausibility/cc"], "cc_misalign": m["heatmap/misalignment/cc"],
                     "word_f1_pooled": m.get("words/f1")})
    return rows


def run(quick: bool = False) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    models, missing = {}, []
    for name, path in MODELS.items():
        if (Path(path) / "config.json").exists():
            models[name] = load_rahf(path)
        else:
            missing.append(f"{name}: no model at {path} (python scripts/make_generated_feedback.py)")
    rows = []
    if (POOL / "pool.json").exists():
        from richfeedback.finetune.pool import read_pool

        pool = read_pool(POOL)
        # The first POOL_PROMPTS prompts: the fine-tuning pool grew from 256 to 1,024 prompts (the first 256 are the
        # same), and only those 256 were left out of the fine-tuned RAHF's data.
        keep = set(sorted({r["prompt_index"] for r in pool})[:32 if quick else POOL_PROMPTS])
        pool = [r for r in pool if r["prompt_index"] in keep]
        rows += ranking_rows("pool", [r["prompt"] for r in pool], [np.asarray(load_rgb(r["path"])) for r in pool],
                             models)
    else:
        missing.append(f"pool: no pool at {POOL} (richfeedback pool generate)")
    generated = (load_shapesworld_dataset(GENERATED_DATA)["test"]
                 if (GENERATED_DATA / "dataset_dict.json").exists() else None)
    if generated is None:
        missing.append(f"gen-test: no generated feedback dataset at {GENERATED_DATA}")
    elif not quick:
        labels = {name: generated[column] for name, column in SCORE_COLUMNS.items()}
        rows += ranking_rows("gen-test", generated["prompt"], [np.asarray(im) for im in generated["image"]], models,
                             rater_scores=labels)
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "data", 1, 1, 100 if quick else 1000, size=64, progress=False)
        synthetic = load_shapesworld_dataset(Path(tmp) / "data")["test"]
        rows += paper_rows("synthetic test", synthetic, models)
    if generated is not None and not quick:
        rows += paper_rows("gen-test", generated, models)
    for line in missing:
        print(f"skipped {line}")
    return {"rows": rows, "skipped": missing}
