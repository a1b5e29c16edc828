"""`richfeedback score` end to end on a folder with one corrupt image, and its one-line errors."""

import argparse
import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from richfeedback.cli import UsageError, build_parser
from richfeedback.reward_models.cli import add_score_command, main
from richfeedback.reward_models.tiny_checkpoints import write_tiny_aesthetic, write_tiny_pickscore


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {"aesthetic": write_tiny_aesthetic(root / "aesthetic").parent,
            "pickscore": write_tiny_pickscore(root / "pickscore")}


@pytest.fixture
def generated(tmp_path):
    """A folder as `richfeedback generate` leaves it: PNGs and manifest.jsonl; one PNG is corrupt."""
    folder = tmp_path / "gen"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, prompt in enumerate(["a red circle on the left", "two blue squares", "a yellow triangle"]):
        name = f"{i:05d}.png"
        if i == 1:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        else:
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)
        rows.append({"file_name": name, "prompt": prompt, "seed": i})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def run_score(argv):
    parser = argparse.ArgumentParser(prog="richfeedback")
    add_score_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", *argv])
    args.func(args)


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scores_a_folder_with_every_model_and_skips_the_corrupt_image(generated, weights, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    run_score([str(generated), "--model", f"aesthetic={weights['aesthetic']}",
               "--model", f"pickscore={weights['pickscore']}", "--out", str(out), "--batch-size", "2"])
    rows = read_rows(out)
    assert [r["image"] for r in rows] == [str(generated / "00000.png"), str(generated / "00002.png")]
    assert [r["prompt"] for r in rows] == ["a red circle on the left", "a yellow triangle"]  # from manifest.jsonl
    assert all(isinstance(r["aesthetic"], float) and isinstance(r["pickscore"], float) for r in rows)
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "00001.png" in captured.err
    assert f"scored 2 images with aesthetic, pickscore: {out}" in captured.out


def test_scores_match_the_library(generated, weights, tmp_path):
    from richfeedback.reward_models import load_reward_model

    out = tmp_path / "scores.jsonl"
    run_score([str(generated / "00000.png"), "--prompt", "a cat", "--model", f"pickscore={weights['pickscore']}",
               "--out", str(out)])
    expected = load_reward_model("pickscore", weights["pickscore"]).score("a cat", generated / "00000.png")
    assert read_rows(out)[0]["pickscore"] == pytest.approx(float(expected), abs=1e-5)


def test_prompt_free_models_need_no_prompts(generated, weights, tmp_path):
    (generated / "manifest.jsonl").unlink()
    out = tmp_path / "scores.jsonl"
    run_score([str(generated), "--model", f"aesthetic={weights['aesthetic']}", "--out", str(out)])
    assert [r["prompt"] for r in read_rows(out)] == [None, None]


def test_models_that_need_prompts_say_how_to_give_them(generated, weights, tmp_path):
    (generated / "manifest.jsonl").unlink()
    with pytest.raises(UsageError, match="pickscore score images against prompts: give --prompt"):
        run_score([str(generated), "--model", f"pickscore={weights['pickscore']}", "--out", str(tmp_path / "s.jsonl")])


def test_a_prompts_file_must_have_one_line_per_image(generated, weights, tmp_path):
    (tmp_path / "prompts.txt").write_text("only one\n")
    with pytest.raises(UsageError, match="1 prompts for 3 images"):
        run_score([str(generated), "--prompts", str(tmp_path / "prompts.txt"), "--model", "aesthetic",
                   "--out", str(tmp_path / "s.jsonl")])


def test_missing_weights_are_one_line_naming_the_file_to_fetch(generated, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RICHFEEDBACK_WEIGHTS", str(tmp_path / "empty"))
    assert main(["score", str(generated), "--model", "hpsv2.1", "--out", str(tmp_path / "s.jsonl")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("richfeedback: error: hpsv2.1: HPS_v2.1_compressed.pt not found")
    assert "hf download xswu/HPSv2 HPS_v2.1_compressed.pt" in error and "\n" not in error


def test_unknown_models_are_refused_with_the_known_names(generated, tmp_path):
    with pytest.raises(UsageError, match="unknown model 'pickscor'.*pickscore"):
        run_score([str(generated), "--model", "pickscor", "--out", str(tmp_path / "s.jsonl")])


def score_is_wired():
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["score", "x", "--model", "aesthetic", "--out", "o"])
        return True
    except SystemExit:
        return False


@pytest.mark.skipif(not score_is_wired(), reason="`score` is not wired into richfeedback.cli yet")
def test_richfeedback_command_runs_score(generated, weights, tmp_path):
    from richfeedback.cli import main as richfeedback_main

    out = tmp_path / "scores.jsonl"
    assert richfeedback_main(["score", str(generated), "--model", f"aesthetic={weights['aesthetic']}",
                              "--out", str(out)]) == 0
    assert len(read_rows(out)) == 2
