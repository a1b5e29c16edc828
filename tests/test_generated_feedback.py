"""Rich feedback on generated images: the oracle's reading labelled by the simulated raters, in the synthetic schema."""

import json
from pathlib import Path

import numpy as np
import pytest

from richfeedback.imaging import save_png
from richfeedback.shapesworld.dataset import FEATURES, load_shapesworld_dataset, make_dataset
from richfeedback.shapesworld.generated_feedback import (label_generated_image, make_generated_dataset,
                                                         split_by_prompt)
from richfeedback.shapesworld.raters import RaterConfig
from richfeedback.shapesworld.render import object_mask, render
from richfeedback.shapesworld.scene import Scene, SceneObject, parse_prompt, sample_prompts, sample_scene

ROOT = Path(__file__).resolve().parents[1]
# Raters without noise on words and without stray clicks: their consolidated labels must equal the truth.
EXACT_RATERS = RaterConfig(false_click_prob=0.0, mark_aligned_prob=0.0, mark_misaligned_prob=1.0)


def red_circle_scene(colour="red"):
    return Scene(parse_prompt("a red circle"), (SceneObject(colour, "circle", 0.5, 0.5, 0.12),))


@pytest.mark.parametrize("index", range(4))
def test_a_clean_render_has_every_word_aligned_and_no_artifact(index):
    scene = sample_scene(np.random.default_rng([7, index]))
    row = label_generated_image(scene.prompt.text, render(scene, 64), "train", seed=index, rater_config=EXACT_RATERS)
    words = row["clean_prompt"].split()
    assert row["true_prompt_misalignment_label"] == " ".join(["1"] * len(words))
    assert row["prompt_misalignment_label"] == row["true_prompt_misalignment_label"]
    assert not np.asarray(row["true_artifact_region"]).any() and not np.asarray(row["artifact_map"]).any()
    assert not np.asarray(row["misalignment_map"]).any()
    assert row["condition"] == "clean" and row["artifact_kinds"] == [] and row["misalignment_kinds"] == []
    assert row["true_scores"][:2] == [1.0, 1.0]  # plausibility, alignment


def test_a_wrong_colour_marks_the_colour_word_misaligned_and_the_object_as_the_region():
    pixels = render(red_circle_scene("blue"), 64)
    row = label_generated_image("a red circle", pixels, "train", seed=0, rater_config=EXACT_RATERS)
    assert row["true_prompt_misalignment_label"] == "1 0 1"  # a red_0 circle
    assert row["labeled_prompt"] == "a red_0 circle"
    assert row["misalignment_kinds"] == ["colour"] and row["condition"] == "misaligned"
    region = np.asarray(row["true_misalignment_region"]) > 0
    circle = object_mask(SceneObject("blue", "circle", 0.5, 0.5, 0.12), 64)
    assert (region == circle).mean() > 0.98
    clicked = np.asarray(row["misalignment_map"]) > 0
    assert clicked.any() and (clicked & circle).sum() >= 0.5 * clicked.sum()  # raters click on the blue circle
    assert row["true_scores"][1] == pytest.approx(1 / 3)  # 1 of 3 content words ("a" is a count) wrong: 1 - 2/3


def test_a_blotch_on_the_image_is_an_artifact_region_and_costs_plausibility():
    pixels = render(red_circle_scene(), 64).copy()
    pixels[8:16, 40:50] = (30, 30, 30)  # a dark smear no object explains
    row = label_generated_image("a red circle", pixels, "train", seed=0, rater_config=EXACT_RATERS)
    region = np.asarray(row["true_artifact_region"]) > 0
    assert region[8:16, 40:50].mean() > 0.9 and region.sum() < 2 * 80
    assert row["artifact_kinds"] == ["generated"] and row["condition"] == "artifacts"
    assert row["true_scores"][0] < 0.75 and row["true_prompt_misalignment_label"] == "1 1 1"


def test_a_row_is_a_pure_function_of_split_and_seed():
    pixels = render(red_circle_scene("green"), 64)
    a, b = (label_generated_image("a red circle", pixels, "dev", seed=5) for _ in range(2))
    c = label_generated_image("a red circle", pixels, "dev", seed=6)
    assert a["rater_scores"] == b["rater_scores"] and a["misalignment_points"] == b["misalignment_points"]
    assert a["seed_split"] == 101 and a["seed_index"] == 5
    assert (a["rater_scores"], a["misalignment_points"]) != (c["rater_scores"], c["misalignment_points"])


def test_split_by_prompt_keeps_every_prompt_in_one_split():
    prompts = sample_prompts(20, seed=1)
    split_of = split_by_prompt(prompts * 3, dev_fraction=0.1, test_fraction=0.2, seed=0)
    assert sorted(split_of) == sorted(prompts)
    assert [sum(1 for s in split_of.values() if s == name) for name in ("train", "dev", "test")] == [14, 2, 4]
    assert split_by_prompt(prompts, 0.1, 0.2, seed=0) == split_by_prompt(list(reversed(prompts)), 0.1, 0.2, seed=0)


@pytest.fixture(scope="module")
def generated_dataset(tmp_path_factory):
    """10 prompts x 2 'generated' images: renders, every second one with the wrong colour on an object."""
    folder = tmp_path_factory.mktemp("generated")
    rows = []
    scenes = {}
    for i in range(100):  # the first 10 scenes with distinct prompts
        scene = sample_scene(np.random.default_rng([11, i]))
        scenes.setdefault(scene.prompt.text, scene)
    for i, scene in enumerate(list(scenes.values())[:10]):
        for k in range(2):
            objects = list(scene.objects)
            if k == 1:
                o = objects[0]
                objects[0] = SceneObject("green" if o.colour != "green" else "red", o.shape, o.cx, o.cy, o.h)
            path = folder / f"{i:02d}_{k}.png"
            save_png(render(scene.replace_objects(objects), 64), path)
            rows.append({"prompt": scene.prompt.text, "seed": 2 * i + k, "path": path, "file_name": path.name})
    out = folder / "data"
    make_generated_dataset(rows, out, dev_fraction=0.2, test_fraction=0.2, progress=False)
    return out


def test_the_generated_dataset_has_the_synthetic_schema_and_disjoint_prompt_splits(generated_dataset, tmp_path):
    data = load_shapesworld_dataset(generated_dataset)
    synthetic = make_dataset(tmp_path / "synthetic", 2, 1, 1, size=32, progress=False)
    for split in ("train", "dev", "test"):
        assert data[split].features == FEATURES == synthetic[split].features
    assert [len(data[s]) for s in ("train", "dev", "test")] == [12, 4, 4]
    prompts = [set(data[s]["prompt"]) for s in ("train", "dev", "test")]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert sorted(json.loads((generated_dataset / "agreement.json").read_text())) == ["dev", "test", "train"]
    assert set(data["train"]["condition"]) <= {"clean", "misaligned"}
    assert "misaligned" in data["train"]["condition"]


def test_an_existing_output_folder_is_refused(generated_dataset):
    with pytest.raises(FileExistsError, match="not empty"):
        make_generated_dataset([{"prompt": "a red circle", "seed": 0, "path": "x.png"}], generated_dataset)


def test_rahf_training_appends_the_extra_paths_train_split(generated_dataset, tmp_path):
    from richfeedback.reward_models.rahf.train import load_config, train

    synthetic = tmp_path / "synthetic"
    make_dataset(synthetic, 16, 2, 2, size=32, progress=False)
    cfg = load_config(str(ROOT / "configs/rahf/tiny.yaml"), [
        f"data.path={generated_dataset}", f"output_dir={tmp_path / 'out'}", "optim.epochs=1", "optim.batch_size=8",
        "eval_generate=false", "data.extra_max_examples=12"])
    cfg["data"]["extra_paths"] = [str(synthetic)]
    train(cfg)
    steps = (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()
    assert len(steps) == (12 + 12) // 8  # 12 generated + the first 12 synthetic examples, batches of 8


def test_rahf_training_refuses_an_extra_dataset_with_other_columns(generated_dataset, tmp_path):
    import datasets

    from richfeedback.reward_models.rahf.train import load_config, train

    other = load_shapesworld_dataset(generated_dataset).remove_columns(["condition"])
    other.save_to_disk(str(tmp_path / "other"))
    cfg = load_config(str(ROOT / "configs/rahf/tiny.yaml"), [f"data.path={generated_dataset}",
                                                             f"output_dir={tmp_path / 'out'}"])
    cfg["data"]["extra_paths"] = [str(tmp_path / "other")]
    with pytest.raises(ValueError, match="same schema"):
        train(cfg)
    assert isinstance(other, datasets.DatasetDict)


def test_repaired_twins_differ_from_their_flagged_image_only_where_the_flaw_was(tmp_path):
    from richfeedback.shapesworld.generated_feedback import TWIN_SEED_OFFSET, make_repaired_twins
    from richfeedback.shapesworld.oracle import evaluate

    pixels = render(red_circle_scene(), 64).copy()
    pixels[8:16, 40:50] = (30, 30, 30)  # a smear the oracle flags
    clean = render(red_circle_scene("blue"), 64)  # misaligned, nothing to repair: no twin
    import datasets

    rows = [label_generated_image("a red circle", image, "train", seed=k) for k, image in enumerate((pixels, clean))]
    source = tmp_path / "generated"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=FEATURES)}).save_to_disk(str(source))
    twins = make_repaired_twins([source], tmp_path / "twins", progress=False)["train"]
    assert len(twins) == 1
    twin = np.asarray(twins[0]["image"])
    changed = (twin != pixels).any(-1)
    assert changed[8:16, 40:50].all() and changed.sum() < 2 * 80  # the smear, and a cell-rounded margin at most
    assert not evaluate("a red circle", twin).has_artifact and twins[0]["condition"] == "clean"
    assert twins[0]["seed_index"] == TWIN_SEED_OFFSET + 0
    with pytest.raises(FileExistsError):
        make_repaired_twins([source], tmp_path / "twins", progress=False)
