"""RAHF on a dataset split: predictions, the paper's three tables (heatmaps, scores, misaligned keywords), and the
reference's model-selection metric."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ...eval import metrics
from .configuration import HEATMAP_NAMES, SCORE_NAMES
from .data import Collator, RichFeedbackDataset, model_inputs
from .modeling import RAHFModel
from .processing import MISALIGNED_SUFFIX, RAHFProcessor, mark_token_ids, marked_word_flags


def encoded_batches(model: RAHFModel, processor: RAHFProcessor, split, batch_size: int = 32,
                    outputs: Optional[Sequence[str]] = None, progress: bool = False,
                    device: Optional[torch.device] = None):
    """(batch, forward output) for every batch of `split`, in order, in eval mode and without gradients; `outputs`
    as in `RAHFModel.forward` (None: every head, (): only the fused tokens the decoder reads)."""
    model.eval()
    device = device or next(model.parameters()).device
    loader = DataLoader(RichFeedbackDataset(split, processor), batch_size=batch_size, shuffle=False,
                        collate_fn=Collator(processor))
    for batch in tqdm(loader, desc="predict", disable=not progress):
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items() if k != "labels"}
        with torch.no_grad():
            output = model(**inputs, outputs=outputs)
        yield batch, output


def predict_split(model: RAHFModel, processor: RAHFProcessor, split, batch_size: int = 32,
                  generate: bool = True, progress: bool = False, device: Optional[torch.device] = None) -> dict:
    """Predicted and target heatmaps, scores and marked prompts for every example of `split`."""
    out = {"heatmaps": {n: [] for n in HEATMAP_NAMES}, "target_heatmaps": {n: [] for n in HEATMAP_NAMES},
           "scores": {n: [] for n in SCORE_NAMES}, "target_scores": {n: [] for n in SCORE_NAMES},
           "marked": [], "target_marked": []}
    for batch, output in encoded_batches(model, processor, split, batch_size, progress=progress, device=device):
        for i, name in enumerate(HEATMAP_NAMES):
            out["heatmaps"][name].append(output.heatmaps[name].float().cpu())
            out["target_heatmaps"][name].append(batch["target_heatmaps"][:, i])
        for i, name in enumerate(SCORE_NAMES):
            out["scores"][name].append(output.scores[name].float().cpu())
            out["target_scores"][name].append(batch["target_scores"][:, i])
        if generate:
            out["marked"] += processor.decode(model.generate_marked_prompt(output))
        out["target_marked"] += batch["labeled_prompts"]
    for key in ("heatmaps", "target_heatmaps", "scores", "target_scores"):
        out[key] = {n: torch.cat(v).numpy() for n, v in out[key].items()}
    return out


def pooled_word_metrics(marked: Sequence[str], target_marked: Sequence[str]) -> dict:
    """Misaligned-word precision, recall and F1 pooled over all words of a split (`word_flags` per example)."""
    prf = metrics.word_prf([word_flags(p, t) for p, t in zip(marked, target_marked)],
                           [marked_word_flags(t) for t in target_marked])
    return {k: prf[k] for k in ("precision", "recall", "f1")}


def compute_metrics(predictions: dict) -> dict:
    """The paper's metrics from `predict_split`'s output, flat: `heatmap/{map}/{metric}`, `score/{name}/{plcc,srcc}`,
    `seq/...` (the reference's per-example token metrics), and `avg_metric` (the reference's selection rule)."""
    result = {}
    for name in HEATMAP_NAMES:
        for k, v in metrics.heatmap_metrics(predictions["heatmaps"][name], predictions["target_heatmaps"][name]).items():
            result[f"heatmap/{name}/{k}"] = v
    for k, v in metrics.score_metrics(predictions["scores"], predictions["target_scores"]).items():
        result[f"score/{k}"] = v
    if predictions["marked"]:
        result.update(metrics.misalignment_token_metrics(predictions["marked"], predictions["target_marked"]))
        # Pooled over all words of the split: the reading of keyword F1 that does not score every example without
        # misaligned words as 0 (the reference's per-example class-1 F1 does, which caps it below 1 on any split
        # with clean images).
        for k, v in pooled_word_metrics(predictions["marked"], predictions["target_marked"]).items():
            result[f"words/{k}"] = v
    result["avg_metric"] = selection_metric(result)
    return result


def marker_start_token_id(tokenizer) -> int:
    """The token that starts a word's misaligned mark, the one `RAHFConfig.marker_token_id` biases."""
    return int(mark_token_ids(tokenizer)[0])


@torch.no_grad()
def choose_marker_bias(model: RAHFModel, processor: RAHFProcessor, split,
                       biases: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), batch_size: int = 64,
                       device: Optional[torch.device] = None) -> dict:
    """The marker logit bias (see `RAHFConfig.marker_logit_bias`) with the best pooled misaligned-word F1 on
    `split`, set in `model.config`; returns it with precision, recall and F1 for every bias tried.

    A decision threshold for the marks, chosen on a dev split and never on the test split. The encoder runs once;
    only the decoding is repeated per bias. Ties go to the bias nearest 0 (plain greedy decoding)."""
    encoded, targets = [], []
    for batch, output in encoded_batches(model, processor, split, batch_size, outputs=(), device=device):
        encoded.append(output)
        targets += batch["labeled_prompts"]
    model.config.marker_token_id = marker_start_token_id(processor.tokenizer)
    table = []
    for bias in biases:
        marked = [text for output in encoded
                  for text in processor.decode(model.generate_marked_prompt(output, marker_logit_bias=bias))]
        table.append({"bias": float(bias), **pooled_word_metrics(marked, targets)})
    best = max(table, key=lambda row: (row["f1"], -abs(row["bias"])))
    model.config.marker_logit_bias = best["bias"]
    return {"bias": best["bias"], "marker_token_id": model.config.marker_token_id, "table": table}


def format_marker_table(table: Sequence[dict], indent: str = "") -> str:
    """`choose_marker_bias`'s table (bias, precision, recall, F1 per row) as Markdown."""
    lines = ["| bias | precision | recall | F1 |", "|---|---|---|---|"]
    lines += [f"| {row['bias']:g} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} |" for row in table]
    return "\n".join(indent + line for line in lines)


def word_flags(marked: str, target_marked: str) -> list[int]:
    """Per word of the target, 1 if the prediction marks the same word misaligned at the same position."""
    words = [w[: -len(MISALIGNED_SUFFIX)] if w.endswith(MISALIGNED_SUFFIX) else w for w in target_marked.split()]
    return RAHFProcessor.misaligned_words(marked, " ".join(words))


def word_recall_by_group(marked: Sequence[str], target_marked: Sequence[str],
                         groups: Sequence[str]) -> dict[str, dict]:
    """Per group of examples (e.g. the kind of misalignment a ShapesWorld example carries), the share of the target's
    misaligned words that the predictions mark too, and the marks on words the target leaves aligned: where a model
    misses (wrong position, wrong shape, ...) rather than how much. Words match as in the pooled F1 (`word_flags`)."""
    if not len(marked) == len(target_marked) == len(groups):
        raise ValueError(f"got {len(marked)} predicted, {len(target_marked)} target labeled prompts and "
                         f"{len(groups)} groups")
    counts = {}
    for predicted, target, group in zip(marked, target_marked, groups):
        p_flags, t_flags = word_flags(predicted, target), marked_word_flags(target)
        row = counts.setdefault(group, {"marked": 0, "found": 0, "false_marks": 0, "examples": 0})
        row["examples"] += 1
        row["marked"] += sum(t_flags)
        row["found"] += sum(a and b for a, b in zip(p_flags, t_flags))
        row["false_marks"] += sum(a and not b for a, b in zip(p_flags, t_flags))
    return {group: {**row, "recall": row["found"] / row["marked"] if row["marked"] else None}
            for group, row in sorted(counts.items())}


def selection_metric(result: dict) -> float:
    """The reference's dev-set selection rule: mean score correlation + keyword precision/F1 + heatmap saliency."""
    def get(key):
        value = result.get(key, 0.0)
        return 0.0 if value is None or np.isnan(value) else float(value)

    scores = sum(get(f"score/{n}/plcc") + get(f"score/{n}/srcc") for n in SCORE_NAMES) / 8
    words = (get("seq/precision/macro_avg") + get("seq/f1-score/1")) / 2
    maps = sum(get(f"heatmap/{n}/{m}") for n in HEATMAP_NAMES for m in ("nss", "cc", "sim", "auc_judd")) / 4
    return scores + words + maps


def format_tables(result: dict, reference: Optional[dict] = None, title: str = "RAHF") -> str:
    """The paper's three tables as Markdown; `reference` (e.g. the raters' agreement) adds a comparison row."""
    lines = [f"### {title}: heatmaps", "",
             "| heatmap | source | All MSE | GT=0 MSE | CC | KLD | SIM | NSS | AUC-Judd |", "|---|---|---|---|---|---|---|---|---|"]
    cols = ("mse_all", "mse_gt0", "cc", "kld", "sim", "nss", "auc_judd")

    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    for name in HEATMAP_NAMES:
        lines.append(f"| {name} | model | " + " | ".join(fmt(result.get(f"heatmap/{name}/{c}")) for c in cols) + " |")
        if reference:
            lines.append(f"| {name} | reference | " + " | ".join(fmt(reference.get(f"heatmap/{name}/{c}")) for c in cols) + " |")
    lines += ["", f"### {title}: scores", "", "| | source | " + " | ".join(SCORE_NAMES) + " |",
              "|---|---|" + "---|" * len(SCORE_NAMES)]
    for m in ("plcc", "srcc"):
        lines.append(f"| {m.upper()} | model | " + " | ".join(fmt(result.get(f"score/{n}/{m}")) for n in SCORE_NAMES) + " |")
        if reference:
            lines.append(f"| {m.upper()} | reference | " + " | ".join(fmt(reference.get(f"score/{n}/{m}")) for n in SCORE_NAMES) + " |")
    lines += ["", f"### {title}: misaligned keywords", "",
              "| source | reading | precision | recall | F1 |", "|---|---|---|---|---|"]
    lines.append("| model | per example (reference) | "
                 + " | ".join(fmt(result.get(f"seq/{m}/1")) for m in ("precision", "recall", "f1-score")) + " |")
    lines.append("| model | pooled over words | "
                 + " | ".join(fmt(result.get(f"words/{m}")) for m in ("precision", "recall", "f1")) + " |")
    if reference:
        lines.append("| reference | pooled over words | "
                     + " | ".join(fmt(reference.get(f"words/{m}")) for m in ("precision", "recall", "f1")) + " |")
    return "\n".join(lines)
