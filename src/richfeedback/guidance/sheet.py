"""A sheet of guided next to unguided images: two `richfeedback generate` folders made with the same prompts and
seeds, paired by (prompt, seed), each pair captioned with the guiding reward's score of both images.

    python -m richfeedback.guidance.sheet out/unguided out/guided --out out/guided_vs_unguided.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from ..generation import read_manifest
from ..imaging import load_rgb, make_grid, save_png


def paired_rows(unguided: Path, guided: Path) -> list[tuple[dict, dict]]:
    """(unguided row, guided row) for every (prompt, seed) the two folders share, in the guided folder's order."""
    for folder in (unguided, guided):
        if not (folder / "manifest.jsonl").exists():
            raise FileNotFoundError(f"{folder}/manifest.jsonl not found: pass folders written by richfeedback generate")
    by_key = {(r["prompt"], r["seed"]): r for r in read_manifest(unguided)}
    pairs = [(by_key[(r["prompt"], r["seed"])], r) for r in read_manifest(guided) if (r["prompt"], r["seed"]) in by_key]
    if not pairs:
        raise ValueError(f"{unguided} and {guided} share no (prompt, seed): generate both with the same --prompts, "
                         "--n and --seed")
    return pairs


def side_by_side(unguided: str | os.PathLike, guided: str | os.PathLike, out: str | os.PathLike,
                 reward: Optional[str] = None, max_pairs: int = 32) -> Path:
    """Write the sheet: rows of (unguided, guided) pairs, captioned with the reward (default: the one the guided
    folder was guided by) of each image."""
    unguided, guided = Path(unguided), Path(guided)
    pairs = paired_rows(unguided, guided)[:max_pairs]
    reward = reward or pairs[0][1].get("guidance", {}).get("reward")
    images = [load_rgb(folder / row["file_name"]) for a, b in pairs for folder, row in ((unguided, a), (guided, b))]
    captions = ["unguided", "guided"] * len(pairs)
    if reward:
        from .rewards import load_reward

        prompts = [row["prompt"] for a, b in pairs for row in (a, b)]
        scores = load_reward(reward).score(prompts, images).tolist()
        captions = [f"{c[0]} {s:.3f}" for c, s in zip(captions, scores)]  # "u 0.712" / "g 0.801"
    scale = 2 if images[0].shape[0] <= 128 else 1
    grid = make_grid(images, ncols=8, scale=scale, captions=captions, caption_height=12)
    return save_png(grid, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("unguided")
    parser.add_argument("guided")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--reward", default=None, help="reward to caption with (default: the guiding one)")
    args = parser.parse_args(argv)
    try:
        path = side_by_side(args.unguided, args.guided, args.out, reward=args.reward)
    except (FileNotFoundError, ValueError) as err:
        print(f"richfeedback.guidance.sheet: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: pairs of (unguided, guided) images, u/g = the {args.reward or 'guiding'} reward of each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
