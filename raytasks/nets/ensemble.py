"""The ensemble a saved ensemble (raytasks.models.saved, raytasks.models.ensemble) is rebuilt
into: not a registered architecture (it has no config of its own: its members are saved models)."""

import torch


class Ensemble(torch.nn.Module):
    """Members' class probabilities, weighted and summed (returned as log-probabilities, so
    argmax and the offsets work as for any model).

    Its input is the beat prefix every network reads a part of (beat, RR features,
    deviations: `input_width` columns), then one block of record features (raytasks.data.
    features) per member that reads them, the boosted trees, in member order: members of
    an ensemble may read different inputs, and raytasks.models.saved.model_inputs builds x.
    """

    def __init__(self, members, weights=None):
        super().__init__()
        if any(getattr(m, "spans", None) and feature_blocks(m) for m in members):
            raise ValueError("an ensemble member that reads record features must be a model")
        self.members = torch.nn.ModuleList(members)
        w = torch.ones(len(members)) if weights is None else torch.tensor(weights).float()
        self.register_buffer("weights", w / w.sum(), persistent=False)
        self.input_width = max(m.input_width for m in members)
        self.spans, start = [], self.input_width
        for m in members:
            n = m.cfg.n_features if getattr(m, "record_features", None) else 0
            self.spans.append(slice(start, start + n) if n else slice(0, m.input_width))
            start += n

    def forward(self, x):
        probs = sum(
            w * m(x[:, s]).softmax(dim=-1)
            for m, s, w in zip(self.members, self.spans, self.weights)
        )
        return probs.clamp_min(1e-12).log()


def feature_blocks(model) -> list[dict]:
    """The record-feature params of each block the model reads after its beat prefix (an
    ensemble: its trees members'; a trees model: its own; a network: none)."""
    members = model.members if isinstance(model, Ensemble) else [model]
    return [m.record_features for m in members if getattr(m, "record_features", None)]
