"""Pools: resumable generation in shards, scores added per model, and the filter policies on hand-computed cases."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from richfeedback.errors import UsageError
from richfeedback.imaging import load_rgb
from richfeedback.finetune.filtering import FilterPolicy, filter_pool, parse_score_expression, select
from richfeedback.finetune.pool import count_missing, generate_pool, read_pool, score_pool, scores_file

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red circle", "two blue squares", "a large green triangle on the left"]
FAST = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool") / "pool"
    generate_pool(None, PROMPTS, out, n=4, seed=10, shard_size=2, batch_size=8, progress=False, **FAST)
    return out


def test_pool_has_n_images_per_prompt_with_recorded_seeds_in_shards(pool):
    rows = read_pool(pool)
    assert len(rows) == 12
    assert [r["seed"] for r in rows] == list(range(10, 22))  # seed + prompt_index * n + k
    assert [r["prompt_index"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted({r["file_name"].split("/")[0] for r in rows}) == ["shard-00000", "shard-00001"]
    assert all(r["path"].is_file() for r in rows)
    assert count_missing(pool) == 0


def test_resuming_with_other_settings_is_refused(pool):
    with pytest.raises(UsageError, match="other settings"):
        generate_pool(None, PROMPTS, pool, n=5, seed=10, shard_size=2, progress=False, **FAST)


def test_processes_split_the_shards_and_together_make_the_same_pool(pool, tmp_path):
    for rank in (1, 0):  # process 1 may finish first: pool.json comes from process 0
        generate_pool(None, PROMPTS, tmp_path / "p", n=4, seed=10, shard_size=2, batch_size=8, process_index=rank,
                      num_processes=2, progress=False, **FAST)
    split, whole = read_pool(tmp_path / "p"), read_pool(pool)
    assert [(r["file_name"], r["seed"]) for r in split] == [(r["file_name"], r["seed"]) for r in whole]
    a = load_rgb(split[5]["path"]).astype(int)
    b = load_rgb(whole[5]["path"]).astype(int)
    assert np.abs(a - b).max() <= 1


def test_resuming_with_other_generator_weights_at_the_same_path_is_refused(tmp_path):
    """A generator retrained in place keeps its path, so pool.json cannot tell: the weights' fingerprint does."""
    import shutil

    import torch
    from diffusers import UNet2DConditionModel

    from richfeedback.generation import EMBEDDED_GENERATOR

    model = tmp_path / "generator"
    shutil.copytree(EMBEDDED_GENERATOR, model)
    out = tmp_path / "pool"
    generate_pool(str(model), PROMPTS[:2], out, n=2, seed=0, shard_size=1, progress=False, **FAST)
    recorded = json.loads((out / "model_weights.json").read_text())
    assert recorded["model"] == str(model) and len(recorded["fingerprint"]) == 64
    unfinished = read_pool(out)[-1]["path"]
    unfinished.unlink()  # as if killed before the last image
    generate_pool(str(model), PROMPTS[:2], out, n=2, seed=0, shard_size=1, progress=False, **FAST)
    assert unfinished.is_file()  # same weights: resumed
    unfinished.unlink()
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    with torch.no_grad():
        next(unet.parameters()).add_(0.01)
    unet.save_pretrained(model / "unet")  # same path, other weights
    with pytest.raises(UsageError, match="other weights"):
        generate_pool(str(model), PROMPTS[:2], out, n=2, seed=0, shard_size=1, progress=False, **FAST)
    assert not unfinished.exists()


def test_a_killed_pool_generate_resumes_without_redoing_or_losing_images(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a {c} circle\n" for c in ("red", "green", "blue", "yellow", "purple", "red")[:5]))
    out = tmp_path / "pool"
    cmd = [sys.executable, "-m", "richfeedback.cli", "pool", "generate", "--prompts", str(prompts), "--n", "4",
           "--out", str(out), "--shard-size", "1", "--batch-size", "2", "--steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("shard-*/*.png"))) < 6:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {p: p.stat().st_mtime_ns for p in out.glob("shard-*/*.png")}
    assert 0 < len(before) < 20, "the run must be killed part-way for this test to mean anything"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "complete" in result.stdout
    rows = read_pool(out)
    assert len(rows) == 20 and len({(r["prompt"], r["seed"]) for r in rows}) == 20
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())  # nothing redone
    manifests = [json.loads(line) for m in out.glob("shard-*/manifest.jsonl") for line in m.read_text().splitlines()]
    assert len(manifests) == 20  # no duplicate rows


def test_scores_are_added_per_model_and_rescoring_skips_scored_images(pool):
    counts = score_pool(pool, ["oracle"], progress=False)
    assert counts == {"oracle": 12}
    rows = read_pool(pool)
    assert all({"oracle:prompt_correct", "oracle:word_accuracy", "oracle:artifact_free", "oracle:quality"}
               <= set(r["scores"]) for r in rows)
    assert all(0.0 <= r["scores"]["oracle:word_accuracy"] <= 1.0 for r in rows)
    assert score_pool(pool, ["oracle"], progress=False) == {"oracle": 0}
    assert scores_file(pool, "rahf:alignment").name == "rahf_alignment.jsonl"


def rows_with(scores_by_prompt: dict[int, list[float]], name="s") -> list[dict]:
    return [{"file_name": f"{p}_{k}.png", "path": None, "prompt": f"prompt {p}", "prompt_index": p, "seed": k,
             "scores": {name: v}} for p, values in scores_by_prompt.items() for k, v in enumerate(values)]


def test_score_expressions_are_weighted_sums():
    assert parse_score_expression("rahf:alignment") == {"rahf:alignment": 1.0}
    assert parse_score_expression("2*a + 0.5*b:c") == {"a": 2.0, "b:c": 0.5}
    assert parse_score_expression("1e+1*a") == {"a": 10.0}
    with pytest.raises(UsageError, match="weighted sum"):
        parse_score_expression("a * * b")


def test_align_sd_keeps_the_best_only_when_its_softmax_probability_exceeds_two_over_n():
    # prompt 0: p_best = e^3 / (e^3 + 3) = 0.870 > 2/4 -> kept; prompt 1: all equal, p = 1/4 <= 2/4 -> dropped
    rows = rows_with({0: [0.0, 0.0, 3.0, 0.0], 1: [1.0, 1.0, 1.0, 1.0]})
    kept = select(rows, FilterPolicy(policy="align_sd", score="s", temperature=1.0))
    assert [(r["prompt_index"], r["seed"], r["type"]) for r in kept] == [(0, 2, "positive")]
    assert kept[0]["confidence"] == pytest.approx(np.exp(3) / (np.exp(3) + 3))
    # the temperature scales the selectivity: scores 0/0/0.3/0 at T=0.1 are the same case
    rows = rows_with({0: [0.0, 0.0, 0.3, 0.0]})
    assert len(select(rows, FilterPolicy(policy="align_sd", score="s", temperature=0.1))) == 1
    assert len(select(rows, FilterPolicy(policy="align_sd", score="s", temperature=1.0, min_prompts=0))) == 0


def test_align_sd_negatives_are_the_worst_image_with_the_weird_image_prefix():
    rows = rows_with({0: [0.0, 0.0, 0.0, -3.0, 0.0, 0.0]})  # N = 6: threshold 1/3; p_worst = e^3/(e^3+5) = 0.80
    kept = select(rows, FilterPolicy(policy="align_sd", score="s", negatives=True, min_prompts=0))
    assert [(r["seed"], r["type"], r["text"]) for r in kept] == [(3, "negative", "Weird image. prompt 0")]


def test_negative_ratio_keeps_a_seeded_random_share_of_the_negatives_and_every_positive():
    rows = rows_with({p: [3.0, 0.0, 0.0, -3.0] for p in range(10)})  # a clear best and worst in every prompt
    every = select(rows, FilterPolicy(policy="align_sd", score="s", negatives=True, min_prompts=0))
    assert sum(r["type"] == "negative" for r in every) == sum(r["type"] == "positive" for r in every) == 10
    half = select(rows, FilterPolicy(policy="align_sd", score="s", negatives=True, negative_ratio=0.5, min_prompts=0))
    negatives = [r["file_name"] for r in half if r["type"] == "negative"]
    assert sum(r["type"] == "positive" for r in half) == 10 and len(negatives) == 5
    assert set(negatives) < {r["file_name"] for r in every if r["type"] == "negative"}
    again = select(rows, FilterPolicy(policy="align_sd", score="s", negatives=True, negative_ratio=0.5, min_prompts=0))
    assert [r["file_name"] for r in again if r["type"] == "negative"] == negatives  # seeded: the same subset
    with pytest.raises(UsageError, match="negative_ratio"):
        FilterPolicy(policy="align_sd", negatives=True, negative_ratio=-1)


def test_the_first_of_tied_worst_images_is_the_negative_as_in_align_sd():
    rows = rows_with({0: [2.0, 0.0, -4.0, -4.0, 0.0]})
    kept = select(rows, FilterPolicy(policy="align_sd", score="s", negatives=True, min_prompts=0, temperature=0.5))
    assert [(r["seed"], r["type"]) for r in kept] == [(0, "positive"), (2, "negative")]


def test_align_sd_skips_prompts_with_fewer_than_four_candidates():
    rows = rows_with({0: [0.0, 9.0, 0.0]})
    assert select(rows, FilterPolicy(policy="align_sd", score="s", min_prompts=0)) == []


def test_topk_and_threshold():
    rows = rows_with({0: [0.1, 0.9, 0.5], 1: [0.7, 0.2, 0.8]})
    topk = select(rows, FilterPolicy(policy="topk", score="s", k=2))
    assert [(r["prompt_index"], r["seed"]) for r in topk] == [(0, 1), (0, 2), (1, 0), (1, 2)]
    threshold = select(rows, FilterPolicy(policy="threshold", score="s", min_score=0.75))
    assert [(r["prompt_index"], r["seed"]) for r in threshold] == [(0, 1), (1, 2)]


def test_a_quantile_threshold_keeps_the_best_share_of_the_whole_pool_whatever_their_prompts():
    rows = rows_with({0: [0.1, 0.9, 0.5, 0.95], 1: [0.7, 0.2, 0.8, 0.3]})
    # the 0.75 quantile of the eight scores is 0.825 (numpy's linear interpolation between 0.8 and 0.9): the best
    # two images are kept, both of prompt 0, and none of prompt 1
    kept = select(rows, FilterPolicy(policy="threshold", score="s", min_score="q0.75", min_prompts=0))
    assert [(r["prompt_index"], r["seed"]) for r in kept] == [(0, 1), (0, 3)]
    assert FilterPolicy(policy="threshold", score="s", min_score="Q0.75").quantile == 0.75
    floor = select(rows, FilterPolicy(policy="topk", score="s", k=1, min_score="q0.5", min_prompts=0))
    assert [(r["prompt_index"], r["seed"]) for r in floor] == [(0, 3), (1, 2)]  # the median is 0.6
    above = select(rows, FilterPolicy(policy="topk", score="s", k=1, min_score="q0.75", min_prompts=0))
    assert [(r["prompt_index"], r["seed"]) for r in above] == [(0, 3)]  # prompt 1's best, 0.8, is below 0.825
    for bad in ("q1.5", "qx", "0.5", "best"):
        with pytest.raises(UsageError, match=r"q0.9 keeps the best 10%"):
            FilterPolicy(policy="threshold", score="s", min_score=bad)


def test_weighted_combination_with_zscores():
    rows = [{**r, "scores": {"a": r["scores"]["s"], "b": 100.0 * (1 - r["scores"]["s"])}}
            for r in rows_with({0: [0.0, 1.0, 0.5, 0.25]})]
    # a and b disagree; b has the larger raw scale but z-scoring weighs them by their weights only
    best = select(rows, FilterPolicy(policy="topk", score="2*a + 1*b", normalize="zscore"))
    assert best[0]["seed"] == 1
    raw = select(rows, FilterPolicy(policy="topk", score="2*a + 1*b"))
    assert raw[0]["seed"] == 0


def test_too_few_prompts_kept_is_an_error_that_says_how_to_loosen_the_filter():
    rows = rows_with({0: [0.1, 0.2], 1: [0.3, 0.4]})
    with pytest.raises(UsageError, match="min_prompts=3"):
        select(rows, FilterPolicy(policy="topk", score="s", min_prompts=3))


def test_a_missing_score_names_the_pool_score_command():
    with pytest.raises(UsageError, match="pool score POOL --model rahf:alignment"):
        select(rows_with({0: [1.0]}), FilterPolicy(policy="topk", score="rahf:alignment"))


def test_filter_writes_an_imagefolder_dataset_that_datasets_loads(pool, tmp_path):
    score_pool(pool, ["oracle"], progress=False)
    report = filter_pool(pool, tmp_path / "data", FilterPolicy(policy="topk", score="oracle:quality", k=2))
    assert report["kept_positive"] == 6 and report["kept_prompts"] == 3
    import datasets

    data = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "data"), split="train")
    assert len(data) == 6 and {"image", "text", "type", "score"} <= set(data.column_names)
    assert sorted(set(data["text"])) == sorted(PROMPTS)
    assert data[0]["image"].size == (64, 64)
    with pytest.raises(FileExistsError):
        filter_pool(pool, tmp_path / "data", FilterPolicy(policy="topk", score="oracle:quality"))
    # the images are the pool's own files, hard-linked (no second copy on disk) ...
    assert all(os.path.samefile(path, tmp_path / "data" / name) for name, path in pool_files(pool).items()
               if (tmp_path / "data" / name).exists())
    assert len(list((tmp_path / "data").glob("*.png"))) == 6


def pool_files(pool) -> dict:
    """The pool's images by their name in a filtered dataset."""
    return {row["file_name"].replace("/", "_"): row["path"] for row in read_pool(pool)}


def test_dataset_images_are_copied_where_links_cannot_be_made(pool, tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    score_pool(pool, ["oracle"], progress=False)
    filter_pool(pool, tmp_path / "data", FilterPolicy(policy="topk", score="oracle:quality", k=1))
    # ... or copied where the file system cannot link them
    images = {p.name: p for p in (tmp_path / "data").glob("*.png")}
    assert len(images) == 3
    assert not any(os.path.samefile(pool_files(pool)[name], p) for name, p in images.items())
    assert all(p.read_bytes() == Path(pool_files(pool)[name]).read_bytes() for name, p in images.items())


def test_pairs_are_the_largest_score_gaps_of_each_prompt_at_least_min_gap_apart():
    rows = rows_with({0: [0.0, 1.0, 0.5, 1.0], 1: [0.2, 0.2], 2: [0.3, 0.6]})
    kept = select(rows, FilterPolicy(policy="pairs", score="s", k=3, min_gap=0.5))
    # prompt 0: gaps 1.0 (1>0, 3>0), 0.5 (1>2, 3>2), the three largest in pool order; prompt 1: equal scores never
    # pair; prompt 2: gap 0.3 < min_gap
    assert [(r["prompt_index"], r["seed"], r["rejected_seed"]) for r in kept] == [(0, 1, 0), (0, 3, 0), (0, 1, 2)]
    assert all(r["type"] == "pair" and r["text"] == "prompt 0" for r in kept)
    assert (kept[0]["score"], kept[0]["rejected_score"], kept[0]["rejected_file_name"]) == (1.0, 0.0, "0_0.png")
    everything = select(rows, FilterPolicy(policy="pairs", score="s", k=100))  # min_gap 0: any difference
    assert len(everything) == 5 + 1  # prompt 0: 1>0, 3>0, 2>0, 1>2, 3>2; prompt 2: 1>0
    with pytest.raises(UsageError, match="lower min_gap"):
        select(rows, FilterPolicy(policy="pairs", score="s", min_gap=2.0))
    with pytest.raises(UsageError, match="min_gap must be >= 0"):
        FilterPolicy(policy="pairs", score="s", min_gap=-1)
    # min_score: only chosen images that reach it; and a gap written as 0.1 is 0.1 (0.65 - 0.55 = 0.0999... in floats)
    assert [(r["seed"], r["rejected_seed"]) for r in select(rows, FilterPolicy(
        policy="pairs", score="s", k=100, min_score=1.0))] == [(1, 0), (3, 0), (1, 2), (3, 2)]
    close = rows_with({0: [0.65, 0.55]})
    assert len(select(close, FilterPolicy(policy="pairs", score="s", min_gap=0.1))) == 1
    with pytest.raises(UsageError, match="drop negatives"):
        FilterPolicy(policy="pairs", score="s", negatives=True)


def test_a_pairs_dataset_loads_in_datasets_with_a_rejected_image_column(pool, tmp_path):
    import datasets

    score_pool(pool, ["oracle"], progress=False)
    rows = read_pool(pool)
    gap = {}  # a prompt's largest oracle:quality difference
    for r in rows:
        lo, hi = gap.get(r["prompt_index"], (9.0, -9.0))
        gap[r["prompt_index"]] = (min(lo, r["scores"]["oracle:quality"]), max(hi, r["scores"]["oracle:quality"]))
    report = filter_pool(pool, tmp_path / "pairs", FilterPolicy(policy="pairs", score="oracle:quality", k=2))
    expected = sum(1 for lo, hi in gap.values() if hi > lo)
    assert report["kept_prompts"] == expected >= 1 and report["kept_pairs"] == len(
        select(rows, FilterPolicy(policy="pairs", score="oracle:quality", k=2)))
    data = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "pairs"), split="train")
    assert {"image", "rejected", "text", "score", "rejected_score"} <= set(data.column_names)
    assert len(data) == report["kept_pairs"]
    assert all(w > l for w, l in zip(data["score"], data["rejected_score"]))
    by_name = {r["file_name"].replace("/", "_"): load_rgb(r["path"]) for r in rows}
    first = json.loads((tmp_path / "pairs" / "metadata.jsonl").read_text().splitlines()[0])
    assert np.array_equal(np.asarray(data[0]["rejected"].convert("RGB")), by_name[first["rejected_file_name"]])
    assert np.array_equal(np.asarray(data[0]["image"].convert("RGB")), by_name[first["file_name"]])


def test_model_specs_name_weights_and_an_adapter_whose_scores_get_their_own_column():
    from richfeedback.reward_models.cli import parse_model_specs

    plain, adapted = parse_model_specs(["pickscore=w/ps", "pickscore=w/ps,adapter=runs/adapter-ps/best"])
    assert (plain.name, plain.weights, plain.adapter, plain.column) == ("pickscore", "w/ps", None, "pickscore")
    assert (adapted.adapter, adapted.column) == ("runs/adapter-ps/best", "pickscore+best")
    with pytest.raises(UsageError, match="given twice"):
        parse_model_specs(["pickscore", "pickscore=other"])


def test_scores_from_other_weights_under_the_same_name_are_refused(pool, tmp_path):
    import shutil

    import torch

    from richfeedback.reward_models.rahf.modeling import RAHFModel
    from richfeedback.reward_models.rahf.predict import EMBEDDED_RAHF

    mine = tmp_path / "pool"
    shutil.copytree(pool, mine)
    assert score_pool(mine, ["rahf:alignment"], progress=False) == {"rahf:alignment": 12}
    record = scores_file(mine, "rahf:alignment").with_suffix(".weights.json")
    assert record.exists()
    assert score_pool(mine, ["rahf:alignment"], progress=False) == {"rahf:alignment": 0}  # same weights: fine
    other = tmp_path / "rahf-other"
    shutil.copytree(EMBEDDED_RAHF, other)
    model = RAHFModel.from_pretrained(other)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(other)
    with pytest.raises(UsageError, match="from other weights .* delete rahf_alignment.jsonl"):
        score_pool(mine, [f"rahf:alignment={other}"], progress=False)
    scores_file(mine, "rahf:alignment").unlink()
    record.unlink()
    assert score_pool(mine, [f"rahf:alignment={other}"], progress=False) == {"rahf:alignment": 12}


def test_the_fingerprint_of_rahf_weights_does_not_change_with_the_last_conv1_rename():
    """Pools scored while RAHF's heatmap heads named their last conv `last_conv1.0` keep matching the same weights."""
    import torch

    from richfeedback.reward_models.weights import weights_fingerprint

    class Weights:
        def __init__(self, state):
            self.state = state

        def state_dict(self):
            return self.state

    new = {"model.heatmap_predictor.implausibility.last_conv1.weight": torch.ones(2, 2),
           "model.heatmap_predictor.implausibility.last_conv1.bias": torch.zeros(2),
           "model.heatmap_predictor.last_conv1.weight": torch.full((2,), 3.0),
           "model.vit.layernorm.weight": torch.ones(3)}
    old = {k.replace("last_conv1.", "last_conv1.0."): v for k, v in new.items()}
    assert weights_fingerprint(Weights(new)) == weights_fingerprint(Weights(old))
    changed = dict(new, **{"model.heatmap_predictor.last_conv1.weight": torch.full((2,), 4.0)})
    assert weights_fingerprint(Weights(changed)) != weights_fingerprint(Weights(new))


def add_score_column(pool_dir: Path, name: str, score_of) -> None:
    """Write the score column `name` of every image of the pool, `score_of(row)`, as `pool score` would."""
    lines = [json.dumps({"file_name": row["file_name"], "scores": {name: score_of(row)}}) for row in read_pool(pool_dir)]
    (pool_dir / "scores").mkdir(exist_ok=True)
    (pool_dir / "scores" / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_a_dataset_filtered_with_negatives_names_its_negative_prompt(pool, tmp_path):
    import shutil

    from richfeedback.finetune.filtering import negative_prompt_of

    mine = tmp_path / "pool"
    shutil.copytree(pool, mine)
    # one clear best and one clear worst image per prompt (its seeds 10 + 4i + k, k = 0..3: 5, 1, 1, -5)
    add_score_column(mine, "made", lambda row: [5.0, 1.0, 1.0, -5.0][(row["seed"] - 10) % 4])
    policy = FilterPolicy(policy="align_sd", score="made", negatives=True, min_prompts=0, skip_flat=False)
    report = filter_pool(mine, tmp_path / "data", policy)
    assert report["kept_positive"] == report["kept_negative"] == len(PROMPTS)
    assert negative_prompt_of(tmp_path / "data") == "Weird image."
    filter_pool(mine, tmp_path / "plain", FilterPolicy(policy="topk", score="made", k=1))
    assert negative_prompt_of(tmp_path / "plain") is None


def test_align_sd_leaves_flat_images_out_before_counting_a_prompts_images(pool, tmp_path):
    """A blank (or safety-checker black) image is neither a candidate nor counted in N, as in align_sd."""
    import shutil

    from richfeedback.finetune.filtering import is_flat
    from richfeedback.imaging import save_png

    from richfeedback.shapesworld.render import render
    from richfeedback.shapesworld.scene import sample_scene

    mine = tmp_path / "pool"
    shutil.copytree(pool, mine)
    rows = read_pool(mine)
    rng = np.random.default_rng(0)
    for row in rows:  # sharp images (the 2-step pool's can be flat themselves)
        save_png(render(sample_scene(rng), 64), Path(row["path"]))
    first = [r for r in rows if r["prompt"] == PROMPTS[0]]
    save_png(np.zeros((64, 64, 3), np.uint8), Path(first[0]["path"]))  # blacked out
    add_score_column(mine, "made", lambda row: -10.0 if row["file_name"] == first[0]["file_name"]
                     else float(row["seed"] % 4))
    policy = FilterPolicy(policy="align_sd", score="made", negatives=True, min_prompts=0)
    report = filter_pool(mine, tmp_path / "data", policy)
    assert report["skipped_flat"] == [first[0]["file_name"]] and report["pool_images"] == len(rows)
    kept = [json.loads(line) for line in (tmp_path / "data" / "metadata.jsonl").read_text().splitlines()]
    assert PROMPTS[0] not in {k["prompt"] for k in kept}  # 3 images left: fewer than align_sd's 4
    assert all(k["confidence"] > 0.5 for k in kept)  # 2/N with N = 4
    with_flat = filter_pool(mine, tmp_path / "all", dataclasses.replace(policy, skip_flat=False))
    assert with_flat["skipped_flat"] == [] and with_flat["kept_negative"] == report["kept_negative"] + 1
    assert is_flat(np.full((8, 8, 3), 200, np.uint8)) and not is_flat(np.eye(8, dtype=np.uint8)[..., None] * 255)
