"""Importing beat files (the hackathon's parquet, the Kaggle CSV) as a built scheme."""

from pathlib import Path

import numpy as np
import pandas as pd

from raytasks.core.paths import check_name
from raytasks.data import BEAT_LEN, FEATURES, LAYOUT, NUM_CLASSES, SPLITS, DataError
from raytasks.data.shards import BUILD_VERSION, write_dataset
from raytasks.data.splits import DEFAULT_PARAMS, SCHEMES, split_intra

IMPORT_SLACK = 0.01  # imported beats are min-max normalised: [0, 1] up to rounding


def read_table(path: Path) -> pd.DataFrame:
    """The file's rows with string column names (a Kaggle CSV gets the hackathon's)."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix in (".parq", ".parquet"):
            raw = pd.read_parquet(path)
        elif path.suffix == ".csv":
            raw = pd.read_csv(path, header=None)
            if raw.shape[1] != BEAT_LEN + 1:
                raise DataError(
                    f"{path}: rows have {raw.shape[1] - 1} samples, expected "
                    f"{BEAT_LEN} plus a label"
                )
            raw.columns = [*FEATURES, "target"]
        else:
            raise DataError(f"{path}: unknown file type (expected .parq/.parquet or .csv)")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable ({e})") from e
    raw.columns = [str(c) for c in raw.columns]
    return raw


def read_import(path: Path) -> pd.DataFrame:
    """A hackathon parquet (columns '0'..'186', 'target') or a Kaggle CSV (188 columns, no
    header, label last) as a validated frame of shard columns."""
    path = Path(path)
    raw = read_table(path)
    cols = list(raw.columns)
    unknown = sorted(set(cols) - set(FEATURES) - {"target", "record", "sample"})
    missing = [c for c in [*FEATURES, "target"] if c not in cols]
    if unknown:
        raise DataError(
            f"{path}: unknown column(s) {unknown[:5]}; expected '0'..'186' and 'target'"
        )
    if missing:
        raise DataError(
            f"{path}: rows are not {BEAT_LEN} samples long or lack 'target' "
            f"(missing columns {missing[:5]})"
        )
    if len(raw) == 0:
        raise DataError(f"{path}: no rows")
    values = check_import_values(
        path, raw[FEATURES + ["target"] + (["sample"] if "sample" in cols else [])]
    )
    frame = values[FEATURES].astype(np.float32)
    frame["target"] = values["target"].to_numpy().astype(np.int64)
    frame["record"] = raw["record"].astype(str) if "record" in cols else path.name
    frame["sample"] = (
        values["sample"].astype(np.int64)
        if "sample" in cols
        else np.arange(len(raw), dtype=np.int64)
    )
    return frame


def check_import_values(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """The numeric columns of an imported file, refused (naming the row) unless every value
    is a number, every beat normalised to [0, 1], every label 0-4, every sample an integer."""
    values = raw.apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        row = int(values.isna().any(axis=1).to_numpy().argmax())
        raise DataError(f"{path}: NaN or non-numeric value in row {row}")
    beats = values[FEATURES].to_numpy(np.float64)
    outside = ~((beats >= -IMPORT_SLACK) & (beats <= 1 + IMPORT_SLACK)).all(axis=1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        worst = beats[row][np.argmax(np.abs(beats[row] - 0.5))]
        raise DataError(
            f"{path}: value {worst} in row {row} is outside [0, 1]; beats must be "
            f"min-max normalised (as in the Kaggle and hackathon files)"
        )
    target = values["target"].to_numpy(np.float64)
    bad = (target != np.round(target)) | (target < 0) | (target >= NUM_CLASSES)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: label {target[row]} in row {row} is outside 0-4")
    if "sample" in values:
        sample = values["sample"].to_numpy(np.float64)
        bad = (sample != np.round(sample)) | (sample < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: sample {sample[row]} in row {row} is not a sample index "
                f"(a whole number >= 0)"
            )
    return values


def import_files(
    files: dict[str, Path | None], out: Path, name: str, params: dict | None = None
) -> dict:
    """Write user files (train and optionally valid/test) as the shard layout <out>/<name>.

    Without a valid file, a stratified valid_frac of train becomes valid (as `intra`).
    """
    params = DEFAULT_PARAMS | (params or {})
    check_name(name, "--name")
    if name in SCHEMES:  # those shards are built from records, not imported
        raise DataError(f"--name: {sorted(SCHEMES)} are built from records; pick another name")
    if not files.get("train"):
        raise DataError("import needs at least a train file")
    splits = {s: read_import(p) for s, p in files.items() if p}
    if "valid" not in splits:
        train = splits["train"].reset_index(drop=True)
        parts = split_intra(train, params | {"test_frac": 0.0})
        splits["train"], splits["valid"] = train.iloc[parts["train"]], train.iloc[parts["valid"]]
    splits = {s: splits[s] for s in SPLITS if s in splits}
    meta = {
        "version": BUILD_VERSION,
        "layout": LAYOUT,
        "scheme": name,
        "source": {s: str(p) for s, p in files.items() if p},
        "params": params,
        "fingerprint": None,
        "imported": True,
    }
    return write_dataset(splits, out / name, meta, params["shard_rows"], params["seed"])
