"""Residual 1D CNN with optional squeeze-and-excitation."""

from dataclasses import dataclass

import torch.nn as nn

from raytasks.nets.registry import channels, register


@dataclass
class ResNet1dConfig:
    stem: int = 32
    channels: tuple = (32, 64, 128)
    blocks_per_stage: int = 1
    kernel: int = 7
    se: bool = True
    dropout: float = 0.2
    num_classes: int = 5
    in_channels: int = 1  # 2: + the deviation from the template (create_model(template=))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 8):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(c, max(c // r, 4)),
            nn.ReLU(inplace=True),
            nn.Linear(max(c // r, 4), c),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.gate(x.mean(dim=-1)).unsqueeze(-1)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, se: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, k, stride, k // 2, bias=False),
            nn.BatchNorm1d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv1d(c_out, c_out, k, 1, k // 2, bias=False),
            nn.BatchNorm1d(c_out),
            SqueezeExcite(c_out) if se else nn.Identity(),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


@register("resnet1d", ResNet1dConfig)
class ResNet1d(nn.Module):
    def __init__(self, cfg: ResNet1dConfig):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(cfg.in_channels, cfg.stem, cfg.kernel, padding=cfg.kernel // 2, bias=False),
            nn.BatchNorm1d(cfg.stem),
            nn.ReLU(inplace=True),
        )
        stages, c_in = [], cfg.stem
        for c in cfg.channels:
            for b in range(cfg.blocks_per_stage):
                stages.append(Block(c_in, c, cfg.kernel, 2 if b == 0 else 1, cfg.se))
                c_in = c
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c_in, cfg.num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(channels(x))).mean(dim=-1))
