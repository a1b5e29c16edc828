import os

# No hub is reachable on our machines or in CI: every test runs offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_rahf_dir(tmp_path_factory):
    """A RAHF folder of the `tiny` size (random weights, seed 0) with its ShapesWorld tokenizer."""
    import torch

    from richfeedback.reward_models.rahf.configuration import RAHFConfig
    from richfeedback.reward_models.rahf.modeling import RAHFModel
    from richfeedback.reward_models.rahf.processing import load_shapesworld_tokenizer

    path = tmp_path_factory.mktemp("rahf-tiny")
    torch.manual_seed(0)
    RAHFModel(RAHFConfig.from_size("tiny")).save_pretrained(path)
    load_shapesworld_tokenizer().save_pretrained(path / "tokenizer")
    return path
