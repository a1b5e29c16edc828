"""`richfeedback adapter train|eval|make-pairs`: train a reward adapter, measure preference accuracy, or write
preference pairs (from a pool ranked by the oracle or a score, or from ShapesWorld) as a file. Parsing only."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_train(args) -> None:
    from ..train_adapter import load_config, train

    train(load_config(args.config, args.set), resume=args.resume, cpu=args.cpu)


def cmd_eval(args) -> None:
    from ...errors import UsageError
    from ..registry import load_reward_model
    from .evaluate import preference_accuracy
    from .preferences import pairs_from_pool, read_preference_file, shapesworld_pairs

    sources = [s for s in (args.pairs, args.pool, args.shapesworld) if s]
    if len(sources) != 1:
        raise UsageError("give exactly one of --pairs FILE, --pool DIR or --shapesworld N")
    if args.pairs:
        pairs = read_preference_file(args.pairs)
    elif args.pool:
        pairs = pairs_from_pool(args.pool, by=args.by)
    else:
        pairs = shapesworld_pairs(args.shapesworld, seed=args.seed)
    options = json.loads(args.options) if args.options else {}
    rows = []
    for adapter in [None, *args.adapter] if args.with_base else args.adapter or [None]:
        model = load_reward_model(args.model, args.weights, adapter=adapter, device=args.device, **options)
        result = preference_accuracy(model, pairs, batch_size=args.batch_size, seed=args.seed)
        rows.append({"model": args.model, "adapter": adapter, **result})
        print(f"{args.model}{' + ' + str(adapter) if adapter else ''}: accuracy {result['accuracy']:.3f} "
              f"[{result['ci_low']:.3f}, {result['ci_high']:.3f}] on {result['pairs']} pairs of "
              f"{result['prompts']} prompts ({result['ties']} ties left out)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {out}")


def cmd_make_pairs(args) -> None:
    from ...errors import UsageError
    from .preferences import pairs_from_pool, write_preference_file, write_shapesworld_pairs

    if bool(args.pool) == bool(args.shapesworld):
        raise UsageError("give one of --pool DIR or --shapesworld N")
    if args.shapesworld:
        path = write_shapesworld_pairs(args.out, args.shapesworld, seed=args.seed)
    else:
        pairs = pairs_from_pool(args.pool, by=args.by, keep_ties=not args.no_ties,
                                max_pairs_per_prompt=args.max_pairs_per_prompt, seed=args.seed)
        path = write_preference_file(pairs, Path(args.out) / "preferences.jsonl")
    print(f"wrote {sum(1 for _ in open(path))} pairs to {path} (train with data.source: preferences, data.path: {path})")


def add_adapter_command(subparsers) -> None:
    from ..train_adapter import add_arguments

    adapter = subparsers.add_parser("adapter", help="reward adapters: LoRA or head on PickScore, HPS, ImageReward, "
                                                    "aesthetic, CLIPScore").add_subparsers(dest="adapter_command",
                                                                                           required=True)
    p = add_arguments(adapter.add_parser("train", help="train an adapter (also: accelerate launch -m "
                                                       "richfeedback.reward_models.train_adapter --config ...)"))
    p.set_defaults(func=cmd_train)

    p = adapter.add_parser("eval", help="preference accuracy with a 95%% bootstrap interval")
    p.add_argument("--model", required=True, help="reward model name (pickscore, hpsv2.1, imagereward, ...)")
    p.add_argument("--weights", default=None, help="the base weights (file, folder or hub id)")
    p.add_argument("--adapter", action="append", default=[], help="adapter folder (repeatable)")
    p.add_argument("--with-base", action="store_true", help="also evaluate the base without adapter")
    p.add_argument("--pairs", help="preferences file (ab results JSONL, Pick-a-Pic, HPDv2)")
    p.add_argument("--pool", help="pool or generate folder, ranked --by the oracle or a score")
    p.add_argument("--by", default="oracle")
    p.add_argument("--shapesworld", type=int, default=None, metavar="N", help="N ShapesWorld prompts, oracle-judged")
    p.add_argument("--options", default=None, help="JSON of load options, e.g. '{\"config\": {...}}' for reduced HPS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="JSON file for the numbers")
    p.set_defaults(func=cmd_eval)

    p = adapter.add_parser("make-pairs", help="write preference pairs (ab results format) from a pool or ShapesWorld")
    p.add_argument("--pool", help="pool or generate folder")
    p.add_argument("--by", default="oracle", help="rank a pool's images by the oracle or one of its scores")
    p.add_argument("--no-ties", action="store_true", help="leave out pairs of equal rank")
    p.add_argument("--max-pairs-per-prompt", type=int, default=None)
    p.add_argument("--shapesworld", type=int, default=None, metavar="N", help="N ShapesWorld prompts, 4 renders each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (preferences.jsonl, and images/ for ShapesWorld)")
    p.set_defaults(func=cmd_make_pairs)
