"""`richfeedback ab make | results | auto | simulate`: the command line of the A/B evaluation (`richfeedback.eval.ab`).

    richfeedback ab make --a embedded --b "embedded,lora=runs/lora" --prompts prompts.txt --seeds 0-3 --out out/ab
    richfeedback ab results out/ab --ratings alice.json bob.csv          # -> out/ab/results/report.md, chart.png
    richfeedback ab auto out/ab --model oracle --model rahf:overall      # -> out/ab/auto/<rater>/report.md
    richfeedback ab simulate out/ab --raters 3                           # -> out/ab/simulated/results/report.md

A system (--a, --b) is `embedded`, a diffusers folder, a hub id or a folder of generated images with
manifest.jsonl, optionally followed by `,lora=DIR[,lora_scale=X]` and/or `,guidance=NAME,guidance_scale=S`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_QUESTIONS = "overall,plausibility,alignment,aesthetics"


def add_ab_command(subparsers) -> argparse.ArgumentParser:
    """Register `ab` on the `richfeedback` command's subparsers."""
    ab = subparsers.add_parser("ab", help="side-by-side A/B evaluation: rating page, win rates, automatic raters",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ab.add_subparsers(dest="ab_command", required=True)

    p = sub.add_parser("make", help="paired images of two systems (same prompt and seed) and a static rating page")
    p.add_argument("--a", required=True, metavar="SYSTEM", help="system A (e.g. embedded)")
    p.add_argument("--b", required=True, metavar="SYSTEM", help="system B (e.g. embedded,lora=runs/lora)")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts", help="file with one prompt per line (or JSONL with 'prompt')")
    p.add_argument("--seeds", default="0", help="seeds per prompt: 0-3, 0,1,5 or a mix (default: 0)")
    p.add_argument("--out", required=True, help="the AB folder to write (index.html, pairs.jsonl/csv, images/)")
    p.add_argument("--questions", action="append", default=None, metavar="QUESTIONS",
                   help=f"comma-separated known questions (default: {DEFAULT_QUESTIONS}); repeat the option for "
                        "one of your own as NAME=TEXT, e.g. --questions 'colour=Which image has nicer colours?'")
    p.add_argument("--side-seed", type=int, default=0, help="seed of the left/right randomisation and pair order")
    p.add_argument("--title", default=None, help="heading of the rating page (never names the systems by default)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps for both systems (default: the model's)")
    p.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance for both systems")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_make)

    p = sub.add_parser("results", help="win rates, intervals and rater agreement from the page's exports")
    p.add_argument("ab_dir", metavar="AB")
    p.add_argument("--ratings", nargs="+", required=True, metavar="FILE",
                   help="exports of the rating page (.json or .csv), or folders of them; one or more raters")
    p.add_argument("--out", default=None, help="output folder (default: AB/results)")
    _add_statistics_options(p)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("auto", help="the same tables with the ShapesWorld oracle or reward models as raters")
    p.add_argument("ab_dir", metavar="AB")
    p.add_argument("--model", action="append", required=True, metavar="NAME[=WEIGHTS][,adapter=DIR]",
                   help="oracle, or a reward model (repeatable): rahf:overall, pickscore=path/to/weights, "
                        "pickscore,adapter=runs/adapter, ...")
    p.add_argument("--tie-margin", type=float, default=0.0,
                   help="reward models: a score difference up to this is 'about the same' (model units)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    _add_statistics_options(p)
    p.set_defaults(func=cmd_auto)

    p = sub.add_parser("simulate",
                       help="a simulated human study on ShapesWorld: noisy raters' exports and their results")
    p.add_argument("ab_dir", metavar="AB")
    p.add_argument("--raters", type=int, default=3, help="number of simulated raters")
    p.add_argument("--noise", type=float, default=0.5, help="per-image score noise in Likert points")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the raters' noise and of the bootstrap")
    p.set_defaults(func=cmd_simulate)
    return ab


def _add_statistics_options(p) -> None:
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--bootstrap-unit", choices=("prompt", "pair"), default="prompt",
                   help="what the bootstrap resamples (default: whole prompts, with all their seeds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def cmd_make(args) -> None:
    from ...cli import read_prompts
    from .export import make_ab, parse_questions, parse_seeds

    out = make_ab(args.a, args.b, read_prompts(args), parse_seeds(args.seeds), args.out,
                  questions=parse_questions(args.questions or [DEFAULT_QUESTIONS]), side_seed=args.side_seed,
                  title=args.title, batch_size=args.batch_size, device=args.device,
                  sampling={"num_inference_steps": args.steps, "guidance_scale": args.guidance_scale})
    n_pairs = sum(1 for line in (out / "pairs.jsonl").read_text().splitlines() if line.strip())
    print(f"wrote {n_pairs} A/B pairs to {out} (pairs.jsonl, pairs.csv, images/a, images/b)")
    print(f"rating page: {(out / 'index.html').resolve()}  (open it in a browser; ratings are exported from it)")


def cmd_results(args) -> None:
    from .export import read_ab
    from .ratings import collect_preferences
    from .report import write_study

    meta, pairs = read_ab(args.ab_dir)
    rows = collect_preferences(args.ab_dir, meta, pairs, args.ratings)
    raters = sorted({r["rater"] for r in rows})
    out = Path(args.out) if args.out else Path(args.ab_dir) / "results"
    summary = write_study(out, meta, rows, f"{len(raters)} human rater(s): {', '.join(raters)}", args.bootstrap,
                          args.seed, args.bootstrap_unit)
    _print_summary(summary)
    print(f"report: {out / 'report.md'}; chart: {out / 'chart.png'}; preferences: {out / 'preferences.jsonl'}")


def cmd_auto(args) -> None:
    from .auto import rater_folder_name, run_auto

    results = run_auto(args.ab_dir, args.model, tie_margin=args.tie_margin, device=args.device,
                       batch_size=args.batch_size, n_resamples=args.bootstrap, seed=args.seed,
                       unit=args.bootstrap_unit)
    for name, summary in results.items():
        print(f"{name}:")
        _print_summary(summary)
    auto = Path(args.ab_dir) / "auto"
    print(f"reports: {auto / 'report.md'} and {', '.join(str(auto / rater_folder_name(n)) for n in results)}")


def cmd_simulate(args) -> None:
    from .simulate import simulate_study

    paths, summary = simulate_study(args.ab_dir, n_raters=args.raters, noise=args.noise, seed=args.seed,
                                    n_resamples=args.bootstrap)
    _print_summary(summary)
    out = Path(args.ab_dir) / "simulated"
    print(f"{len(paths)} simulated raters' exports in {out}; report: {out / 'results' / 'report.md'}, "
          f"chart: {out / 'results' / 'chart.png'}")


def _print_summary(summary: dict) -> None:
    for name, q in summary["questions"].items():
        lo, hi = q["win_rate_b_ci"]
        print(f"  {name:<13} win rate of B {q['win_rate_b']:.3f} [{lo:.3f}, {hi:.3f}]  "
              f"(A better {q['a_better']}, same {q['same']}, B better {q['b_better']}; {q['pairs']} pairs)")
