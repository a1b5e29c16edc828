"""Reward adapters: adapt PickScore, HPSv2, ImageReward, the aesthetic predictor or CLIPScore to your own feedback.

    accelerate launch -m richfeedback.reward_models.train_adapter --config configs/adapters/pickscore-lora.yaml
    model = load_reward_model("pickscore", weights=..., adapter="runs/adapter-pickscore/best")

- `modeling`: add, save and load an adapter (peft LoRA, the family's head, or both), with a check of the base
  weights.
- `losses`: the families' training losses (pairwise softmax with ties as half, ImageReward's ranking loss, MSE).
- `preferences`: pairs from `ab results` files, Pick-a-Pic / HPDv2 files, pools ranked by a score or the oracle,
  and ShapesWorld; scores from rich-feedback datasets.
- `evaluate`: preference accuracy with a bootstrap interval over prompts.
- training: `richfeedback.reward_models.train_adapter`.
"""

from .modeling import (AdapterError, AdapterSpec, FAMILIES, adapter_state_dict, add_adapter, apply_adapter,
                       base_fingerprint, read_adapter_config, save_adapter)

__all__ = ["AdapterError", "AdapterSpec", "FAMILIES", "adapter_state_dict", "add_adapter", "apply_adapter",
           "base_fingerprint", "read_adapter_config", "save_adapter"]
