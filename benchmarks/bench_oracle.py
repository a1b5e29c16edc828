"""How exact the ShapesWorld oracle is, and how fast.

Rows: objects read back right on clean renders; for each artifact kind, the IoU of the oracle's artifact region with
the injected one (mean and share >= 0.8) and whether the scene still reads right; for each misalignment kind, how
often the oracle's per-word labels equal the injector's. Throughput is images judged per second.
"""

from __future__ import annotations

import time

import numpy as np

from richfeedback.shapesworld.artifacts import ARTIFACT_KINDS, inject_artifact
from richfeedback.shapesworld.misalign import MISALIGNMENT_KINDS, inject_misalignment
from richfeedback.shapesworld.oracle import evaluate
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene, size_class


def clean_readback(n: int, rng) -> dict:
    objects = right = prompts_right = 0
    start = time.perf_counter()
    for _ in range(n):
        scene = sample_scene(rng)
        report = evaluate(scene.prompt, render(scene))
        prompts_right += report.prompt_correct and not report.has_artifact
        for o in scene.objects:
            objects += 1
            right += sum(1 for d in report.objects if (d.colour, d.shape, size_class(d.h)) == (o.colour, o.shape, size_class(o.h))
                         and abs(d.cx - o.cx) < 0.02 and abs(d.cy - o.cy) < 0.02) == 1
    return {"case": "clean renders", "n": n, "objects_read_right": right / objects, "prompt_and_no_artifact": prompts_right / n,
            "images_per_s": n / (time.perf_counter() - start)}


def run(quick: bool = False) -> dict:
    rng = np.random.default_rng(0)
    n = 200 if quick else 1000
    rows = [clean_readback(n, rng)]
    per_kind = 50 if quick else 200
    for kind in ARTIFACT_KINDS:
        ious, readable = [], 0
        while len(ious) < per_kind:
            scene = sample_scene(rng)
            result = inject_artifact(render(scene), scene, rng, kind)
            if result is None:
                continue
            image, artifact = result
            report = evaluate(scene.prompt, image)
            ious.append((report.artifact_map & artifact.region).sum() / max((report.artifact_map | artifact.region).sum(), 1))
            readable += report.prompt_correct
        rows.append({"case": f"artifact:{kind}", "n": per_kind, "iou_mean": float(np.mean(ious)),
                     "iou>=0.8": float(np.mean(np.array(ious) >= 0.8)), "scene_still_reads_right": readable / per_kind})
    for kind in MISALIGNMENT_KINDS:
        agree = done = 0
        while done < per_kind:
            scene = sample_scene(rng)
            result = inject_misalignment(scene, rng, kind)
            if result is None:
                continue
            new_scene, mis = result
            agree += evaluate(scene.prompt, render(new_scene)).word_labels() == mis.word_labels
            done += 1
        rows.append({"case": f"misalignment:{kind}", "n": per_kind, "word_labels_agree": agree / per_kind})
    return {"rows": rows}
