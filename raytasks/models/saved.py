"""Saved models: the one owner of a shipped model's folder, models/<tag>/.

    model.pt     the weights (a state_dict), absent for an ensemble
    model.json   everything else needed to rebuild and evaluate it (INFO_FIELDS)
    members/     an ensemble's members, each a saved model folder of its own

`write_info` is the only code that writes a model.json and `read_info` the only code that
reads one; `save` writes a whole folder (staged, swapped in whole: never half a model),
`load_model` rebuilds any saved model (a network, a `trees` record-feature model, an
ensemble: raytasks.nets.ensemble) and `predict_logits` runs it. Training
(`export_checkpoint`), `raytasks boost`, `raytasks ensemble` and `raytasks calibrate` all
save through here. Nothing here needs Ray, and torch is imported only where a model is
built, saved or run.

model.json's fields are INFO_FIELDS; its format version is SCHEMA (files written before
it was recorded are version 1; version 2 adds `schema` and always records the scheme in
`offsets_fit`). Shipped version-1 files load unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raytasks.core.constants import BEAT_LEN, NUM_CLASSES, RR_FEATURES, utc_iso
from raytasks.core.paths import staged_dir, write_text
from raytasks.data import DataError, scheme_path

if TYPE_CHECKING:  # torch is imported where a model is built or run: reading model.json
    import torch  # (what to evaluate, a model's scheme) needs neither it nor its start-up

SCHEMA = 2
INFO, WEIGHTS = "model.json", "model.pt"
INFO_FIELDS = {
    "schema": "format version of this file (absent: 1)",
    "tag": "the folder's name when exported",
    "arch": "raytasks.nets architecture, or 'ensemble'",
    "rr": "the model reads x = beat + RR_FEATURES",
    "template": "the model reads x = beat + RR_FEATURES + the beat minus its record's template",
    "model": "the architecture's config fields",
    "record_features": "(trees) the record-feature groups it reads (raytasks.data.features)",
    "members": "(ensemble) the member tags under members/",
    "weights": "(ensemble) each member's weight in the probability average (absent: equal)",
    "train": "the training settings it ran with",
    "valid_metrics": "metrics on the valid split at export",
    "valid_is": "(trees) what valid_metrics were measured on, when not the valid split",
    "cv_field": "(trees) the field's figures of the record-level cross-validation",
    "epoch": "best epoch (None: not an epoch-trained model)",
    "data": "the data build it was trained on (build.json: scheme, params, ...)",
    "params": "parameter count",
    "offsets": "per-class logit offsets of the recall-first operating point",
    "offsets_fit": "how the offsets were fitted: on, scheme, objective",
    "source": "the run it came from",
    "torch": "torch version that wrote it",
    "exported": "UTC stamp",
}


# ---------------------------------------------------------------- model.json


def read_info(model_dir: Path) -> dict:
    """A model's model.json (the one reader): FileNotFoundError when absent, DataError when
    it is not a model.json this code can read."""
    path = Path(model_dir) / INFO
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or "arch" not in info:
        raise DataError(f"{path}: not a model.json (no 'arch')")
    version = info.get("schema", 1)
    if not isinstance(version, int) or version > SCHEMA:
        raise DataError(
            f"{path}: model.json schema {version!r}; this raytasks reads up to "
            f"{SCHEMA} (update raytasks)"
        )
    return info


def write_info(model_dir: Path, info: dict) -> Path:
    """model_dir/model.json, stamped with the schema version (the one writer; atomic).
    A key outside INFO_FIELDS is refused: a new field is added to the schema first."""
    unknown = sorted(set(info) - set(INFO_FIELDS))
    if unknown:
        raise ValueError(f"model.json fields not in saved.INFO_FIELDS: {unknown}")
    info = {"schema": SCHEMA} | {k: v for k, v in info.items() if k != "schema"}
    return write_text(Path(model_dir) / INFO, json.dumps(info, indent=2))


def scheme_of(info: dict) -> str | None:
    """The scheme a model was trained on (its data build's); None when unknown. Not
    `offsets_fit.scheme`: calibrate records "intra" there for a model of unknown scheme, and
    evaluate must not start skipping such a model under `--scheme inter`."""
    return (info.get("data") or {}).get("scheme")


def reads_rr(info: dict) -> bool:
    """Whether the model reads the RR features after the beat (ensembles: any member)."""
    return bool(info.get("rr")) or info.get("arch") == "ensemble"


def offsets_of(info: dict) -> np.ndarray:
    return np.asarray(info.get("offsets", [0.0] * NUM_CLASSES), dtype=np.float64)


def stamp(info: dict) -> dict:
    """info with who wrote it and when."""
    import torch

    return info | {"torch": torch.__version__, "exported": utc_iso()}


def with_offsets(info: dict, offsets, fit: dict) -> dict:
    """info with refitted recall-first offsets and how they were fitted (on, scheme,
    objective): what `raytasks calibrate` rewrites."""
    return info | {"offsets": [float(o) for o in offsets], "offsets_fit": fit}


def ensemble_info(
    tag: str,
    member_dirs: list[Path],
    infos: list[dict],
    scheme: str,
    valid_metrics: dict,
    offsets,
    weights: list[float] | None = None,
) -> dict:
    """An ensemble's model.json: its members (copied under members/) and weights, their
    common data build, the ensemble's valid metrics and offsets fitted on that scheme's
    valid split (in-sample, and said so, when a member was trained on it)."""
    from raytasks.core.metrics import OBJECTIVE

    tags = [Path(d).name for d in member_dirs]
    seen = [t for t, i in zip(tags, infos) if "valid" in (i.get("data") or {}).get("splits", [])]
    info = {
        "tag": tag,
        "arch": "ensemble",
        "members": tags,
        "model": {},
        "train": {"members": {t: i["arch"] for t, i in zip(tags, infos)}},
        "data": infos[0].get("data", {}),
        "epoch": None,
        "params": sum(i.get("params", 0) for i in infos),
        "valid_metrics": valid_metrics,
        "offsets": [float(o) for o in offsets],
        "offsets_fit": {"on": "valid", "scheme": scheme, "objective": OBJECTIVE},
        "source": "ensemble of " + ", ".join(str(d) for d in member_dirs),
    }
    if weights is not None:
        info["weights"] = [float(w) for w in weights]
    if seen:  # the valid figures flatter it: predict's default model skips it
        info["valid_is"] = VALID_IN_SAMPLE + ", ".join(seen)
    return stamp(info)


VALID_IN_SAMPLE = "the valid split, in-sample for members trained on it: "


def valid_in_sample(info: dict) -> bool:
    """Whether a model's valid_metrics were measured on beats it was trained on."""
    return str(info.get("valid_is", "")).startswith(VALID_IN_SAMPLE)


def trees_info(
    tag: str,
    model,
    groups: dict,
    settings: dict,
    scheme: str,
    cv_metrics: dict,
    cv_field: dict,
    offsets,
    source: str,
) -> dict:
    """A `raytasks boost` model's model.json: the trees' config, the record-feature groups
    it reads, and figures/offsets from its record-level cross-validation (empty: no CV)."""
    from raytasks.core.metrics import OBJECTIVE

    return stamp(
        {
            "tag": tag,
            "arch": "trees",
            "model": vars(model.cfg),
            "rr": True,
            "record_features": groups,
            "train": {"hgb": settings},
            "data": {"scheme": scheme, "splits": ["train", "valid"]},
            "epoch": None,
            "params": int(sum(b.numel() for b in model.buffers())),
            "valid_metrics": cv_metrics,
            "valid_is": "leave-records-out cross-validation",
            "cv_field": cv_field,
            "offsets": [float(o) for o in offsets],
            "offsets_fit": {
                "on": "out-of-fold logits of the record-level cross-validation",
                "scheme": scheme,
                "objective": OBJECTIVE,
            },
            "source": source,
        }
    )


# ---------------------------------------------------------------- folders


def save(out_dir: Path, info: dict, weights: dict | None = None, members=()) -> Path:
    """Write a model folder whole: model.pt (weights), members/<tag>/ (copies of saved
    models), model.json last. Staged beside out_dir and swapped in; any failure leaves
    out_dir as it was."""
    import shutil

    import torch

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        if weights is not None:
            torch.save(weights, tmp / WEIGHTS)
        for d in members:
            (tmp / "members" / Path(d).name).mkdir(parents=True)
            for f in (WEIGHTS, INFO):
                shutil.copy2(Path(d) / f, tmp / "members" / Path(d).name / f)
        write_info(tmp, info)
    return out_dir


def load_model(model_dir: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model: (module in eval mode, its model.json). The module's
    `input_width` says how many columns of x (beat, then RR features) it reads."""
    from raytasks.nets.ensemble import Ensemble

    model_dir = Path(model_dir)
    try:
        info = read_info(model_dir)
        model: torch.nn.Module
        if info["arch"] == "ensemble":
            model = Ensemble(
                [load_model(model_dir / "members" / tag)[0] for tag in info["members"]],
                info.get("weights"),
            )
        else:
            model = _load_network(model_dir, info)
    except FileNotFoundError as e:
        raise DataError(f"{model_dir}: missing {Path(e.filename).name}") from None
    except DataError:
        raise
    except Exception as e:
        raise DataError(
            f"{model_dir}: corrupt or incompatible model files ({type(e).__name__}: {str(e)[:120]})"
        ) from None
    model.eval()
    return model, info


def _load_network(model_dir: Path, info: dict) -> torch.nn.Module:
    import torch

    from raytasks.nets import create_model, input_width

    # a record-features model (raytasks.data.features) reads beat + RR, then features of them
    wrap = info.get("rr", False) and not info.get("record_features")
    model = create_model(
        info["arch"], rr=wrap, template=info.get("template", False), **info["model"]
    )
    model.load_state_dict(torch.load(model_dir / WEIGHTS, weights_only=True, map_location="cpu"))
    # the columns of x it reads (an attribute nn.Module itself does not declare)
    width = input_width(info.get("rr", False), info.get("template", False))
    model.input_width = width  # type: ignore[assignment]
    # the trees read features of the whole record (model_inputs), not a prefix of x
    model.record_features = info.get("record_features")  # type: ignore[assignment]
    return model


def model_inputs(model: torch.nn.Module, x: np.ndarray, context=None) -> np.ndarray:
    """What a loaded model reads, from x (beat, then RR features, then deviations: each
    network reads a prefix) and context (each row's `record` and `sample`: needed only by
    a model that reads record features, raytasks.data.features; DataError without it)."""
    from raytasks.nets.ensemble import Ensemble, feature_blocks

    blocks = feature_blocks(model)
    if not blocks:
        return x[:, : model.input_width]
    if context is None:
        raise DataError("record features need each beat's record and sample")
    from raytasks.data.features import record_features

    beat_rr = x[:, : BEAT_LEN + len(RR_FEATURES)]
    features = [record_features(beat_rr, context, params) for params in blocks]
    if not isinstance(model, Ensemble):
        return features[0]
    return np.concatenate([x[:, : model.input_width], *features], axis=1)


def inputs_width(model: torch.nn.Module) -> int:
    """How many columns model_inputs builds for the model."""
    from raytasks.nets.ensemble import Ensemble

    if isinstance(model, Ensemble):
        return max(s.stop for s in model.spans)
    if getattr(model, "record_features", None):  # the trees read record features only
        return int(model.cfg.n_features)  # type: ignore[union-attr, arg-type]
    return int(model.input_width)  # type: ignore[arg-type]


def predict_logits(
    model: torch.nn.Module, x: np.ndarray, batch: int = 256, device: torch.device | None = None
) -> np.ndarray:
    """Logits of x (what the model reads: model_inputs), on device (CPU), `batch` rows at a
    time: 256 runs the shipped networks ~2x faster on a CPU core than 4096 (their
    activations stay in cache), with the same logits to the bit."""
    import torch

    model.eval()
    # a copy per batch: x may be a read-only Arrow buffer (from_numpy warns on those)
    with torch.inference_mode():
        out = [
            model(torch.tensor(x[i : i + batch]).to(device or "cpu")).float().cpu().numpy()
            for i in range(0, len(x), batch)
        ]
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), dtype=np.float32)


def valid_split(processed: Path, scheme: str, model: torch.nn.Module):
    """(inputs, y) of a scheme's valid split: what the model reads (model_inputs)."""
    import pyarrow.parquet as pq

    from raytasks.data.stream import load_split, split_files

    files = split_files(scheme_path(processed, scheme), "valid")
    width = int(getattr(model, "input_width", BEAT_LEN))
    x, y = load_split(files, rr=width > BEAT_LEN, template=width > BEAT_LEN + len(RR_FEATURES))
    # same files, same order as load_split: row i of context is beat i of x
    context = pq.ParquetDataset(files).read(columns=["record", "sample"]).to_pandas()
    return model_inputs(model, x, context), y


# ---------------------------------------------------------------- a trained checkpoint


def export_checkpoint(
    checkpoint, metrics: dict, settings, data, out_dir: Path, source: str = ""
) -> Path:
    """A training checkpoint (raytasks.training.train's state.pt) -> a saved model in out_dir:
    the weights, and in model.json the architecture, the training settings, the valid
    metrics, the data build, and the recall-first offsets fitted on the valid split."""
    import torch

    from raytasks.core.metrics import OBJECTIVE, fit_offsets
    from raytasks.data.stream import load_split
    from raytasks.nets import create_model, model_config, num_params

    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=False, map_location="cpu")
    model = create_model(
        settings.arch, rr=settings.rr, template=settings.template, **settings.model
    )
    model.load_state_dict(state["model"])
    valid_x, valid_y = load_split(data.valid_files, rr=settings.rr, template=settings.template)
    offsets = fit_offsets(predict_logits(model, valid_x), valid_y)
    build = build_info(Path(data.data_dir))
    config = model_config(settings.arch, **settings.model).__dict__
    train = {k: v for k, v in settings.to_dict().items() if k not in ("arch", "model")}
    info = stamp(
        {
            "tag": Path(out_dir).name,
            "arch": settings.arch,
            "rr": settings.rr,
            **({"template": True} if settings.template else {}),
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "train": train | {"data": portable(data.data_dir)},
            "valid_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "epoch": state["epoch"],
            "data": build,
            "params": num_params(model),
            "offsets": offsets.tolist(),
            "offsets_fit": {"on": "valid", "scheme": build.get("scheme"), "objective": OBJECTIVE},
            "source": source,
        }
    )
    return save(out_dir, info, model.state_dict())


def build_info(data_dir: Path) -> dict:
    """What a model records of the build it was trained on (from build.json; {}: none)."""
    path = Path(data_dir) / "build.json"
    if not path.exists():
        return {}
    meta = json.loads(path.read_text())
    return {
        k: meta.get(k)
        for k in ("scheme", "params", "preprocessing", "records", "source", "version")
    }


def portable(path: str) -> str:
    """A path relative to the project root when it lies inside it (model.json travels)."""
    from raytasks.core.config import ROOT

    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
