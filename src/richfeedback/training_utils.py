"""What every training loop here shares: YAML configs with `--set` overrides, the warm-up + cosine learning rate,
and checkpoints that are written atomically and resumed from the latest one; for the scripts that train the embedded
models, their run set-up and their resumable time records."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml


def merge(base: dict, override: dict) -> dict:
    """`base` with `override`'s values, nested dicts merged key by key."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_value(value: str):
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads "5e-4" as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return parsed


def load_config(path: Optional[str], defaults: dict, sets: Sequence[str] = (), examples: str = "configs/") -> dict:
    """`defaults` merged with the YAML file at `path`, then with `KEY.SUB=VALUE` overrides (`--set`)."""
    cfg = copy.deepcopy(defaults)
    if path:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such training config (see {examples} for examples)")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{p} is not valid YAML: {err}") from None
        unknown = sorted(set(loaded) - set(defaults))
        if unknown:
            raise ValueError(f"{p}: unknown keys {', '.join(unknown)}; the known ones are {', '.join(defaults)}")
        cfg = merge(cfg, loaded)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item}: write KEY=VALUE, e.g. --set optim.lr=1e-4")
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {item}: the config has no section {part!r}")
            node = node[part]
        node[leaf] = parse_value(value)
    if cfg.get("mixed_precision") is False:  # YAML reads an unquoted `no` (accelerate's name) as false
        cfg["mixed_precision"] = "no"
    return cfg


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_ratio` of the peak at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def save_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a sibling folder, which then replaces `path`: a crash never leaves half a model."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    """The newest complete `checkpoints/step-N` (one with its trainer_state.json) in `output_dir`, or None."""
    done = [p for p in (Path(output_dir) / "checkpoints").glob("step-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1])) if done else None


def save_checkpoint(accelerator, output_dir: Path, step: int, state: dict, keep: int) -> Path:
    """`accelerator.save_state` into `checkpoints/step-{step}` on every process (each writes its own RNG state), then
    renamed into place with `state` as trainer_state.json; only the `keep` newest checkpoints are kept."""
    accelerator.wait_for_everyone()
    path = Path(output_dir) / "checkpoints" / f"step-{step}"
    if accelerator.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        prune_checkpoints(path.parent, keep)
    accelerator.wait_for_everyone()
    return path


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the `keep` newest complete `step-N` folders in `folder`."""
    kept = sorted((p for p in Path(folder).glob("step-*") if not p.name.endswith(".tmp")),
                  key=lambda p: int(p.name.split("-")[1]))
    for old in kept[:-keep]:
        shutil.rmtree(old)


def add_training_arguments(parser, examples: str):
    """The options every `python -m ...train` entry point takes."""
    parser.add_argument("--config", required=True, help=f"YAML file (see {examples})")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    return parser


def training_main(argv, description: str, examples: str, load, train, name: str) -> int:
    """Parse the common options, load the config with `load(path, sets)` and run `train(cfg, resume, cpu)`; a bad
    config or dataset is one line on stderr and exit status 2."""
    import argparse
    import sys

    from .errors import UsageError

    parser = add_training_arguments(argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter), examples)
    args = parser.parse_args(argv)
    try:
        train(load(args.config, args.set), resume=args.resume, cpu=args.cpu)
    except (UsageError, FileNotFoundError, ValueError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    return 0


def start_script_run(work: Path, name: str, cfg: dict, threads: int):
    """The set-up of a `scripts/train_embedded_*.py` run: `threads` torch threads, the config's seed, `work` created,
    and a CPU Accelerator logging to tensorboard in `work/logs` (the config's flat values as hyperparameters)."""
    import torch
    from accelerate import Accelerator

    torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    work.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(work / "logs"))
    accelerator.init_trackers(name, config={k: v for k, v in cfg.items() if not isinstance(v, dict)})
    return accelerator


def write_train_stats(work: Path, record: dict) -> Path:
    """`record` (with its `times`, seconds per stage) as `work/train_stats.json`. A stage that a resumed run skipped
    took ~0 s this time: it keeps the time the earlier run recorded for it."""
    path = work / "train_stats.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    times = dict(record.get("times", {}))
    for stage, seconds in previous.get("times", {}).items():
        times[stage] = max(seconds, times.get(stage, 0))
    path.write_text(json.dumps({**record, "times": times}, indent=2))
    return path
