"""The ShapesWorld prompt grammar and scene layout."""

import numpy as np
import pytest

from richfeedback.shapesworld.scene import (Group, PromptSpec, is_heldout_prompt, layout_scene, parse_prompt,
                                            position_holds, prompt_words, sample_prompt, sample_prompts, size_class)


def test_every_sampled_prompt_parses_back_to_itself():
    rng = np.random.default_rng(0)
    for _ in range(500):
        spec = sample_prompt(rng)
        assert parse_prompt(spec.text) == spec


def test_word_roles_align_with_richhf_word_split():
    rng = np.random.default_rng(1)
    for _ in range(200):
        spec = sample_prompt(rng)
        assert [w for w, _, _ in spec.word_roles()] == prompt_words(spec.text)


def test_three_group_prompt_text_and_words():
    spec = PromptSpec((Group("green", "square", position="top"), Group("red", "circle", position="center"),
                       Group("blue", "triangle", size="small", position="bottom")))
    assert spec.text == ("a green square on the top, a red circle in the center and a small blue triangle on the bottom")
    kinds = [k for _, k, _ in spec.word_roles()]
    assert kinds.count("position") == 3 and kinds.count("size") == 1 and kinds.count("count") == 3


def test_plural_group_has_count_word_and_plural_shape():
    spec = parse_prompt("two yellow triangles and a purple circle")
    assert spec.groups[0] == Group("yellow", "triangle", count=2)
    assert spec.num_objects == 3


def test_parse_error_names_the_word_and_shows_an_example():
    with pytest.raises(ValueError, match=r"expected a colour .* at word 2, got 'pink'.*Prompts look like"):
        parse_prompt("a pink circle")


def test_layout_satisfies_every_position_and_size():
    rng = np.random.default_rng(2)
    for _ in range(200):
        spec = sample_prompt(rng)
        scene = layout_scene(spec, rng)
        assert len(scene.objects) == spec.num_objects
        for obj in scene.objects:
            group = spec.groups[obj.group]
            assert size_class(obj.h) == group.size
            assert group.position is None or position_holds(group.position, obj.cx, obj.cy)
            assert obj.h < obj.cx < 1 - obj.h and obj.h < obj.cy < 1 - obj.h


def test_heldout_split_is_stable_and_about_a_fifth():
    prompts = sample_prompts(400, seed=3)
    held = [is_heldout_prompt(p) for p in prompts]
    assert 0.12 < np.mean(held) < 0.28
    assert held == [is_heldout_prompt(p) for p in prompts]
    assert all(is_heldout_prompt(p) for p in sample_prompts(20, seed=4, split="heldout"))
    assert not any(is_heldout_prompt(p) for p in sample_prompts(20, seed=4, split="train"))


def test_patch_object_shapes_label_each_patch_with_the_shape_covering_most_of_it():
    """A 64 px image in 8 x 8 patches: patches a square fills are "square", a small circle's patches "circle" where it
    covers at least a quarter, the rest background (len(SHAPES))."""
    from richfeedback.shapesworld.render import patch_object_shapes
    from richfeedback.shapesworld.scene import SHAPES, SceneObject

    square = SceneObject("red", "square", cx=0.25, cy=0.25, h=0.125)  # pixels 8..24: patches 1-2 x 1-2, fully
    circle = SceneObject("blue", "circle", cx=0.75, cy=0.75, h=0.0625)  # pixels 44..52: patch 5-6 x 5-6, partly
    labels = patch_object_shapes([square, circle], size=64, grid=8)
    assert labels.shape == (8, 8)
    expected = np.full((8, 8), len(SHAPES))
    expected[1:3, 1:3] = SHAPES.index("square")
    # the circle's centre is the corner of four patches; each holds a quarter disk of radius 4 px: 12.6 of 64 pixels
    # (0.20) is below min_cover 0.25 at the default, above it at 0.15
    assert (labels == expected).all()
    low = patch_object_shapes([square, circle], size=64, grid=8, min_cover=0.15)
    expected[5:7, 5:7] = SHAPES.index("circle")
    assert (low == expected).all()
    with pytest.raises(ValueError, match="does not split"):
        patch_object_shapes([square], size=60, grid=8)
