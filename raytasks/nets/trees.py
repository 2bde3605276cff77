"""Gradient-boosted trees as a torch module, so they ship, load and evaluate like any model.

A fitted scikit-learn HistGradientBoostingClassifier is flattened into tensors (each node's
feature, threshold, children, leaf value; each tree's root and class), stored in model.pt as
a plain state_dict (loaded with weights_only, unlike a pickle) and evaluated by walking every
tree at once, level by level. Its input is a feature matrix (raytasks.data.features), not a beat.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from raytasks.data import NUM_CLASSES
from raytasks.nets.registry import register

ABSENT = -50.0  # the raw score of a class the trees never saw


@dataclass
class TreesConfig:
    n_features: int = 1
    n_nodes: int = 1
    n_trees: int = 1
    n_classes: int = NUM_CLASSES
    depth: int = 1  # deepest leaf: the walk's number of steps
    chunk: int = 1024  # rows walked at a time (memory: chunk x n_trees indices)


@register("trees", TreesConfig)
class Trees(nn.Module):
    trainable = False  # fitted by raytasks.training.boost, not by the torch training loop

    def __init__(self, cfg: TreesConfig):
        super().__init__()
        self.cfg = cfg
        n, t = cfg.n_nodes, cfg.n_trees
        for name, size, dtype in (
            ("feature", n, torch.int32),
            ("left", n, torch.int32),
            ("right", n, torch.int32),
            ("threshold", n, torch.float64),
            ("missing_left", n, torch.bool),
            ("leaf", n, torch.bool),
            ("value", n, torch.float32),
            ("root", t, torch.int32),
            ("tree_class", t, torch.int64),
            ("baseline", cfg.n_classes, torch.float64),
        ):
            self.register_buffer(name, torch.zeros(size, dtype=dtype))

    def walk(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.root.long().expand(len(x), -1)
        feature, left, right = self.feature.long(), self.left.long(), self.right.long()
        for _ in range(self.cfg.depth):
            xv = x.gather(1, feature[idx])
            go_left = torch.where(
                torch.isnan(xv), self.missing_left[idx], xv <= self.threshold[idx]
            )
            idx = torch.where(self.leaf[idx], idx, torch.where(go_left, left[idx], right[idx]))
        logits = self.baseline.expand(len(x), -1).clone()
        return logits.index_add_(1, self.tree_class, self.value[idx].double())

    def forward(self, x):
        x = x.double()
        return torch.cat(
            [self.walk(x[i : i + self.cfg.chunk]) for i in range(0, max(len(x), 1), self.cfg.chunk)]
        ).float()


def from_sklearn(est) -> Trees:
    """A Trees module equal to a fitted HistGradientBoostingClassifier's raw predictions."""
    trees = [(c, p.nodes) for per_iter in est._predictors for c, p in enumerate(per_iter)]
    if any(nodes["is_categorical"].any() for _, nodes in trees):
        raise ValueError("categorical splits are not supported")
    offsets = np.cumsum([0] + [len(nodes) for _, nodes in trees])
    allnodes = np.concatenate([nodes for _, nodes in trees])
    base = np.repeat(offsets[:-1], [len(nodes) for _, nodes in trees])
    classes = np.asarray(est.classes_)
    if len(classes) < 3 or classes.max() >= NUM_CLASSES:
        raise ValueError(f"needs a multi-class model over classes 0..4, got {classes}")
    cfg = TreesConfig(
        n_features=est.n_features_in_,
        n_nodes=len(allnodes),
        n_trees=len(trees),
        n_classes=NUM_CLASSES,
        depth=int(allnodes["depth"].max()),
    )
    model = Trees(cfg)
    leaf = allnodes["is_leaf"].astype(bool)
    # a class absent from training (Q in a few records) gets a score it never wins
    baseline = np.full(NUM_CLASSES, ABSENT)
    baseline[classes] = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
    state = {
        "feature": np.where(leaf, 0, allnodes["feature_idx"]),
        "left": np.where(leaf, 0, allnodes["left"] + base),
        "right": np.where(leaf, 0, allnodes["right"] + base),
        "threshold": allnodes["num_threshold"],
        "missing_left": allnodes["missing_go_to_left"],
        "leaf": leaf,
        "value": allnodes["value"],
        "root": offsets[:-1],
        "tree_class": classes[[c for c, _ in trees]],
        "baseline": baseline,
    }
    model.load_state_dict(
        {
            k: torch.from_numpy(np.ascontiguousarray(v)).to(getattr(model, k).dtype)
            for k, v in state.items()
        }
    )
    return model.eval()
