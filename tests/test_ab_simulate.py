"""`ab simulate`: RichHF-style simulated raters answer the page's questions from ShapesWorld's latent qualities."""

import json

from test_ab_make import make_shapes_ab  # noqa: E402  (tests/ is on sys.path under pytest)

from richfeedback.cli import main
from richfeedback.eval.ab.simulate import five_point_answer, simulate_study


def test_likert_differences_map_onto_the_five_point_scale():
    assert [five_point_answer(d) for d in (-2.0, -1.0, -0.4, 0.0, 0.49, 0.5, 1.49, 1.5)] == [-2, -1, 0, 0, 0, 1, 1, 2]


def test_noiseless_raters_see_every_stray_blob_and_agree(tmp_path):
    # A: exact renders; B: the same with a stray blob, which costs at least a quarter of the plausibility (a Likert
    # point), and nothing of the alignment.
    ab = make_shapes_ab(tmp_path, questions="overall,plausibility,alignment,aesthetics")
    paths, summary = simulate_study(ab, n_raters=2, noise=0.0, n_resamples=200, progress=False)
    q = summary["questions"]
    assert q["plausibility"]["win_rate_b"] == 0.0 and q["plausibility"]["ratings"] == 12
    assert q["alignment"]["win_rate_b"] == 0.5
    assert q["aesthetics"]["win_rate_b"] <= 0.5  # the blob also damages the aesthetics, a little
    assert q["plausibility"]["agreement"]["percent_agreement_5point"] == 1.0
    # The exports are the page's own format: `ab results` reads them like a human's.
    assert main(["ab", "results", str(ab), "--ratings", *map(str, paths), "--bootstrap", "200"]) == 0
    results = json.loads((ab / "results" / "results.json").read_text())["questions"]
    assert results["plausibility"]["win_rate_b"] == 0.0


def test_noisy_raters_disagree_sometimes_and_reproducibly(tmp_path):
    ab = make_shapes_ab(tmp_path)
    _, first = simulate_study(ab, n_raters=3, noise=1.0, seed=1, n_resamples=200, progress=False)
    _, again = simulate_study(ab, n_raters=3, noise=1.0, seed=1, n_resamples=200, progress=False)
    assert first["questions"] == again["questions"]
    assert first["questions"]["plausibility"]["agreement"]["percent_agreement_5point"] < 1.0
    assert first["questions"]["plausibility"]["win_rate_b"] < 0.5


def test_non_shapesworld_prompts_are_refused_in_one_line(tmp_path, capsys):
    from test_ab_make import shapes_folder

    from richfeedback.eval.ab import make_ab

    folder = shapes_folder(tmp_path / "x", ["a red circle on the left"], [0])
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    rows[0]["prompt"] = "a photo of a cat"
    (folder / "manifest.jsonl").write_text(json.dumps(rows[0]) + "\n")
    make_ab(str(folder), str(folder), ["a photo of a cat"], [0], tmp_path / "AB", progress=False)
    assert main(["ab", "simulate", str(tmp_path / "AB")]) == 2
    assert "need ShapesWorld prompts" in capsys.readouterr().err
