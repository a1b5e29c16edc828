"""`inpaint-fix` on ShapesWorld artifact images, judged by the exact oracle.

Two sets of images with an artifact the oracle sees:
- injected: clean renders with one injected artifact (smear, broken edge, stray blob, texture noise, ghost);
- generated: the embedded generator's own images that the oracle flags (prompts of the evaluation protocol).
And two sets with nothing to fix, run with the default settings only: clean renders, and the generator's images of
the same prompts that the oracle does not flag. Their rows give the share masked, changed, and made worse ("harmed":
a new artifact, a lost prompt word or an added object): what a heatmap that fires on clean images would cost, which
the artifact sets cannot show.

Conditions (the embedded inpainting model, a 9-channel UNet fine-tuned from the embedded generator by
scripts/train_embedded_inpainter.py, 25 DDIM steps, CFG 4, strength 1; embedded RAHF with the embedded artifact
segmenter, whose probabilities >= 0.5 join RAHF's implausibility heatmap by a pixelwise maximum; best candidate by
the default selection reward, rahf:mask-heat (least implausibility + misalignment heat inside the mask), among
the candidates the alignment guard allows (RAHF alignment at most 0.1 below the input's), the original kept when no
candidate beats it; composites with a hard edge, the default):
- predicted, N=8: the implausibility heatmap (RAHF's and the segmenter's), default mask settings (cut at half the
  heatmap's hottest value, never below 0.1; grown over connected pixels above 0.3 of the hottest; dilate 2; latent
  cells);
- predicted, RAHF alone, N=8: the same without the segmenter (mask and mask heat from RAHF only; the default before
  it); run on the images with nothing to fix as well;
- predicted, N=1: the same masks, only candidate 0 (its seed is the same as in the N=8 run, so it is the same
  candidate; a candidate does not depend on its batch, see bench_inpaint_batching);
- random, N=8: the predicted mask shifted to a random place (same shape and area);
- predicted q0.95, N=8: the hottest 5% of each heatmap (no floor, no growth), so every image gets a mask;
- oracle mask, N=8: the oracle's own artifact map, dilated the same way: the ceiling for a perfect heatmap;
- misalignment heatmap, N=8: RAHF's *misalignment* heatmap instead of the implausibility one (`--heatmap-kind
  misalignment`), default mask settings: the generator's flagged images are nearly all misdrawn objects too (a rounded
  square read as a circle leaves its corners as the artifact), which that heatmap does see; run on the images with
  nothing to fix as well, since it also fires there;
- generator (4-channel), N=8: the predicted masks repainted by the embedded *generator* through diffusers' blending
  path (re-noised original latents outside the mask at every step), the default before the inpainting model.

The defaults were tuned on other images (`artifact_examples(40, seed=1)` and `seed=2`, see MaskConfig and
selection.DEFAULT_REWARD), never on these. "plausibility before/after" is RAHF's plausibility score of the input and
the output, whatever reward selected.

"fixed" = the oracle finds no artifact afterwards *and* no prompt word that was satisfied before is unsatisfied after
(and no extra object appeared). "fixed if oracle picked": the same candidates, chosen by the oracle instead of the
reward (the selector's ceiling). "outside unchanged" = the share of images whose pixels outside the repainted mask
are bit-identical to the input's.

Last full run (422 s on 2 CPU cores; the twelve-stage embedded RAHF with the artifact segmenter, the second
inpainting model), fixed / fixed if the oracle picked / new misalignment:
- injected, predicted N=8: 0.97 / 0.97 / 0.03; N=1: 0.93 / 0.93 / 0.07; RAHF alone 0.90 / 0.93 / 0.07; random masks
  0.00; q0.95 masks 0.83 / 0.83 / 0.07; the oracle's mask 0.97 / 0.97 / 0.03; blending path 0.90 / 0.93 / 0.03;
  the misalignment heatmap 0.00 (29 of 30 masks empty).
- generated, predicted N=8: 0.35 / 0.50 / 0.25 (no mask empty); N=1 0.20; RAHF alone 0.00 (19 of 20 masks empty);
  random masks 0.00 / 0.10; q0.95 masks 0.10 / 0.40 / 0.35; the oracle's mask 0.45 / 0.55 / 0.10; the misalignment
  heatmap 0.15 / 0.30 / 0.25; blending path 0.25 / 0.50 / 0.30. Pooled: 36 of 50 fixed (RAHF alone 27).
- nothing to fix (masked / changed / harmed): clean renders 0.00 / 0.00 / 0.00 (RAHF alone the same); the
  generator's unflagged images 0.40 / 0.40 / 0.05 (RAHF alone 0.10 / 0.10 / 0.10); with the misalignment heatmap
  0.35 / 0.35 / 0.15 and 0.70 / 0.70 / 0.05.
Before the segmenter (RAHF alone for every condition; 450 s beside a training job):
- injected, predicted N=8: 0.90 / 0.93 / 0.07; N=1: 0.93 / 0.93 / 0.03; random masks 0.03; q0.95 masks 0.77 / 0.83 /
  0.07; the oracle's mask 0.97 / 0.97 / 0.03; blending path 0.83 / 0.87 / 0.07.
- generated, predicted N=8: 0.00 (19 of 20 masks empty); q0.95 masks 0.10 / 0.25 / 0.25; the oracle's mask 0.10 /
  0.55 / 0.15; the misalignment heatmap 0.10 / 0.30 / 0.30 (5 of 20 masks empty; on injected images 29 of 30 empty).
- nothing to fix (20 + 20 images; masked / changed / harmed): clean renders 0.00 / 0.00 / 0.00; the generator's
  unflagged images 0.10 / 0.10 / 0.10; with the misalignment heatmap 0.35 / 0.35 / 0.15 and 0.70 / 0.70 / 0.05
  (346 s with that condition added, same numbers for the others).
With the nine-stage RAHF (280 s): injected N=8 0.83 / 0.90 / 0.10, N=1 0.90, q0.95 0.80, the oracle's mask 0.97,
blending path 0.77; generated 0.00 (18 of 20 masks empty), q0.95 0.05 / 0.25, the oracle's mask 0.25 / 0.55; nothing to
fix 0.00 / 0.00 / 0.00 and 0.05 / 0.05 / 0.00.
With the six-stage RAHF (284 s): injected N=8 0.87 / 0.93 / 0.10, N=1 0.83; generated q0.95 0.15 / 0.40, the oracle's
mask 0.15 / 0.55; nothing to fix 0.05 / 0.05 / 0.00 and 0.10 / 0.10 / 0.05.
With the first inpainting model (603 s, shared with a training job): injected 0.83 / 0.87 / 0.13, N=1 0.80, q0.95
0.70, the oracle's mask 0.93, blending path 0.77; generated 0.00, q0.95 0.05 / 0.25, the oracle's mask 0.25 / 0.50.
With the third-stage RAHF and the first inpainting model: injected 0.90 / 0.93 / 0.10, N=1 0.87, the oracle's mask
0.93; generated 0.00 (15 of 20 masks empty), the oracle's mask 0.25 / 0.50.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from richfeedback.inpaint.examples import artifact_examples, oracle_repair
from richfeedback.inpaint.fix import FixSettings, InpaintFixer
from richfeedback.inpaint.repair import load_inpaint_pipeline
from richfeedback.inpaint.selection import MaskHeatScore, select_best
from richfeedback.shapesworld import oracle
from richfeedback.shapesworld.evaluate import PROTOCOL_PROMPT_SEED
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_prompts, sample_scene


def injected_cases(n: int, seed: int = 0) -> list[dict]:
    return [{"set": "injected", **example} for example in artifact_examples(n, seed)]


def generated_cases(pipe, n: int, n_clean: int = 0) -> tuple[list[dict], list[dict]]:
    """The first `n` images of the evaluation protocol's prompts that the oracle flags, and the first `n_clean` that
    it does not; `pipe`: any pipeline over the embedded generator's components."""
    from diffusers import AutoPipelineForText2Image

    from richfeedback.generation import EMBEDDED_DEFAULTS, generate_images

    text2image = AutoPipelineForText2Image.from_pipe(pipe)
    prompts = sample_prompts(8 * (n + n_clean), seed=PROTOCOL_PROMPT_SEED, split="all")
    flagged, clean = [], []
    for start in range(0, len(prompts), 16):
        batch = prompts[start : start + 16]
        for prompt, image in zip(batch, generate_images(text2image, batch, [0] * len(batch), **EMBEDDED_DEFAULTS)):
            report = oracle.evaluate(prompt, image)
            case = {"set": "generated", "kind": "generator", "prompt": prompt, "image": image, "before": report}
            if report.has_artifact and len(flagged) < n:
                flagged.append(case)
            elif not report.has_artifact and len(clean) < n_clean:
                clean.append({**case, "set": "generated, nothing to fix", "kind": None})
            if len(flagged) == n and len(clean) == n_clean:
                return flagged, clean
    return flagged, clean


def clean_render_cases(n: int, seed: int = 6) -> list[dict]:
    """`n` clean renders (seed 6: neither the injected cases' scenes nor the dev ones'): images with nothing to fix."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        scene = sample_scene(rng)
        image = render(scene)
        cases.append({"set": "clean renders", "kind": None, "prompt": scene.prompt.text, "image": image,
                      "before": oracle.evaluate(scene.prompt.text, image)})
    return cases


def is_fixed(case: dict, output: np.ndarray) -> tuple[bool, bool, bool]:
    """(fixed, artifact left, new misalignment) by the oracle, against the image before repair."""
    before = case["before"]
    after = oracle.evaluate(case["prompt"], output)
    lost_word = any(b.satisfied and not a.satisfied for b, a in zip(before.words, after.words))
    new_misalignment = lost_word or after.extra_objects > before.extra_objects
    return (not after.has_artifact) and not new_misalignment, after.has_artifact, new_misalignment


def harm(case: dict, result) -> dict:
    """What inpaint-fix did to an image with nothing to fix: masked it, changed it, made it worse by the oracle."""
    _, artifact_after, new_misalignment = is_fixed(case, result.image)
    return {"masked": bool(result.mask.any()), "changed": not np.array_equal(result.image, case["image"]),
            "harmed": artifact_after or new_misalignment}


def judge(case: dict, output: np.ndarray, mask: np.ndarray, kept: bool, candidates=()) -> dict:
    image, truth = case["image"], case["before"].artifact_map
    score_before, score_after = (float(s) for s in PLAUSIBILITY.score([case["prompt"]] * 2, [image, output]))
    fixed, artifact_after, new_misalignment = is_fixed(case, output)
    return {
        "empty_mask": not mask.any(),
        "mask_area": float(mask.mean()),
        "artifact_coverage": float((mask & truth).sum() / max(truth.sum(), 1)),
        "artifact_after": artifact_after,
        "new_misalignment": new_misalignment,
        "fixed": fixed,
        # The same candidates picked by the oracle instead of the reward: what a perfect selector would reach.
        "fixed_by_some_candidate": fixed or any(is_fixed(case, c)[0] for c in candidates),
        "kept_original": kept,
        "plausibility_before": score_before,
        "plausibility_after": score_after,
        "outside_unchanged": bool((output == image).all(-1)[~mask].all()),
    }


def shifted(mask: np.ndarray, rng: np.random.Generator, cell: int) -> np.ndarray:
    """The mask moved by a random whole-cell offset (wrapping around): same shape, same area, another place."""
    h, w = mask.shape
    dy = int(rng.integers(1, h // cell)) * cell
    dx = int(rng.integers(1, w // cell)) * cell
    return np.roll(mask, (dy, dx), axis=(0, 1))


def summarize(name: str, condition: str, n_candidates: int, judged: list[dict]) -> dict:
    def mean(key):
        return float(np.mean([j[key] for j in judged]))

    return {"set": name, "mask": condition, "N": n_candidates, "images": len(judged),
            "empty_mask": mean("empty_mask"), "mask_area": mean("mask_area"),
            "artifact_coverage": mean("artifact_coverage"),
            "artifact_rate_before": 1.0, "artifact_rate_after": mean("artifact_after"),
            "fixed": mean("fixed"), "fixed_if_oracle_picked": mean("fixed_by_some_candidate"),
            "new_misalignment": mean("new_misalignment"),
            "kept_original": mean("kept_original"),
            "plausibility_before": mean("plausibility_before"), "plausibility_after": mean("plausibility_after"),
            "outside_unchanged": mean("outside_unchanged")}


PLAUSIBILITY = None  # RAHF's plausibility score (the heatmap model's, set by run)


def run(quick: bool = False) -> dict:
    global PLAUSIBILITY
    from tqdm.auto import tqdm

    settings = FixSettings(n=8, seed=0)
    fixer = InpaintFixer.load(settings=settings)
    PLAUSIBILITY = fixer.heatmap_model.for_score("plausibility")
    blending = InpaintFixer(load_inpaint_pipeline("embedded-generator"), fixer.heatmap_model, fixer.reward,
                            fixer.settings)
    quantile = InpaintFixer(fixer.pipe, fixer.heatmap_model, fixer.reward,
                            dataclasses.replace(fixer.settings,
                                                mask=dataclasses.replace(fixer.settings.mask, threshold="q0.95",
                                                                         floor=0.0, grow=None)))
    misalignment = InpaintFixer(fixer.pipe, fixer.heatmap_model, fixer.reward,
                                dataclasses.replace(fixer.settings, heatmap="misalignment"))
    # the ablation: RAHF's implausibility heatmap alone, for the mask and the mask heat (no artifact segmenter)
    rahf = getattr(fixer.heatmap_model, "rahf", fixer.heatmap_model)
    rahf_alone = InpaintFixer(fixer.pipe, rahf, MaskHeatScore(rahf), fixer.settings)  # records artifact_model None
    cell = fixer.settings.mask.round_to_cells
    flagged, nothing_to_fix = generated_cases(blending.pipe, 6 if quick else 20, 4 if quick else 20)
    cases = injected_cases(10 if quick else 30) + flagged
    nothing_to_fix = clean_render_cases(4 if quick else 20) + nothing_to_fix
    rng = np.random.default_rng(0)
    judged: dict[tuple, list] = {}
    by_kind: dict[str, list] = {}

    def add(key, value):
        judged.setdefault(key, []).append(value)

    for case in tqdm(cases, desc="bench inpaint"):
        image, prompt = case["image"], case["prompt"]
        main = fixer.fix(image, prompt)
        add((case["set"], "predicted", 8), judge(case, main.image, main.mask, main.chosen is None, main.candidates))
        by_kind.setdefault(case["kind"], []).append(judged[(case["set"], "predicted", 8)][-1]["fixed"])
        if main.candidates:  # N=1: candidate 0 alone against the original
            one = select_best(main.original_score, main.candidate_scores[:1],
                              eligible=None if main.eligible is None else main.eligible[:1])
            output = image if one.chosen is None else main.candidates[0]
            add((case["set"], "predicted", 1), judge(case, output, main.mask, one.chosen is None, main.candidates[:1]))
            random = fixer.fix(image, prompt, mask=shifted(main.mask, rng, cell))
        else:
            add((case["set"], "predicted", 1), judge(case, image, main.mask, True))
            random = main  # an empty mask moved anywhere is still empty
        add((case["set"], "random (same area)", 8),
            judge(case, random.image, random.mask, random.chosen is None, random.candidates))
        for label, fixer_used, mask in (("predicted, RAHF alone", rahf_alone, None),
                                        ("predicted q0.95", quantile, None),
                                        ("misalignment heatmap", misalignment, None),
                                        ("oracle", fixer, oracle_repair(prompt, image, 2, cell, case["before"])[0]),
                                        ("generator (4-channel)", blending, main.mask if main.mask.any() else None)):
            if label.startswith("generator") and mask is None:  # nothing to fix: the same as the main run
                add((case["set"], label, 8), judge(case, image, main.mask, True))
                continue
            result = fixer_used.fix(image, prompt, mask=mask)
            add((case["set"], label, 8),
                judge(case, result.image, result.mask, result.chosen is None, result.candidates))
    untouched: dict[tuple, list] = {}
    for case in tqdm(nothing_to_fix, desc="bench inpaint (nothing to fix)"):
        for label, fixer_used in (("predicted", fixer), ("predicted, RAHF alone", rahf_alone),
                                  ("misalignment heatmap", misalignment)):
            result = fixer_used.fix(case["image"], case["prompt"])
            untouched.setdefault((case["set"], label), []).append(harm(case, result))
    rows = [summarize(name, condition, n, values) for (name, condition, n), values in judged.items()]
    order = {"predicted": 0, "predicted, RAHF alone": 1, "random (same area)": 2, "predicted q0.95": 3, "misalignment heatmap": 3.7, "oracle": 4,
             "generator (4-channel)": 5}
    rows.sort(key=lambda r: (r["set"] != "injected", order[r["mask"]] + (r["N"] == 1) * 0.5))
    # images with nothing to fix (default settings, and the misalignment heatmap's masks): the share masked, changed
    # and made worse (a new artifact, a lost prompt word or an added object): what a heatmap that fires on clean
    # images would cost
    rows += [{"set": name, "mask": label, "N": 8, "images": len(values),
              **{k: float(np.mean([h[k] for h in values])) for k in ("masked", "changed", "harmed")}}
             for (name, label), values in untouched.items()]
    return {
        "rows": rows,
        "fixed_by_artifact_kind_predicted_N8": {k: float(np.mean(v)) for k, v in by_kind.items()},

        "settings": {"n": settings.n, "mask": dataclasses.asdict(fixer.settings.mask),
                     "artifact_model": fixer.settings.artifact_model, "artifact_cut": fixer.settings.artifact_cut,
                     "sampling": fixer.settings.sampling, "reward": fixer.reward_name,
                     "inpaint_model": "embedded inpainting model (9-channel)",
                     "injected_images": sum(c["set"] == "injected" for c in cases),
                     "generated_images": sum(c["set"] == "generated" for c in cases)},
        "target": "at N=8, >= 60% of artifact images fixed by the oracle, with no new misalignment",
    }
