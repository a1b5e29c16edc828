"""RAHF's scores behind the common reward-model interface."""

import numpy as np
import torch

from richfeedback.reward_models import list_reward_models, load_reward_model
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene


def test_the_four_rahf_scores_are_registered():
    assert {f"rahf:{s}" for s in ("plausibility", "alignment", "aesthetics", "overall")} <= set(list_reward_models())


def test_score_takes_arrays_and_is_independent_of_the_batch(tiny_rahf_dir):
    scorer = load_reward_model("rahf:plausibility", weights=str(tiny_rahf_dir))
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(3)]
    images = [render(s) for s in scenes]
    prompts = [s.prompt.text for s in scenes]
    together = scorer.score(prompts, images)
    alone = torch.cat([scorer.score([p], [im]) for p, im in zip(prompts, images)])
    assert together.shape == (3,) and ((0 <= together) & (together <= 1)).all()
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert scorer.name == "rahf:plausibility" and scorer.higher_is_better


def test_differentiable_path_gives_finite_gradients(tiny_rahf_dir):
    scorer = load_reward_model("rahf:aesthetics", weights=str(tiny_rahf_dir))
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    scorer.differentiable(["a red circle", "two blue squares"], images).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in scorer.parameters())


def test_heatmaps_come_through_their_own_method(tiny_rahf_dir):
    scorer = load_reward_model("rahf:overall", weights=str(tiny_rahf_dir))
    maps = scorer.heatmaps("a red circle", [render(sample_scene(np.random.default_rng(1)))])
    assert set(maps) == {"implausibility", "misalignment"} and maps["implausibility"].shape == (1, 32, 32)
    assert set(scorer.all_scores("a red circle", [np.zeros((32, 32, 3), np.uint8)])) == {
        "plausibility", "alignment", "aesthetics", "overall"}


def test_score_command_on_a_generate_folder_scores_the_manifests_images_only(tiny_rahf_dir, tmp_path, capsys):
    import json

    from richfeedback.cli import main
    from richfeedback.imaging import save_png

    rng = np.random.default_rng(2)
    rows = []
    for i in range(2):
        scene = sample_scene(rng)
        save_png(render(scene), tmp_path / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "prompt": scene.prompt.text})
    save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "grid.png")  # written by `generate`, has no prompt
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", str(tmp_path), "--model", f"rahf:overall={tiny_rahf_dir}",
                 "--out", str(tmp_path / "scores.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in scored] == [r["prompt"] for r in rows]
    assert "left out 1 others (e.g. grid.png)" in capsys.readouterr().err
