"""The ensemble a saved ensemble (raytasks.models.saved, raytasks.models.ensemble) is rebuilt
into: not a registered architecture (it has no config of its own: its members are saved models)."""

import torch


class Ensemble(torch.nn.Module):
    """Members' class probabilities averaged (returned as log-probabilities, so argmax and
    the offsets work as for any model)."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        # members may differ in what they read (beat only, beat + RR features)
        self.input_width = max(m.input_width for m in members)

    def forward(self, x):
        probs = torch.stack([m(x[:, : m.input_width]).softmax(dim=-1) for m in self.members]).mean(
            dim=0
        )
        return probs.clamp_min(1e-12).log()
