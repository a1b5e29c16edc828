"""`richfeedback rahf predict` and `rahf eval` end to end on a tiny model; the processor's pieces."""

import json

import numpy as np
import pytest
import torch

from richfeedback.cli import main
from richfeedback.imaging import save_png
from richfeedback.reward_models.rahf.configuration import RAHFConfig
from richfeedback.reward_models.rahf.evaluate import format_tables, word_flags
from richfeedback.reward_models.rahf.processing import RAHFProcessor, load_shapesworld_tokenizer
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene


def test_predict_writes_json_and_heatmap_pngs_and_skips_broken_images(tiny_rahf_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(2):
        save_png(render(sample_scene(rng)), tmp_path / "in" / f"img{i}.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"nope")
    assert main(["rahf", "predict", str(tmp_path / "in"), "--prompt", "a red circle on the left",
                 "--model", str(tiny_rahf_dir), "--out", str(tmp_path / "out")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]["scores"]) == {"plausibility", "alignment", "aesthetics", "overall"}
    assert (tmp_path / "out" / "img0_heatmaps.png").exists()
    assert "skipped:" in capsys.readouterr().out


def test_eval_prints_the_three_tables_with_the_raters_reference(tiny_rahf_dir, tmp_path, capsys):
    from richfeedback.shapesworld.dataset import make_dataset

    make_dataset(tmp_path / "data", 4, 2, 6, size=32, progress=False)
    assert main(["rahf", "eval", "--model", str(tiny_rahf_dir), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    for heading in ("heatmaps", "scores", "misaligned keywords"):
        assert f": {heading}" in printed
    assert "| implausibility | reference |" in printed
    assert "avg_metric" in json.loads((tmp_path / "eval" / "metrics.json").read_text())


def test_eval_of_a_missing_dataset_is_one_line(tiny_rahf_dir, tmp_path, capsys):
    assert main(["rahf", "eval", "--model", str(tiny_rahf_dir), "--data", str(tmp_path / "none")]) == 2
    assert "make-dataset" in capsys.readouterr().err


def test_misaligned_words_are_read_position_by_position():
    assert RAHFProcessor.misaligned_words("a red_0 circle on the left_0", "a red circle on the left") == [0, 1, 0, 0, 0, 1]
    assert RAHFProcessor.misaligned_words("a red_0", "a red circle") == [0, 1, 0]  # short output: the rest unmarked
    assert word_flags("a blue_0 circle", "a red_0 circle") == [0, 0, 0]  # a different word is no hit


def test_tensor_and_pil_preprocessing_agree_at_the_model_size():
    processor = RAHFProcessor(load_shapesworld_tokenizer(), RAHFConfig.from_size("tiny"))
    image = render(sample_scene(np.random.default_rng(1)), 32)
    from_pil = processor.preprocess_images([image])
    from_tensor = processor.preprocess_images(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    torch.testing.assert_close(from_pil, from_tensor)
    assert from_pil.min() >= -1 and from_pil.max() <= 1


def test_format_tables_shows_both_keyword_readings():
    text = format_tables({"words/f1": 0.9, "seq/f1-score/1": 0.4}, {"words/f1": 0.6})
    assert "| model | per example (reference) | - | - | 0.400 |" in text
    assert "| reference | pooled over words | - | - | 0.600 |" in text


def test_the_chosen_marker_bias_is_the_best_f1_on_the_split_and_evaluation_decodes_with_it(tmp_path, capsys):
    import shutil

    from richfeedback.reward_models.rahf.evaluate import choose_marker_bias
    from richfeedback.reward_models.rahf.predict import EMBEDDED_RAHF, load_rahf
    from richfeedback.shapesworld.dataset import load_shapesworld_dataset, make_dataset

    make_dataset(tmp_path / "data", 1, 48, 1, size=64, progress=False)
    dev = load_shapesworld_dataset(tmp_path / "data")["dev"]
    model, processor = load_rahf()  # the embedded model: it marks some words right
    chosen = choose_marker_bias(model, processor, dev, biases=(1e4, 0.0, 1.0))
    assert [row["bias"] for row in chosen["table"]] == [1e4, 0.0, 1.0]
    best = max(row["f1"] for row in chosen["table"])
    assert chosen["bias"] == model.config.marker_logit_bias and best > 0
    assert next(row for row in chosen["table"] if row["bias"] == chosen["bias"])["f1"] == best
    assert chosen["table"][0]["recall"] == 0 and chosen["bias"] != 1e4  # a huge bias marks nothing

    # the command writes the same choice into the folder, and `rahf eval` then decodes with it
    folder = shutil.copytree(EMBEDDED_RAHF, tmp_path / "rahf")
    data = ["--data", str(tmp_path / "data"), "--split", "dev"]
    assert main(["rahf", "choose-marker-bias", "--model", str(folder), *data, "--biases", "10000", "0", "1"]) == 0
    assert json.loads((folder / "config.json").read_text())["marker_logit_bias"] == chosen["bias"]
    assert main(["rahf", "eval", "--model", str(folder), *data, "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["words/f1"] == pytest.approx(best)
    # --marker-bias overrides the folder's for one run
    worst = min(chosen["table"], key=lambda row: row["f1"])
    assert main(["rahf", "eval", "--model", str(folder), *data, "--marker-bias", str(worst["bias"]),
                 "--out", str(tmp_path / "eval-override")]) == 0
    assert json.loads((tmp_path / "eval-override" / "metrics.json").read_text())["words/f1"] == \
        pytest.approx(worst["f1"])
    assert "wrote marker_logit_bias" in capsys.readouterr().out
    assert main(["rahf", "choose-marker-bias", "--model", str(tmp_path / "nowhere"), *data]) == 2
    assert "RAHF folder with config.json" in capsys.readouterr().err


def test_misaligned_word_recall_is_counted_per_group_of_examples():
    from richfeedback.reward_models.rahf.evaluate import word_recall_by_group

    predicted = ["a red_0 circle", "a blue square on_0 the left", "a_0 green square", "two blue circles",
                 "a red_0 circle"]
    target = ["a red_0 circle", "a blue square on the left_0", "a_0 green_0 square_0", "two blue circles",
              "a red circle"]
    groups = ["wrong_colour", "wrong_position", "missing_object", "none", "none"]
    result = word_recall_by_group(predicted, target, groups)
    assert list(result) == ["missing_object", "none", "wrong_colour", "wrong_position"]
    assert result["wrong_colour"] == {"marked": 1, "found": 1, "false_marks": 0, "examples": 1, "recall": 1.0}
    assert result["wrong_position"] == {"marked": 1, "found": 0, "false_marks": 1, "examples": 1, "recall": 0.0}
    assert result["missing_object"]["found"] == 1 and result["missing_object"]["recall"] == 1 / 3
    assert result["none"] == {"marked": 0, "found": 0, "false_marks": 1, "examples": 2, "recall": None}
    with pytest.raises(ValueError, match="groups"):
        word_recall_by_group(predicted, target, groups[:2])
