"""The hackathon's 2D approach: the beat zero-padded to 192 and read as an HxW image
(16x12, 4x48, ...), conv blocks with batch norm and dropout added."""

from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F

from raytasks.nets.registry import channels, register

PADDED = 192


@dataclass
class CNN2dConfig:
    height: int = 16  # width = 192 // height
    channels: tuple = (32, 64)
    kernel: int = 3
    dropout: float = 0.25
    num_classes: int = 5
    in_channels: int = 1  # 2: + the deviation from the template (create_model(template=))


@register("cnn2d", CNN2dConfig)
class CNN2d(nn.Module):
    def __init__(self, cfg: CNN2dConfig):
        super().__init__()
        if PADDED % cfg.height:
            raise ValueError(f"cnn2d: height must divide {PADDED}, got {cfg.height}")
        self.shape = (cfg.height, PADDED // cfg.height)
        layers, c_in = [], cfg.in_channels
        h, w = self.shape
        for c in cfg.channels:
            # halve a side only while it is >= 2 (a thin 4x48 image keeps its height from the
            # start; a deep stack stops halving a side once it is down to 1)
            pool = (2 if cfg.height >= 4 and h >= 2 else 1, 2 if w >= 2 else 1)
            h, w = h // pool[0], w // pool[1]
            layers += [
                nn.Conv2d(c_in, c, cfg.kernel, padding=cfg.kernel // 2, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, cfg.kernel, padding=cfg.kernel // 2, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(pool),
                nn.Dropout2d(cfg.dropout / 2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c_in, cfg.num_classes))

    def forward(self, x):
        x = F.pad(channels(x), (0, PADDED - 187))
        x = x.view(len(x), x.shape[1], *self.shape)
        return self.head(self.features(x).mean(dim=(-2, -1)))
