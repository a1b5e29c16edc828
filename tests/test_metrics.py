"""Tests for richfeedback.eval.metrics (RAHF / RichHF evaluation metrics)."""
import math

import numpy as np
import pytest
from scipy import stats

from richfeedback.eval import metrics as M

_trapz = getattr(np, "trapezoid", None) or np.trapz


# ----------------------------------------------------------------------------- CC
def test_cc_identical_maps_is_one():
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert M.cc(p, p) == pytest.approx(1.0, abs=1e-6)


def test_cc_negated_map_is_minus_one():
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert M.cc(p, -p) == pytest.approx(-1.0, abs=1e-6)


# ----------------------------------------------------------------------------- KLD
def test_kld_identical_maps_is_zero():
    p = np.array([[0.1, 0.5], [0.2, 0.7]])
    assert M.kld(p, p) == pytest.approx(0.0, abs=1e-6)


def test_kld_hand_computed_2x2():
    # p = 1/4 everywhere; g = [3, 1, 0, 0] / 4 = [0.75, 0.25, 0, 0]
    # KLD = 0.75*ln(0.75/0.25) + 0.25*ln(0.25/0.25) + 0 + 0 = 0.75*ln 3 = 0.823959
    pred = np.ones((2, 2))
    gt = np.array([[3.0, 1.0], [0.0, 0.0]])
    assert M.kld(pred, gt) == pytest.approx(0.75 * math.log(3), abs=1e-6)


# ----------------------------------------------------------------------------- SIM
def test_sim_identical_maps_is_one():
    p = np.array([[0.1, 0.5], [0.2, 0.7]])
    assert M.sim(p, p) == pytest.approx(1.0, abs=1e-6)


def test_sim_disjoint_maps_is_zero():
    assert M.sim(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 2.0]])) == 0.0


# ----------------------------------------------------------------------------- NSS
def test_nss_hand_computed_and_unweighted_by_gt_values():
    # pred = [0,0,0,4]: mean 1, unbiased var = (1+1+1+9)/3 = 4, std 2 -> z = [-.5,-.5,-.5,1.5]
    # fixations = last two pixels -> (-0.5 + 1.5) / 2 = 0.5, whatever the gt magnitudes
    pred = np.array([[0.0, 0.0], [0.0, 4.0]])
    assert M.nss(pred, np.array([[0.0, 0.0], [1.0, 5.0]])) == pytest.approx(0.5, abs=1e-6)
    assert M.nss(pred, np.array([[0.0, 0.0], [1.0, 1.0]])) == pytest.approx(0.5, abs=1e-6)


# ----------------------------------------------------------------------------- AUC-Judd
def _auc_judd_slow(pred, gt, seed, jitter=True, reference_fp_offset=False):
    """Straight per-threshold loop, as in the MIT saliency code."""
    s = pred.astype(np.float64).ravel()
    if jitter:
        s = s + np.random.default_rng(seed).random(s.shape) * 1e-7
    s = (s - s.min()) / (s.max() - s.min())
    f = gt.ravel() > 0
    n_fix, n_pix = int(f.sum()), s.size
    tp, fp = np.zeros(n_fix + 2), np.zeros(n_fix + 2)
    tp[-1] = fp[-1] = 1.0
    for i, th in enumerate(sorted(s[f], reverse=True)):
        above = int(np.sum(s >= th))
        tp[i + 1] = (i + 1) / n_fix
        fp[i + 1] = (above - (i if reference_fp_offset else i + 1)) / (n_pix - n_fix)
    return float(_trapz(tp, fp))


def _square_gt():
    gt = np.zeros((4, 4))
    gt[1:3, 1:3] = 1.0  # 4 fixations, 12 non-fixations
    return gt


def test_auc_judd_perfect_map_is_one():
    # every fixation ranks above every other pixel: fp stays 0 until tp = 1 -> area 1
    gt = _square_gt()
    assert M.auc_judd(gt, gt, rng=0) == pytest.approx(1.0, abs=1e-12)


def test_auc_judd_reference_fp_offset_on_perfect_map():
    # reference "- i": interior fp = 1/12 -> points (0,0),(1/12,.25..1),(1,1)
    # area = 0.5*0.25/12 + 11/12 = 1/96 + 88/96 = 89/96
    gt = _square_gt()
    assert M.auc_judd(gt, gt, rng=0, reference_fp_offset=True) == pytest.approx(89 / 96)


def test_auc_judd_inverted_map_is_near_zero():
    # fixations rank below all 300 other pixels: fp = 1 from the first threshold on,
    # so the only area is the first triangle 0.5 * 1 * (1/Nfix) = 1/(2*100) = 0.005
    gt = np.zeros((20, 20))
    gt[5:15, 5:15] = 1.0
    auc = M.auc_judd(1.0 - gt, gt, rng=0)
    assert auc == pytest.approx(1 / 200)
    assert auc < 0.01


def test_auc_judd_vectorised_equals_slow_loop():
    rng = np.random.default_rng(123)
    for trial in range(20):
        h, w = rng.integers(2, 9, size=2)
        pred = rng.random((h, w))
        if trial % 2:
            pred = np.round(pred * 3) / 3  # many ties, broken by the jitter
        gt = rng.random((h, w)) * (rng.random((h, w)) < 0.4)
        gt.flat[0], gt.flat[-1] = 0.0, 0.7  # at least one fixation and one non-fixation
        for offset in (False, True):
            fast = M.auc_judd(pred, gt, rng=trial, reference_fp_offset=offset)
            slow = _auc_judd_slow(pred, gt, trial, reference_fp_offset=offset)
            assert fast == pytest.approx(slow, abs=1e-12)


def test_auc_judd_vectorised_equals_slow_loop_with_exact_ties():
    # no jitter, so tied saliency values stay tied; counting S >= th must still agree
    pred = np.array([[0.0, 0.5, 0.5], [1.0, 0.5, 0.0], [1.0, 0.0, 0.5]])
    gt = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    fast = M.auc_judd(pred, gt, jitter=False)
    assert fast == pytest.approx(_auc_judd_slow(pred, gt, 0, jitter=False), abs=1e-12)


def test_auc_judd_is_reproducible_for_a_seed():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((8, 8)), (rng.random((8, 8)) > 0.7).astype(float)
    assert M.auc_judd(pred, gt, rng=5) == M.auc_judd(pred, gt, rng=5)


# ----------------------------------------------------------------------------- batch split
def test_heatmap_metrics_gt0_images_only_get_mse():
    pred = np.array([
        [[0.1, 0.2], [0.3, 0.4]],  # GT = 0: mse = (.01+.04+.09+.16)/4 = 0.075
        [[0.0, 1.0], [2.0, 3.0]],  # GT > 0
        [[1.0, 0.0], [0.5, 0.2]],  # GT > 0
    ])
    gt = np.array([np.zeros((2, 2)), [[0.0, 1.0], [1.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]]])
    out = M.heatmap_metrics(pred, gt, seed=0)
    assert (out["n_gt0"], out["n_gtpos"]) == (1, 2)
    assert out["mse_gt0"] == pytest.approx(0.075)
    assert out["mse_all"] == pytest.approx(np.mean((pred - gt) ** 2))
    for name, fn in (("cc", M.cc), ("kld", M.kld), ("sim", M.sim), ("nss", M.nss)):
        assert out[name] == pytest.approx(np.mean([fn(pred[i], gt[i]) for i in (1, 2)]))
    rng = np.random.default_rng(0)
    assert out["auc_judd"] == pytest.approx(np.mean([M.auc_judd(pred[i], gt[i], rng) for i in (1, 2)]))


def test_heatmap_metrics_all_gt0_gives_nan_saliency_metrics():
    out = M.heatmap_metrics(np.full((2, 3, 3), 0.5), np.zeros((2, 3, 3)))
    assert out["mse_gt0"] == pytest.approx(0.25) and out["n_gtpos"] == 0
    assert all(math.isnan(out[k]) for k in ("cc", "kld", "sim", "nss", "auc_judd"))


def test_heatmap_metrics_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    pred, gt = torch.rand(2, 4, 4), (torch.rand(2, 4, 4) > 0.5).float()
    ref = M.heatmap_metrics(pred.numpy(), gt.numpy())
    assert M.heatmap_metrics(pred, gt) == pytest.approx(ref, nan_ok=True)


# ----------------------------------------------------------------------------- scores
def test_plcc_srcc_match_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.random(30), rng.random(30)
    assert M.plcc(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert M.srcc(a, b) == pytest.approx(stats.spearmanr(a, b)[0])


def test_plcc_srcc_hand_case():
    # a=[1,2,3,4], b=[1,4,2,8]: da=[-1.5,-.5,.5,1.5], db=[-2.75,.25,-1.75,4.25]
    # PLCC = 9.5 / sqrt(5 * 28.75) = 0.792358; ranks of b = [1,3,2,4], sum d^2 = 2,
    # SRCC = 1 - 6*2/(4*15) = 0.8
    out = M.score_metrics({"overall": [1, 2, 3, 4]}, {"overall": [1, 4, 2, 8]})
    assert out["overall/plcc"] == pytest.approx(9.5 / math.sqrt(143.75))
    assert out["overall/srcc"] == pytest.approx(0.8)


# ----------------------------------------------------------------------------- tokens
def test_token_metrics_perfect_prediction():
    # gt [0,1,0], pred [0,1,0]: every class P = R = F1 = 1
    out = M.misalignment_token_metrics(["a yellow_0 cat"], ["a yellow_0 cat"])
    for k in ("precision", "recall", "f1-score"):
        for row in ("0", "1", "macro_avg"):
            assert out[f"seq/{k}/{row}"] == 1.0
    assert out["seq/accuracy"] == 1.0


def test_token_metrics_missed_misaligned_token():
    # gt [0,1,0], pred [0,0,0]; class 1: nothing predicted -> P=R=F1=0
    # class 0: TP=2, predicted 3, true 2 -> P=2/3, R=1, F1=2*(2/3)/(5/3)=0.8
    # macro: P=1/3, R=0.5, F1=0.4; accuracy 2/3
    out = M.misalignment_token_metrics(["a yellow cat"], ["a yellow_0 cat"])
    assert out["seq/precision/1"] == out["seq/recall/1"] == out["seq/f1-score/1"] == 0.0
    assert out["seq/precision/0"] == pytest.approx(2 / 3)
    assert out["seq/recall/0"] == 1.0
    assert out["seq/f1-score/0"] == pytest.approx(0.8)
    assert out["seq/precision/macro_avg"] == pytest.approx(1 / 3)
    assert out["seq/recall/macro_avg"] == pytest.approx(0.5)
    assert out["seq/f1-score/macro_avg"] == pytest.approx(0.4)
    assert out["seq/accuracy"] == pytest.approx(2 / 3)


def test_token_labels_wrong_stem_is_minus_one():
    assert M.token_labels("a blue_0 cat", "a yellow_0 cat") == ([0, 1, 0], [0, -1, 0])
    assert M.token_labels("a yellow_0 dog", "a yellow_0 cat") == ([0, 1, 0], [0, 1, -1])


def test_token_metrics_wrong_stem_counts_for_neither_class():
    # pred [0,-1,0] vs gt [0,1,0]: class 0 TP=2/pred 2/true 2 -> 1,1,1; class 1 -> 0,0,0
    # sklearn drops "accuracy" for a -1 label and reports micro avg: TP 2, predicted 2,
    # true 3 -> P=1, R=2/3, F1=0.8
    out = M.misalignment_token_metrics(["a blue_0 cat"], ["a yellow_0 cat"])
    assert (out["seq/precision/0"], out["seq/recall/0"], out["seq/f1-score/0"]) == (1.0, 1.0, 1.0)
    assert (out["seq/precision/1"], out["seq/recall/1"], out["seq/f1-score/1"]) == (0.0, 0.0, 0.0)
    assert "seq/accuracy" not in out
    assert out["seq/precision/micro_avg"] == 1.0
    assert out["seq/recall/micro_avg"] == pytest.approx(2 / 3)
    assert out["seq/f1-score/micro_avg"] == pytest.approx(0.8)
    assert out["seq/token_accuracy"] == pytest.approx(2 / 3)


def test_token_metrics_pred_shorter_than_gt_is_padded():
    # pred padded to ['a','red_0','',''] -> [0,1,-1,-1]; gt [0,1,1,0]
    # class 0: TP 1, predicted 1, true 2 -> P=1, R=.5, F1=2/3; class 1: same
    out = M.misalignment_token_metrics(["a red_0"], ["a red_0 car_0 parked"])
    assert M.token_labels("a red_0", "a red_0 car_0 parked") == ([0, 1, 1, 0], [0, 1, -1, -1])
    for row in ("0", "1", "macro_avg"):
        assert out[f"seq/precision/{row}"] == 1.0
        assert out[f"seq/recall/{row}"] == 0.5
        assert out[f"seq/f1-score/{row}"] == pytest.approx(2 / 3)
    assert out["seq/token_accuracy"] == 0.5


def test_token_metrics_extra_pred_tokens_are_ignored():
    long_pred = "a yellow_0 cat sitting_0 here"
    assert M.misalignment_token_metrics([long_pred], ["a yellow_0 cat"]) == \
        M.misalignment_token_metrics(["a yellow_0 cat"], ["a yellow_0 cat"])


def test_token_metrics_example_without_misaligned_gt_tokens():
    # gt [0,0,0], pred [0,0,0]: class 0 = 1,1,1; class 1 has no support and no
    # predictions -> 0 (zero_division=0); macro = (1+0)/2 = 0.5; accuracy 1
    out = M.misalignment_token_metrics(["a red car"], ["a red car"])
    assert out["seq/f1-score/0"] == 1.0 and out["seq/support/1"] == 0.0
    assert (out["seq/precision/1"], out["seq/recall/1"], out["seq/f1-score/1"]) == (0.0, 0.0, 0.0)
    assert out["seq/precision/macro_avg"] == out["seq/f1-score/macro_avg"] == 0.5
    assert out["seq/accuracy"] == 1.0


def test_token_metrics_average_each_key_over_examples_reporting_it():
    # perfect + missed: P/1 = (1+0)/2; accuracy = (1 + 2/3)/2 = 5/6
    out = M.misalignment_token_metrics(["a yellow_0 cat", "a yellow cat"], ["a yellow_0 cat"] * 2)
    assert out["seq/precision/1"] == 0.5 and out["seq/accuracy"] == pytest.approx(5 / 6)
    # perfect + wrong stem: only the perfect one reports "accuracy" (as in the reference)
    out = M.misalignment_token_metrics(["a yellow_0 cat", "a blue_0 cat"], ["a yellow_0 cat"] * 2)
    assert out["seq/accuracy"] == 1.0
    assert out["seq/token_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


def test_labeled_prompt_suffixes_misaligned_words():
    assert M.labeled_prompt(["a", "yellow", "cat"], [1, 0, 1]) == "a yellow_0 cat"
    assert M.token_labels("a yellow_0 cat", "a yellow_0 cat")[0] == [0, 1, 0]
    with pytest.raises(ValueError):
        M.labeled_prompt(["a", "cat"], [1])


def test_word_prf_pools_examples():
    # pairs (pred, gt): (1,1) tp, (0,1) fn, (1,0) fp, (0,0), (1,1) tp -> tp 2, fp 1, fn 1
    # P = R = F1 = 2/3
    out = M.word_prf([[1, 0, 1], [0, 1]], [[1, 1, 0], [0, 1]])
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["precision"] == out["recall"] == out["f1"] == pytest.approx(2 / 3)
    assert M.word_prf([1, 0, 1, 0, 1], [1, 1, 0, 0, 1]) == out
    assert M.word_prf([0, 0], [0, 0])["f1"] == 0.0
