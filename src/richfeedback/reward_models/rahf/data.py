"""Rich-feedback examples as RAHF training batches.

Works on any `datasets` split with RichHF-18K's columns (the ShapesWorld dataset has them, and so does RichHF-18K
once joined to its images by `richhf18k.py`): `image`, `clean_prompt` (or `prompt`), `labeled_prompt`, the four
scores and the two heatmaps. Targets map to heads as the reference does: plausibility <- artifact_score, alignment <-
misalignment_score, aesthetics <- aesthetics_score, overall <- overall_score; implausibility <- artifact_map,
misalignment <- misalignment_map.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ...shapesworld.dataset import SPLIT_IDS, drawn_scene
from ...shapesworld.render import patch_object_shapes
from ...shapesworld.scene import word_object_attributes, word_object_centres
from .configuration import HEATMAP_NAMES, SCORE_NAMES
from .processing import RAHFProcessor, clean_prompt

SCORE_COLUMNS = {"plausibility": "artifact_score", "alignment": "misalignment_score",
                 "aesthetics": "aesthetics_score", "overall": "overall_score"}
HEATMAP_COLUMNS = {"implausibility": "artifact_map", "misalignment": "misalignment_map"}
REQUIRED_COLUMNS = ("image", "labeled_prompt", *SCORE_COLUMNS.values(), *HEATMAP_COLUMNS.values())


def check_columns(split, where: str = "the dataset") -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in split.column_names]
    if missing or not ({"clean_prompt", "prompt"} & set(split.column_names)):
        raise ValueError(f"{where} lacks the RichHF-18K columns {missing or ['clean_prompt or prompt']}; make one with "
                         "`richfeedback shapesworld make-dataset` or join RichHF-18K with `richhf18k.py`")


SCENE_SEED_COLUMNS = ("seed_split", "seed_index")


class RichFeedbackDataset(Dataset):
    """Per item: preprocessed image, the two target heatmaps, the four target scores, and the two texts.

    `object_targets=True` (ShapesWorld datasets only) adds, per word of the prompt, where the object its phrase names
    is drawn (`scene.word_object_centres`) and what shape and colour it was drawn with
    (`scene.word_object_attributes`), and per image patch the shape drawn there (`render.patch_object_shapes`), for
    the training-only object probe (train.py)."""

    def __init__(self, split, processor: RAHFProcessor, object_targets: bool = False):
        check_columns(split)
        if object_targets:
            probe = "the object probe (loss_weights.object_centres, object_attributes, patch_shapes)"
            if not set(SCENE_SEED_COLUMNS) <= set(split.column_names):
                raise ValueError(f"{probe} needs the ShapesWorld columns {SCENE_SEED_COLUMNS} (where each object is "
                                 "drawn); this dataset has none: set those weights to 0")
            others = set(split.unique("seed_split")) - set(SPLIT_IDS.values())
            if others:
                raise ValueError(f"{probe} re-draws each example's scene from its seeds, which only `richfeedback "
                                 f"shapesworld make-dataset` examples have (seed_split in {sorted(SPLIT_IDS.values())}); "
                                 f"this data has seed_split {sorted(others)} (e.g. feedback on generated images): leave "
                                 "it out of data.extra_paths or set those weights to 0")
        # Only the columns training reads: a row access decodes every image column it holds, and the ShapesWorld
        # dataset has two more (the true regions) that RAHF never sees.
        prompt = "clean_prompt" if "clean_prompt" in split.column_names else "prompt"
        extra = list(SCENE_SEED_COLUMNS) if object_targets else []
        self.split = split.select_columns(list(dict.fromkeys([*REQUIRED_COLUMNS, prompt, *extra])))
        self.processor = processor
        self.object_targets = object_targets

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        row = self.split[index]
        prompt = row.get("clean_prompt") or clean_prompt(row["prompt"])
        item = {
            "pixel_values": self.processor.preprocess_images([row["image"]])[0],
            "heatmaps": self.processor.preprocess_heatmaps([row[HEATMAP_COLUMNS[n]] for n in HEATMAP_NAMES]),
            "scores": torch.tensor([float(row[SCORE_COLUMNS[n]]) for n in SCORE_NAMES]),
            "prompt": prompt,
            "labeled_prompt": row["labeled_prompt"],
        }
        if self.object_targets:
            scene = drawn_scene(int(row["seed_split"]), int(row["seed_index"]), size=row["image"].size[0])
            if clean_prompt(scene.prompt.text) != clean_prompt(prompt):
                raise ValueError(f"example {index}'s seeds draw another prompt ({scene.prompt.text!r}, not "
                                 f"{prompt!r}): the dataset was not made by this version's make_example")
            item["word_targets"] = {"centres": word_object_centres(scene), "attributes": word_object_attributes(scene)}
            grid = self.processor.config.grid_size
            item["patch_shapes"] = torch.from_numpy(patch_object_shapes(scene.objects, row["image"].size[0], grid)
                                                    ).flatten()
        return item


class Collator:
    """Stacks items and tokenizes their texts for the whole batch at once (padding to the batch's longest)."""

    def __init__(self, processor: RAHFProcessor):
        self.processor = processor

    def __call__(self, items: list[dict]) -> dict:
        batch = {
            "pixel_values": torch.stack([i["pixel_values"] for i in items]),
            "target_heatmaps": torch.stack([i["heatmaps"] for i in items]),  # (B, 2, S, S) in HEATMAP_NAMES order
            "target_scores": torch.stack([i["scores"] for i in items]),  # (B, 4) in SCORE_NAMES order
            "prompts": [i["prompt"] for i in items],
            "labeled_prompts": [i["labeled_prompt"] for i in items],
        }
        word_targets = None
        if "word_targets" in items[0]:  # {name: per item, per word}
            word_targets = {name: [i["word_targets"][name] for i in items] for name in items[0]["word_targets"]}
        batch.update(self.processor.text_inputs(batch["prompts"], batch["labeled_prompts"], word_targets))
        if "patch_shapes" in items[0]:
            batch["target_patch_shapes"] = torch.stack([i["patch_shapes"] for i in items])  # (B, g*g)
        return batch


MODEL_INPUTS = ("pixel_values", "input_ids", "attention_mask", "labels", "task_input_ids", "task_attention_mask")


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}
