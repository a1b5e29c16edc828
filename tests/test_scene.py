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
