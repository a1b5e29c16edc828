"""`inpaint-fix`, the loop: heatmap -> mask -> N inpainted candidates -> composite -> best by reward -> files.

    fixer = InpaintFixer.load()                               # embedded inpainting model + embedded RAHF
    result = fixer.fix(image, "a red circle on the left")     # one uint8 (H, W, 3) image in memory
    summary = fix_files(fixer, paths, prompts, "out/fix")     # files in, fixed images and reports out (resumable)

Candidate k of an image is drawn from seed `settings.seed + k` in a pipeline call of its own image only, so a result
does not depend on the other images of the run and can be made again from its report (seeds, n, batch size).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..guidance.rewards import WeightedReward
from ..imaging import ImageLoadError, load_rgb
from ..reward_models.artifact_segmenter import WithArtifactSegmenter
from ..reward_models.rahf.configuration import HEATMAP_NAMES, SCORE_NAMES
from ..reward_models.rahf.reward import RAHFReward, weighted_score_sum
from ..reward_models.weights import weights_fingerprint
from .masks import (MaskConfig, MaskError, feather_mask, finish_user_mask, heatmap_to_mask, read_heatmap_file,
                    read_mask_file, resize_heatmap)
from .repair import composite, inpaint_candidates, latent_cell, load_inpaint_pipeline
from .selection import MaskHeatScore, load_selection_reward, select_best

# What an input's mode becomes, said in the report (the conversion itself is `imaging.to_rgb_array`'s).
MODE_NOTES = {
    "RGBA": "RGBA: alpha composited on white", "LA": "grayscale with alpha: composited on white, as RGB",
    "PA": "palette with alpha: composited on white", "P": "palette: expanded to RGB", "L": "grayscale: as RGB",
    "1": "1-bit: as RGB", "I;16": "16-bit grayscale: scaled to 8 bits, as RGB",
    "I;16B": "16-bit grayscale: scaled to 8 bits, as RGB", "I;16L": "16-bit grayscale: scaled to 8 bits, as RGB",
    "I": "32-bit integer grayscale: scaled to 8 bits, as RGB", "CMYK": "CMYK: converted to RGB",
}


@dataclasses.dataclass
class FixSettings:
    """n: candidates per image; seed: candidate k uses seed + k; keep_original: keep the input when no candidate
    scores higher; crop_padding: inpaint a padded box around the mask at working resolution (None: the whole
    image); batch_size: candidates per pipeline call (None: all n in one); heatmap: which RAHF heatmap makes the
    mask; sampling: pipeline arguments (strength, num_inference_steps, guidance_scale, height, width);
    alignment_guard: a candidate whose RAHF alignment score is more than this below the original's cannot be chosen
    (a repair must not lose a prompt word: an inpainted object of another colour or shape scores as an improvement
    inside the mask); None turns it off."""

    n: int = 8
    seed: int = 0
    keep_original: bool = True
    crop_padding: Optional[int] = None
    batch_size: Optional[int] = None
    heatmap: str = "implausibility"
    mask: MaskConfig = dataclasses.field(default_factory=MaskConfig)
    sampling: dict = dataclasses.field(default_factory=lambda: {"strength": 1.0})
    # On ShapesWorld dev images (artifact_examples(40, seed=2), not the benchmark's seed 0) and 30 clean renders
    # (seed 77), with the default masks and selector: of the replacements that lost a prompt word or added an object,
    # a guard of 0.1 stops 4 of 10 on artifact images and 2 of 3 on clean renders, and stops no replacement that fixed
    # an image (23 of 40 either way); 0.02 also stops 3 fixes.
    alignment_guard: Optional[float] = 0.1
    # The pixel-level artifact segmenter whose heat joins RAHF's implausibility heatmap (pixelwise maximum) for the
    # mask and the mask-heat reward: "auto" (`resolve_artifact_model`), "embedded" (ShapesWorld), a folder, or None
    # (RAHF's heatmap alone). artifact_cut: its probabilities below this are ignored. InpaintFixer records what its
    # heatmap model really uses ("given" for a segmenter passed in by hand; no model and no cut when none runs), so
    # reports and resume tell the truth.
    artifact_model: Optional[str] = "auto"
    artifact_cut: Optional[float] = 0.5

    def __post_init__(self):
        if self.alignment_guard is not None and not self.alignment_guard >= 0:
            raise ValueError(f"alignment_guard must be >= 0 or None, got {self.alignment_guard}")
        if self.artifact_cut is not None and not 0.0 <= self.artifact_cut < 1.0:
            raise ValueError(f"artifact_cut must be in [0, 1) or None, got {self.artifact_cut}")
        if self.artifact_model is not None and self.artifact_cut is None:
            raise ValueError(f"artifact_model {self.artifact_model!r} needs an artifact_cut in [0, 1)")
        if self.n < 1:
            raise ValueError(f"n must be at least 1 candidate, got {self.n}")
        if self.heatmap not in ("implausibility", "misalignment"):
            raise ValueError(f"heatmap must be 'implausibility' or 'misalignment', got {self.heatmap!r}")
        strength = self.sampling.get("strength", 1.0)
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")


@dataclasses.dataclass
class FixResult:
    status: str  # "fixed" | "kept_original" | "nothing_to_fix"
    image: np.ndarray  # the output: the chosen candidate, or the input itself
    heatmap: np.ndarray  # float (H, W) at the image's size
    mask: np.ndarray  # bool (H, W): what was repainted
    alpha: np.ndarray  # float (H, W): the composite's weight of the repair, 0 outside `mask`
    mask_source: str  # "heatmap" | "heatmap file" | "mask file"
    threshold: Optional[float]  # the heat cut used (None for a user's mask)
    seeds: list[int]
    candidates: list[np.ndarray]  # composited
    original_score: Optional[float]
    candidate_scores: list[float]
    chosen: Optional[int]
    message: str
    eligible: Optional[list[bool]] = None  # per candidate: allowed by the alignment guard (None: no guard ran)
    alignment: Optional[list[float]] = None  # RAHF alignment of the original, then of each candidate (guard only)
    rahf_before: Optional[dict] = None  # RAHF's four scores of the input
    rahf_after: Optional[dict] = None  # ... and of the output

    @property
    def mask_area(self) -> float:
        return float(self.mask.mean())


def model_source(name: Optional[str]) -> str:
    """"embedded" for None, a local folder as its absolute path, a hub id as given: where a model was loaded from."""
    if name is None or name == "embedded":
        return "embedded"
    return str(Path(name).resolve()) if Path(name).exists() else str(name)


def resolve_artifact_model(artifact_model: Optional[str], heatmap_model: Optional[str]) -> Optional[str]:
    """"auto": the embedded segmenter beside the embedded RAHF, none beside other RAHF weights (it only knows
    ShapesWorld); anything else as given ("embedded", a folder, or None)."""
    if artifact_model == "auto":
        return "embedded" if heatmap_model in (None, "embedded") else None
    return artifact_model


def rahf_score_weights(reward, rahf) -> Optional[dict]:
    """{score name: weight} when `reward` is a weighted sum of `rahf`'s own scores (a RAHFReward on the same model, or
    a WeightedReward of just one), else None."""
    if isinstance(reward, WeightedReward) and len(reward.models) == 1 and reward.weights[0] == 1.0:
        reward = reward.models[0]
    if isinstance(reward, RAHFReward) and reward.model is getattr(rahf, "model", None):
        return dict(reward.score_weights)
    return None


def heatmap_weights_fingerprint(heatmap_model) -> Optional[str]:
    """`weights_fingerprint` of the RAHF behind a heatmap model (its artifact segmenter has a record of its own);
    None for a stand-in that is not a torch module."""
    rahf = heatmap_model.rahf if isinstance(heatmap_model, WithArtifactSegmenter) else heatmap_model
    return weights_fingerprint(rahf) if isinstance(rahf, torch.nn.Module) else None


def reward_weights_fingerprint(reward, heatmap_model) -> Optional[str]:
    """What a selection reward's scores come from: "heatmap_model" when they are the heatmap model's own outputs
    (the mask heat over its maps, a sum of its scores), else `weights_fingerprint` of the reward's torch weights
    (every model of a weighted sum); None for a reward with none. A reward name ("rahf:plausibility",
    "pickscore") does not say which weights scored: a rerun with other files under the same name must redo."""
    if isinstance(reward, MaskHeatScore):
        reward = reward.rahf  # its maps' model
    if reward is heatmap_model or rahf_score_weights(reward, heatmap_model) is not None:
        return "heatmap_model"
    if isinstance(reward, WithArtifactSegmenter):
        return f"{heatmap_weights_fingerprint(reward)}+{weights_fingerprint(reward.segmenter)}"
    return weights_fingerprint(reward) if isinstance(reward, torch.nn.Module) else None


class InpaintFixer:
    """The models of a repair run and its settings; `fix` repairs one image in memory."""

    def __init__(self, pipe, heatmap_model, reward, settings: FixSettings = FixSettings(),
                 models: Optional[dict] = None):
        """`models`: what the inpainting and heatmap models were loaded from ({"inpaint_model", "heatmap_model"};
        `load` fills it in, "given" otherwise). With the reward's name and fingerprints of the weights behind the
        heatmaps, the reward and the artifact segmenter it is part of each report, and a rerun redoes an image whose
        report came from other models or other files at the same path (the fingerprints hash every weight: a few
        seconds for a full-size RAHF, as `pool score`'s records)."""
        self.pipe = pipe
        # a RAHFReward, or one WithArtifactSegmenter: .heatmaps(prompts, images), .outputs and .all_scores
        self.heatmap_model = heatmap_model
        self.reward = reward
        # a reward that is a function of the heatmap model's own outputs is read from the passes `fix` makes anyway:
        # the mask heat over its maps, or a sum of its scores (`rahf:plausibility`, `0.7*rahf:a+0.3*rahf:b`)
        shares_maps = isinstance(reward, MaskHeatScore) and reward.rahf is heatmap_model
        self._reward_maps = reward.heatmaps if shares_maps else ()
        self._reward_rahf_weights = rahf_score_weights(reward, heatmap_model)
        segmenter_weights = None
        if isinstance(heatmap_model, WithArtifactSegmenter):
            used = settings.artifact_model if settings.artifact_model not in (None, "auto") else "given"
            settings = dataclasses.replace(settings, artifact_model=used, artifact_cut=heatmap_model.cut)
            segmenter_weights = weights_fingerprint(heatmap_model.segmenter)
        else:
            settings = dataclasses.replace(settings, artifact_model=None, artifact_cut=None)
        self.settings = settings
        self.models = {"inpaint_model": "given", "heatmap_model": "given", **(models or {}),
                       "reward": self.reward_name,
                       "heatmap_model_weights": heatmap_weights_fingerprint(heatmap_model),
                       "reward_weights": reward_weights_fingerprint(reward, heatmap_model),
                       "artifact_segmenter_weights": segmenter_weights}
        if settings.mask.round_to_cells == 0:  # "round to the pipeline's own latent cells" unless told otherwise
            self.settings = dataclasses.replace(
                settings, mask=dataclasses.replace(settings.mask, round_to_cells=latent_cell(pipe)))

    @classmethod
    def load(cls, inpaint_model: Optional[str] = None, heatmap_model: Optional[str] = None,
             reward: Optional[str] = None, settings: Optional[FixSettings] = None, *, heatmap_size: str = "large",
             device: str = "cpu", dtype: torch.dtype = torch.float32) -> "InpaintFixer":
        """Defaults: the embedded ShapesWorld inpainting model, the embedded RAHF with the embedded artifact segmenter
        and rahf:mask-heat, with the embedded generator's own sampling settings (25 DDIM steps, CFG 4, 64x64) unless
        `settings.sampling` says otherwise. `settings.artifact_model`: "auto" (the embedded segmenter with the
        embedded RAHF, none with other RAHF weights: it only knows ShapesWorld), "embedded", a folder, or None."""
        from ..generation import pipeline_defaults
        from ..reward_models import load_reward_model
        from ..reward_models.artifact_segmenter import load_artifact_segmenter

        settings = settings or FixSettings()
        sampling = {**pipeline_defaults(inpaint_model, task="inpaint"), **settings.sampling}
        artifact_model = resolve_artifact_model(settings.artifact_model, heatmap_model)
        settings = dataclasses.replace(settings, sampling=sampling, artifact_model=artifact_model)
        pipe = load_inpaint_pipeline(inpaint_model, device=device, dtype=dtype)
        # Any RAHF score head serves: only its heatmaps and all_scores are used.
        rahf = load_reward_model("rahf:plausibility", weights=heatmap_model, device=device, size=heatmap_size)
        if artifact_model is not None:
            segmenter = load_artifact_segmenter(None if artifact_model == "embedded" else artifact_model,
                                                device=device)
            rahf = WithArtifactSegmenter(rahf, segmenter, settings.artifact_cut)
        # the heatmap model also serves the reward's rahf:* terms that name no weights of their own (loaded once: a
        # user's --heatmap-model, not the embedded ShapesWorld RAHF, scores their images) and the mask heat's maps
        reward_model = load_selection_reward(reward, device=device, rahf=rahf)
        return cls(pipe, rahf, reward_model, settings,
                   models={"inpaint_model": model_source(inpaint_model), "heatmap_model": model_source(heatmap_model)})

    def predict_heatmap(self, prompt: str, image: np.ndarray) -> np.ndarray:
        return self._heatmap_of(self.heatmap_model.heatmaps([prompt], [image]), image)

    def _heatmap_of(self, outputs: dict, image: np.ndarray, row: int = 0) -> np.ndarray:
        """The mask's heatmap (`settings.heatmap`) of row `row` of RAHF's `outputs`, at `image`'s size."""
        return resize_heatmap(outputs[self.settings.heatmap][row].numpy(), *image.shape[:2])

    def _rahf_outputs(self, prompt: str, images: Sequence[np.ndarray], heatmaps: Sequence[str] = ()) -> dict:
        """RAHF's four scores and the named heatmaps of `images`, one forward pass per batch."""
        names = (*SCORE_NAMES, *(name for name in HEATMAP_NAMES if name in heatmaps))
        return self.heatmap_model.outputs([prompt] * len(images), list(images), names)

    @staticmethod
    def _scores_of(outputs: dict, row: int) -> dict:
        """RAHF's four scores of row `row` of its `outputs`, as floats (what reports hold)."""
        return {name: float(outputs[name][row]) for name in SCORE_NAMES}

    def _reward_scores(self, prompt: str, images: Sequence[np.ndarray], mask: np.ndarray, rahf: dict) -> list[float]:
        """The selection reward of `images`, from their RAHF outputs `rahf` when the reward reads them."""
        if self._reward_maps:
            return self.reward.score([prompt] * len(images), images, mask=mask, maps=rahf).tolist()
        if self._reward_rahf_weights:
            return weighted_score_sum(rahf, self._reward_rahf_weights).tolist()
        if getattr(self.reward, "uses_mask", False):
            return self.reward.score([prompt] * len(images), images, mask=mask).tolist()
        return self.reward.score([prompt] * len(images), images).tolist()

    def fix(self, image: np.ndarray, prompt: str, mask: Optional[np.ndarray] = None,
            heatmap: Optional[np.ndarray] = None) -> FixResult:
        """Repair one uint8 (H, W, 3) image. `mask` (bool, the image's size) is used as given; otherwise the mask
        comes from `heatmap` (float in [0, 1], any resolution of the image's aspect) or from the heatmap model.

        RAHF sees each image once: one pass over the input (its scores, the heatmap of the mask, the maps the mask
        heat scores it by) and, when the guard or the reward needs them, one over the candidates (their scores and
        maps); otherwise only the chosen candidate is scored, for the report."""
        s = self.settings
        height, width = image.shape[:2]
        needed_maps = (*self._reward_maps, *(() if heatmap is not None else (s.heatmap,)))
        before = self._rahf_outputs(prompt, [image], needed_maps)
        rahf_before = self._scores_of(before, 0)
        if heatmap is None:
            heatmap, heat_source = self._heatmap_of(before, image), "heatmap"
        else:
            heat_source = "heatmap file"
        if mask is not None:
            mask, threshold, source = finish_user_mask(mask, s.mask), None, "mask file"
        else:
            mask, threshold = heatmap_to_mask(heatmap, height, width, s.mask)
            source = heat_source
        seeds = [s.seed + k for k in range(s.n)]
        if not mask.any():
            if threshold is None:
                why, hint = "the mask file is empty", ""
            else:
                why = f"no pixel of the heatmap is above the threshold {threshold:.3g} (hottest {heatmap.max():.3g})"
                hint = (" (to repaint it anyway: a lower --floor, --threshold q0.95 for its hottest 5%, or your own "
                        "--mask)")
            score = self._reward_scores(prompt, [image], mask, before)[0]
            return FixResult("nothing_to_fix", image.copy(), heatmap, mask, mask.astype(np.float32), source,
                             threshold, seeds, [], score, [], None, f"{why}: nothing to fix, copied through{hint}",
                             rahf_before=rahf_before, rahf_after=rahf_before)
        alpha = feather_mask(mask, s.mask.feather)
        raw = inpaint_candidates(self.pipe, image, mask, prompt, seeds, crop_padding=s.crop_padding,
                                 batch_size=s.batch_size, **s.sampling)
        candidates = [composite(image, candidate, alpha) for candidate in raw]
        after = None
        if s.alignment_guard is not None or self._reward_maps or self._reward_rahf_weights:
            after = self._rahf_outputs(prompt, candidates, self._reward_maps)
        eligible = alignment = None
        if s.alignment_guard is not None:
            alignment = [rahf_before["alignment"], *after["alignment"].tolist()]
            eligible = [a >= alignment[0] - s.alignment_guard for a in alignment[1:]]
        both = None if after is None else {name: torch.cat([before[name], after[name]]) for name in after}
        scores = self._reward_scores(prompt, [image, *candidates], mask, both)
        selection = select_best(scores[0], scores[1:], s.keep_original, eligible)
        if selection.chosen is None:
            status, output, rahf_after = "kept_original", image.copy(), rahf_before
            if eligible is not None and not any(eligible):
                message = (f"every candidate lowers RAHF alignment by more than {s.alignment_guard:g} "
                           f"(from {alignment[0]:.3f} to at most {max(alignment[1:]):.3f}): the input is kept")
            else:
                message = (f"no candidate beats the original ({self.reward_name} {selection.original_score:.4f}, "
                           f"best allowed candidate {selection.best_allowed_score:.4f}): the input is kept")
        else:
            status, output = "fixed", candidates[selection.chosen]
            if after is not None:
                rahf_after = self._scores_of(after, selection.chosen)
            else:  # no candidate pass was needed: RAHF scores the chosen one alone, for the report
                rahf_after = self._scores_of(self._rahf_outputs(prompt, [output]), 0)
            message = (f"candidate {selection.chosen} (seed {seeds[selection.chosen]}) raised {self.reward_name} from "
                       f"{selection.original_score:.4f} to {selection.best_score:.4f}")
        return FixResult(status, output, heatmap, mask, alpha, source, threshold, seeds, candidates,
                         selection.original_score, selection.candidate_scores, selection.chosen, message, eligible,
                         alignment, rahf_before, rahf_after)

    @property
    def reward_name(self) -> str:
        return getattr(self.reward, "name", "reward")


def read_input_image(path: Path) -> tuple[np.ndarray, Optional[str]]:
    """(uint8 RGB image, a note on how its mode was converted or None); ImageLoadError names unusable files."""
    image = load_rgb(path)  # unreadable, truncated, not an image: ImageLoadError naming the file and the fix
    with Image.open(path) as opened:
        mode = opened.mode
    return image, MODE_NOTES.get(mode)


def find_companion(source: Optional[Path], image_path: Path) -> Optional[Path]:
    """The mask or heatmap for `image_path`: `source` itself if it is a file, else the file in folder `source` with
    the image's name or stem (any image suffix)."""
    if source is None:
        return None
    if source.is_file():
        return source
    if (source / image_path.name).is_file():
        return source / image_path.name
    matches = sorted(p for p in source.glob(image_path.stem + ".*") if p.is_file())
    if not matches:
        raise MaskError(f"no mask or heatmap for {image_path.name} in {source}: name it {image_path.stem}.png")
    return matches[0]


def fix_files(fixer: InpaintFixer, paths: Sequence[Path], prompts: Sequence[str], out_dir: str | os.PathLike,
              masks: Optional[str | os.PathLike] = None, heatmaps: Optional[str | os.PathLike] = None,
              progress: bool = True, log=print) -> dict:
    """Repair every image file into `out_dir` (see `report` for the layout). An image whose report is already
    there is not redone. A file that cannot be used (unreadable, truncated, a mask of another size, ...) is
    reported and skipped; the others go on. Returns the summary that `summary.json` holds."""
    from tqdm.auto import tqdm

    from .report import image_names, read_report, write_image_outputs, write_error_report, write_summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mask_source = Path(masks) if masks else None
    heatmap_source = Path(heatmaps) if heatmaps else None
    names = image_names(paths)
    reports = []
    for path, prompt, name in tqdm(list(zip(paths, prompts, names)), desc="inpaint-fix", unit="img",
                                   disable=not progress):
        done = read_report(out, name, path, fixer.settings, fixer.models)
        if done is not None:
            reports.append(done)
            continue
        try:
            image, note = read_input_image(path)
            height, width = image.shape[:2]
            mask_file = find_companion(mask_source, path)
            heat_file = find_companion(heatmap_source, path)
            mask = read_mask_file(mask_file, height, width) if mask_file else None
            heatmap = read_heatmap_file(heat_file, height, width) if heat_file else None
            result = fixer.fix(image, prompt, mask=mask, heatmap=heatmap)
            report = write_image_outputs(out, name, path, prompt, image, result, fixer, note, result.rahf_before,
                                         result.rahf_after, mask_file=mask_file, heatmap_file=heat_file)
        except (ImageLoadError, MaskError, ValueError) as err:
            report = write_error_report(out, name, path, prompt, str(err), fixer.settings, fixer.models)
            log(f"skipped {err}")
        else:
            if note:
                log(f"{path}: {note}")
            if result.status == "nothing_to_fix":
                log(f"{path}: {result.message}")
        reports.append(report)
    return write_summary(out, reports)
