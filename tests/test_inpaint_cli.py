"""`inpaint-fix` end to end on the embedded models (2 denoising steps, 2 candidates): outputs, reports, resume, and
every bad-input case, which is reported while the other images are repaired."""

import json

import numpy as np
import pytest
from PIL import Image

from richfeedback.imaging import load_rgb
from richfeedback.inpaint.cli import main
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene

FAST = ["--n", "2", "--steps", "2"]


def scene(seed: int) -> np.ndarray:
    return render(sample_scene(np.random.default_rng(seed)))


def square_mask(size=64, lo=20, hi=40) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[lo:hi, lo:hi] = 255
    return mask


@pytest.fixture(scope="module")
def bad_inputs_run(tmp_path_factory):
    """One run over a folder mixing good images, every convertible mode and every broken case, each with a mask."""
    root = tmp_path_factory.mktemp("inpaint-cli")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(scene(0)).save(images / "good.png")
    Image.fromarray(np.dstack([scene(1), np.full((64, 64), 200, np.uint8)]), "RGBA").save(images / "rgba.png")
    Image.fromarray(scene(2)).convert("L").save(images / "gray.png")
    Image.fromarray(scene(3)).convert("P", palette=Image.ADAPTIVE, colors=16).save(images / "palette.png")
    Image.fromarray(scene(4)[..., 0].astype(np.uint16) * 257).save(images / "deep.png")  # 16-bit grayscale
    Image.fromarray(scene(5)).save(root / "full.png")
    (images / "truncated.png").write_bytes((root / "full.png").read_bytes()[:300])
    (images / "notimage.png").write_text("this is not an image")
    Image.fromarray(scene(6)).save(images / "wrongmask.png")
    Image.fromarray(scene(7)).save(images / "empty.png")
    for name in ("good", "rgba", "gray", "palette", "deep", "truncated", "notimage"):
        Image.fromarray(square_mask()).save(masks / f"{name}.png")
    Image.fromarray(square_mask(32, 8, 16)).save(masks / "wrongmask.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "empty.png")
    out = root / "out"
    argv = [str(images), "--prompt", "a red circle on the left", "--mask", str(masks), "--out", str(out), *FAST]
    code = main(argv)
    reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
    return {"code": code, "images": images, "out": out, "reports": reports, "argv": argv}


def test_a_run_with_bad_files_finishes_the_others_and_exits_1(bad_inputs_run):
    assert bad_inputs_run["code"] == 1
    reports = bad_inputs_run["reports"]
    assert len(reports) == 9
    assert sorted(n for n, r in reports.items() if r["status"] == "error") == ["notimage", "truncated", "wrongmask"]
    summary = json.loads((bad_inputs_run["out"] / "summary.json").read_text())
    assert len(summary["errors"]) == 3 and summary["num_images"] == 9


def test_unreadable_and_truncated_files_are_named_in_one_line(bad_inputs_run):
    for name in ("truncated", "notimage"):
        message = bad_inputs_run["reports"][name]["message"]
        assert f"{name}.png: not a readable image" in message and "\n" not in message


def test_mask_of_another_size_is_reported_with_the_fix(bad_inputs_run):
    message = bad_inputs_run["reports"]["wrongmask"]["message"]
    assert "the mask is 32x32 but its image is 64x64; save the mask at the image's size" in message


def test_empty_mask_copies_the_image_through_and_says_so(bad_inputs_run):
    report = bad_inputs_run["reports"]["empty"]
    assert report["status"] == "nothing_to_fix" and "nothing to fix, copied through" in report["message"]
    out = load_rgb(bad_inputs_run["out"] / report["outputs"]["fixed"])
    assert np.array_equal(out, load_rgb(bad_inputs_run["images"] / "empty.png"))


@pytest.mark.parametrize("name,note", [("rgba", "alpha composited on white"), ("gray", "grayscale"),
                                       ("palette", "palette"), ("deep", "16-bit")])
def test_other_modes_are_converted_to_rgb_and_repaired(bad_inputs_run, name, note):
    report = bad_inputs_run["reports"][name]
    assert report["status"] in ("fixed", "kept_original") and note in report["input_note"]
    fixed = np.asarray(Image.open(bad_inputs_run["out"] / report["outputs"]["fixed"]))
    assert fixed.shape == (64, 64, 3)
    original = load_rgb(bad_inputs_run["images"] / f"{name}.png")
    outside = square_mask() == 0
    assert np.array_equal(fixed[outside], original[outside])


def test_report_has_scores_candidates_and_mask_area(bad_inputs_run):
    report = bad_inputs_run["reports"]["good"]
    assert report["reward"] == "rahf:mask-heat"  # minus the mean heat inside the mask: in [-1, 0]
    assert -1 <= report["score_before"] <= 0 and report["score_after"] >= report["score_before"]
    assert [c["seed"] for c in report["candidates"]] == [0, 1]
    # the embedded RAHF comes with the embedded artifact segmenter, and the report says so
    assert report["settings"]["artifact_model"] == "embedded" and report["settings"]["artifact_cut"] == 0.5
    assert report["mask"]["source"] == "mask file" and report["mask"]["area"] == pytest.approx(400 / 4096)
    assert report["pixels_changed_outside_mask"] == 0
    if report["status"] == "fixed":
        assert report["chosen"]["seed"] == report["candidates"][report["chosen"]["index"]]["seed"]
        assert report["score_after"] > report["score_before"]
    else:
        assert report["chosen"] is None and report["score_after"] == report["score_before"]
    out = bad_inputs_run["out"]
    for key in ("fixed", "mask", "overlay", "strip", "candidates"):
        assert (out / report["outputs"][key]).is_file(), key
    manifest = [json.loads(line) for line in (out / "fixed" / "manifest.jsonl").read_text().splitlines()]
    assert {row["file_name"] for row in manifest} >= {"good.png", "empty.png"} and len(manifest) == 6
    assert (out / "index.html").is_file()


def test_a_rerun_skips_finished_images(bad_inputs_run):
    report_path = bad_inputs_run["out"] / "reports" / "good.json"
    before = report_path.stat().st_mtime_ns
    assert main(bad_inputs_run["argv"]) == 1  # the broken files are still broken
    assert report_path.stat().st_mtime_ns == before


def test_heatmap_file_goes_through_threshold_and_dilation(tmp_path):
    Image.fromarray(scene(8)).save(tmp_path / "img.png")
    heat = np.zeros((16, 16), np.uint8)
    heat[6:8, 6:8] = 255  # hot 2x2 cells of a 16x16 heatmap: 8x8 image pixels at 24..31
    Image.fromarray(heat).save(tmp_path / "heat.png")
    out = tmp_path / "out"
    code = main([str(tmp_path / "img.png"), "--prompt", "a blue square", "--heatmap", str(tmp_path / "heat.png"),
                 "--threshold", "0.5", "--dilate", "4", "--out", str(out), *FAST])
    assert code == 0
    report = json.loads((out / "reports" / "img.json").read_text())
    mask = np.asarray(Image.open(out / "masks" / "img.png")) > 0
    assert report["mask"]["source"] == "heatmap file" and report["mask"]["threshold"] == 0.5
    assert mask[24:32, 24:32].all() and mask.sum() > 64  # dilated beyond the hot block
    assert mask.sum() % 16 == 0  # rounded to the embedded VAE's 4x4-pixel latent cells


def test_a_cold_heatmap_copies_the_image_through_and_says_how_to_repaint_anyway(tmp_path):
    Image.fromarray(scene(8)).save(tmp_path / "img.png")
    Image.fromarray(np.full((16, 16), 10, np.uint8)).save(tmp_path / "heat.png")  # 0.04 everywhere, under the floor
    out = tmp_path / "out"
    assert main([str(tmp_path / "img.png"), "--prompt", "a blue square", "--heatmap", str(tmp_path / "heat.png"),
                 "--out", str(out), *FAST]) == 0
    report = json.loads((out / "reports" / "img.json").read_text())
    assert report["status"] == "nothing_to_fix"
    assert "above the threshold" in report["message"] and "--threshold q0.95" in report["message"]
    assert np.array_equal(load_rgb(out / report["outputs"]["fixed"]), load_rgb(tmp_path / "img.png"))


def test_generate_folder_supplies_prompts_and_predicted_heatmaps_make_masks(tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    Image.fromarray(scene(9)).save(folder / "a.png")
    Image.fromarray(scene(9)).save(folder / "grid.png")  # not in the manifest: not an input
    (folder / "manifest.jsonl").write_text(json.dumps({"file_name": "a.png", "prompt": "a green circle"}) + "\n")
    out = tmp_path / "out"
    # the hottest 5% whatever the heat (no floor, no growth): a clean scene gets a mask too
    assert main([str(folder), "--threshold", "q0.95", "--floor", "0", "--grow", "none", "--out", str(out), *FAST]) == 0
    report = json.loads((out / "reports" / "a.json").read_text())
    assert report["prompt"] == "a green circle" and report["mask"]["source"] == "heatmap"
    assert 0.04 <= report["mask"]["area"] <= 0.5  # the hottest 5%, dilated and rounded up
    assert not (out / "reports" / "grid.json").exists()


@pytest.mark.parametrize("args,message", [
    (["--threshold", "hot"], "threshold 'hot' is not understood"),
    (["--grow", "warm"], "threshold 'warm' is not understood"),
    (["--floor", "1.5"], "--floor 1.5 is outside [0, 1]"),
    (["--n", "0"], "--n must be at least 1"),
    (["--strength", "1.5"], "--strength must be in (0, 1]"),
    (["--mask", "nowhere/"], "--mask nowhere/: no such file or folder"),
    (["--alignment-guard", "lots"], "--alignment-guard lots: give a number >= 0 or none"),
    (["--artifact-cut", "1.5"], "--artifact-cut 1.5: give a probability in [0, 1)"),
    (["--artifact-model", "nowhere"], "nowhere: no such folder; --artifact-model takes 'embedded'"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    Image.fromarray(scene(0)).save(tmp_path / "img.png")
    code = main([str(tmp_path / "img.png"), "--prompt", "x", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("inpaint-fix: error:")


def test_richfeedback_has_the_inpaint_fix_subcommand():
    from richfeedback.cli import build_parser

    args = build_parser().parse_args(["inpaint-fix", "img.png", "--prompt", "x", "--out", "o"])
    assert args.n == 8 and args.func.__name__ == "cmd_inpaint_fix"


def test_cli_mask_defaults_are_mask_configs_defaults():
    import dataclasses

    from richfeedback.inpaint.cli import DEFAULT_MASK, add_arguments, settings_from_args
    from richfeedback.inpaint.masks import MaskConfig

    defaults = {k: v for k, v in dataclasses.asdict(MaskConfig()).items() if k != "round_to_cells"}
    assert DEFAULT_MASK == defaults
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    mask = settings_from_args(parser.parse_args(["img.png", "--out", "o"])).mask
    assert (mask.threshold, mask.floor, mask.grow, mask.feather) == (str(MaskConfig().threshold), MaskConfig().floor,
                                                                      MaskConfig().grow, MaskConfig().feather)
    grown = settings_from_args(parser.parse_args(["img.png", "--out", "o", "--threshold", "r0.6", "--floor", "0.1",
                                                  "--grow", "r0.3"])).mask
    assert (grown.threshold, grown.floor, grown.grow) == ("r0.6", 0.1, "r0.3")
    assert settings_from_args(parser.parse_args(["img.png", "--out", "o", "--grow", "none"])).mask.grow is None


def test_artifact_folder_for_the_demo_reads_like_a_generate_folder(tmp_path):
    from richfeedback.inpaint.examples import write_artifact_folder
    from richfeedback.shapesworld.oracle import evaluate

    folder = write_artifact_folder(tmp_path / "artifacts", n=3, seed=0)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert evaluate(row["prompt"], load_rgb(folder / row["file_name"])).has_artifact


def test_oracle_repair_changes_only_the_masked_pixels_and_leaves_nothing_flagged():
    from richfeedback.inpaint.examples import artifact_examples, oracle_repair
    from richfeedback.shapesworld.oracle import evaluate

    for example in artifact_examples(6, seed=3):
        image = example["image"]
        mask, target = oracle_repair(example["prompt"], image, dilate=2, cell=4)
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert (mask & example["before"].artifact_map).sum() == example["before"].artifact_map.sum()  # covers it
        cells = mask.reshape(16, 4, 16, 4).any((1, 3))  # 64x64 images, 4-pixel latent cells
        assert cells.sum() * 16 == mask.sum()  # whole cells only
        assert (target[~mask] == image[~mask]).all()
        assert (target[mask] != image[mask]).any()
        assert not evaluate(example["prompt"], target).has_artifact
    scene = sample_scene(np.random.default_rng(0))
    assert oracle_repair(scene.prompt.text, render(scene)) is None  # a clean render: nothing to repair


def test_a_rerun_with_other_models_redoes_the_image_and_with_the_same_ones_skips_it(tmp_path):
    """The resume key holds the models too: a retrained segmenter in the same folder, or another heatmap model, is
    not answered with the old report."""
    import torch

    from richfeedback.reward_models.artifact_segmenter import load_artifact_segmenter

    Image.fromarray(scene(9)).save(tmp_path / "img.png")
    folder = tmp_path / "segmenter"
    load_artifact_segmenter().save_pretrained(folder)
    out = tmp_path / "out"
    argv = [str(tmp_path / "img.png"), "--prompt", "a red circle", "--artifact-model", str(folder), "--out", str(out),
            *FAST]
    assert main(argv) == 0
    report_path = out / "reports" / "img.json"
    first = json.loads(report_path.read_text())
    assert first["models"]["inpaint_model"] == first["models"]["heatmap_model"] == "embedded"
    assert first["models"]["artifact_segmenter_weights"] and first["models"]["reward"] == "rahf:mask-heat"
    stamp = report_path.stat().st_mtime_ns
    assert main(argv) == 0 and report_path.stat().st_mtime_ns == stamp  # same models: skipped
    retrained = load_artifact_segmenter(folder)
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    retrained.save_pretrained(folder)  # same folder, other weights
    assert main(argv) == 0 and report_path.stat().st_mtime_ns != stamp
    second = json.loads(report_path.read_text())
    assert second["models"]["artifact_segmenter_weights"] != first["models"]["artifact_segmenter_weights"]


def test_a_rerun_with_other_rahf_weights_at_the_same_path_redoes_the_image(tmp_path):
    """A RAHF retrained into the same folder (its path, and so `models["heatmap_model"]`, unchanged) makes other
    heatmaps and scores: the old report must not answer for it, whether it is the heatmap model or a reward term's
    own weights."""
    import shutil

    import torch

    from richfeedback.reward_models.rahf.modeling import RAHFModel
    from richfeedback.reward_models.rahf.predict import embedded_rahf_path

    Image.fromarray(scene(9)).save(tmp_path / "img.png")
    folder = tmp_path / "rahf"
    shutil.copytree(embedded_rahf_path(), folder)
    out = tmp_path / "out"
    argv = [str(tmp_path / "img.png"), "--prompt", "a red circle", "--heatmap-model", str(folder),
            "--reward", f"rahf:plausibility={folder}", "--out", str(out), *FAST]
    assert main(argv) == 0
    report_path = out / "reports" / "img.json"
    first = json.loads(report_path.read_text())["models"]
    assert first["heatmap_model_weights"] == first["reward_weights"]  # one folder: the same fingerprint
    stamp = report_path.stat().st_mtime_ns
    assert main(argv) == 0 and report_path.stat().st_mtime_ns == stamp  # same weights: skipped
    retrained = RAHFModel.from_pretrained(folder)
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    retrained.save_pretrained(folder)  # same folder, other weights
    assert main(argv) == 0 and report_path.stat().st_mtime_ns != stamp
    second = json.loads(report_path.read_text())["models"]
    assert second["heatmap_model"] == first["heatmap_model"]  # the path alone could not tell
    assert second["heatmap_model_weights"] != first["heatmap_model_weights"]
    assert second["reward_weights"] != first["reward_weights"]
