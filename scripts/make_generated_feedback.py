"""Rich feedback on the embedded generator's own images, and the embedded RAHF fine-tuned on it.

    OMP_NUM_THREADS=1 python scripts/make_generated_feedback.py [--stages generate label train]
    python benchmarks/run.py --only rahf_ranking          # the fine-tuned RAHF against the embedded one

1. generate: a pool (`richfeedback.finetune.pool`) of `--n` images for each of `--num-prompts` ShapesWorld training
   prompts by the embedded generator, leaving out the prompts of `--exclude-pool` (the fine-tuning pool that the
   benchmark ranks); resumable: rerun it, or stop it and go on with what is there (`--stages label train`)
2. label: the oracle's reading of every image, labelled by the three simulated raters (`shapesworld.generated_feedback`)
   into a ShapesWorld-RichHF dataset split by prompt (train/dev/test share no prompt)
3. twins (optional, not in the default stages): `--twins-out DIR`, the flagged images of the labelled train split
   with the oracle's repair pasted in and labelled again (`make_repaired_twins`), minimal pairs to add to training
   with `data.extra_paths` (`configs/rahf/experiments/generated-twins.yaml`)
4. train: `configs/rahf/shapes-generated.yaml`, the embedded RAHF fine-tuned on that dataset plus part of the
   synthetic one (`data.extra_paths`); resumable; the best dev model is in `<output_dir>/best`

The synthetic dataset (`runs/embedded-rahf/data`) is made by `scripts/train_embedded_rahf.py`, or here if missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from richfeedback.finetune.pool import generate_pool, pool_prompts, read_pool  # noqa: E402
from richfeedback.reward_models.rahf.train import load_config, train  # noqa: E402
from richfeedback.shapesworld.dataset import make_dataset, split_sizes  # noqa: E402
from richfeedback.shapesworld.generated_feedback import make_generated_dataset, make_repaired_twins  # noqa: E402
from richfeedback.shapesworld.scene import sample_prompts  # noqa: E402

STAGES = ("generate", "label", "twins", "train")


def training_prompts(num_prompts: int, prompt_seed: int, exclude_pool: Path | None) -> list[str]:
    """`num_prompts` distinct training-split prompts, none of them in the pool at `exclude_pool`."""
    excluded = set(pool_prompts(exclude_pool)) if exclude_pool and exclude_pool.exists() else set()
    # Ask for enough extra prompts that the excluded ones can be dropped and `num_prompts` remain.
    candidates = sample_prompts(num_prompts + len(excluded), seed=prompt_seed, split="train")
    prompts = [p for p in candidates if p not in excluded][:num_prompts]
    return prompts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=["generate", "label", "train"])
    parser.add_argument("--config", default=str(ROOT / "configs/rahf/shapes-generated.yaml"))
    parser.add_argument("--pool", default="runs/rahf-generated/pool", help="where the generated images go")
    parser.add_argument("--num-prompts", type=int, default=1200)
    parser.add_argument("--n", type=int, default=4, help="images per prompt")
    parser.add_argument("--prompt-seed", type=int, default=2026)
    parser.add_argument("--seed", type=int, default=100000, help="seed of the first image (image k of prompt i: "
                        "seed + i * n + k)")
    parser.add_argument("--exclude-pool", default="runs/finetune-embedded/pool",
                        help="a pool whose prompts are left out (the benchmark ranks that pool's images)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--twins-out", default="runs/rahf-generated-twins/data",
                        help="where the twins stage writes the repaired twins of the labelled images")
    parser.add_argument("--twins-from", nargs="*", default=None,
                        help="generated-feedback datasets to make twins of (default: the config's data.path)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: keep it low)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    pool = Path(args.pool)
    data_dir = Path(cfg["data"]["path"])

    if "generate" in args.stages:
        prompts = training_prompts(args.num_prompts, args.prompt_seed,
                                   Path(args.exclude_pool) if args.exclude_pool else None)
        generate_pool(None, prompts, pool, n=args.n, seed=args.seed, shard_size=16, batch_size=16)
        print(f"generated {len(read_pool(pool))} images in {pool}")

    if "label" in args.stages:
        if (data_dir / "dataset_dict.json").exists():
            print(f"{data_dir} exists: keeping it (delete it to label the pool again)")
        else:
            rows = read_pool(pool)
            print(f"labelling {len(rows)} images of {len({r['prompt'] for r in rows})} prompts from {pool}")
            data = make_generated_dataset(rows, data_dir, seed=args.split_seed)
            print(f"wrote {data_dir}: " + ", ".join(f"{name} {len(ds)}" for name, ds in data.items()))
        for extra in cfg["data"]["extra_paths"]:
            if not (Path(extra) / "dataset_dict.json").exists():
                make_dataset(extra, *split_sizes(10000), size=64)  # the embedded RAHF's synthetic data, same seeds

    if "twins" in args.stages:
        twins = make_repaired_twins(args.twins_from or [data_dir], args.twins_out)
        print(f"wrote {len(twins['train'])} repaired twins to {args.twins_out}")

    if "train" in args.stages:
        best = train(cfg, resume=True)
        print(f"fine-tuned RAHF: {best}  (compare: python benchmarks/run.py --only rahf_ranking)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
