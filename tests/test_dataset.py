"""Specification of the ShapesWorld-RichHF dataset (richfeedback.shapesworld.dataset)."""

import json
from collections import Counter

import datasets
import numpy as np
import pytest

from richfeedback.eval import metrics
from richfeedback.shapesworld import dataset as D
from richfeedback.shapesworld.scene import prompt_words

RICHHF_COLUMNS = {"image", "prompt", "filename", "aesthetics_score", "artifact_score", "misalignment_score",
                  "overall_score", "artifact_map", "misalignment_map", "prompt_misalignment_label", "clean_prompt",
                  "labeled_prompt"}
SCORES = ("aesthetics_score", "artifact_score", "misalignment_score", "overall_score")


def _comparable(example: dict) -> dict:
    return {k: np.asarray(v).tolist() if hasattr(v, "mode") else v for k, v in example.items()}


@pytest.fixture(scope="module")
def dev_examples():
    return [D.make_example("dev", i) for i in range(200)]


# ----------------------------------------------------------------------------- make_example
def test_make_example_is_deterministic():
    assert _comparable(D.make_example("train", 5)) == _comparable(D.make_example("train", 5))


def test_the_same_index_gives_different_examples_in_different_splits():
    train, test = D.make_example("train", 5), D.make_example("test", 5)
    same_image = np.array_equal(np.asarray(train["image"]), np.asarray(test["image"]))
    assert train["prompt"] != test["prompt"] or not same_image
    assert (train["seed_split"], test["seed_split"]) == (0, 2)


def test_an_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        D.make_example("val", 0)


def test_filename_names_split_and_index():
    assert D.make_example("dev", 42)["filename"] == "shapesworld/dev/000042.png"


def test_scores_are_floats_in_0_1(dev_examples):
    for example in dev_examples:
        for key in SCORES:
            assert 0.0 <= example[key] <= 1.0


def test_maps_are_single_channel_images_of_the_image_size_in_thirds(dev_examples):
    for example in dev_examples[:50]:
        assert example["image"].mode == "RGB" and example["image"].size == (64, 64)
        for key in ("artifact_map", "misalignment_map", "true_artifact_region", "true_misalignment_region"):
            assert example[key].mode == "L" and example[key].size == (64, 64)
        for key in ("artifact_map", "misalignment_map"):
            assert set(np.unique(np.asarray(example[key]))) <= {0, 85, 170, 255}


def test_prompt_misalignment_label_has_one_int_per_prompt_word(dev_examples):
    for example in dev_examples:
        words = prompt_words(example["prompt"])
        labels = [int(v) for v in example["prompt_misalignment_label"].split()]
        assert len(labels) == len(words) and set(labels) <= {0, 1}
        assert example["clean_prompt"] == " ".join(words)
        assert example["labeled_prompt"] == metrics.labeled_prompt(words, labels)


def test_clean_examples_carry_no_true_flaw(dev_examples):
    clean = [e for e in dev_examples if e["condition"] == "clean"]
    assert clean
    for example in clean:
        assert example["artifact_kinds"] == [] and example["misalignment_kinds"] == []
        assert set(example["true_prompt_misalignment_label"].split()) == {"1"}
        assert np.asarray(example["true_artifact_region"]).max() == 0


def test_condition_says_what_was_injected(dev_examples):
    for example in dev_examples:
        has_artifacts, misaligned = bool(example["artifact_kinds"]), bool(example["misalignment_kinds"])
        expected = {(False, False): "clean", (True, False): "artifacts", (False, True): "misaligned",
                    (True, True): "both"}[(has_artifacts, misaligned)]
        assert example["condition"] == expected
        assert 0 <= len(example["artifact_kinds"]) <= 2 and 0 <= len(example["misalignment_kinds"]) <= 1


def test_conditions_follow_25_35_20_20_percent(dev_examples):
    counts = Counter(e["condition"] for e in dev_examples)
    for condition, p in D.CONDITION_PROBABILITIES.items():
        assert counts[condition] / len(dev_examples) == pytest.approx(p, abs=0.08)


def test_clean_images_score_more_plausible_than_damaged_ones(dev_examples):
    def mean_score(condition, key):
        return np.mean([e[key] for e in dev_examples if e["condition"] == condition])

    assert mean_score("clean", "artifact_score") > mean_score("artifacts", "artifact_score") + 0.2
    assert mean_score("clean", "misalignment_score") > mean_score("misaligned", "misalignment_score") + 0.2


def test_three_raters_each_give_four_likert_scores_and_one_label_per_word(dev_examples):
    for example in dev_examples[:50]:
        n_words = len(prompt_words(example["prompt"]))
        assert np.shape(example["rater_scores"]) == (3, 4)
        assert all(1 <= s <= 5 for row in example["rater_scores"] for s in row)
        assert [len(labels.split()) for labels in example["rater_word_labels"]] == [n_words] * 3
        for rater, x, y in example["artifact_points"] + example["misalignment_points"]:
            assert rater in (0, 1, 2) and 0 <= x < 64 and 0 <= y < 64


def test_consolidated_score_is_the_rescaled_mean_of_the_rater_scores(dev_examples):
    example = dev_examples[0]
    assert example["artifact_score"] == pytest.approx((np.mean(np.asarray(example["rater_scores"])[:, 0]) - 1) / 4)


# ----------------------------------------------------------------------------- split sizes
def test_split_sizes_take_dev_and_test_fractions_and_give_train_the_rest():
    assert D.split_sizes(1000) == (800, 100, 100)
    assert D.split_sizes(12, 0.25, 0.25) == (6, 3, 3)
    assert D.split_sizes(7) == (5, 1, 1)


def test_split_sizes_give_a_non_zero_fraction_at_least_one_example():
    assert D.split_sizes(4) == (2, 1, 1)  # 0.4 rounds to 0
    assert D.split_sizes(100, 0.1, 0.0) == (90, 10, 0)


def test_split_sizes_refuse_fractions_over_one():
    with pytest.raises(ValueError):
        D.split_sizes(100, 0.6, 0.6)


def test_split_sizes_refuse_too_few_images_for_dev_and_test():
    with pytest.raises(ValueError, match="1 images are too few"):
        D.split_sizes(1)


# ----------------------------------------------------------------------------- make_dataset
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapesworld")
    D.make_dataset(root / "ds", 12, 12, 12, progress=False)
    return root


def test_saved_dataset_reloads_with_every_column_and_split_size(saved):
    dataset = datasets.load_from_disk(str(saved / "ds"))
    assert {split: len(ds) for split, ds in dataset.items()} == {"train": 12, "dev": 12, "test": 12}
    assert set(dataset["train"].column_names) == set(D.FEATURES)
    assert RICHHF_COLUMNS <= set(dataset["train"].column_names)
    assert dataset["train"].features == D.FEATURES


def test_saved_rows_equal_make_example(saved):
    row = datasets.load_from_disk(str(saved / "ds"))["test"][3]
    example = D.make_example("test", 3)
    assert row["prompt"] == example["prompt"]
    assert row["artifact_score"] == pytest.approx(example["artifact_score"], abs=1e-6)
    assert np.array_equal(np.asarray(row["image"]), np.asarray(example["image"]))
    assert np.array_equal(np.asarray(row["artifact_map"]), np.asarray(example["artifact_map"]))


def test_agreement_json_holds_rater_agreement_per_split(saved):
    agreement = json.loads((saved / "ds" / "agreement.json").read_text())
    assert set(agreement) == {"train", "dev", "test"}
    assert agreement["dev"]["num_images"] == 12
    assert -1.0 <= agreement["dev"]["plausibility/plcc"] <= 1.0


def test_make_dataset_leaves_no_temporary_directory(saved):
    assert [p.name for p in saved.iterdir()] == ["ds"]


def test_load_shapesworld_dataset_loads_what_make_dataset_saved(saved):
    assert len(D.load_shapesworld_dataset(saved / "ds")["dev"]) == 12


def test_make_dataset_refuses_a_non_empty_out_dir(saved):
    with pytest.raises(FileExistsError, match="pick another --out or delete it"):
        D.make_dataset(saved / "ds", 1, 1, 1, progress=False)


def test_make_dataset_fills_an_existing_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    dataset = D.make_dataset(tmp_path / "empty", 2, 1, 1, progress=False)
    assert {split: len(ds) for split, ds in dataset.items()} == {"train": 2, "dev": 1, "test": 1}


def test_agreement_over_a_single_image_has_no_correlations(tmp_path):
    D.make_dataset(tmp_path / "one", 1, 1, 1, progress=False)
    agreement = json.loads((tmp_path / "one" / "agreement.json").read_text())
    assert agreement["dev"]["plausibility/plcc"] is None  # nan, stored as null


def test_make_dataset_refuses_an_empty_split(tmp_path):
    with pytest.raises(ValueError, match="every split needs at least one example"):
        D.make_dataset(tmp_path / "ds", 10, 0, 10, progress=False)


def test_loading_a_missing_dataset_names_the_path_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        D.load_shapesworld_dataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)
    assert "richfeedback shapesworld make-dataset" in str(error.value)


def test_parallel_workers_build_the_same_examples(tmp_path):
    dataset = D.make_dataset(tmp_path / "parallel", 4, 1, 1, num_proc=2, progress=False)
    assert dataset["train"]["prompt"] == [D.make_example("train", i)["prompt"] for i in range(4)]
    assert dataset["train"]["artifact_points"] == [D.make_example("train", i)["artifact_points"] for i in range(4)]


def test_drawn_scene_is_the_scene_make_example_draws_and_words_point_at_their_objects():
    """drawn_scene re-draws an example's objects from its seeds; word_object_centres gives each word of a phrase the
    centre of the one object of the phrase's colour and shape (None for plural groups, missing or changed objects)."""
    from richfeedback.shapesworld.dataset import drawn_scene
    from richfeedback.shapesworld.scene import POSITIONS, position_holds, prompt_words, word_object_centres

    seen_wrong_position = False
    for index in range(60):
        example = D.make_example("dev", index)
        scene = drawn_scene("dev", index)
        assert scene.prompt.text == example["prompt"] and scene == drawn_scene(1, index)
        words, centres = prompt_words(scene.prompt.text), word_object_centres(scene)
        labels = [int(x) for x in example["true_prompt_misalignment_label"].split()]
        assert len(centres) == len(words) == len(labels)
        for word, centre, label in zip(words, centres, labels):
            if word in POSITIONS and centre is not None:
                # a position word is wrong exactly where its object's centre breaks it
                assert position_holds(word, *centre) == bool(label), (index, word, centre)
                seen_wrong_position |= not label
        for group_index, group in enumerate(scene.prompt.groups):
            phrase = [c for (_, _, g), c in zip(scene.prompt.word_roles(), centres) if g == group_index]
            if group.count > 1:
                assert phrase == [None] * len(phrase)
            assert len(set(phrase)) == 1  # every word of a phrase points at the same object
    assert seen_wrong_position
    with pytest.raises(ValueError, match="unknown split"):
        drawn_scene("validation", 0)


def test_word_object_attributes_read_what_was_drawn_for_each_phrase():
    """word_object_attributes gives each word of a phrase the shape and colour drawn for it and the ones it names: a
    shape or colour word is marked misaligned exactly where the drawn object's attribute differs from it."""
    from richfeedback.shapesworld.dataset import drawn_scene
    from richfeedback.shapesworld.scene import COLORS, SHAPES, word_object_attributes

    seen = set()
    for index in range(150):
        example = D.make_example("dev", index)
        scene = drawn_scene("dev", index)
        attributes = word_object_attributes(scene)
        labels = [int(x) for x in example["true_prompt_misalignment_label"].split()]
        assert len(attributes) == len(labels)
        for (word, kind, group), drawn, label in zip(scene.prompt.word_roles(), attributes, labels):
            if group < 0 or scene.prompt.groups[group].count > 1:
                assert drawn is None
            elif drawn is not None and kind in ("shape", "colour"):
                named = SHAPES.index(word) if kind == "shape" else list(COLORS).index(word)
                column = 0 if kind == "shape" else 1
                assert drawn[column + 2] == named  # what the phrase names
                assert (drawn[column] == named) == bool(label), (index, word, drawn)  # what was drawn
                seen.add((kind, label))
    assert {("shape", 0), ("colour", 0), ("shape", 1), ("colour", 1)} <= seen
