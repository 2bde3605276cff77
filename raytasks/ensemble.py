"""Ensembles: several exported models averaged into one shippable model.

    raytasks ensemble resnet1d-intra resnet1d-intra-18ep --tag ensemble-intra

The ensemble averages its members' class probabilities (returned as log-probabilities, so
argmax and the recall-first offsets work as for any model). Its directory is self-contained
(members/<tag>/ holds copies of each member), so it ships and evaluates like a single model;
its offsets and valid metrics are fitted on the valid split of the members' scheme.
"""

import json
import shutil
import time
from pathlib import Path

import torch

from raytasks.data import DataError
from raytasks.metrics import OBJECTIVE, compute_metrics, fit_offsets
from raytasks.paths import staged_dir


class Ensemble(torch.nn.Module):
    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        # members may differ in what they read (beat only, beat + RR features)
        self.input_width = max(m.input_width for m in members)

    def forward(self, x):
        probs = torch.stack([m(x[:, :m.input_width]).softmax(dim=-1)
                             for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()


def load_members(model_dir: Path, info: dict) -> Ensemble:
    from raytasks.train import load_model

    return Ensemble([load_model(Path(model_dir) / "members" / tag)[0]
                     for tag in info["members"]])


def build_ensemble(member_dirs: list[Path], out_dir: Path, processed: Path) -> dict:
    """Copy the members into out_dir/members/, fit offsets on valid, write model.json.

    Everything is computed in a temporary directory first; out_dir is replaced only at the
    end, so a bad member leaves an existing ensemble untouched.
    """
    from raytasks.data.stream import load_split, split_files
    from raytasks.train import load_model

    member_dirs = [Path(d) for d in member_dirs]
    if len(member_dirs) < 2:
        raise DataError("an ensemble needs at least two models")
    tags = [d.name for d in member_dirs]
    if len(set(tags)) != len(tags):
        raise DataError(f"duplicate member tags: {tags}")
    infos = [load_model(d)[1] for d in member_dirs]  # refuses missing/corrupt members
    schemes = {i.get("data", {}).get("scheme") for i in infos}
    if len(schemes) != 1 or None in schemes:
        raise DataError(f"members were trained on different or unknown schemes: {schemes}")
    scheme = schemes.pop()
    files = split_files(Path(processed) / scheme, "valid")
    rr = any(i.get("rr") for i in infos)
    x, y = load_split(files, rr=rr)

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        info = _write_ensemble(tmp, out_dir.name, member_dirs, infos, x, y)
        (tmp / "model.json").write_text(json.dumps(info, indent=2))
    return info


def _write_ensemble(tmp: Path, tag: str, member_dirs: list[Path], infos: list[dict], x, y):
    """Copy the members into tmp/members/ and fit the ensemble's offsets on (x, y)."""
    from raytasks.train import predict_logits

    tags = [d.name for d in member_dirs]
    for d in member_dirs:
        (tmp / "members" / d.name).mkdir(parents=True)
        for f in ("model.pt", "model.json"):
            shutil.copy2(d / f, tmp / "members" / d.name / f)
    info = {"tag": tag, "arch": "ensemble", "members": tags, "model": {},
            "train": {"members": {t: i["arch"] for t, i in zip(tags, infos)}},
            "data": infos[0].get("data", {}), "epoch": None,
            "params": sum(i.get("params", 0) for i in infos)}
    logits = predict_logits(load_members(tmp, info), x)
    scheme = info["data"].get("scheme")
    return info | {
        "valid_metrics": {k: float(v) for k, v in
                          compute_metrics(y, logits.argmax(axis=1)).items()},
        "offsets": fit_offsets(logits, y).tolist(),
        "offsets_fit": {"on": "valid", "scheme": scheme, "objective": OBJECTIVE},
        "source": "ensemble of " + ", ".join(str(d) for d in member_dirs),
        "torch": torch.__version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
