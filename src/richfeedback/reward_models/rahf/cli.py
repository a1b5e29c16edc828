"""`richfeedback rahf ...`: train, evaluate, predict, and prepare RichHF-18K. Parsing only; the work is elsewhere."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_train(args) -> None:
    from .train import load_config, train

    train(load_config(args.config, args.set), resume=args.resume, cpu=args.cpu)


def load_model(args):
    """The RAHF model and processor the command line names, with `--marker-bias` applied if given."""
    from .evaluate import marker_start_token_id
    from .predict import load_rahf

    model, processor = load_rahf(args.model, size=args.size, tokenizer=args.tokenizer, device=args.device)
    if args.marker_bias is not None:
        model.config.marker_logit_bias = args.marker_bias
        if model.config.marker_token_id is None:
            model.config.marker_token_id = marker_start_token_id(processor.tokenizer)
    return model, processor


def load_split(args):
    from ...shapesworld.dataset import load_shapesworld_dataset

    data = load_shapesworld_dataset(args.data)
    if args.split not in data:
        raise ValueError(f"{args.data} has no split {args.split!r}; it has {list(data)}")
    split = data[args.split]
    return split.select(range(min(args.limit, len(split)))) if args.limit else split


def cmd_eval(args) -> None:
    from .evaluate import compute_metrics, format_tables, predict_split

    model, processor = load_model(args)
    split = load_split(args)
    result = compute_metrics(predict_split(model, processor, split, batch_size=args.batch_size, progress=True))
    reference, title = None, f"RAHF on {args.data} [{args.split}]"
    agreement_file = Path(args.data) / "agreement.json"
    if agreement_file.exists():
        from ...shapesworld.raters import agreement_as_rahf_metrics

        reference = agreement_as_rahf_metrics(json.loads(agreement_file.read_text())[args.split])
    tables = format_tables(result, reference, title)
    print(tables)
    if reference:
        print("\n(reference rows: the simulated raters' own agreement, one rater against the mean of the others)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        (out / "tables.md").write_text(tables + "\n")
        print(f"wrote {out / 'metrics.json'} and {out / 'tables.md'}")


def cmd_choose_marker_bias(args) -> None:
    from .evaluate import choose_marker_bias, format_marker_table

    folder = Path(args.model or "")
    if not (folder / "config.json").is_file():
        raise ValueError(f"--model must be a RAHF folder with config.json to write the bias into, got {args.model!r}")
    model, processor = load_model(args)
    chosen = choose_marker_bias(model, processor, load_split(args), biases=args.biases, batch_size=args.batch_size)
    print(format_marker_table(chosen["table"]))
    if args.dry_run:
        print(f"best bias {chosen['bias']:g} (not written: --dry-run)")
        return
    model.config.save_pretrained(folder)
    print(f"wrote marker_logit_bias={chosen['bias']:g} into {folder / 'config.json'}")


def cmd_predict(args) -> None:
    from ...cli import read_prompts
    from .predict import load_images, predict, write_predictions

    images, names, errors = load_images(args.images)
    for e in errors:
        print(f"skipped: {e}")
    if not images:
        raise ValueError("no readable image among the inputs")
    prompts = read_prompts(args)
    if len(prompts) == 1:
        prompts = prompts * len(images)
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts: give one prompt, or one per image")
    model, processor = load_model(args)
    results = predict(model, processor, images, prompts, batch_size=args.batch_size)
    out = write_predictions(results, images, names, args.out)
    print(f"wrote {out / 'predictions.jsonl'} and {len(results)} heatmap PNGs to {out}")


def add_rahf_command(subparsers) -> None:
    from .train import add_arguments

    rahf = subparsers.add_parser("rahf", help="the RAHF rich-feedback model: train, eval, predict").add_subparsers(
        dest="rahf_command", required=True)
    p = add_arguments(rahf.add_parser("train", help="train RAHF (also: accelerate launch -m "
                                                    "richfeedback.reward_models.rahf.train --config ...)"))
    p.set_defaults(func=cmd_train)

    def model_args(p):
        p.add_argument("--model", default=None, help="RAHF folder, or a public-layout checkpoint file "
                                                     "(default: the embedded ShapesWorld model)")
        p.add_argument("--size", default="large", help="architecture of a checkpoint file (default: large)")
        p.add_argument("--tokenizer", default=None, help="tokenizer folder or hub id for a checkpoint file")
        p.add_argument("--device", default="cpu")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--marker-bias", type=float, default=None,
                       help="lower the logit of a misaligned-word mark by this much when decoding (default: the "
                            "model's marker_logit_bias; 0: plain greedy decoding, as the reference)")

    p = rahf.add_parser("eval", help="the paper's three tables on a dataset split")
    model_args(p)
    p.add_argument("--data", required=True, help="dataset folder (ShapesWorld make-dataset or prepared RichHF-18K)")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--out", default=None, help="folder for metrics.json and tables.md")
    p.set_defaults(func=cmd_eval)

    p = rahf.add_parser("choose-marker-bias", help="the marker logit bias with the best misaligned-word F1 on a dev "
                                                   "split, written into the model folder's config.json")
    model_args(p)
    p.add_argument("--data", required=True, help="dataset folder (ShapesWorld make-dataset or prepared RichHF-18K)")
    p.add_argument("--split", default="dev", help="a split held out from training, never the test split (default: dev)")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--biases", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    p.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    p.set_defaults(func=cmd_choose_marker_bias)

    p = rahf.add_parser("predict", help="scores, misaligned words and heatmap overlays for images")
    model_args(p)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--prompt", action="append", help="the prompt (one for all images, or one per image)")
    p.add_argument("--prompts", help="file with one prompt per line, in the order of the images")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_predict)
    try:
        from .richhf18k import add_prepare_command
    except ImportError:  # pragma: no cover - the module ships with the package
        return
    add_prepare_command(rahf)
