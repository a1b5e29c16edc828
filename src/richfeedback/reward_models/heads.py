"""The score head ImageReward and the LAION aesthetic predictor share: five linear layers, no activations.

Both files store it as `layers.{0,2,4,6,7}.{weight,bias}` (the odd indices are dropouts). With the ReLUs commented out
in both references, it is an affine function of its input in eval mode; we keep the layers as published so the keys
and the floating-point order of operations stay the same.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearMLPHead(nn.Module):
    def __init__(self, input_size: int):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) scores of (B, input_size) features."""
        return self.layers(features).squeeze(-1)
