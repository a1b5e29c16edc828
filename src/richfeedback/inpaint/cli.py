"""`inpaint-fix` (also `richfeedback inpaint-fix`): repair what a heatmap model marks as implausible.

    inpaint-fix out/gen --out out/fix                                   # a generate folder: prompts from its manifest
    inpaint-fix a.png b.png --prompt "a red circle on the left" --n 8 --out out/fix
    inpaint-fix photos/ --prompts prompts.jsonl --inpaint-model path/to/sd-inpainting --heatmap-model model.pt \\
        --reward "0.7*rahf:plausibility+0.3*imagereward" --threshold q0.97 --dilate 0.03 --crop-padding 32 --out out/fix

Per image: the heatmap (RAHF's implausibility map by default) is thresholded, cleaned, dilated and rounded up to
latent cells; N candidates are inpainted in one batched pipeline call and pasted back (pixels outside the mask are
the input's, exactly); the reward picks the best, and the input is kept when no candidate beats it.
Your own masks (--mask, white = repaint) or heatmaps (--heatmap) replace the predicted ones: a file for every image
or a folder with one file per image, named like it.

Output: OUT/fixed (images + manifest.jsonl), masks, overlays, strips (before | heatmap | mask | after), candidates,
reports (one JSON per image), summary.json and index.html. A rerun skips finished images. A file that cannot be used
is reported and skipped (exit status 1 at the end); the other images are repaired.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UsageError

# MaskConfig's defaults (kept here so that building the parser imports no numpy/scipy; a test keeps them equal)
DEFAULT_MASK = {"threshold": "r0.5", "floor": 0.1, "grow": "r0.3", "dilate": 2, "min_area": 4, "feather": 0.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders (a generate folder: its manifest's images)")
    prompts = p.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", help="the prompt of every image")
    prompts.add_argument("--prompts", help="one prompt per line per image (in order), or JSONL with file_name and "
                                           "prompt (a generate folder's manifest.jsonl works)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=8, help="candidates per image, inpainted in one batched call (default 8)")
    p.add_argument("--seed", type=int, default=0, help="candidate k of every image uses seed + k (default 0)")
    p.add_argument("--inpaint-model", default=None,
                   help="diffusers folder or hub id, inpainting (9-channel) or ordinary (4-channel) checkpoint "
                        "(default: the embedded ShapesWorld inpainting model; 'embedded-generator': the embedded "
                        "text-to-image generator through diffusers' 4-channel blending path)")
    p.add_argument("--heatmap-model", default=None,
                   help="RAHF weights: a folder from save_pretrained or the public checkpoint file "
                        "(default: the embedded ShapesWorld RAHF)")
    p.add_argument("--heatmap-size", default="large", help="architecture of a public RAHF checkpoint file")
    p.add_argument("--artifact-model", default="auto",
                   help="a pixel-level artifact segmenter whose heat joins RAHF's implausibility heatmap (pixelwise "
                        "maximum): a folder from scripts/train_embedded_artifact_segmenter.py, 'embedded', or 'none' "
                        "(default 'auto': the embedded ShapesWorld segmenter with the embedded RAHF, none with "
                        "--heatmap-model)")
    p.add_argument("--artifact-cut", type=float, default=0.5,
                   help="the segmenter's probabilities below this are ignored (default 0.5)")
    p.add_argument("--heatmap-kind", default="implausibility", choices=("implausibility", "misalignment"),
                   help="which RAHF heatmap makes the mask")
    p.add_argument("--reward", default=None,
                   help="what picks the best candidate: a reward model or a weighted sum, e.g. "
                        "'0.7*rahf:plausibility+0.3*rahf:aesthetics', or rahf:mask-heat (the default: the least RAHF "
                        "implausibility + misalignment heat inside the repainted mask); rahf:* terms are the "
                        "--heatmap-model's scores unless they name weights of their own (rahf:plausibility=FILE)")
    p.add_argument("--mask", default=None, help="your mask (white = repaint): one file, or a folder of files named "
                                                "like the images; used as given, rounded up to latent cells")
    p.add_argument("--heatmap", default=None, help="your heatmap (grayscale, white = hot): one file or a folder; it "
                                                   "goes through --threshold, --dilate and the rest")
    p.add_argument("--threshold", default=DEFAULT_MASK["threshold"],
                   help="absolute heat (0.2), a fraction of the hottest pixel's heat (r0.5), a quantile (q0.95) or "
                        f"otsu (default {DEFAULT_MASK['threshold']})")
    p.add_argument("--floor", type=float, default=DEFAULT_MASK["floor"],
                   help="the cut is never below this heat, so a map the model finds cold gets no mask "
                        f"(default {DEFAULT_MASK['floor']})")
    p.add_argument("--grow", default=DEFAULT_MASK["grow"],
                   help="hysteresis: grow each hot component over connected pixels above this lower cut (same syntax "
                        f"as --threshold; default {DEFAULT_MASK['grow']}; 'none' turns it off)")
    p.add_argument("--dilate", default=str(DEFAULT_MASK["dilate"]),
                   help=f"grow the mask by pixels ({DEFAULT_MASK['dilate']}, default) or a fraction of the image side "
                        "(0.05)")
    p.add_argument("--min-area", type=float, default=DEFAULT_MASK["min_area"],
                   help="drop heat components smaller than this many pixels (or this fraction of the image if < 1)")
    p.add_argument("--feather", type=float, default=DEFAULT_MASK["feather"],
                   help="pixels over which the repair fades into the original inside the mask's edge "
                        f"(default {DEFAULT_MASK['feather']:g}; 0: a hard edge)")
    p.add_argument("--no-round-to-latent", action="store_true",
                   help="keep the mask's exact outline instead of rounding it up to whole latent cells")
    p.add_argument("--crop-padding", type=int, default=None,
                   help="inpaint only a box around the mask with this padding, at working resolution "
                        "(diffusers' padding_mask_crop); default: the whole image")
    p.add_argument("--strength", type=float, default=1.0, help="1.0 repaints the mask from noise (default)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's), as in `richfeedback generate`")
    p.add_argument("--always-replace", action="store_true",
                   help="take the best candidate even when it scores below the original")
    p.add_argument("--alignment-guard", default="0.1", metavar="DROP",
                   help="a candidate whose RAHF alignment score is more than DROP below the original's cannot be "
                        "chosen (a repair must not lose a prompt word); 'none' turns it off (default 0.1)")
    p.add_argument("--batch-size", type=int, default=None, help="candidates per pipeline call (default: all --n)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"),
                   help="the inpainting pipeline's dtype (fp16/bf16 on a GPU); reward models stay fp32")


def add_inpaint_command(subparsers) -> argparse.ArgumentParser:
    """Register `inpaint-fix` on the `richfeedback` command's subparsers."""
    p = subparsers.add_parser("inpaint-fix", help="repair implausible regions: heatmap -> mask -> best-of-N inpainting",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_inpaint_fix)
    return p


def settings_from_args(args):
    from .fix import FixSettings
    from .masks import MaskConfig, parse_threshold, pixels

    try:
        parse_threshold(args.threshold)
        grow = None if args.grow is None or str(args.grow).lower() == "none" else args.grow
        if grow is not None:
            parse_threshold(grow)
        if not 0.0 <= args.floor <= 1.0:
            raise ValueError(f"--floor {args.floor} is outside [0, 1]: heatmaps live in [0, 1]")
        pixels(args.dilate, 64)
    except ValueError as err:
        raise UsageError(str(err)) from None
    guard = None if str(args.alignment_guard).lower() == "none" else args.alignment_guard
    try:
        guard = None if guard is None else float(guard)
    except ValueError:
        raise UsageError(f"--alignment-guard {args.alignment_guard}: give a number >= 0 or none") from None
    if guard is not None and not guard >= 0:
        raise UsageError(f"--alignment-guard {args.alignment_guard}: give a number >= 0 or none")
    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if not 0.0 < args.strength <= 1.0:
        raise UsageError(f"--strength must be in (0, 1], got {args.strength}")
    if not 0.0 <= args.artifact_cut < 1.0:
        raise UsageError(f"--artifact-cut {args.artifact_cut}: give a probability in [0, 1)")
    if args.mask and args.heatmap:
        raise UsageError("give --mask or --heatmap, not both (a mask is used as given; a heatmap is thresholded)")
    for option, value in (("--mask", args.mask), ("--heatmap", args.heatmap)):
        if value and not Path(value).exists():
            raise UsageError(f"{option} {value}: no such file or folder")
    sampling = {"strength": args.strength}
    if args.steps is not None:
        sampling["num_inference_steps"] = args.steps
    if args.cfg_scale is not None:
        sampling["guidance_scale"] = args.cfg_scale
    mask = MaskConfig(threshold=args.threshold, floor=args.floor, grow=grow, dilate=args.dilate, min_area=args.min_area,
                      round_to_cells=1 if args.no_round_to_latent else 0, feather=args.feather)
    return FixSettings(n=args.n, seed=args.seed, keep_original=not args.always_replace, crop_padding=args.crop_padding,
                       batch_size=args.batch_size, heatmap=args.heatmap_kind, mask=mask, sampling=sampling,
                       alignment_guard=guard, artifact_model=artifact_model_of(args), artifact_cut=args.artifact_cut)


def artifact_model_of(args) -> Optional[str]:
    """--artifact-model: None for "none", "auto"/"embedded" in any case, else the folder as given."""
    value = str(args.artifact_model)
    return None if value.lower() == "none" else value.lower() if value.lower() in ("auto", "embedded") else value


def generated_images_only(args, paths: list[Path]) -> list[Path]:
    """Given one generate folder (and no other prompt source), the images its manifest lists: not grid.png."""
    from ..generation import read_manifest

    folder = Path(args.images[0])
    if args.prompt is not None or args.prompts or len(args.images) != 1 or not folder.is_dir():
        return paths
    listed = {row.get("file_name") for row in read_manifest(folder)}
    return [p for p in paths if p.name in listed] if listed else paths


def run(args) -> int:
    """Repair the images; 0 when every file could be used, 1 when some were skipped (they are in the summary)."""
    from ..reward_models.cli import collect_images, prompts_for_images
    from .fix import InpaintFixer, fix_files

    settings = settings_from_args(args)
    paths = generated_images_only(args, collect_images(args.images))
    prompts = prompts_for_images(args, paths)
    if prompts is None:
        raise UsageError("inpaint-fix needs each image's prompt: give --prompt TEXT, --prompts FILE, or a folder with "
                         "the manifest.jsonl of `richfeedback generate`")
    from ..reward_models.base import parse_dtype

    if settings.artifact_model not in (None, "auto", "embedded"):
        from ..reward_models.artifact_segmenter import check_artifact_segmenter_folder

        check_artifact_segmenter_folder(settings.artifact_model)
    fixer = InpaintFixer.load(args.inpaint_model, args.heatmap_model, args.reward, settings,
                              heatmap_size=args.heatmap_size, device=args.device, dtype=parse_dtype(args.dtype))
    out = Path(args.out)

    def log(message: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)  # above the progress bar, not through it

    summary = fix_files(fixer, paths, prompts, out, masks=args.mask, heatmaps=args.heatmap, log=log)
    print(f"inpaint-fix: {summary['fixed']} fixed, {summary['kept_original']} kept (no candidate beat the original), "
          f"{summary['nothing_to_fix']} with nothing to fix, {len(summary['errors'])} skipped")
    if summary["mean_score_before"] is not None:
        print(f"  {summary['reward']}: mean {summary['mean_score_before']:.4f} before, "
              f"{summary['mean_score_after']:.4f} after")
    print(f"fixed images in {out / 'fixed'}; strips in {out / 'strips'}; reports in {out / 'reports'}; "
          f"overview {out / 'index.html'}")
    return 1 if summary["errors"] else 0


def cmd_inpaint_fix(args) -> None:
    code = run(args)
    if code:
        sys.exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `inpaint-fix` console script: the same command as `richfeedback inpaint-fix`, with the same errors."""
    import os

    parser = argparse.ArgumentParser(prog="inpaint-fix", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UsageError, FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        if os.environ.get("RICHFEEDBACK_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"inpaint-fix: error: {message}", file=sys.stderr)
        print("(set RICHFEEDBACK_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
