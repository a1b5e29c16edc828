"""Evaluation metrics of RAHF (Rich Human Feedback for Text-to-Image Generation, CVPR 2024).

The definitions follow the public PyTorch reimplementation youweiliang/RichHF (``metrics.py``
and ``train.evaluate_model``) as summarised in ``/work/shared/reference/reward_models.md``
section 1.6; the code here is written from those formulas, and metric / key names follow
the reference.

* Heatmaps (per image over (H, W), then averaged over images): images whose GT sums to 0 get
  only MSE ("GT=0 MSE"); images with GT > 0 get KLD, CC, SIM, NSS and AUC-Judd. "All data
  MSE" is the MSE over all images and pixels. KLD/CC/SIM/NSS use the reference's epsilons
  (1e-8); AUC-Judd is the MIT-saliency "Judd" ROC area with 1e-7 jitter.
* Scores: Pearson (PLCC) and Spearman (SRCC) correlation over a whole split, per score type
  (``scipy.stats.pearsonr`` / ``spearmanr``).
* Misaligned tokens: the reference ``text_alignment_single`` / ``text_alignment``: per-token
  labels (1 = token carries the ``_0`` misalignment suffix), a per-example
  ``sklearn.metrics.classification_report(labels=[0, 1], zero_division=0)`` (re-implemented
  here because sklearn is not installed), averaged key by key over examples.

Inputs may be numpy arrays or torch tensors; results are Python floats.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from scipy import stats

EPS = 1e-8


def _np(x) -> np.ndarray:
    """numpy float64 view of an array-like or a torch tensor (any dtype, any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = x.float() if str(x.dtype) in ("torch.bfloat16", "torch.float16") else x
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------- heatmaps
def _sum_normalise(x: np.ndarray) -> np.ndarray:
    return x / (x.sum() + EPS)


def kld(pred, gt) -> float:
    """KL(gt || pred) of sum-normalised maps: sum g * log(g / (p + eps) + eps)."""
    p, g = _sum_normalise(_np(pred)), _sum_normalise(_np(gt))
    return float(np.sum(g * np.log(g / (p + EPS) + EPS)))


def cc(pred, gt) -> float:
    """Pearson correlation of the raw maps, eps 1e-8 in the denominator."""
    p, g = _np(pred), _np(gt)
    dp, dg = p - p.mean(), g - g.mean()
    return float(np.sum(dp * dg) / (np.sqrt(np.sum(dp**2)) * np.sqrt(np.sum(dg**2)) + EPS))


def sim(pred, gt) -> float:
    """Similarity: sum of the pixel-wise minimum of the sum-normalised maps."""
    return float(np.sum(np.minimum(_sum_normalise(_np(pred)), _sum_normalise(_np(gt)))))


def nss(pred, gt) -> float:
    """Normalised scanpath saliency: mean of the z-scored pred (unbiased std) over gt > 0.

    Unweighted by the gt values; nan when gt has no positive pixel.
    """
    p, g = _np(pred), _np(gt)
    z = (p - p.mean()) / (p.std(ddof=1) + EPS)
    n = int(np.count_nonzero(g > 0))
    return float(np.where(g > 0, z, 0.0).sum() / n) if n else float("nan")


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def auc_judd(pred, gt, rng=None, jitter: bool = True, reference_fp_offset: bool = False) -> float:
    """AUC-Judd, vectorised (O(N log N)); the per-threshold loop of the reference, but for its fp offset (below).

    S = pred + U[0,1) * 1e-7 (``rng``: numpy Generator, seed or None), min-max normalised.
    Fixations are the pixels with gt > 0; thresholds are S at the fixations, descending. For
    the i-th threshold (0-based) tp = (i+1)/Nfix and fp = (#{S >= th} - (i+1)) / (Npix - Nfix),
    i.e. the non-fixation pixels above threshold; endpoints (0, 0) and (1, 1); trapezoid area.
    The reference's Python port subtracts ``i`` instead of ``i+1`` (an off-by-one against the
    MATLAB original, fp too high by 1/(Npix-Nfix)); ``reference_fp_offset=True`` reproduces it.
    Returns nan when there are no fixations, no non-fixations, or S is constant.
    """
    s, g = _np(pred).ravel(), _np(gt).ravel()
    if jitter:
        s = s + np.random.default_rng(rng).random(s.shape) * 1e-7
    n_pix, fix = s.size, g > 0
    n_fix = int(np.count_nonzero(fix))
    if n_fix == 0 or n_fix == n_pix or s.max() == s.min():
        return float("nan")
    s = (s - s.min()) / (s.max() - s.min())
    thresholds = np.sort(s[fix])[::-1]
    n_above = n_pix - np.searchsorted(np.sort(s), thresholds, side="left")  # #{S >= th}
    i = np.arange(n_fix)
    tp = (i + 1) / n_fix
    fp = (n_above - (i if reference_fp_offset else i + 1)) / (n_pix - n_fix)
    return _trapezoid(np.concatenate([[0.0], tp, [1.0]]), np.concatenate([[0.0], fp, [1.0]]))


def heatmap_metrics(pred, gt, seed=0) -> dict:
    """RAHF heatmap metrics for a batch of maps of shape (N, H, W).

    ``mse_all``: MSE over all images and pixels. ``mse_gt0``: mean per-image MSE over images
    whose GT sums to 0. ``cc``, ``kld``, ``sim``, ``nss``, ``auc_judd``: means over images with
    GT sum > 0. Means over an empty group are nan. ``seed`` drives the AUC-Judd jitter.
    """
    p, g = _np(pred), _np(gt)
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"expected two (N, H, W) arrays of one shape, got {p.shape}, {g.shape}")
    rng = np.random.default_rng(seed)
    gt_sum = g.sum(axis=(1, 2))
    zero, pos = gt_sum == 0, gt_sum > 0
    mse = ((p - g) ** 2).mean(axis=(1, 2))

    def mean(values):
        return float(np.mean(values)) if len(values) else float("nan")

    out = {"mse_all": float(mse.mean()) if len(mse) else float("nan"), "mse_gt0": mean(mse[zero])}
    for name, fn in (("cc", cc), ("kld", kld), ("sim", sim), ("nss", nss)):
        out[name] = mean([fn(pi, gi) for pi, gi in zip(p[pos], g[pos])])
    out["auc_judd"] = mean([auc_judd(pi, gi, rng) for pi, gi in zip(p[pos], g[pos])])
    out["n_gt0"], out["n_gtpos"] = int(zero.sum()), int(pos.sum())
    return out


# ----------------------------------------------------------------------------- scores
def plcc(a, b) -> float:
    """Pearson linear correlation (scipy.stats.pearsonr)."""
    return float(stats.pearsonr(_np(a).ravel(), _np(b).ravel())[0])


def srcc(a, b) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr)."""
    return float(stats.spearmanr(_np(a).ravel(), _np(b).ravel())[0])


def score_metrics(pred: dict, gt: dict) -> dict:
    """``{name}/plcc`` and ``{name}/srcc`` for every score type in ``pred`` (over the split)."""
    out = {}
    for name in pred:
        out[f"{name}/plcc"] = plcc(pred[name], gt[name])
        out[f"{name}/srcc"] = srcc(pred[name], gt[name])
    return out


# ----------------------------------------------------------------------------- tokens
def labeled_prompt(words: Sequence[str], labels: Sequence[int]) -> str:
    """Decoder target: words joined by spaces, misaligned words (label 0) suffixed ``_0``.

    RichHF convention: 0 = misaligned, 1 = aligned. ``(["a","yellow","cat"], [1,0,1])`` gives
    ``"a yellow_0 cat"``.
    """
    if len(words) != len(labels):
        raise ValueError(f"{len(words)} words but {len(labels)} labels")
    return " ".join(w + "_0" if int(lab) == 0 else w for w, lab in zip(words, labels))


def token_labels(pred: str, gt: str) -> tuple[list[int], list[int]]:
    """Per-token (gt_labels, pred_labels) as in the reference ``text_alignment_single``.

    Both strings are split on whitespace; pred is padded with '' to the GT length (extra pred
    tokens are ignored). GT label 1 iff the token ends with ``_0``. Pred label 1 if it ends with
    ``_0`` and its stem equals the GT stem, 0 if it equals the GT stem, else -1.
    """
    p_toks, g_toks = pred.split(), gt.split()
    p_toks += [""] * (len(g_toks) - len(p_toks))
    gt_labels, pred_labels = [], []
    for p, g in zip(p_toks, g_toks):
        g_mis = g.endswith("_0")
        stem = g[:-2] if g_mis else g
        gt_labels.append(int(g_mis))
        if p.endswith("_0"):
            pred_labels.append(1 if p[:-2] == stem else -1)
        else:
            pred_labels.append(0 if p == stem else -1)
    return gt_labels, pred_labels


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_true if n_true else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def classification_report(gt_labels: Sequence[int], pred_labels: Sequence[int]) -> dict:
    """``sklearn.metrics.classification_report(labels=[0, 1], output_dict=True, zero_division=0)``
    flattened to the reference's ``seq/{field}/{row}`` keys (spaces in row names become '_').

    As in sklearn, the report has an ``accuracy`` row only when every label present lies in
    {0, 1}; when a pred label is -1 it has a ``micro_avg`` row instead.
    """
    y, yh = np.asarray(gt_labels), np.asarray(pred_labels)
    rows, supports = {}, []
    for c in (0, 1):
        tp = int(np.sum((y == c) & (yh == c)))
        rows[str(c)] = _prf(tp, int(np.sum(yh == c)), int(np.sum(y == c)))
        supports.append(int(np.sum(y == c)))
    per_class = np.array([rows["0"], rows["1"]])
    total = sum(supports)
    out = {}
    for c, sup in zip(("0", "1"), supports):
        out.update({f"seq/{k}/{c}": v for k, v in zip(("precision", "recall", "f1-score"), rows[c])})
        out[f"seq/support/{c}"] = sup
    avgs = {"macro_avg": per_class.mean(axis=0),
            "weighted_avg": per_class.T @ np.array(supports) / total if total else np.zeros(3)}
    if set(np.unique(np.concatenate([y, yh]))) <= {0, 1}:
        out["seq/accuracy"] = float(np.mean(y == yh)) if len(y) else 0.0
    else:
        tp = int(np.sum((y == yh) & np.isin(yh, (0, 1))))
        avgs = {"micro_avg": np.array(_prf(tp, int(np.isin(yh, (0, 1)).sum()), total)), **avgs}
    for row, vals in avgs.items():
        out.update({f"seq/{k}/{row}": float(v) for k, v in zip(("precision", "recall", "f1-score"), vals)})
        out[f"seq/support/{row}"] = total
    return out


def misalignment_token_metrics(preds: Sequence[str], gts: Sequence[str]) -> dict:
    """Reference ``text_alignment``: per-example classification report, each key averaged over
    the examples that report it (so ``seq/accuracy`` averages only examples without a -1 pred
    label and ``seq/*/micro_avg`` only those with one, exactly like the reference).

    The paper's misaligned-keyword precision/recall/F1 are ``seq/{precision,recall,f1-score}/1``.
    Extra key, not in the reference: ``seq/token_accuracy``, the fraction of tokens with
    pred == gt averaged over all examples.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} references")
    collected = defaultdict(list)
    for pred, gt in zip(preds, gts):
        g, p = token_labels(pred, gt)
        if not g:
            raise ValueError("empty ground-truth prompt")
        for k, v in classification_report(g, p).items():
            collected[k].append(v)
        collected["seq/token_accuracy"].append(float(np.mean(np.equal(g, p))))
    return {k: float(np.mean(v)) for k, v in collected.items()}


def word_prf(pred_labels, gt_labels) -> dict:
    """Micro precision / recall / F1 of the class "misaligned" over binary per-word flags
    (1 = misaligned), pooled over all examples.

    Accepts one flat sequence or a list of per-example sequences (lengths must match). A simple
    reading used for rater agreement and as a second view of keyword F1; the paper-compatible
    metric is :func:`misalignment_token_metrics`. Zero-division cases give 0.
    """
    def flat(x):
        x = list(x)
        return [np.ravel(np.asarray(e)) for e in x] if x and np.ndim(x[0]) > 0 else [np.asarray(x)]

    ps, gs = flat(pred_labels), flat(gt_labels)
    if len(ps) != len(gs) or any(a.size != b.size for a, b in zip(ps, gs)):
        raise ValueError("pred_labels and gt_labels are not aligned")
    p = np.concatenate(ps).astype(bool) if ps else np.zeros(0, bool)
    g = np.concatenate(gs).astype(bool) if gs else np.zeros(0, bool)
    tp, fp, fn = int(np.sum(p & g)), int(np.sum(p & ~g)), int(np.sum(~p & g))
    prec, rec, f1 = _prf(tp, tp + fp, tp + fn)
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn}
