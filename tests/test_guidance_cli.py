"""`richfeedback generate --guidance ...`: guided folders record their guidance; bad input is one line, exit 2."""

import json

from richfeedback.cli import main


def _rows(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_generate_with_guidance_records_it_in_the_manifest(tmp_path):
    out = tmp_path / "guided"
    assert main(["generate", "--prompt", "a red circle on the left", "--n", "2", "--steps", "4", "--cfg-scale", "3",
                 "--guidance", "0.7*rahf:aesthetics+0.3*rahf:plausibility", "--guidance-scale", "0.2",
                 "--guidance-every", "1", "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 2 and (out / "grid.png").exists()
    assert rows[0]["guidance_scale"] == 3.0  # the classifier-free guidance scale
    assert rows[0]["guidance"] == {"reward": "0.7*rahf:aesthetics+0.3*rahf:plausibility", "scale": 0.2, "every": 1,
                                   "window": [0.0, 0.6], "normalize": "rms", "path": "cheap", "decoder": "auto"}


def test_guidance_scale_alone_guides_the_embedded_model_by_the_latent_aesthetic_model(tmp_path):
    out = tmp_path / "default"
    assert main(["generate", "--prompt", "two blue squares", "--n", "1", "--steps", "4", "--guidance-scale", "0.1",
                 "--out", str(out)]) == 0
    assert _rows(out)[0]["guidance"]["reward"] == "latent-aesthetic"
    assert _rows(out)[0]["guidance"]["path"] == "noise-aware"


def test_unknown_reward_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["generate", "--prompt", "a red circle", "--guidance", "rahf:beauty", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the reward 'rahf:beauty'" in err and "Traceback" not in err


def test_guidance_scale_without_a_reward_on_another_model_says_what_to_pass(tmp_path, capsys):
    assert main(["generate", "--prompt", "a cat", "--model", str(tmp_path / "sd"), "--guidance-scale", "0.1",
                 "--out", str(tmp_path / "o")]) == 2
    assert "needs --guidance REWARD" in capsys.readouterr().err


def test_side_by_side_sheet_pairs_guided_with_unguided_images(tmp_path, capsys):
    from richfeedback.guidance.sheet import main as sheet_main
    from richfeedback.imaging import load_rgb

    args = ["--prompt", "a red circle on the left", "--n", "2", "--steps", "4"]
    assert main(["generate", *args, "--out", str(tmp_path / "u")]) == 0
    assert main(["generate", *args, "--guidance-scale", "0.1", "--out", str(tmp_path / "g")]) == 0
    assert sheet_main([str(tmp_path / "u"), str(tmp_path / "g"), "--out", str(tmp_path / "sheet.png")]) == 0
    sheet = load_rgb(tmp_path / "sheet.png")
    assert sheet.shape[1] == 4 * (128 + 2) + 2  # two pairs in one row, 64 px images shown at 2x
    assert "rahf:aesthetics" not in capsys.readouterr().err
    assert sheet_main([str(tmp_path / "u"), str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 2
    assert "nope/manifest.jsonl not found" in capsys.readouterr().err
