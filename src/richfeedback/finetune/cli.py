"""`richfeedback pool generate|score|filter` and `richfeedback finetune` (the library: richfeedback.finetune).

    richfeedback pool generate --model embedded --prompts prompts.txt --n 8 --out runs/pool
    accelerate launch -m richfeedback.finetune.cli pool generate ...         (the processes split the prompts)
    richfeedback pool score runs/pool --model rahf:alignment --model pickscore=weights/pickscore
    richfeedback pool filter runs/pool --policy align_sd --score rahf:alignment --temperature 0.05 --out runs/data
    accelerate launch -m richfeedback.finetune.train --config configs/finetune/embedded.yaml
    richfeedback finetune --config configs/finetune/embedded.yaml              (all four stages, each resumable)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import UsageError


def _number_or_quantile(text: str):
    """--min-score: 0.5, or q0.9 (a quantile of the pool's scores)."""
    return text if text.strip().lower().startswith("q") else float(text)


def cmd_pool_generate(args) -> None:
    from ..cli import read_prompts
    from .pool import count_missing, generate_pool

    prompts = read_prompts(args)
    state = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under `accelerate launch`: this process's share of the shards
        from accelerate import PartialState

        state = PartialState(cpu=args.device == "cpu")
    index, count = (state.process_index, state.num_processes) if state else (0, 1)
    device = str(state.device) if state and args.device != "cpu" else args.device
    generate_pool(args.model, prompts, args.out, n=args.n, seed=args.seed, shard_size=args.shard_size,
                  batch_size=args.batch_size, device=device, process_index=index, num_processes=count,
                  num_inference_steps=args.steps, guidance_scale=args.cfg_scale)
    if state:
        state.wait_for_everyone()
    if index == 0:
        missing = count_missing(args.out)
        done = "complete" if not missing else f"{missing} images still missing: run the same command again"
        print(f"pool {args.out}: {args.n} images for each of {len(prompts)} prompts ({done}); "
              f"next: richfeedback pool score {args.out} --model ...")


def cmd_pool_score(args) -> None:
    from ..reward_models.cli import ModelSpec, parse_model_specs
    from .pool import ORACLE, read_pool, score_pool

    specs = [s for s in args.model if s.partition("=")[0] != ORACLE]
    models = parse_model_specs(specs)
    if len(specs) < len(args.model):
        models.append(ModelSpec(ORACLE))
    counts = score_pool(args.pool, models, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    rows = read_pool(args.pool)
    names = sorted({k for r in rows for k in r["scores"]})
    print(f"scored {', '.join(f'{n} ({c} new)' for n, c in counts.items())}; the pool's {len(rows)} images now have: "
          f"{', '.join(names)}")


def cmd_pool_filter(args) -> None:
    from .filtering import FilterPolicy, describe_kept, filter_pool

    policy = FilterPolicy(policy=args.policy, score=args.score, normalize=args.normalize, min_score=args.min_score,
                          k=args.k, min_gap=args.min_gap, temperature=args.temperature,
                          min_candidates=args.min_candidates,
                          negatives=args.negatives, negative_prefix=args.negative_prefix,
                          negative_ratio=args.negative_ratio, skip_flat=not args.keep_flat,
                          min_prompts=args.min_prompts)
    report = filter_pool(args.pool, args.out, policy)
    print(f"kept {describe_kept(report)} of {report['pool_images']} images ({report['kept_prompts']} of "
          f"{report['pool_prompts']} prompts) -> {args.out} "
          f"(metadata.jsonl, filter_report.json); train with: accelerate launch -m richfeedback.finetune.train "
          f"--config configs/finetune/{'embedded-dpo' if args.policy == 'pairs' else 'embedded'}.yaml "
          f"--set data.path={args.out}")


def cmd_finetune(args) -> None:
    from .loop import STAGES, load_loop_config, run_loop

    cfg = load_loop_config(args.config, args.set)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"--stages {args.stages}: unknown {', '.join(unknown)}; the stages are {','.join(STAGES)}")
    paths = run_loop(cfg, stages, config_dir=Path(args.config).resolve().parent)
    print(f"pool: {paths['pool']}  data: {paths['data']}  LoRA: {paths['lora']}")


def add_pool_command(subparsers) -> None:
    pool = subparsers.add_parser("pool", help="generate, score and filter a pool of images for fine-tuning",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = pool.add_subparsers(dest="pool_command", required=True)
    p = sub.add_parser("generate", help="N images per prompt with recorded seeds, in resumable shards")
    p.add_argument("--model", default=None, help="diffusers folder or hub id (default: the embedded model)")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts", help="file with one prompt per line (or JSONL with 'prompt')")
    p.add_argument("--n", type=int, default=8, help="images per prompt")
    p.add_argument("--seed", type=int, default=0, help="image k of prompt i has seed SEED + i * N + k")
    p.add_argument("--out", required=True, help="the pool folder (resumes if it exists)")
    p.add_argument("--shard-size", type=int, default=16, help="prompts per shard")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (under accelerate launch: each process's GPU)")
    p.set_defaults(func=cmd_pool_generate)

    p = sub.add_parser("score", help="add reward model scores to every pool image (resumable)")
    p.add_argument("pool")
    p.add_argument("--model", action="append", required=True, metavar="NAME[=WEIGHTS][,adapter=DIR]",
                   help="a reward model NAME[=WEIGHTS][,adapter=DIR] (repeatable); 'oracle' scores ShapesWorld "
                        "pools with the exact oracle")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.set_defaults(func=cmd_pool_score)

    p = sub.add_parser("filter", help="keep the best images as an imagefolder dataset (metadata.jsonl)")
    p.add_argument("pool")
    p.add_argument("--out", required=True, help="dataset folder to write (must not exist or be empty)")
    p.add_argument("--policy", choices=("threshold", "topk", "align_sd", "pairs"), default="align_sd")
    p.add_argument("--score", default="rahf:overall",
                   help="a score name or a weighted sum: '1.0*rahf:alignment + 0.5*rahf:plausibility'")
    p.add_argument("--normalize", choices=("none", "zscore"), default="none",
                   help="z-score each model's scores over the pool before weighting")
    p.add_argument("--min-score", type=_number_or_quantile, default=None,
                   help="threshold (and optional floor for topk, and for the chosen image of pairs): a number, or "
                        "q0.9 for the 0.9 quantile of the pool's scores")
    p.add_argument("--k", type=int, default=1, help="topk: images kept per prompt; pairs: pairs kept per prompt")
    p.add_argument("--min-gap", type=float, default=0.0,
                   help="pairs: the least score difference between a pair's images (default: any difference)")
    p.add_argument("--temperature", type=float, default=1.0, help="align_sd: softmax temperature of the scores")
    p.add_argument("--min-candidates", type=int, default=4, help="align_sd: prompts with fewer images are skipped")
    p.add_argument("--negatives", action="store_true", help="align_sd: keep the worst image as a negative")
    p.add_argument("--negative-prefix", default="Weird image. ", help="caption prefix of negatives")
    p.add_argument("--keep-flat", action="store_true",
                   help="align_sd: count flat images (blank, or blacked out by a safety checker) among a prompt's "
                        "images instead of leaving them out, as align_sd does")
    p.add_argument("--negative-ratio", type=float, default=None,
                   help="align_sd: at most this many negatives per kept positive, a seeded random subset (its authors "
                        "used 0.57: all negatives trained worse)")
    p.add_argument("--min-prompts", type=int, default=1, help="fail if fewer prompts are kept")
    p.set_defaults(func=cmd_pool_filter)


def add_finetune_command(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="pool, score, filter and LoRA-train from one YAML file",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file (see configs/finetune/)")
    p.add_argument("--stages", default=None, help="comma-separated subset of pool,score,filter,train")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.optim.max_steps=100 (repeatable)")
    p.set_defaults(func=cmd_finetune)


def main(argv=None) -> int:
    """`python -m richfeedback.finetune.cli pool ...`: for `accelerate launch`."""
    from ..cli import main as richfeedback_main

    return richfeedback_main(argv)


if __name__ == "__main__":
    sys.exit(main())
