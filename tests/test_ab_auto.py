"""`ab auto`: the ShapesWorld oracle and reward models rate an AB folder in the human-ratings format."""

import json

import numpy as np
import pytest

from test_ab_make import make_shapes_ab  # noqa: E402  (tests/ is on sys.path under pytest)

from richfeedback.cli import main
from richfeedback.eval.ab import read_ab, run_auto
from richfeedback.eval.ab.auto import reward_values


def test_oracle_prefers_the_clean_renders_and_sees_equal_alignment(tmp_path):
    # A: exact renders of every prompt; B: the same renders with a stray blob. The oracle must find every blob.
    ab = make_shapes_ab(tmp_path, questions="overall,plausibility,alignment,aesthetics")
    summary = run_auto(ab, ["oracle"], n_resamples=200, progress=False)["oracle"]["questions"]
    assert summary["plausibility"]["win_rate_b"] == 0.0 and summary["plausibility"]["a_better"] == 6
    assert summary["overall"]["win_rate_b"] == 0.0
    assert summary["alignment"]["win_rate_b"] == 0.5 and summary["alignment"]["same"] == 6
    assert "aesthetics" not in summary  # the oracle has no exact aesthetics
    rows = [json.loads(line) for line in (ab / "auto" / "oracle" / "preferences.jsonl").read_text().splitlines()]
    # Artifact against none is "much better" on plausibility.
    assert {(r["choice"], r["strength"]) for r in rows if r["question"] == "plausibility"} == {("a", 2)}
    assert set(rows[0]) >= {"prompt", "image_a", "image_b", "choice", "strength", "question", "rater"}
    assert "| [oracle](oracle/report.md) | 0.000" in (ab / "auto" / "report.md").read_text()


def test_reward_model_rater_follows_its_scores(tmp_path, tiny_rahf_dir):
    ab = make_shapes_ab(tmp_path)
    main_args = ["ab", "auto", str(ab), "--model", f"rahf:plausibility={tiny_rahf_dir}", "--model", "oracle",
                 "--bootstrap", "200"]
    assert main(main_args) == 0
    rows = [json.loads(line) for line in
            (ab / "auto" / "rahf-plausibility" / "preferences.jsonl").read_text().splitlines()]
    _, pairs = read_ab(ab)
    assert len(rows) == len(pairs) and {r["question"] for r in rows} == {"plausibility"}
    for r in rows:
        expected = "b" if r["score_b"] > r["score_a"] else "a" if r["score_b"] < r["score_a"] else "tie"
        assert r["choice"] == expected
    overview = (ab / "auto" / "report.md").read_text()
    assert "[oracle]" in overview and "[rahf-plausibility]" in overview


def test_reward_values_ties_within_the_margin_and_much_better_above_the_median_gap():
    a = np.array([0.50, 0.50, 0.50, 0.50, 0.50])
    b = np.array([0.51, 0.60, 0.20, 0.90, 0.50])
    # Gaps +0.01, +0.1, -0.3, +0.4, 0: with margin 0.05 the first is a tie; the median decided gap is 0.3.
    assert reward_values(a, b, tie_margin=0.05).tolist() == [0, 1, -1, 2, 0]
    assert reward_values(a, a).tolist() == [0] * 5


def test_unknown_reward_model_is_a_one_line_error(tmp_path, capsys):
    ab = make_shapes_ab(tmp_path)
    assert main(["ab", "auto", str(ab), "--model", "nosuchmodel"]) == 2
    assert "unknown reward model 'nosuchmodel'" in capsys.readouterr().err


def test_a_question_the_model_cannot_answer_is_refused(tmp_path):
    from richfeedback.errors import UsageError

    ab = make_shapes_ab(tmp_path, questions="alignment")
    with pytest.raises(UsageError, match="answers the question 'aesthetics'"):
        run_auto(ab, ["rahf:aesthetics"], progress=False)


def test_a_reward_adapter_reaches_load_reward_model(tmp_path, tiny_rahf_dir, capsys):
    ab = make_shapes_ab(tmp_path, questions="plausibility")
    assert main(["ab", "auto", str(ab), "--model",
                 f"rahf:plausibility={tiny_rahf_dir},adapter={tmp_path / 'no-adapter'}"]) == 2
    assert f"{tmp_path / 'no-adapter'} is not a reward adapter" in capsys.readouterr().err
