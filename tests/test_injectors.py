"""Artifact and misalignment injectors: regions the oracle recovers, labels the oracle agrees with."""

import numpy as np
import pytest

from richfeedback.shapesworld.artifacts import ARTIFACT_KINDS, inject_artifact
from richfeedback.shapesworld.misalign import MISALIGNMENT_KINDS, inject_misalignment
from richfeedback.shapesworld.oracle import evaluate
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene

EXPECTED_WORD_KIND = {"wrong_colour": "colour", "wrong_shape": "shape", "wrong_size": "size",
                      "wrong_position": "position", "missing_object": "count", "extra_object": None}


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_oracle_finds_injected_artifact_regions_with_iou_at_least_0_8(kind):
    rng = np.random.default_rng(ARTIFACT_KINDS.index(kind))
    ious, reads_right = [], 0
    while len(ious) < 60:
        scene = sample_scene(rng)
        result = inject_artifact(render(scene), scene, rng, kind)
        if result is None:
            continue
        image, artifact = result
        assert artifact.region.any() and artifact.kind == kind
        report = evaluate(scene.prompt, image)
        ious.append(_iou(report.artifact_map, artifact.region))
        reads_right += report.prompt_correct
    assert np.mean(np.array(ious) >= 0.8) >= 0.95, f"{kind}: IoUs {sorted(ious)[:5]}"
    assert np.mean(ious) >= 0.9
    assert reads_right >= 57  # an artifact damages the image, not what it shows


def test_artifact_changes_pixels_only_near_its_region():
    rng = np.random.default_rng(10)
    scene = sample_scene(rng)
    clean = render(scene)
    for kind in ARTIFACT_KINDS:
        result = inject_artifact(clean, scene, rng, kind)
        if result is None:
            continue
        image, artifact = result
        changed = np.abs(image.astype(int) - clean.astype(int)).max(-1) > 30
        assert not (changed & ~artifact.region).any()


@pytest.mark.parametrize("kind", MISALIGNMENT_KINDS)
def test_oracle_word_labels_equal_injected_misalignment_labels(kind):
    rng = np.random.default_rng(20 + MISALIGNMENT_KINDS.index(kind))
    done = agree = flagged = 0
    while done < 60:
        scene = sample_scene(rng)
        result = inject_misalignment(scene, rng, kind)
        if result is None:
            continue
        new_scene, mis = result
        done += 1
        agree += evaluate(scene.prompt, render(new_scene)).word_labels() == mis.word_labels
        roles = scene.prompt.word_roles()
        expected = EXPECTED_WORD_KIND[kind]
        if expected is None:
            flagged += not evaluate(scene.prompt, render(new_scene)).prompt_correct
        else:
            flagged += any(l == 0 and k == expected for (_, k, _), l in zip(roles, mis.word_labels))
    assert agree >= 58
    assert flagged == 60


def test_unknown_kinds_are_refused_with_the_list_of_kinds():
    rng = np.random.default_rng(0)
    scene = sample_scene(rng)
    with pytest.raises(ValueError, match="expected one of"):
        inject_artifact(render(scene), scene, rng, "glitter")
    with pytest.raises(ValueError, match="expected one of"):
        inject_misalignment(scene, rng, "upside_down")
