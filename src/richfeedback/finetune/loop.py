"""`richfeedback finetune --config FILE`: the four stages, each resumable, from one YAML file.

    output_dir: runs/finetune-embedded
    pool:    {model: embedded, prompts: {shapesworld: {n: 256, seed: 7, split: train}}, n: 8, seed: 0}
    score:   {models: [rahf:alignment, rahf:plausibility]}
    filter:  {policy: align_sd, score: "rahf:alignment + 0.5*rahf:plausibility", temperature: 0.05}
    train:   {optim: {max_steps: 800, lr: 1.0e-4}, lora: {rank: 8, alpha: 8}}     (richfeedback.finetune.train)

Stage outputs are OUTPUT/pool (or `pool.path`: runs with other filters can share one pool), OUTPUT/data and
OUTPUT/lora. A stage whose output is complete is skipped, so after a crash the same command goes on where it
stopped; a finished stage made from other inputs is refused, not reused: a dataset filtered from scores that other
weights wrote (each score column's weights fingerprint is in its report), or a LoRA trained on another dataset (the
sha256 of the metadata.jsonl it trained on is in OUTPUT/lora/training_data.json). `pool.prompts` is a file (one prompt per line) or a ShapesWorld
sample. The same file also configures the training stage alone, under `accelerate launch` on several GPUs:
`accelerate launch -m richfeedback.finetune.train --config FILE` (its data.path and output_dir default to the
loop's OUTPUT/data and OUTPUT/lora).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import yaml

from ..errors import UsageError
from ..training_utils import merge, parse_value

LOOP_DEFAULTS = {
    "output_dir": "runs/finetune",
    "pool": {"path": None, "model": "embedded", "prompts": None, "n": 8, "seed": 0, "shard_size": 16, "batch_size": 16,
             "device": "cpu", "sampling": {}},
    "score": {"models": [], "batch_size": 64, "device": "cpu", "dtype": "fp32"},
    "filter": {},
    "train": {},
}
STAGES = ("pool", "score", "filter", "train")


def is_loop_config(raw: dict) -> bool:
    return bool(raw) and any(k in raw for k in ("pool", "score", "filter")) and "train" in raw


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config (see configs/finetune/ for examples)")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{p} is not valid YAML: {err}") from None


def load_loop_config(path: str | Path, sets: list[str] = ()) -> dict:
    raw = read_yaml(path)
    unknown = sorted(set(raw) - set(LOOP_DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(unknown)}; the known ones are {', '.join(LOOP_DEFAULTS)}")
    cfg = merge(LOOP_DEFAULTS, raw)
    for item in sets:  # --set train.optim.lr=1e-4
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item}: write KEY=VALUE, e.g. --set train.optim.lr=1e-4")
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value)
    return cfg


def train_section(loop_cfg: dict) -> dict:
    """The `train` section as a `richfeedback.finetune.train` config, with the loop's paths filled in."""
    out = Path(loop_cfg.get("output_dir") or LOOP_DEFAULTS["output_dir"])
    train = copy.deepcopy(loop_cfg.get("train") or {})
    train.setdefault("output_dir", str(out / "lora"))
    train.setdefault("model", {}).setdefault("pretrained", (loop_cfg.get("pool") or {}).get("model", "embedded"))
    train.setdefault("data", {}).setdefault("path", str(out / "data"))
    # the negative prompt of align_sd negatives comes from the filtered dataset's report (`train`)
    return train


def resolve_prompts(spec, base: Path) -> list[str]:
    """`pool.prompts`: a file path, or {shapesworld: {n, seed, split}}."""
    if isinstance(spec, dict) and "shapesworld" in spec:
        from ..shapesworld.scene import sample_prompts

        s = spec["shapesworld"]
        return sample_prompts(int(s.get("n", 64)), seed=int(s.get("seed", 0)), split=s.get("split", "train"))
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_absolute() and not path.exists():
            path = base / spec
        if not path.is_file():
            raise UsageError(f"pool.prompts: no such file {spec} (one prompt per line)")
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    raise UsageError("pool.prompts must be a file of prompts or {shapesworld: {n: 256, seed: 0, split: train}}")


def check_training_data(data: Path, lora: Path) -> None:
    """Record which dataset `lora` is trained on (sha256 of its metadata.jsonl), or refuse to resume a LoRA that was
    trained on another one: its checkpoints would carry on from the wrong data."""
    import hashlib

    metadata = data / "metadata.jsonl"
    if not metadata.is_file():
        return  # the training stage itself says what is missing
    digest = hashlib.sha256(metadata.read_bytes()).hexdigest()
    record = lora / "training_data.json"
    if record.is_file():
        earlier = json.loads(record.read_text())
        if earlier["metadata_sha256"] != digest:
            raise UsageError(f"{lora} was trained on other data than {data} holds now (filtered again?); delete "
                             f"{lora} to train on it")
        return
    from ..files import write_text_atomically

    lora.mkdir(parents=True, exist_ok=True)
    write_text_atomically(record, json.dumps({"data": str(data), "metadata_sha256": digest}) + "\n")


def run_loop(cfg: dict, stages: tuple[str, ...] = STAGES, config_dir: Optional[Path] = None) -> dict:
    """Run the stages in order; returns where each stage's output is."""
    from .filtering import REPORT, FilterPolicy, describe_kept, filter_pool
    from .pool import generate_pool, score_pool, score_weights
    from .train import LORA_WEIGHTS, config_from_loop, train

    out = Path(cfg["output_dir"])
    p = cfg["pool"]
    paths = {"pool": Path(p["path"]) if p["path"] else out / "pool", "data": out / "data",
             "lora": Path(train_section(cfg)["output_dir"])}
    if "pool" in stages:
        prompts = resolve_prompts(p["prompts"], config_dir or Path.cwd())
        print(f"== pool: {p['n']} images for each of {len(prompts)} prompts -> {paths['pool']}")
        generate_pool(p["model"], prompts, paths["pool"], n=p["n"], seed=p["seed"], shard_size=p["shard_size"],
                      batch_size=p["batch_size"], device=p["device"], **p["sampling"])
    if "score" in stages:
        s = cfg["score"]
        if not s["models"]:
            raise UsageError("score.models is empty: list the reward models to score the pool with")
        print(f"== score: {', '.join(s['models'])}")
        score_pool(paths["pool"], s["models"], batch_size=s["batch_size"], device=s["device"], dtype=s["dtype"])
    if "filter" in stages:
        policy = FilterPolicy(**cfg["filter"])
        report_path = paths["data"] / REPORT
        if report_path.is_file():
            done = json.loads(report_path.read_text())
            if {k: done["policy"].get(k) for k in cfg["filter"]} != cfg["filter"]:
                raise UsageError(f"{paths['data']} was filtered with another policy; delete it to filter again")
            now = score_weights(paths["pool"])
            if done.get("score_weights", now) != now:
                changed = sorted(k for k in set(now) | set(done["score_weights"])
                                 if now.get(k) != done["score_weights"].get(k))
                raise UsageError(f"{paths['data']} was filtered from scores that other weights wrote "
                                 f"({', '.join(changed)} changed since); delete it to filter again")
            print(f"== filter: already done ({describe_kept(done)} of {done['kept_prompts']} prompts)")
        else:
            report = filter_pool(paths["pool"], paths["data"], policy)
            print(f"== filter ({policy.policy}): kept {describe_kept(report)} of {report['pool_images']} images, "
                  f"{report['kept_prompts']} of {report['pool_prompts']} prompts -> {paths['data']}")
    if "train" in stages:
        train_cfg = config_from_loop(cfg)
        print(f"== train: LoRA on {train_cfg['data']['path']} -> {train_cfg['output_dir']}")
        check_training_data(Path(train_cfg["data"]["path"]), Path(train_cfg["output_dir"]))
        train(train_cfg, resume=True)
        paths["lora_weights"] = Path(train_cfg["output_dir"]) / LORA_WEIGHTS
    return paths
