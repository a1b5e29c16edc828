"""A/B statistics on hand-computed cases: ties as half a win, side un-randomisation, merging raters, agreement,
and the coverage of the bootstrap intervals on simulated studies."""

import json
import math

import numpy as np
import pytest

from richfeedback.errors import UsageError
from richfeedback.eval.ab.ratings import collect_preferences, read_ratings_file, to_preference
from richfeedback.eval.ab.stats import (cluster_bootstrap_mean, cohen_kappa, elo_difference, fleiss_kappa,
                                        majority_choice, question_summary, study_summary)


def row(pair, choice, strength=1, rater="r1", prompt=None, question="overall"):
    return {"pair_id": pair, "prompt": prompt or f"prompt {pair}", "choice": choice,
            "strength": 0 if choice == "tie" else strength, "rater": rater, "question": question}


def test_ties_count_half_a_win():
    rows = [row("p0", "b"), row("p1", "tie"), row("p2", "a"), row("p3", "b", 2)]
    summary = question_summary(rows, n_resamples=200)
    assert summary["win_rate_b"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert (summary["a_better"], summary["same"], summary["b_better"]) == (1, 1, 2)
    # Five-point preference from B's side: +1, 0, -1, +2.
    assert summary["preference_b"] == pytest.approx(0.5)


def test_a_pair_counts_once_however_many_raters_saw_it():
    rows = [row("p0", "b", rater="r1"), row("p0", "a", rater="r2"), row("p0", "a", rater="r3"),
            row("p1", "b", rater="r1")]
    summary = question_summary(rows, n_resamples=200)
    assert summary["win_rate_b"] == pytest.approx((1 / 3 + 1) / 2)
    assert summary["majority"] == {"a": 1, "tie": 0, "b": 1}
    assert majority_choice(["a", "b"]) == "tie"


def test_side_randomisation_is_undone():
    pair = {"pair_id": "p0", "prompt": "x", "prompt_index": 0, "seed": 3, "image_a": "images/a/0.png",
            "image_b": "images/b/0.png"}
    from pathlib import Path

    # -2 means "left much better": with B on the left that is B much better, with A on the left A much better.
    b_left = to_preference({**pair, "left": "b"}, "overall", "r", -2, Path("/ab"))
    a_left = to_preference({**pair, "left": "a"}, "overall", "r", -2, Path("/ab"))
    assert (b_left["choice"], b_left["strength"]) == ("b", 2)
    assert (a_left["choice"], a_left["strength"]) == ("a", 2)
    assert to_preference({**pair, "left": "b"}, "overall", "r", 1, Path("/ab"))["choice"] == "a"
    assert to_preference({**pair, "left": "a"}, "overall", "r", 0, Path("/ab"))["choice"] == "tie"
    assert b_left["image_a"] == str(Path("/ab/images/a/0.png").resolve())


def test_elo_difference_of_a_three_to_one_win_rate():
    assert elo_difference(0.75) == pytest.approx(400 * math.log10(3))  # 190.8
    assert elo_difference(0.5) == 0.0
    assert elo_difference(1.0) is None


def test_fleiss_and_cohen_kappa_by_hand():
    # Two items, two raters each: (a, a) and (a, b). Observed agreement 0.5; category shares 3/4, 1/4 give an
    # expected agreement of 0.625, so kappa = (0.5 - 0.625) / 0.375 = -1/3.
    assert fleiss_kappa(np.array([[2, 0, 0], [1, 0, 1]])) == pytest.approx(-1 / 3)
    assert fleiss_kappa(np.array([[3, 0, 0], [0, 0, 3], [0, 2, 0]])) == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[2, 0, 0], [3, 0, 0]])) is None  # one category only: undefined
    # Observed 0.75; expected 0.5 * 0.25 + 0.5 * 0.75 = 0.5; kappa 0.5.
    assert cohen_kappa(list("aabb"), list("abbb")) == pytest.approx(0.5)


def test_agreement_in_the_study_summary():
    rows = [row("p0", "b", rater="r1"), row("p0", "b", rater="r2"), row("p1", "a", rater="r1"),
            row("p1", "tie", rater="r2"), row("p2", "b", rater="r1")]
    agreement = study_summary(rows, ["overall"], n_resamples=100)["questions"]["overall"]["agreement"]
    assert agreement["pairs_with_several_raters"] == 2
    assert agreement["percent_agreement_3way"] == 0.5
    assert agreement["cohen_kappa_3way"][0]["raters"] == ["r1", "r2"]
    assert agreement["cohen_kappa_3way"][0]["pairs"] == 2


def test_bootstrap_with_one_value_per_cluster_is_the_plain_bootstrap():
    values = np.array([0.0, 1.0] * 20)
    lo, hi = cluster_bootstrap_mean(values, list(range(40)), n_resamples=4000, seed=0)
    se = math.sqrt(0.25 / 40)
    assert lo == pytest.approx(0.5 - 1.96 * se, abs=0.03) and hi == pytest.approx(0.5 + 1.96 * se, abs=0.03)
    assert cluster_bootstrap_mean(values, list(range(40)), seed=1) == cluster_bootstrap_mean(values,
                                                                                             list(range(40)), seed=1)


def simulated_study(rng, n_prompts=40, seeds=2):
    """Prompts that favour B (60%) or A (40%); a favoured system wins 90% of its seeds. True win rate of B: 0.58."""
    rows = []
    for p in range(n_prompts):
        favours_b = rng.random() < 0.6
        for s in range(seeds):
            b_wins = rng.random() < (0.9 if favours_b else 0.1)
            rows.append(row(f"p{p}-{s}", "b" if b_wins else "a", prompt=f"prompt {p}"))
    return rows


def test_prompt_bootstrap_intervals_cover_the_true_win_rate_95_percent_of_the_time():
    # Seeds of one prompt are correlated here, as with real generators: resampling prompts keeps the nominal 95%,
    # resampling pairs as if they were independent does not.
    rng = np.random.default_rng(0)
    truth, n_studies = 0.6 * 0.9 + 0.4 * 0.1, 300
    covered = {"prompt": 0, "pair": 0}
    for study in range(n_studies):
        rows = simulated_study(rng)
        for unit in covered:
            lo, hi = question_summary(rows, n_resamples=500, seed=study, unit=unit)["win_rate_b_ci"]
            covered[unit] += lo <= truth <= hi
    assert 0.90 <= covered["prompt"] / n_studies <= 0.99
    assert covered["pair"] / n_studies < covered["prompt"] / n_studies - 0.05


# ----------------------------------------------------------------------------- reading exports
AB_META = {"id": "abc123", "questions": [{"name": "overall", "text": "?"}, {"name": "alignment", "text": "?"}]}
PAIRS = [{"pair_id": "p00000", "prompt": "x", "prompt_index": 0, "seed": 0, "left": "b",
          "image_a": "images/a/0.png", "image_b": "images/b/0.png"}]


def export(tmp_path, ratings, name="r.json", ab_id="abc123", rater="alice"):
    path = tmp_path / name
    path.write_text(json.dumps({"format": "richfeedback-ab-ratings", "ab_id": ab_id, "rater": rater,
                                "ratings": ratings}))
    return path


def test_a_later_export_of_the_same_rater_supersedes_the_earlier(tmp_path):
    first = export(tmp_path, [{"pair_id": "p00000", "question": "overall", "value": 2,
                               "time": "2026-01-01T10:00:00Z"}], "first.json")
    second = export(tmp_path, [{"pair_id": "p00000", "question": "overall", "value": -1,
                                "time": "2026-01-01T11:00:00Z"}], "second.json")
    rows = collect_preferences(tmp_path, AB_META, PAIRS, [second, first])
    assert len(rows) == 1 and (rows[0]["choice"], rows[0]["strength"]) == ("b", 1)  # -1 = left (B) slightly


def test_csv_export_reads_like_json(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("ab_id,rater,pair_id,question,value,label,time\n"
                    "abc123,bob,p00000,alignment,2,Right much better,2026-01-01T10:00:00Z\n")
    assert read_ratings_file(path)[0] == {"ab_id": "abc123", "rater": "bob", "pair_id": "p00000",
                                          "question": "alignment", "value": 2, "time": "2026-01-01T10:00:00Z",
                                          "source": str(path)}
    assert collect_preferences(tmp_path, AB_META, PAIRS, [path])[0]["choice"] == "a"  # A was on the right


@pytest.mark.parametrize("ratings, kwargs, message", [
    ([{"pair_id": "p00000", "question": "overall", "value": 3}], {}, "not on the five-point scale"),
    ([{"pair_id": "p9", "question": "overall", "value": 1}], {}, "pair 'p9' is not in"),
    ([{"pair_id": "p00000", "question": "beauty", "value": 1}], {}, "question 'beauty' is not one"),
    ([{"pair_id": "p00000", "question": "overall", "value": 1}], {"ab_id": "zzz"}, "rates comparison zzz"),
    ([{"pair_id": "p00000", "question": "overall", "value": 1}], {"rater": ""}, "no rater id"),
])
def test_bad_exports_are_one_line_errors_naming_the_file(tmp_path, ratings, kwargs, message):
    path = export(tmp_path, ratings, **kwargs)
    with pytest.raises(UsageError, match=message) as err:
        collect_preferences(tmp_path, AB_META, PAIRS, [path])
    assert str(path) in str(err.value)


def test_a_csv_without_the_value_column_names_the_columns(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("ab_id,rater,pair_id,question\nabc123,bob,p00000,overall\n")
    with pytest.raises(UsageError, match="without the column"):
        read_ratings_file(path)


def test_results_cli_reads_a_folder_of_exports_and_reports_a_wrong_file_in_one_line(tmp_path, capsys):
    from richfeedback.cli import main
    from test_ab_make import make_shapes_ab  # noqa: E402

    ab = make_shapes_ab(tmp_path, questions="overall")
    meta, pairs = __import__("richfeedback.eval.ab", fromlist=["read_ab"]).read_ab(ab)
    exports = tmp_path / "exports"
    exports.mkdir()
    for rater, value in (("alice", -2), ("bob", 1)):  # left much better / right slightly better on every pair
        export(exports, [{"pair_id": p["pair_id"], "question": "overall", "value": value} for p in pairs],
               f"{rater}.json", ab_id=meta["id"], rater=rater)
    assert main(["ab", "results", str(ab), "--ratings", str(exports), "--bootstrap", "200"]) == 0
    results = json.loads((ab / "results" / "results.json").read_text())["questions"]["overall"]
    b_left = sum(p["left"] == "b" for p in pairs)
    # alice picks the left image, bob the right one: each pair gets one win of B and one loss, so B wins half.
    assert results["win_rate_b"] == 0.5 and results["b_better"] == len(pairs)
    assert results["per_rater"]["alice"]["win_rate_b"] == pytest.approx(b_left / len(pairs))
    assert results["agreement"]["percent_agreement_3way"] == 0.0
    report = (ab / "results" / "report.md").read_text()
    assert "## Agreement between raters" in report and "alice-bob" in report
    (exports / "broken.json").write_text("{not json")
    assert main(["ab", "results", str(ab), "--ratings", str(exports)]) == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err
