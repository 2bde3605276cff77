"""InceptionTime-style network (Fawaz et al. 2020): bottleneck + parallel kernels + a
max-pool branch per module, a residual connection every `depth_per_residual` modules."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from raytasks.nets.registry import channels, register


@dataclass
class Inception1dConfig:
    filters: int = 16
    kernels: tuple = (9, 19, 39)
    bottleneck: int = 16
    depth: int = 3
    depth_per_residual: int = 3
    dropout: float = 0.1
    num_classes: int = 5
    in_channels: int = 1  # 2: + the deviation from the template (create_model(template=))


class InceptionModule(nn.Module):
    def __init__(self, c_in: int, cfg: Inception1dConfig):
        super().__init__()
        self.bottleneck = (
            nn.Conv1d(c_in, cfg.bottleneck, 1, bias=False) if c_in > 1 else nn.Identity()
        )
        c_b = cfg.bottleneck if c_in > 1 else 1
        self.convs = nn.ModuleList(
            nn.Conv1d(c_b, cfg.filters, k, padding=k // 2, bias=False) for k in cfg.kernels
        )
        self.pool = nn.Sequential(
            nn.MaxPool1d(3, 1, 1), nn.Conv1d(c_in, cfg.filters, 1, bias=False)
        )
        self.out = nn.Sequential(
            nn.BatchNorm1d(cfg.filters * (len(cfg.kernels) + 1)), nn.ReLU(inplace=True)
        )

    def forward(self, x):
        b = self.bottleneck(x)
        return self.out(torch.cat([conv(b) for conv in self.convs] + [self.pool(x)], dim=1))


@register("inception1d", Inception1dConfig)
class Inception1d(nn.Module):
    def __init__(self, cfg: Inception1dConfig):
        super().__init__()
        width = cfg.filters * (len(cfg.kernels) + 1)
        self.modules_ = nn.ModuleList()
        self.shortcuts = nn.ModuleDict()
        c_in = res_in = cfg.in_channels
        for d in range(cfg.depth):
            self.modules_.append(InceptionModule(c_in, cfg))
            c_in = width
            if (d + 1) % cfg.depth_per_residual == 0:
                self.shortcuts[str(d)] = nn.Sequential(
                    nn.Conv1d(res_in, width, 1, bias=False), nn.BatchNorm1d(width)
                )
                res_in = width
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_classes))

    def forward(self, x):
        x = channels(x)
        residual = x
        for d, module in enumerate(self.modules_):
            x = module(x)
            if str(d) in self.shortcuts:
                x = self.act(x + self.shortcuts[str(d)](residual))
                residual = x
        return self.head(x.mean(dim=-1))
