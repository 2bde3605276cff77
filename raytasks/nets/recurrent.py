"""GRU and LSTM classifiers: an optional strided conv stem (halves the sequence, which
makes recurrence affordable on a CPU), a (bi)directional RNN, then attention, mean or
last-state pooling."""

from dataclasses import dataclass

import torch
import torch.nn as nn

from raytasks.nets.registry import channels, register


@dataclass
class RecurrentConfig:
    hidden: int = 64
    layers: int = 1
    bidirectional: bool = True
    pooling: str = "attention"  # attention | mean | last
    stem_channels: int = 16  # 0: feed raw samples
    stem_stride: int = 2
    dropout: float = 0.2
    num_classes: int = 5
    in_channels: int = 1  # 2: + the deviation from the template (create_model(template=))


class Recurrent(nn.Module):
    rnn_cls: type = nn.GRU

    def __init__(self, cfg: RecurrentConfig):
        super().__init__()
        if cfg.pooling not in ("attention", "mean", "last"):
            raise ValueError(f"pooling must be attention|mean|last, got {cfg.pooling!r}")
        self.pooling = cfg.pooling
        if cfg.stem_channels:
            self.stem = nn.Sequential(
                nn.Conv1d(cfg.in_channels, cfg.stem_channels, 5, cfg.stem_stride, 2, bias=False),
                nn.BatchNorm1d(cfg.stem_channels),
                nn.ReLU(inplace=True),
            )
            c_in = cfg.stem_channels
        else:
            self.stem, c_in = None, cfg.in_channels
        self.rnn = self.rnn_cls(
            c_in,
            cfg.hidden,
            cfg.layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
        )
        width = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.attn = nn.Linear(width, 1) if cfg.pooling == "attention" else None
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_classes))

    def forward(self, x):
        x = channels(x)
        x = (self.stem(x) if self.stem is not None else x).transpose(1, 2)  # (B, T, C)
        h, _ = self.rnn(x)
        if self.pooling == "attention":
            w = torch.softmax(self.attn(h), dim=1)
            z = (w * h).sum(dim=1)
        elif self.pooling == "mean":
            z = h.mean(dim=1)
        else:
            z = h[:, -1]
        return self.head(z)


@register("gru", RecurrentConfig)
class GRUNet(Recurrent):
    rnn_cls = nn.GRU


@register("lstm", RecurrentConfig)
class LSTMNet(Recurrent):
    rnn_cls = nn.LSTM
