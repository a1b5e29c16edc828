"""A pool: N generated images per prompt with their seeds, and every reward model's score of each image.

    richfeedback pool generate --model embedded --prompts prompts.txt --n 8 --out runs/pool
    richfeedback pool score runs/pool --model rahf:alignment --model pickscore=weights/pickscore
    richfeedback pool filter runs/pool --policy align_sd --score rahf:alignment --out runs/data   (filtering.py)

Layout of POOL (everything is appended or replaced atomically, so a killed command resumes where it stopped):

    pool.json                      what made the pool: model, sampling settings, n, seed, shard size, number of prompts
    model_weights.json             a fingerprint of the generator's weights: a resume with other weights at the same
                                   path (a model retrained in place) is refused instead of mixing two generators
    prompts.txt                    the prompts, in order (a prompt's index is its line number, from 0)
    shard-00000/manifest.jsonl     rows {file_name, prompt, seed, ...} of the images in that shard, one line per image
    shard-00000/*.png              the images (`richfeedback.generation.generate_to_folder` writes each shard)
    scores/<model>.jsonl           rows {file_name, score} per reward model, appended batch by batch
    scores/<model>.weights.json    a fingerprint of the weights that wrote them: other weights under the same name
                                   are refused instead of mixing their scores with these

A shard holds the images of `shard_size` consecutive prompts. Under `accelerate launch` process r generates the
shards r, r + P, r + 2P, ...: shards do not depend on the number of processes, so a pool started on 2 GPUs can be
finished on 1. The seed of image k of prompt i is `seed + i * n + k`, as in `richfeedback generate`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UsageError
from ..files import write_text_atomically
from ..generation import MANIFEST, GenerationJob, generate_to_folder, plan_jobs, read_manifest
from ..reward_models.weights import weights_fingerprint

POOL_FILE = "pool.json"
MODEL_WEIGHTS_FILE = "model_weights.json"
PROMPTS_FILE = "prompts.txt"
SCORES_DIR = "scores"
ORACLE = "oracle"  # on ShapesWorld, the exact oracle can score a pool: it stands in for perfect human feedback
ORACLE_SCORES = ("oracle:prompt_correct", "oracle:word_accuracy", "oracle:artifact_free", "oracle:quality")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def read_pool_settings(pool_dir: str | os.PathLike) -> dict:
    path = Path(pool_dir) / POOL_FILE
    if not path.is_file():
        raise UsageError(f"{pool_dir} is not a pool (no {POOL_FILE}); make one with `richfeedback pool generate`")
    return json.loads(path.read_text())


def pool_prompts(pool_dir: str | os.PathLike) -> list[str]:
    return (Path(pool_dir) / PROMPTS_FILE).read_text().splitlines()


def _start_pool(pool_dir: Path, settings: dict, prompts: Sequence[str]) -> None:
    """Write pool.json and prompts.txt, or check that an existing pool was started with the same settings."""
    path = pool_dir / POOL_FILE
    if path.exists():
        old = json.loads(path.read_text())
        old_prompts = pool_prompts(pool_dir)
        changed = [k for k in settings if old.get(k) != settings[k]]
        if changed or old_prompts != list(prompts):
            what = ", ".join(f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in changed) or "the prompts"
            raise UsageError(f"{pool_dir} is a pool made with other settings ({what}); resume with the same "
                             "settings, or pass another --out")
        return
    pool_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(pool_dir / PROMPTS_FILE, "".join(p + "\n" for p in prompts))
    write_text_atomically(path, json.dumps(settings, indent=2) + "\n")


def generate_pool(model: Optional[str], prompts: Sequence[str], out_dir: str | os.PathLike, n: int = 8,
                  seed: int = 0, shard_size: int = 16, batch_size: int = 8, device: str = "cpu",
                  process_index: int = 0, num_processes: int = 1, progress: bool = True, **sampling) -> Path:
    """Generate `n` images per prompt into the pool at `out_dir` (see the module docstring); resumable.

    `process_index`/`num_processes` split the shards between processes (accelerate's values); every process must be
    given the same arguments.
    """
    from tqdm.auto import tqdm

    from ..generation import load_pipeline, sampling_settings

    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if shard_size < 1:
        raise UsageError(f"--shard-size must be at least 1, got {shard_size}")
    duplicates = len(prompts) - len(set(prompts))
    if duplicates:
        raise UsageError(f"the prompts file has {duplicates} repeated prompts; a pool keys images by prompt and seed, "
                         "so give each prompt once (use --n for more images per prompt)")
    if not prompts:
        raise UsageError("no prompts: give a prompts file with one prompt per line")
    out = Path(out_dir)
    settings = {"model": model or "embedded", "n": n, "seed": seed, "shard_size": shard_size,
                "num_prompts": len(prompts),
                "sampling": sampling_settings(model, sampling)}
    if process_index == 0:
        _start_pool(out, settings, prompts)
    jobs = plan_jobs(prompts, n, seed)
    per_shard = shard_size * n
    shards = range(process_index, (len(prompts) + shard_size - 1) // shard_size, num_processes)
    todo = []
    for shard in shards:
        shard_jobs = jobs[shard * per_shard:(shard + 1) * per_shard]
        shard_dir = out / shard_name(shard)
        done = {(r["prompt"], r["seed"]) for r in read_manifest(shard_dir) if (shard_dir / r["file_name"]).exists()}
        missing = [j for j in shard_jobs if (j.prompt, j.seed) not in done]
        if missing:
            todo.append((shard_dir, shard_jobs, len(missing)))
    if not todo:
        return out
    pipe = load_pipeline(model, device=device)  # loaded only when some shard still has work
    _check_generator_weights(out, pipe, settings["model"], process_index)
    with tqdm(total=sum(m for _, _, m in todo), desc=f"pool generate (process {process_index})",
              disable=not progress) as bar:
        for shard_dir, shard_jobs, _ in todo:
            generate_to_folder(model, shard_jobs, shard_dir, batch_size=batch_size, device=device, progress=bar,
                               pipe=pipe, **sampling)
    return out


def pipeline_fingerprint(pipe) -> str:
    """sha256 over `weights_fingerprint` of each of a diffusers pipeline's torch modules (UNet, text encoders, VAE),
    by component name: the same weights agree whatever dtype or device they run in (a few seconds for SD 1.5)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, component in sorted(pipe.components.items()):
        if isinstance(component, torch.nn.Module):
            digest.update(name.encode())
            digest.update(weights_fingerprint(component).encode())
    return digest.hexdigest()


def _check_generator_weights(pool_dir: Path, pipe, model: str, process_index: int) -> None:
    """Record the fingerprint of the generator that draws the pool's images, or refuse one with other weights. A pool
    started before the record existed gets it now (its earlier images cannot be checked)."""
    record = pool_dir / MODEL_WEIGHTS_FILE
    _check_fingerprint(
        record, pipeline_fingerprint(pipe), {"model": model}, write=process_index == 0,
        refusal=lambda earlier: (
            f"{pool_dir}: its images so far were drawn by other weights than {model}'s now (the files changed "
            f"since, {record} has the earlier fingerprint); a pool holds one generator's images: finish it with "
            "the earlier weights, or pass another --out"))


def _check_fingerprint(record: Path, fingerprint: str, entry: dict, refusal, write: bool = True) -> None:
    """Refuse (UsageError(refusal(earlier record))) when `record` holds another fingerprint; write `entry` with this
    one when there is no record yet (and `write`)."""
    if record.is_file():
        earlier = json.loads(record.read_text())
        if earlier["fingerprint"] != fingerprint:
            raise UsageError(refusal(earlier))
    elif write:
        write_text_atomically(record, json.dumps({**entry, "fingerprint": fingerprint}) + "\n")


def read_pool(pool_dir: str | os.PathLike, require_complete: bool = False) -> list[dict]:
    """Every image of the pool, in prompt order then seed order: dicts with `file_name` (relative to the pool),
    `path`, `prompt`, `prompt_index`, `seed` and `scores` (reward model name -> score; the models run so far)."""
    pool = Path(pool_dir)
    settings = read_pool_settings(pool)
    prompts = pool_prompts(pool)
    index_of = {p: i for i, p in enumerate(prompts)}
    rows = []
    for shard_dir in sorted(pool.glob("shard-*")):
        for row in read_manifest(shard_dir):
            if not (shard_dir / row["file_name"]).exists() or row["prompt"] not in index_of:
                continue
            file_name = f"{shard_dir.name}/{row['file_name']}"
            rows.append({"file_name": file_name, "path": pool / file_name, "prompt": row["prompt"],
                         "prompt_index": index_of[row["prompt"]], "seed": int(row["seed"]), "scores": {}})
    rows.sort(key=lambda r: (r["prompt_index"], r["seed"]))
    expected = settings["n"] * len(prompts)
    if require_complete and len(rows) < expected:
        raise UsageError(f"{pool} has {len(rows)} of its {expected} images; finish it first with the same "
                         "`richfeedback pool generate` command (it resumes)")
    by_name = {r["file_name"]: r for r in rows}
    scores_dir = pool / SCORES_DIR
    for path in sorted(scores_dir.glob("*.jsonl")) if scores_dir.is_dir() else []:
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: rescored on the next `pool score`
            if entry.get("file_name") in by_name:
                by_name[entry["file_name"]]["scores"].update(entry["scores"])
    return rows


def scores_file(pool_dir: str | os.PathLike, model_name: str) -> Path:
    """scores/<name>.jsonl, with the name made safe for a file name ("rahf:alignment" -> "rahf_alignment")."""
    return Path(pool_dir) / SCORES_DIR / (re.sub(r"[^A-Za-z0-9.+-]", "_", model_name) + ".jsonl")


def score_weights(pool_dir: str | os.PathLike) -> dict[str, str]:
    """{scores file: fingerprint of the weights that wrote it} for every score column with a weights record: what a
    filtered dataset depends on besides the policy."""
    return {record.name[: -len(".weights.json")]: json.loads(record.read_text())["fingerprint"]
            for record in sorted((Path(pool_dir) / SCORES_DIR).glob("*.weights.json"))}


def _check_same_weights(pool_dir, spec, model) -> None:
    """Record the fingerprint of the weights that score `spec.column`, or refuse if earlier scores came from others.
    A scores file without a record (a pool scored before records existed) is taken to be from these weights."""
    scores = scores_file(pool_dir, spec.column)
    record = scores.with_suffix(".weights.json")
    _check_fingerprint(
        record, weights_fingerprint(model), {"spec": str(spec)},
        refusal=lambda earlier: (
            f"{scores} holds {spec.column} scores from other weights ({earlier['spec']}) than the ones given now "
            f"({spec}); delete {scores.name} and {record.name} "
            f"to score the pool again with these weights, and filter it again into a new folder"))


def _score_with_oracle(prompts: list[str], images: list) -> list[dict]:
    from ..shapesworld.oracle import evaluate

    out = []
    for prompt, image in zip(prompts, images):
        report = evaluate(prompt, image)
        labels = report.word_labels()  # 1 aligned, 0 misaligned
        word_accuracy = sum(labels) / len(labels) if labels else 1.0
        artifact_free = float(not report.has_artifact)
        out.append({"oracle:prompt_correct": float(report.prompt_correct), "oracle:word_accuracy": word_accuracy,
                    "oracle:artifact_free": artifact_free,
                    # one number to rank by: every word right first, then fewer artifacts
                    "oracle:quality": word_accuracy + 0.5 * artifact_free})
    return out


def score_pool(pool_dir: str | os.PathLike, models: Sequence, batch_size: int = 32, device: str = "cpu",
               dtype: str = "fp32", progress: bool = True) -> dict[str, int]:
    """Score every image of the pool with each reward model (`ModelSpec`s of `richfeedback.reward_models.cli`, or
    "NAME[=WEIGHTS][,adapter=DIR]" strings); images already scored are skipped.

    The name "oracle" runs the ShapesWorld oracle and writes four scores (see ORACLE_SCORES). Returns the number of
    images newly scored per model.
    """
    from tqdm.auto import tqdm

    from ..imaging import load_rgb
    from ..reward_models.cli import ModelSpec, parse_model_specs

    specs = [m if isinstance(m, ModelSpec) else ModelSpec(ORACLE) if m == ORACLE else parse_model_specs([m])[0]
             for m in models]
    rows = read_pool(pool_dir)
    if not rows:
        raise UsageError(f"{pool_dir} has no images yet; run `richfeedback pool generate` first")
    (Path(pool_dir) / SCORES_DIR).mkdir(exist_ok=True)
    counts = {}
    for spec in specs:
        column = spec.column
        key = ORACLE_SCORES[0] if spec.name == ORACLE else column
        todo = [r for r in rows if key not in r["scores"]]
        counts[column] = len(todo)
        model = None if spec.name == ORACLE else spec.load(device, dtype)
        if model is not None:
            _check_same_weights(pool_dir, spec, model)
        if not todo:
            continue
        with open(scores_file(pool_dir, column), "a") as f, tqdm(total=len(todo), desc=f"score {column}",
                                                                   disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                images = [load_rgb(r["path"]) for r in batch]
                prompts = [r["prompt"] for r in batch]
                if model is None:
                    values = _score_with_oracle(prompts, images)
                else:
                    values = [{column: float(s)} for s in model.score(prompts, images)]
                for row, value in zip(batch, values):
                    f.write(json.dumps({"file_name": row["file_name"], "scores": value}) + "\n")
                f.flush()
                os.fsync(f.fileno())
                bar.update(len(batch))
    return counts


def pool_images(pool_dir: str | os.PathLike) -> list[GenerationJob]:
    """The (prompt, seed) of every image the pool's settings call for, generated or not."""
    settings = read_pool_settings(pool_dir)
    return plan_jobs(pool_prompts(pool_dir), settings["n"], settings["seed"])


def count_missing(pool_dir: str | os.PathLike) -> int:
    have = {(r["prompt"], r["seed"]) for r in read_pool(pool_dir)}
    return sum((j.prompt, j.seed) not in have for j in pool_images(pool_dir))


__all__ = ["generate_pool", "read_pool", "score_pool", "read_pool_settings", "pool_prompts", "count_missing",
           "ORACLE", "ORACLE_SCORES", "MANIFEST"]
