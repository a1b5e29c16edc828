"""Specification of the simulated RichHF-18K raters (richfeedback.shapesworld.raters)."""

import numpy as np
import pytest
from PIL import Image

from richfeedback.shapesworld import raters as R
from richfeedback.shapesworld.dataset import make_example
from richfeedback.shapesworld.misalign import inject_misalignment
from richfeedback.shapesworld.scene import Group, PromptSpec, Scene, SceneObject, sample_scene

CENTRED = SceneObject("red", "circle", 0.5, 0.5, 0.12)


# ----------------------------------------------------------------------------- latent qualities
def test_plausibility_is_one_without_artifacts():
    assert R.plausibility([]) == 1.0


def test_each_artifact_costs_a_quarter_plus_five_times_its_area():
    assert R.plausibility([0.0]) == pytest.approx(0.75)
    assert R.plausibility([0.02]) == pytest.approx(0.65)
    assert R.plausibility([0.01, 0.01]) == pytest.approx(0.7 * 0.7)


def test_an_artifact_costs_at_most_half():
    assert R.plausibility([0.05]) == pytest.approx(0.5)
    assert R.plausibility([0.5]) == pytest.approx(0.5)


def test_alignment_counts_misaligned_content_words_double():
    # 1 wrong of 4 content words: 1 - 2 * 0.25
    assert R.alignment([1, 0, 1, 1], [True] * 4) == pytest.approx(0.5)


def test_alignment_ignores_function_words():
    # "a red circle on the left": 4 content words, "on" and "the" are not counted
    content = [True, True, True, False, False, True]
    assert R.alignment([1, 1, 1, 1, 1, 0], content) == pytest.approx(0.5)


def test_alignment_charges_a_quarter_per_extra_object_and_stops_at_zero():
    assert R.alignment([1, 1, 1], [True] * 3, extra_objects=1) == pytest.approx(0.75)
    assert R.alignment([0, 0, 1], [True] * 3, extra_objects=2) == 0.0


def test_a_centred_object_with_margins_is_perfectly_composed():
    assert R.composition([CENTRED]) == pytest.approx(1.0)


def test_an_object_in_a_corner_is_poorly_composed():
    corner = SceneObject("red", "circle", 0.12, 0.12, 0.12)  # touches the border, centre 0.54 from the middle
    assert R.composition([corner]) == pytest.approx(0.3)  # spacing only


def test_touching_objects_lose_the_spacing_term():
    left = SceneObject("red", "square", 0.38, 0.5, 0.12)
    right = SceneObject("blue", "square", 0.62, 0.5, 0.12)  # boxes meet at x = 0.5
    assert R.composition([left, right]) == pytest.approx(0.7)


def test_an_empty_image_has_composition_0_2():
    assert R.composition([]) == pytest.approx(0.2)


def test_artifacts_damage_aesthetics_eight_times_their_area_up_to_half():
    assert R.aesthetics([CENTRED], 0.02) == pytest.approx(0.84)
    assert R.aesthetics([CENTRED], 0.3) == pytest.approx(0.5)


def test_overall_weights_plausibility_alignment_aesthetics_35_35_30():
    assert R.overall(1.0, 0.0, 0.0) == pytest.approx(0.35)
    assert R.overall(0.0, 1.0, 0.0) == pytest.approx(0.35)
    assert R.overall(0.0, 0.0, 1.0) == pytest.approx(0.3)


def test_ground_truth_word_labels_equal_the_misalignment_labels():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene, misalignment = inject_misalignment(sample_scene(rng), rng, "missing_object")
        truth = R.ground_truth(scene, [], [misalignment.region], 64)
        assert truth.word_labels == misalignment.word_labels
        assert 0 in truth.word_labels


def test_ground_truth_of_a_clean_scene_is_fully_aligned_and_plausible():
    scene = Scene(PromptSpec((Group("red", "circle"),)), (CENTRED,))
    truth = R.ground_truth(scene, [], [], 64)
    assert truth.word_labels == [1, 1, 1]
    assert truth.qualities == R.Qualities(1.0, 1.0, 1.0, 1.0)


# ----------------------------------------------------------------------------- raters
def _truth(artifact_regions=(), misalignment_regions=(), labels=(1, 1, 1), content=(True, True, True), quality=0.5):
    return R.GroundTruth(64, [np.asarray(r) for r in artifact_regions], [np.asarray(r) for r in misalignment_regions],
                         list(labels), list(content), R.Qualities(quality, quality, quality, quality))


def test_notice_probability_rises_from_0_7_for_tiny_to_0_95_for_large_regions():
    assert R.notice_probability(0.0) == pytest.approx(0.7)
    assert R.notice_probability(0.02) == pytest.approx(0.825)
    assert R.notice_probability(0.04) == pytest.approx(0.95)
    assert R.notice_probability(0.3) == pytest.approx(0.95)


def test_clicks_land_inside_the_regions_and_number_one_or_two_per_region():
    region = np.zeros((64, 64), dtype=bool)
    region[10:20, 30:50] = True
    config = R.RaterConfig(false_click_prob=0.0, notice_prob_tiny=1.0, notice_prob_large=1.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        annotations = R.simulate_raters(_truth([region], [region]), rng, config)
        for points in annotations.artifact_points + annotations.misalignment_points:
            assert 1 <= len(points) <= 2
            assert all(region[y, x] for x, y in points)


def test_raters_click_nowhere_on_a_flawless_image_without_false_clicks():
    config = R.RaterConfig(false_click_prob=0.0)
    annotations = R.simulate_raters(_truth(), np.random.default_rng(0), config)
    assert annotations.artifact_points == [[], [], []]
    assert annotations.misalignment_points == [[], [], []]


def test_an_empty_region_gets_no_clicks():
    config = R.RaterConfig(false_click_prob=0.0)
    truth = _truth(misalignment_regions=[np.zeros((64, 64), bool)])
    annotations = R.simulate_raters(truth, np.random.default_rng(0), config)
    assert annotations.misalignment_points == [[], [], []]


def test_false_clicks_happen_at_their_configured_rate():
    config = R.RaterConfig(false_click_prob=0.05)
    rng = np.random.default_rng(0)
    clicks = [len(p) for _ in range(2000) for p in R.simulate_raters(_truth(), rng, config).artifact_points]
    assert np.mean(clicks) == pytest.approx(0.05, abs=0.01)


def test_likert_score_is_1_plus_4_quality_plus_bias_rounded_and_clipped():
    rng = np.random.default_rng(0)
    assert R.likert_score(0.5, 0.0, rng, sigma=0.0) == 3
    assert R.likert_score(0.5, 0.6, rng, sigma=0.0) == 4
    assert R.likert_score(1.0, 3.0, rng, sigma=0.0) == 5
    assert R.likert_score(0.0, -3.0, rng, sigma=0.0) == 1


def test_likert_scores_are_ints_from_1_to_5_one_column_per_score():
    annotations = R.simulate_raters(_truth(quality=0.9), np.random.default_rng(0))
    assert annotations.likert.shape == (3, 4)
    assert annotations.likert.dtype.kind == "i"
    assert annotations.likert.min() >= 1 and annotations.likert.max() <= 5


def test_raters_mark_misaligned_words_90_percent_and_aligned_content_words_3_percent():
    labels = [0] * 10 + [1] * 10 + [1] * 10
    content = [True] * 20 + [False] * 10
    rng = np.random.default_rng(0)
    marks = np.concatenate([R.simulate_raters(_truth(labels=labels, content=content), rng).word_marks
                            for _ in range(300)])
    assert marks[:, :10].mean() == pytest.approx(0.9, abs=0.02)
    assert marks[:, 10:20].mean() == pytest.approx(0.03, abs=0.01)
    assert marks[:, 20:].sum() == 0  # "on", "the", "and" are never marked


# ----------------------------------------------------------------------------- consolidation
def test_disk_radius_is_one_twentieth_of_the_image_height():
    heatmap = R.rater_heatmaps([[(20, 20)]], size=40)[0]  # radius 40 / 20 = 2 pixels
    assert heatmap[20, 22] == 1.0 and heatmap[22, 20] == 1.0  # distance 2
    assert heatmap[21, 22] == 0.0  # distance sqrt(5) = 2.24
    assert heatmap.sum() == 13  # the lattice points of a radius-2 disk


def test_consolidated_heatmap_averages_raters_in_thirds_and_is_zero_far_from_clicks():
    points = [[(10, 10)], [(11, 10), (50, 50)], [(10, 11)]]
    annotations = R.RaterAnnotations(points, [[], [], []], np.full((3, 4), 3), np.zeros((3, 3), int))
    heatmap = R.consolidate(annotations, 64).artifact_map
    assert set(np.unique(heatmap)) == {0.0, 1 / 3, 2 / 3, 1.0}
    assert heatmap[10, 10] == 1.0  # inside all three disks
    assert heatmap[50, 50] == pytest.approx(1 / 3)
    assert heatmap[30:40, 30:40].sum() == 0.0  # more than a radius (3.2 px) from every click
    assert R.consolidate(annotations, 64).misalignment_map.sum() == 0.0


def test_consolidated_scores_are_mean_likert_rescaled_to_0_1_higher_better():
    likert = np.array([[5, 1, 3, 4], [5, 2, 3, 4], [5, 3, 4, 4]])
    annotations = R.RaterAnnotations([[]] * 3, [[]] * 3, likert, np.zeros((3, 1), int))
    scores = R.consolidate(annotations, 64).scores
    assert scores == pytest.approx({"plausibility": 1.0, "alignment": 0.25, "aesthetics": (10 / 3 - 1) / 4,
                                    "overall": 0.75})


def test_a_word_is_misaligned_when_two_of_three_raters_mark_it():
    marks = np.array([[1, 1, 0, 0], [1, 0, 0, 1], [1, 1, 0, 0]])
    assert R.majority_word_labels(marks) == [0, 0, 1, 1]


def test_records_round_trip_the_annotations():
    annotations = R.simulate_raters(_truth([np.ones((64, 64), bool)], labels=[0, 1, 1]), np.random.default_rng(1))
    back = R.annotations_from_record(R.annotations_to_record(annotations))
    assert back.artifact_points == annotations.artifact_points
    assert back.misalignment_points == annotations.misalignment_points
    np.testing.assert_array_equal(back.likert, annotations.likert)
    np.testing.assert_array_equal(back.word_marks, annotations.word_marks)


def test_record_word_labels_use_the_richhf_convention_0_for_marked():
    annotations = R.RaterAnnotations([[]] * 3, [[]] * 3, np.full((3, 4), 3), np.array([[1, 0], [0, 0], [1, 1]]))
    assert R.annotations_to_record(annotations)["rater_word_labels"] == ["0 1", "1 1", "0 0"]


def test_record_points_are_rater_x_y_triples():
    annotations = R.RaterAnnotations([[(1, 2)], [], [(3, 4), (5, 6)]], [[]] * 3, np.full((3, 4), 3), np.zeros((3, 1)))
    assert R.annotations_to_record(annotations)["artifact_points"] == [[0, 1, 2], [2, 3, 4], [2, 5, 6]]


# ----------------------------------------------------------------------------- agreement
def _identical_raters_record(score: int, point: tuple[int, int]) -> dict:
    annotations = R.RaterAnnotations([[point]] * 3, [[point]] * 3, np.tile([score, score, 6 - score, score], (3, 1)),
                                     np.tile([score % 2, 1 - score % 2], (3, 1)))
    return R.annotations_to_record(annotations)


def test_identical_raters_agree_perfectly():
    records = [_identical_raters_record(s, (10 * s, 5)) for s in (1, 2, 3, 4, 5)]
    agreement = R.rater_agreement(records, image_size=64)
    for name in R.SCORE_NAMES:
        assert agreement[f"{name}/plcc"] == pytest.approx(1.0)
        assert agreement[f"{name}/srcc"] == pytest.approx(1.0)
    assert agreement["artifact_map/cc"] == pytest.approx(1.0)
    assert agreement["artifact_map/sim"] == pytest.approx(1.0)
    assert agreement["misalignment_map/mse_all"] == 0.0
    assert agreement["words/f1"] == pytest.approx(1.0)
    assert agreement["num_images"] == 5


def test_rater_agreement_reads_the_image_size_from_the_records():
    records = [_identical_raters_record(s, (3 * s, 5)) for s in (1, 2, 3)]
    with_images = [dict(r, image=Image.new("RGB", (20, 20))) for r in records]
    assert R.rater_agreement(with_images) == pytest.approx(R.rater_agreement(records, image_size=20), nan_ok=True)


@pytest.fixture(scope="module")
def dev_agreement():
    return R.rater_agreement([make_example("dev", i) for i in range(200)])


def test_raters_agree_on_scores_well_but_not_perfectly(dev_agreement):
    assert dev_agreement["plausibility/plcc"] > 0.6
    assert dev_agreement["alignment/plcc"] > 0.6
    assert np.mean([dev_agreement[f"{n}/plcc"] for n in R.SCORE_NAMES]) > 0.5
    for name in R.SCORE_NAMES:
        assert 0.4 < dev_agreement[f"{name}/plcc"] < 0.99
        assert 0.4 < dev_agreement[f"{name}/srcc"] < 0.99


def test_raters_agree_on_heatmaps_and_words_partly(dev_agreement):
    assert 0.2 < dev_agreement["artifact_map/cc"] < 0.9
    assert 0.05 < dev_agreement["misalignment_map/cc"] < 0.9
    assert 0.4 < dev_agreement["words/f1"] < 0.95
    assert dev_agreement["num_images"] == 200
