"""The pixel-level artifact segmenter: save/load, heatmaps at the image's size, its combination with RAHF's
implausibility heatmap, and what the shipped ShapesWorld model sees."""

import numpy as np
import pytest
import torch

from richfeedback.errors import UsageError
from richfeedback.inpaint.examples import artifact_examples
from richfeedback.reward_models.artifact_segmenter import (ArtifactSegmenter, WithArtifactSegmenter,
                                                           load_artifact_segmenter)
from richfeedback.shapesworld.render import render
from richfeedback.shapesworld.scene import sample_scene


def tiny(seed=0):
    torch.manual_seed(seed)
    return ArtifactSegmenter(block_out_channels=(8, 16), sample_size=32).eval()


def test_a_saved_segmenter_loads_with_the_same_outputs(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "seg")
    loaded = load_artifact_segmenter(tmp_path / "seg")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert torch.equal(model.heatmaps(images), loaded.heatmaps(images))
    assert list(loaded.config.block_out_channels) == [8, 16]


def test_heatmaps_are_probabilities_at_the_images_own_size():
    model = tiny()
    images = np.random.default_rng(1).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)  # not the working size
    heat = model.heatmaps(images)
    assert heat.shape == (2, 48, 48) and heat.dtype == torch.float32
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    as_floats = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    assert torch.allclose(model.heatmaps(as_floats), heat, atol=1e-5)  # uint8 arrays and [0, 1] tensors agree


def test_a_folder_without_a_segmenter_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="not an artifact segmenter folder.*--artifact-model takes 'embedded'"):
        load_artifact_segmenter(tmp_path)
    with pytest.raises(UsageError, match="nowhere: no such folder"):
        load_artifact_segmenter(tmp_path / "nowhere")


class FakeRAHF:
    """RAHF's interface with a constant implausibility heat of 0.3 and a misalignment heat of 0.2, at 16x16."""

    def outputs(self, prompts, images, names):
        n = len(images)
        maps = {"implausibility": torch.full((n, 16, 16), 0.3), "misalignment": torch.full((n, 16, 16), 0.2)}
        return {name: maps[name] if name in maps else torch.full((n,), 0.7) for name in names}

    def all_scores(self, prompts, images):
        return {"plausibility": torch.full((len(images),), 0.7)}

    def for_score(self, score):
        return ("for_score", score)

    def eval(self):
        return self

    def to(self, *args, **kwargs):
        return self


class FixedHeat(torch.nn.Module):
    """A 'segmenter' whose heat is given: 0.9 in the top-left quarter, 0.4 elsewhere."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def heatmaps(self, images):
        heat = torch.full((len(images), 32, 32), 0.4)
        heat[:, :16, :16] = 0.9
        return heat


def test_the_combined_implausibility_is_the_maximum_with_the_segmenters_heat_above_its_cut():
    combined = WithArtifactSegmenter(FakeRAHF(), FixedHeat(), cut=0.5)
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    maps = combined.heatmaps(["a red circle"] * 2, images)
    implausibility = maps["implausibility"]
    assert implausibility.shape == (2, 16, 16)  # RAHF's resolution
    # (antialiased downsampling blends the boundary row and column)
    assert torch.allclose(implausibility[:, :7, :7], torch.tensor(0.9))  # the segmenter's heat wins
    assert torch.allclose(implausibility[:, 9:, 9:], torch.tensor(0.3))  # 0.4 is under the cut: RAHF's 0.3 stays
    assert torch.equal(maps["misalignment"], torch.full((2, 16, 16), 0.2))  # untouched
    out = combined.outputs(["x"] * 2, images, ("alignment", "implausibility"))
    assert torch.equal(out["alignment"], torch.full((2,), 0.7))
    assert combined.for_score("plausibility") == ("for_score", "plausibility")  # everything else is RAHF's
    assert torch.allclose(WithArtifactSegmenter(FakeRAHF(), FixedHeat(), cut=0.3).heatmaps(["x"], images[:1])
                          ["implausibility"][0, 9:, 9:], torch.tensor(0.4))
    with pytest.raises(ValueError, match="cut"):
        WithArtifactSegmenter(FakeRAHF(), FixedHeat(), cut=1.0)


@pytest.fixture(scope="module")
def embedded():
    return load_artifact_segmenter()


def test_the_embedded_segmenter_finds_injected_artifacts_and_leaves_clean_renders_cold(embedded):
    examples = artifact_examples(8, seed=5)
    heat = embedded.heatmaps([e["image"] for e in examples]).numpy()
    for example, h in zip(examples, heat):
        truth = example["before"].artifact_map
        assert truth.any()
        assert (h[truth] >= 0.5).mean() > 0.5, example["kind"]  # most of every artifact is above the cut
    renders = [render(sample_scene(np.random.default_rng(seed))) for seed in range(500, 508)]
    peaks = embedded.heatmaps(renders).numpy().reshape(8, -1).max(axis=1)
    assert np.median(peaks) < 0.5


def test_auto_uses_the_embedded_segmenter_only_beside_the_embedded_rahf():
    from richfeedback.inpaint.fix import resolve_artifact_model

    assert resolve_artifact_model("auto", None) == "embedded"
    assert resolve_artifact_model("auto", "embedded") == "embedded"
    assert resolve_artifact_model("auto", "weights/rahf.pt") is None  # a real RAHF: no ShapesWorld segmenter
    assert resolve_artifact_model("runs/seg", "weights/rahf.pt") == "runs/seg"
    assert resolve_artifact_model(None, None) is None


def test_the_wrapper_copies_and_pickles_and_moves_both_models():
    import copy
    import pickle

    combined = WithArtifactSegmenter(FakeRAHF(), tiny(), cut=0.4)
    for other in (copy.deepcopy(combined), pickle.loads(pickle.dumps(combined))):
        assert isinstance(other, WithArtifactSegmenter) and other.cut == 0.4
    assert combined.eval() is combined and combined.to("cpu") is combined  # not the bare RAHF
    assert not combined.segmenter.training


def test_a_fixer_uses_the_segmenters_heat_for_its_mask_and_records_what_it_used():
    from richfeedback.inpaint.fix import FixSettings, InpaintFixer
    from richfeedback.inpaint.selection import MaskHeatScore

    combined = WithArtifactSegmenter(FakeRAHF(), FixedHeat(), cut=0.5)
    fixer = InpaintFixer(None, combined, MaskHeatScore(combined), FixSettings(mask=FixSettings().mask.__class__(
        round_to_cells=1)))
    heat = fixer.predict_heatmap("a red circle", np.zeros((32, 32, 3), np.uint8))
    assert heat.shape == (32, 32) and np.allclose(heat[:12, :12], 0.9) and np.allclose(heat[20:, 20:], 0.3)
    assert fixer.settings.artifact_model == "given" and fixer.settings.artifact_cut == 0.5
    assert fixer.reward.rahf is fixer.heatmap_model  # the mask heat reads the same combined maps
    alone = InpaintFixer(None, FakeRAHF(), MaskHeatScore(FakeRAHF()), FixSettings(
        artifact_model="embedded", mask=FixSettings().mask.__class__(round_to_cells=1)))
    # RAHF alone: the report must not claim a segmenter, nor a cut that nothing applies
    assert alone.settings.artifact_model is None and alone.settings.artifact_cut is None
    with pytest.raises(ValueError, match="needs an artifact_cut"):
        FixSettings(artifact_model="embedded", artifact_cut=None)
