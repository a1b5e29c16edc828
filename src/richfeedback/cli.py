"""The `richfeedback` command line. It only parses arguments and calls the library; each command names its module.

    richfeedback generate --prompt "a red circle on the left" --n 8 --out out/gen      (richfeedback.generation)
    richfeedback oracle out/gen                                                        (richfeedback.shapesworld.evaluate)
    richfeedback shapesworld prompts --n 32 --split heldout --out prompts.txt          (richfeedback.shapesworld.scene)
    richfeedback shapesworld sample --n 16 --out out/samples                           (richfeedback.shapesworld)
    richfeedback shapesworld make-dataset --n 2000 --out data/shapes-richhf            (richfeedback.shapesworld.dataset)
    richfeedback rahf train|eval|predict|prepare-richhf18k                             (richfeedback.reward_models.rahf)
    richfeedback pool generate|score|filter ...                                       (richfeedback.finetune)
    richfeedback finetune --config configs/finetune/embedded.yaml                      (richfeedback.finetune.loop)
    richfeedback inpaint-fix IMAGES --prompt TEXT --out DIR                            (richfeedback.inpaint)
    richfeedback ab make|results|auto|simulate ...                                     (richfeedback.eval.ab)
    richfeedback adapter train|eval ...                                                (richfeedback.reward_models.adapters)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence


from .errors import UsageError  # one class, also when this module runs as __main__


def read_prompts(args) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts:
        path = Path(args.prompts)
        if not path.exists():
            raise UsageError(f"{path}: no such prompts file (one prompt per line, or JSONL with a 'prompt' field)")
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            prompts.append(json.loads(line)["prompt"] if line.startswith("{") else line)
    if not prompts:
        raise UsageError("give --prompt TEXT (repeatable) or --prompts FILE")
    return prompts


def cmd_generate(args) -> None:
    from .generation import generate_to_folder, plan_jobs, read_manifest
    from .guidance.cli import guidance_from_args
    from .imaging import load_rgb, make_grid, save_png

    prompts = read_prompts(args)
    jobs = plan_jobs(prompts, args.n, args.seed)
    guidance = guidance_from_args(args, embedded=args.model in (None, "embedded", "shapes"))
    out = generate_to_folder(args.model, jobs, args.out, batch_size=args.batch_size, device=args.device,
                             num_inference_steps=args.steps, guidance_scale=args.cfg_scale, guidance=guidance)
    wanted = {(j.prompt, j.seed) for j in jobs}
    rows = [r for r in read_manifest(out) if (r["prompt"], r["seed"]) in wanted]
    grid = make_grid([load_rgb(out / r["file_name"]) for r in rows[:64]], ncols=max(args.n, 1) if args.n <= 16 else 8,
                     scale=2 if args.n <= 16 else 1)
    save_png(grid, out / "grid.png")
    print(f"wrote {len(rows)} images to {out} (manifest: {out / 'manifest.jsonl'}, grid: {out / 'grid.png'})")


def cmd_oracle(args) -> None:
    from .shapesworld.evaluate import evaluate_folder

    try:
        summary = evaluate_folder(args.folder, args.out)
    except FileNotFoundError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out or args.folder)
    print(f"oracle on {summary['num_images']} images of {args.folder}:")
    print(f"  full-prompt accuracy  {summary['prompt_accuracy']:.3f}")
    for kind, value in summary["word_alignment"].items():
        print(f"  {kind:<9} words       {'-' if value is None else f'{value:.3f}'}")
    print(f"  artifact rate         {summary['artifact_rate']:.3f}")
    print(f"  extra-object rate     {summary['extra_object_rate']:.3f}")
    if summary["skipped"]:
        print(f"  skipped {len(summary['skipped'])} images (see {out / 'oracle_summary.json'})")
    print(f"per-image reports: {out / 'oracle.jsonl'}; summary: {out / 'oracle_summary.json'}")


def cmd_prompts(args) -> None:
    from .shapesworld.scene import sample_prompts

    prompts = sample_prompts(args.n, args.seed, args.split)
    text = "\n".join(prompts) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {len(prompts)} {args.split} prompts to {args.out}")
    else:
        sys.stdout.write(text)


def cmd_sample(args) -> None:
    from .shapesworld.samples import write_samples

    out = write_samples(args.out, n=args.n, seed=args.seed, size=args.size)
    print(f"wrote ShapesWorld samples (clean, artifacts with their regions, misalignments) to {out}")


def cmd_make_dataset(args) -> None:
    from .shapesworld.dataset import make_dataset, split_sizes

    try:
        n_train, n_dev, n_test = split_sizes(args.n, args.dev_fraction, args.test_fraction)
        make_dataset(args.out, n_train, n_dev, n_test, size=args.size, num_proc=args.num_proc)
    except (FileExistsError, ValueError) as err:
        raise UsageError(str(err)) from err
    print(f"wrote the ShapesWorld rich-feedback dataset ({n_train} train / {n_dev} dev / {n_test} test) to {args.out}; "
          f"raters' agreement in {Path(args.out) / 'agreement.json'}")


def cmd_renders(args) -> None:
    from .shapesworld.renders import write_render_folder

    out = write_render_folder(args.out, args.n, seed=args.seed, split=args.split, size=args.size)
    print(f"wrote {args.n} clean {args.split} renders with their prompts to {out} (metadata.jsonl: file_name, text)")


def build_parser() -> argparse.ArgumentParser:
    from .guidance.cli import add_guidance_arguments

    parser = argparse.ArgumentParser(prog="richfeedback", description="Rich human feedback for text-to-image models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate images with the embedded model or any diffusers pipeline")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts", help="file with one prompt per line (or JSONL with 'prompt')")
    p.add_argument("--n", type=int, default=4, help="images per prompt")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; the others follow")
    p.add_argument("--out", required=True, help="output folder (PNG files, manifest.jsonl, grid.png)")
    p.add_argument("--model", default=None, help="diffusers folder or hub id (default: the embedded ShapesWorld model)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    add_guidance_arguments(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("oracle", help="the ShapesWorld oracle's numbers for a folder of generations")
    p.add_argument("folder")
    p.add_argument("--out", default=None, help="where to write oracle.jsonl and oracle_summary.json (default: folder)")
    p.set_defaults(func=cmd_oracle)

    sw = sub.add_parser("shapesworld", help="the synthetic world: prompts, samples, datasets").add_subparsers(
        dest="shapesworld_command", required=True)
    p = sw.add_parser("prompts", help="sample prompts of the grammar")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "heldout", "all"), default="all",
                   help="held-out prompts are never seen by the embedded generator")
    p.add_argument("--out", default=None, help="file to write (default: stdout)")
    p.set_defaults(func=cmd_prompts)
    p = sw.add_parser("sample", help="render example scenes with injected artifacts and misalignments")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sample)
    p = sw.add_parser("renders", help="clean renders as an imagefolder dataset (fine-tuning regularisation data)")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("train", "heldout", "all"), default="train")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_renders)
    p = sw.add_parser("make-dataset", help="a rich-feedback dataset in the RichHF-18K schema")
    p.add_argument("--n", type=int, required=True, help="total examples over the three splits")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--num-proc", type=int, default=1, help="worker processes (the rows are the same for any number)")
    p.set_defaults(func=cmd_make_dataset)

    from .eval.ab.cli import add_ab_command
    from .finetune.cli import add_finetune_command, add_pool_command
    from .inpaint.cli import add_inpaint_command
    from .reward_models.adapters.cli import add_adapter_command
    from .reward_models.cli import add_score_command
    from .reward_models.rahf.cli import add_rahf_command

    add_score_command(sub)
    add_rahf_command(sub)
    add_pool_command(sub)
    add_finetune_command(sub)
    add_inpaint_command(sub)
    add_ab_command(sub)
    add_adapter_command(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, FileNotFoundError, FileExistsError, ValueError) as err:
        # Input problems are reported in one line that names the file and the fix.
        if os.environ.get("RICHFEEDBACK_DEBUG"):
            raise
        print(f"richfeedback: error: {err}", file=sys.stderr)
        print("(set RICHFEEDBACK_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
