"""Conv stem + sinusoidal positional encoding + transformer encoder blocks + mean pool.

The hackathon's 1D attention model, corrected: it attended over raw samples with no
positional information; here a strided conv stem makes tokens of local shape, positions
are encoded, and the encoder uses pre-norm blocks with dropout.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from raytasks.nets.registry import channels, register


@dataclass
class TransformerConfig:
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    ff: int = 128
    stem_kernel: int = 7
    stem_stride: int = 3
    dropout: float = 0.1
    num_classes: int = 5
    in_channels: int = 1  # 2: + the deviation from the template (create_model(template=))


def sinusoid(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


@register("transformer", TransformerConfig)
class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.d_model % cfg.heads:
            raise ValueError(f"transformer: d_model {cfg.d_model} not divisible by heads")
        self.stem = nn.Sequential(
            nn.Conv1d(
                cfg.in_channels, cfg.d_model, cfg.stem_kernel, cfg.stem_stride, cfg.stem_kernel // 2
            ),
            nn.BatchNorm1d(cfg.d_model),
            nn.GELU(),
        )
        self.register_buffer("pos", sinusoid(256, cfg.d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.heads,
            cfg.ff,
            cfg.dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.d_model, cfg.num_classes))

    def forward(self, x):
        h = self.stem(channels(x)).transpose(1, 2)  # (B, T, d)
        h = self.encoder(h + self.pos[: h.shape[1]])
        return self.head(self.norm(h).mean(dim=1))
