"""`ab make`: pairs share prompt and seed, sides are randomised and recorded, the page holds no side information."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from richfeedback.cli import main
from richfeedback.errors import UsageError
from richfeedback.eval.ab import make_ab, parse_questions, parse_seeds, read_ab
from richfeedback.eval.ab.page import render_rating_page
from richfeedback.generation import GenerationJob
from richfeedback.shapesworld.artifacts import inject_artifact
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import layout_scene, parse_prompt

PROMPTS = ["a red circle on the left", "two blue squares", "a large green triangle on the top"]


def shapes_folder(out: Path, prompts, seeds, artifact: bool = False) -> Path:
    """A folder of generated images (manifest.jsonl) rendered by ShapesWorld: exact scenes, optionally each with a
    stray blob, so that the oracle knows which system is better."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for prompt in prompts:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            scene = layout_scene(parse_prompt(prompt), rng)
            image = render(scene)
            if artifact:
                image = inject_artifact(image, scene, rng, kind="stray_blob")[0]
            job = GenerationJob(prompt, seed)
            Image.fromarray(image).save(out / job.file_name)
            rows.append({"file_name": job.file_name, "prompt": prompt, "seed": seed})
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def make_shapes_ab(tmp_path: Path, prompts=PROMPTS, seeds=(0, 1), questions="overall,plausibility,alignment",
                   side_seed: int = 0) -> Path:
    clean = shapes_folder(tmp_path / "clean", prompts, seeds)
    broken = shapes_folder(tmp_path / "broken", prompts, seeds, artifact=True)
    return make_ab(str(clean), str(broken), prompts, list(seeds), tmp_path / "AB",
                   questions=parse_questions([questions]), side_seed=side_seed, progress=False)


def test_pairs_share_prompt_and_seed_and_record_the_side(tmp_path):
    ab = make_shapes_ab(tmp_path)
    meta, pairs = read_ab(ab)
    assert meta["num_pairs"] == len(pairs) == 6
    assert sorted((p["prompt"], p["seed"]) for p in pairs) == sorted((p, s) for p in PROMPTS for s in (0, 1))
    for pair in pairs:
        assert Path(pair["image_a"]).name == Path(pair["image_b"]).name == GenerationJob(pair["prompt"],
                                                                                           pair["seed"]).file_name
        assert pair["image_a"].startswith("images/a/") and pair["image_b"].startswith("images/b/")
        assert pair["image_left"] == pair["image_" + pair["left"]]
        assert {pair["image_left"], pair["image_right"]} == {pair["image_a"], pair["image_b"]}
        assert (ab / pair["image_left"]).is_file()
    with open(ab / "pairs.csv") as f:
        assert [r["pair_id"] for r in csv.DictReader(f)] == [p["pair_id"] for p in pairs]


def test_sides_are_randomised_both_ways_and_reproducibly(tmp_path):
    from richfeedback.eval.ab.export import plan_pairs

    plan = plan_pairs([f"p{i}" for i in range(50)], [0, 1], side_seed=0)
    share_a_left = np.mean([p["left"] == "a" for p in plan])
    assert 0.35 < share_a_left < 0.65
    assert plan == plan_pairs([f"p{i}" for i in range(50)], [0, 1], side_seed=0)
    assert [p["left"] for p in plan] != [p["left"] for p in plan_pairs([f"p{i}" for i in range(50)], [0, 1], 1)]
    # The order is shuffled too, so that one prompt's seeds are not rated back to back.
    assert [p["pair_id"] for p in plan] != sorted(p["pair_id"] for p in plan)


def test_page_is_self_contained_and_blind(tmp_path):
    ab = make_shapes_ab(tmp_path)
    html = (ab / "index.html").read_text()
    meta, pairs = read_ab(ab)
    assert meta["id"] in html
    assert "http://" not in html and "https://" not in html and "<script src" not in html and "<link" not in html
    # The page names images by side only: neither the system folders nor the "left" field reach it.
    assert str(tmp_path / "clean") not in html and '"left": "a"' not in html and '"left":"a"' not in html
    for label in ("Left much better", "Left slightly better", "About the same", "Right slightly better",
                  "Right much better"):
        assert label in html


def test_prompt_with_script_end_tag_cannot_break_the_page():
    meta = {"id": "x", "questions": parse_questions(["overall"])}
    html = render_rating_page(meta, [{"pair_id": "p0", "prompt": "</script><b>x", "image_left": "l.png",
                                      "image_right": "r.png"}])
    assert "</script><b>x" not in html and "<\\/script><b>x" in html


def test_rerun_resumes_and_a_different_comparison_is_refused(tmp_path):
    ab = make_shapes_ab(tmp_path)
    first = (ab / "pairs.jsonl").read_text()
    (ab / "images" / "a" / json.loads(first.splitlines()[0])["image_a"].split("/")[-1]).unlink()
    make_shapes_ab(tmp_path)  # the missing image is made again, everything else is kept
    assert (ab / "pairs.jsonl").read_text() == first
    with pytest.raises(UsageError, match="already holds another comparison"):
        make_shapes_ab(tmp_path, side_seed=1)


def test_missing_prompt_in_an_image_folder_names_it(tmp_path):
    clean = shapes_folder(tmp_path / "clean", PROMPTS[:1], [0])
    with pytest.raises(UsageError, match="has no image for prompt 'two blue squares' with seed 0"):
        make_ab(str(clean), str(clean), PROMPTS[:2], [0], tmp_path / "AB", progress=False)


def test_seed_and_question_parsing():
    assert parse_seeds("0-3,10,2") == [0, 1, 2, 3, 10]
    with pytest.raises(UsageError, match="give seeds as"):
        parse_seeds("three")
    qs = parse_questions(["overall,alignment"])
    assert [q["name"] for q in qs] == ["overall", "alignment"]
    assert parse_questions(["colour=Which colours are nicer?"])[0]["text"] == "Which colours are nicer?"
    with pytest.raises(UsageError, match="has no text"):
        parse_questions(["sharpness"])


def test_cli_make_prints_the_page(tmp_path, capsys):
    clean = shapes_folder(tmp_path / "clean", PROMPTS[:2], [0, 1])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    assert main(["ab", "make", "--a", str(clean), "--b", str(clean), "--prompts", str(prompts), "--seeds", "0-1",
                 "--out", str(tmp_path / "AB")]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 A/B pairs" in out and str((tmp_path / "AB" / "index.html").resolve()) in out
    assert main(["ab", "make", "--a", f"{clean},lora=nowhere", "--b", str(clean), "--prompts", str(prompts),
                 "--out", str(tmp_path / "AB2")]) == 2


def test_questions_of_your_own_may_hold_commas(tmp_path):
    clean = shapes_folder(tmp_path / "clean", PROMPTS[:1], [0])
    assert main(["ab", "make", "--a", str(clean), "--b", str(clean), "--prompt", PROMPTS[0], "--out",
                 str(tmp_path / "AB"), "--questions", "overall,alignment", "--questions",
                 "colour=Which image has nicer colours, if any?"]) == 0
    meta, _ = read_ab(tmp_path / "AB")
    assert [(q["name"], q["text"]) for q in meta["questions"]][1:] == [
        ("alignment", "Which image matches the prompt better?"), ("colour", "Which image has nicer colours, if any?")]
