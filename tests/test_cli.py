"""The command line: commands run end to end; bad input is one clear line and exit status 2."""

import json

from richfeedback.cli import main


def test_generate_then_oracle_end_to_end(tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--prompt", "a red circle on the left", "--prompt", "two blue squares", "--n", "2",
                 "--steps", "4", "--out", str(out)]) == 0
    assert len([p for p in out.glob("*.png") if p.name != "grid.png"]) == 4 and (out / "grid.png").exists()
    assert main(["oracle", str(out)]) == 0
    summary = json.loads((out / "oracle_summary.json").read_text())
    assert summary["num_images"] == 4 and 0.0 <= summary["prompt_accuracy"] <= 1.0
    assert len((out / "oracle.jsonl").read_text().splitlines()) == 4
    assert "full-prompt accuracy" in capsys.readouterr().out


def test_prompts_command_writes_heldout_prompts(tmp_path):
    from richfeedback.shapesworld.scene import is_heldout_prompt

    assert main(["shapesworld", "prompts", "--n", "5", "--split", "heldout", "--out", str(tmp_path / "p.txt")]) == 0
    prompts = (tmp_path / "p.txt").read_text().splitlines()
    assert len(prompts) == 5 and all(is_heldout_prompt(p) for p in prompts)


def test_sample_sheet_is_written(tmp_path):
    assert main(["shapesworld", "sample", "--n", "3", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "samples.png").exists()
    assert len(json.loads((tmp_path / "samples.json").read_text())["rows"]) == 3


def test_missing_prompts_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["generate", "--prompts", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nope.txt: no such prompts file" in err and "Traceback" not in err


def test_oracle_on_a_folder_without_manifest_says_what_it_needs(tmp_path, capsys):
    assert main(["oracle", str(tmp_path)]) == 2
    assert "manifest.jsonl not found" in capsys.readouterr().err


def test_oracle_skips_unreadable_images_and_foreign_prompts(tmp_path, capsys):
    from richfeedback.imaging import save_png
    from richfeedback.shapesworld.render import render_objects
    from richfeedback.shapesworld.scene import SceneObject

    save_png(render_objects([SceneObject("red", "circle", 0.25, 0.5, 0.12)]), tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"file_name": "ok.png", "prompt": "a red circle on the left"},
            {"file_name": "bad.png", "prompt": "a red circle"},
            {"file_name": "ok.png", "prompt": "an astronaut riding a horse"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["oracle", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "oracle_summary.json").read_text())
    assert summary["num_images"] == 1 and summary["prompt_accuracy"] == 1.0 and len(summary["skipped"]) == 2
