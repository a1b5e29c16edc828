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


def build_tiny_sdxl(tokenizer_dir):
    """diffusers' own SDXL test configuration (tests/pipelines/stable_diffusion_xl), random weights (seed 0), with
    CLIP tokenizers built offline from open_clip's BPE file."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from richfeedback.tokenizers import build_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], sample_size=128)
    text_config = CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32,
                                 intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
                                 hidden_act="gelu", projection_dim=32)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    tokenizer = build_clip_tokenizer(tokenizer_dir)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory):
    """A saved tiny SDXL pipeline folder (`from_pretrained`-able offline)."""
    path = tmp_path_factory.mktemp("tiny-sdxl")
    build_tiny_sdxl(tmp_path_factory.mktemp("clip-tokenizer")).save_pretrained(path)
    return path
