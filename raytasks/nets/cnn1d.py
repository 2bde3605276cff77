"""Plain 1D CNN baseline: conv-BN-ReLU-pool blocks, global average pool, linear head."""

from dataclasses import dataclass

import torch.nn as nn

from raytasks.nets.registry import channels, register


@dataclass
class CNN1dConfig:
    channels: tuple = (32, 64, 128)
    kernel: int = 7
    dropout: float = 0.2
    num_classes: int = 5
    in_channels: int = 1  # 2: + the deviation from the template (create_model(template=))


@register("cnn1d", CNN1dConfig)
class CNN1d(nn.Module):
    def __init__(self, cfg: CNN1dConfig):
        super().__init__()
        layers, c_in = [], cfg.in_channels
        for c in cfg.channels:
            layers += [
                nn.Conv1d(c_in, c, cfg.kernel, padding=cfg.kernel // 2, bias=False),
                nn.BatchNorm1d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool1d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c_in, cfg.num_classes))

    def forward(self, x):
        return self.head(self.features(channels(x)).mean(dim=-1))
