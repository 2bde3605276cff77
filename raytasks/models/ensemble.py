"""Ensembles: several exported models averaged into one shippable model.

    raytasks ensemble resnet1d-intra resnet1d-intra-18ep --tag ensemble-intra

The ensemble averages its members' class probabilities, equally or with `--weights`
(raytasks.nets.ensemble.Ensemble: returned as log-probabilities, so argmax and the
recall-first offsets work as for any model). Members may read different inputs: a network
reads the beat (and RR features, deviations), the boosted trees of `raytasks boost` read
features of the beat's whole record, so

    raytasks ensemble resnet1d-inter-adaptive-cv boost-inter --weights 0.75,0.25 --tag blend-inter
 Its
directory is self-contained (members/<tag>/ holds copies of each member), so it ships and
evaluates like a single model; its offsets and valid metrics are fitted on the valid split
of the members' scheme.
"""

from pathlib import Path

from raytasks.core.metrics import compute_metrics, fit_offsets
from raytasks.data import DataError
from raytasks.models import saved


def build_ensemble(
    member_dirs: list[Path], out_dir: Path, processed: Path, weights: list[float] | None = None
) -> dict:
    """Fit the ensemble's offsets on the valid split of its members' scheme, then save it
    (members copied in) to out_dir: replaced only at the end, so a bad member leaves an
    existing ensemble untouched."""
    from raytasks.nets.ensemble import Ensemble

    member_dirs = [Path(d) for d in member_dirs]
    if len(member_dirs) < 2:
        raise DataError("an ensemble needs at least two models")
    tags = [d.name for d in member_dirs]
    if len(set(tags)) != len(tags):
        raise DataError(f"duplicate member tags: {tags}")
    check_weights(weights, len(tags))
    loaded = [saved.load_model(d) for d in member_dirs]  # refuses missing/corrupt members
    infos = [info for _, info in loaded]
    schemes = {saved.scheme_of(i) for i in infos}
    if len(schemes) != 1 or None in schemes:
        raise DataError(f"members were trained on different or unknown schemes: {schemes}")
    scheme = schemes.pop()
    try:
        model = Ensemble([m for m, _ in loaded], weights)
    except ValueError as e:
        raise DataError(str(e)) from None
    x, y = saved.valid_split(processed, scheme, model)
    logits = saved.predict_logits(model, x)
    metrics = {k: float(v) for k, v in compute_metrics(y, logits.argmax(axis=1)).items()}
    info = saved.ensemble_info(
        Path(out_dir).name, member_dirs, infos, scheme, metrics, fit_offsets(logits, y), weights
    )
    saved.save(out_dir, info, members=member_dirs)
    return saved.read_info(out_dir)


def check_weights(weights: list[float] | None, n: int) -> None:
    """One weight >= 0 per member, not all 0 (None: equal weights)."""
    if weights is not None and (len(weights) != n or min(weights) < 0 or sum(weights) <= 0):
        raise DataError(f"--weights needs one weight >= 0 per member ({n}), not all 0: {weights}")
