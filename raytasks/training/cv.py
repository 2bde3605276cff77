"""Leave-records-out cross-validation of a network's settings: the Tune objective of
`raytasks tune --cv-folds K` for the patient-level `inter` scheme.

    for fold in cv_folds(split):                   # whole records held out, as boost's
        model = train_loop(...)                    # the stream without the fold's records
        oof[fold.rows] = predict_logits(model, x[fold.rows])
        report(metrics of every beat held out so far)

The folds are the scheme's train + valid records (DS1 under `inter`), split as `raytasks
boost` splits them (StratifiedGroupKFold on the same rows, same seed): a network's CV figures
and the trees' are over the same folds. A fold trains `epochs` epochs on the Ray Data stream
of the other folds' records: the held-out records get no rate in the stream's per-record
table (`record_rates`), so their rows are dropped where a block is resampled; nothing is read
again or copied. Each fold is scored at its last epoch (no epoch is picked on the records it
reports on). The test split (DS2) is never read.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from raytasks.core.metrics import compute_metrics
from raytasks.data import NUM_CLASSES
from raytasks.models.saved import predict_logits
from raytasks.training.settings import TrainData, TrainSettings, stream_weights

SPLITS = ("train", "valid")


@dataclass
class CVSplit:
    """The records a CV runs over, held in memory for scoring: x as the model reads it."""

    files: list
    x: np.ndarray
    y: np.ndarray
    records: np.ndarray  # per row
    per_record: dict  # crc32 -> class counts (raytasks.data.stream.record_class_counts)


def cv_files(data_dir: str | Path) -> list[str]:
    from raytasks.data.stream import split_files

    return [f for s in SPLITS for f in split_files(data_dir, s)]


def cv_split(data_dir: str | Path, s: TrainSettings) -> CVSplit:
    import pyarrow.parquet as pq

    from raytasks.data.stream import load_split, record_class_counts

    files = cv_files(data_dir)
    x, y = load_split(files, rr=s.rr, template=s.template)
    records = pq.ParquetDataset(files).read(columns=["record"]).column("record").to_numpy()
    return CVSplit(files, x, y, np.asarray(records).astype(str), record_class_counts(files))


def cv_folds(split: CVSplit, folds: int, seed: int) -> list[np.ndarray]:
    """Each fold's held-out rows: whole records, stratified by class (as boost's folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if len(set(split.records)) < folds:
        raise ValueError(
            f"{folds} CV folds need as many records; the split has {len(set(split.records))}"
        )
    kfold = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [held for _, held in kfold.split(split.x, split.y, groups=split.records)]


def fold_data(split: CVSplit, held: np.ndarray, s: TrainSettings) -> TrainData:
    """The stream's view of a fold: the counts of the records it trains on, and only those
    records in its per-record table (the held-out ones then draw no rows)."""
    import zlib

    out = {zlib.crc32(r.encode()) for r in set(split.records[held])}
    kept = {crc: c for crc, c in split.per_record.items() if crc not in out}
    counts = np.sum(list(kept.values()), axis=0)
    data_dir = str(Path(split.files[0]).parent.parent)
    return TrainData(data_dir, split.files, [], counts.tolist(), stream_weights(counts, s), kept)


def cross_validate(s: TrainSettings, folds: int, dataset, report, label: str = "cv") -> None:
    """Train and score each fold; report(metrics, oof) after each, the metrics over every
    beat held out so far ('epoch': the folds done); after the final fold `oof` is every
    beat's out-of-fold logits (rows as `raytasks boost` reads them), else None.
    `dataset`: the CV records' Ray Data stream (`open_cv_dataset`), shared by the folds."""
    from raytasks.core.config import resolve

    split = cv_split(resolve(s.data), s)
    oof = np.zeros((len(split.y), NUM_CLASSES), dtype=np.float32)
    done = np.zeros(len(split.y), dtype=bool)
    for k, held in enumerate(cv_folds(split, folds, s.seed), start=1):
        oof[held] = fold_logits(s, split, held, dataset, f"{label} fold {k}/{folds}", k)
        done[held] = True
        metrics = compute_metrics(split.y[done], oof[done].argmax(axis=1))
        report({"epoch": k, "cv_beats": int(done.sum()), **metrics}, oof if k == folds else None)


def fold_logits(s: TrainSettings, split: CVSplit, held, dataset, label: str, k: int):
    """Train one fold (its own seed) on the other records; its held-out rows' logits at
    the last epoch."""
    from raytasks.data.stream import epoch_batches
    from raytasks.training.train import progress, stream_args, train_device, train_loop

    fold, data, device = replace(s, seed=s.seed + k), fold_data(split, held, s), train_device(s)

    def batches(epoch):
        every = epoch_batches(dataset, epoch, device=device, **stream_args(fold, data))
        return progress(every, fold, data, epoch, 1, label)

    model = train_loop(
        fold,
        data,
        rank=0,
        world=1,
        checkpoint=None,
        batches=batches,
        valid=None,
        report=None,  # scored once, below: no epoch is validated or checkpointed
        device=device,
    )
    return predict_logits(model, split.x[held], device=device)


def open_cv_dataset(data_dir: str | Path, seed: int = 0, template: bool = False, log=print):
    """The CV records (train + valid) as one Ray Data stream, templates from each record's
    own beats: what every fold of every trial of a CV search reads."""
    from raytasks.data.features import split_templates
    from raytasks.data.stream import open_split

    files = cv_files(data_dir)
    templates = split_templates(files) if template else None
    return open_split(files, seed=seed, log=log, templates=templates)
