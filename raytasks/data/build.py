"""Raw MIT-BIH records -> parquet beat shards, as in Kachuee et al. 2018.

Per record: lead MLII (else the first channel), resampled 360 -> 125 Hz, cut into
10-second windows each min-max normalised to [0, 1]; every annotated beat becomes the
1.2 x (window's median RR) samples from its R-peak, cropped/zero-padded to 187; labels
follow the AAMI mapping. Beats are then split (`intra`: stratified by class at beat level;
`inter`: patient-level DS1/DS2 of de Chazal 2004) and written as shards of a few thousand
rows: <out>/<scheme>/{train,valid,test}/part-*.parquet, plus build.json describing them.
A shard holds each beat as one fixed-size tensor column (`beat`: FixedSizeList<float32>[187]),
so a reader gets an (n, 187) array without stacking 187 columns (see `shard_schema`).

Everything is written into a temporary directory renamed into place, so a failed or
interrupted build leaves nothing half-written.
"""

import hashlib
import json
import shutil
import time
from math import gcd
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.signal import resample_poly
from tqdm import tqdm

from raytasks.data import (
    BEAT,
    BEAT_LEN,
    FEATURES,
    LAYOUT,
    NUM_CLASSES,
    RR_FEATURES,
    SPLITS,
    DataError,
)
from raytasks.paths import clean_leftovers, staged_dir

FS_RAW, FS = 360, 125
WINDOW_S = 10
RR_FACTOR = 1.2
BUILD_VERSION = 3  # 2: RR-interval columns; 3: the beat as one tensor column (LAYOUT)
IMPORT_SLACK = 0.01  # imported beats are min-max normalised: [0, 1] up to rounding

AAMI = {s: 0 for s in "NLRej"} | {s: 1 for s in "AaJS"} | {"V": 2, "E": 2, "F": 3} | {
    s: 4 for s in "/fQ"}

# de Chazal et al. 2004; the paced records 102, 104, 107, 217 belong to neither set
DS1 = ["101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
       "201", "203", "205", "207", "208", "209", "215", "220", "223", "230"]
DS2 = ["100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
       "213", "214", "219", "221", "222", "228", "231", "232", "233", "234"]
# whole DS1 records held out for validation under `inter`: together they hold S, V and F
# beats in roughly DS1's proportions while leaving most of each rare class to train on
INTER_VALID = ["118", "207", "223"]

DEFAULT_PARAMS = {
    "seed": 42,
    "test_frac": 0.2,
    "valid_frac": 0.2,
    "shard_rows": 4000,
    "inter_valid": INTER_VALID,
}


# ---------------------------------------------------------------- reading records

def list_records(records_dir: Path) -> list[str]:
    """Record names in a directory: its RECORDS file if present, else every .hea."""
    if not records_dir.is_dir():
        raise DataError(f"{records_dir}: no such directory (set MITDB_DIR or --records)")
    listing = records_dir / "RECORDS"
    if listing.exists():
        names = [ln.strip() for ln in listing.read_text().split() if ln.strip()]
    else:
        names = sorted(p.stem for p in records_dir.glob("*.hea"))
    if not names:
        raise DataError(f"{records_dir}: no WFDB records (*.hea) found")
    return names


def verify_checksums(records_dir: Path, names: list[str]) -> None:
    """Check the records' files against PhysioNet's SHA256SUMS.txt, when it is there."""
    sums = records_dir / "SHA256SUMS.txt"
    if not sums.exists():
        return
    wanted = {f"{n}.{ext}" for n in names for ext in ("hea", "dat", "atr")}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[1] not in wanted:
            continue
        path = records_dir / parts[1]
        if not path.exists():
            continue  # a missing file is reported, more precisely, when the record is read
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != parts[0]:
            raise DataError(f"{path}: SHA256 mismatch with {sums.name} (file altered or "
                            f"corrupted; fetch it again)")


def check_atr(path: Path) -> None:
    """An MIT-format annotation file ends with its end marker (a zero word) and nothing
    after it; a truncated or empty file lacks it. wfdb reads such a file without a word."""
    words = np.fromfile(path, dtype="<u2")
    i = 0
    while i < len(words):
        code, val = int(words[i]) >> 10, int(words[i]) & 0x3FF
        i += 1
        if code == 0 and val == 0:
            if i != len(words):
                raise DataError(f"{path}: data after the annotations' end marker (corrupted; "
                                f"fetch it again)")
            return
        if code == 59:  # SKIP: a 32-bit interval follows
            i += 2
        elif code == 63:  # AUX: val bytes of text follow, padded to a word
            i += (val + 1) // 2
    raise DataError(f"{path}: truncated or empty (no end marker after {len(words)} words; "
                    f"fetch it again)")


def read_record(records_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signal at 360 Hz of the chosen lead, beat sample indices, AAMI labels) of one record.

    Fails with the file's name on a missing .atr, a truncated .dat, or a .dat whose sample
    sum disagrees with the checksum in the header (corruption).
    """
    import wfdb  # imported here: wfdb pulls in matplotlib, which the stream doesn't need

    stem = records_dir / name
    for ext in ("hea", "dat", "atr"):
        if not stem.with_suffix(f".{ext}").exists():
            raise DataError(f"{stem}.{ext}: missing (record {name} needs .hea, .dat and .atr)")
    try:
        header = wfdb.rdheader(str(stem))
    except Exception as e:
        raise DataError(f"{stem}.hea: unreadable header ({e})") from e
    # format 212 packs two 12-bit samples in 3 bytes; other formats: bytes per sample
    bits = {"212": 12, "16": 16, "80": 8, "310": 32 / 3, "311": 32 / 3}
    fmt = header.fmt[0]
    expected = int(np.ceil(header.sig_len * header.n_sig * bits.get(fmt, 16) / 8))
    actual = stem.with_suffix(".dat").stat().st_size
    if actual < expected:
        raise DataError(f"{stem}.dat: truncated ({actual} bytes, header says "
                        f"{header.sig_len} samples x {header.n_sig} signals = {expected})")
    try:
        rec = wfdb.rdrecord(str(stem), physical=False)
    except Exception as e:
        raise DataError(f"{stem}.dat: unreadable ({e})") from e
    if rec.d_signal is None or rec.d_signal.shape[0] != header.sig_len:
        raise DataError(f"{stem}.dat: holds fewer samples than its header says")
    if rec.checksum is not None:
        got = rec.d_signal.astype(np.int64).sum(axis=0) & 0xFFFF
        want = np.asarray(rec.checksum, dtype=np.int64) & 0xFFFF
        if not np.array_equal(got, want):
            raise DataError(f"{stem}.dat: sample checksum disagrees with {name}.hea "
                            f"(corrupted signal data)")
    if rec.fs != FS_RAW:
        raise DataError(f"{stem}.hea: sampled at {rec.fs} Hz, expected {FS_RAW} Hz")
    lead = rec.sig_name.index("MLII") if "MLII" in rec.sig_name else 0
    signal = (rec.d_signal[:, lead] - rec.baseline[lead]) / rec.adc_gain[lead]
    samples, labels = read_beat_annotations(stem, header.sig_len)
    return signal.astype(np.float64), samples, labels


def read_beat_annotations(stem: Path, sig_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample, AAMI label) of every beat in stem.atr, each inside the signal, in order."""
    import wfdb

    check_atr(stem.with_suffix(".atr"))
    try:
        ann = wfdb.rdann(str(stem), "atr")
    except Exception as e:
        raise DataError(f"{stem}.atr: unreadable annotations ({e})") from e
    keep = [i for i, s in enumerate(ann.symbol) if s in AAMI]
    samples = np.asarray(ann.sample)[keep].astype(np.int64)
    outside = (samples < 0) | (samples >= sig_len)
    if outside.any():
        raise DataError(f"{stem}.atr: annotation at sample {samples[outside][0]} lies outside "
                        f"the signal's {sig_len} samples (corrupted; fetch it again)")
    if np.any(np.diff(samples) < 0):
        raise DataError(f"{stem}.atr: annotations out of time order (corrupted; fetch it again)")
    return samples, np.array([AAMI[ann.symbol[i]] for i in keep], dtype=np.int64)


def extract_beats(signal: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Beats (n, 187) float32 from a 360 Hz signal and its beat R-peak sample indices."""
    g = gcd(FS, FS_RAW)
    sig = resample_poly(signal, FS // g, FS_RAW // g)
    peaks = np.rint(samples * FS / FS_RAW).astype(np.int64)
    win = WINDOW_S * FS
    rr_all = np.diff(peaks)
    record_rr = float(np.median(rr_all)) if len(rr_all) else float(BEAT_LEN / RR_FACTOR)
    beats = np.zeros((len(peaks), BEAT_LEN), dtype=np.float32)
    windows = peaks // win
    for w in np.unique(windows):
        idx = np.flatnonzero(windows == w)
        start = int(w) * win
        seg = sig[start:start + win]
        lo, hi = seg.min(), seg.max()
        seg = (seg - lo) / (hi - lo) if hi > lo else np.zeros_like(seg)
        rr = np.diff(peaks[idx])
        period = float(np.median(rr)) if len(rr) else record_rr
        length = min(BEAT_LEN, int(RR_FACTOR * period))
        for i in idx:
            p = int(peaks[i]) - start
            piece = seg[p:p + length]
            beats[i, :len(piece)] = piece
    return beats


def rr_features(samples: np.ndarray, local: int = 30) -> np.ndarray:
    """(n, 4) float32 RR_FEATURES of beats at these 360 Hz R-peak samples (one record).

    Local and record RR are means, not medians: where ectopic beats are the majority rhythm
    (DS2's record 232: frequent S beats between long pauses), a median takes them for the
    norm and their prematurity vanishes; the mean keeps the pauses in the reference.
    """
    n = len(samples)
    rr = np.diff(samples) / FS_RAW
    if len(rr) == 0:
        return np.ones((n, len(RR_FEATURES)), dtype=np.float32)
    pre = np.r_[rr[0], rr]
    post = np.r_[rr, rr[-1]]
    half = local // 2
    window = np.lib.stride_tricks.sliding_window_view(np.pad(pre, half, mode="edge"), local + 1)
    local_rr = window.mean(axis=1)
    return np.stack([pre / local_rr, post / local_rr, local_rr, pre / rr.mean()],
                    axis=1).astype(np.float32)


def record_beats(records_dir: Path, name: str) -> pd.DataFrame:
    """All beats of one record: columns 0..186, target, record, sample, RR_FEATURES."""
    signal, samples, labels = read_record(records_dir, name)
    beats = extract_beats(signal, samples)
    frame = pd.DataFrame(beats, columns=FEATURES)
    frame["target"] = labels
    frame["record"] = name
    frame["sample"] = samples
    frame[RR_FEATURES] = rr_features(samples)
    return frame


# ---------------------------------------------------------------- splitting

def split_intra(beats: pd.DataFrame, params: dict) -> dict[str, np.ndarray]:
    """Beat-level split stratified by class: test_frac test, valid_frac of the rest valid."""
    rng = np.random.default_rng(params["seed"])
    parts = {s: [] for s in SPLITS}
    y = beats["target"].to_numpy()
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(params["test_frac"] * len(idx)))
        rest = idx[n_test:]
        n_valid = int(round(params["valid_frac"] * len(rest)))
        parts["test"].append(idx[:n_test])
        parts["valid"].append(rest[:n_valid])
        parts["train"].append(rest[n_valid:])
    return {s: np.concatenate(v) for s, v in parts.items()}


def split_inter(beats: pd.DataFrame, params: dict) -> dict[str, np.ndarray]:
    """Patient-level split: train/valid from DS1 (valid = whole records), test = DS2."""
    rec = beats["record"].to_numpy()
    valid = set(params["inter_valid"])
    if not valid <= set(DS1):
        raise DataError(f"inter_valid records {sorted(valid - set(DS1))} are not in DS1")
    train = sorted(set(DS1) - valid)
    return {
        "train": np.flatnonzero(np.isin(rec, train)),
        "valid": np.flatnonzero(np.isin(rec, sorted(valid))),
        "test": np.flatnonzero(np.isin(rec, DS2)),
    }


SCHEMES = {"intra": split_intra, "inter": split_inter}


# ---------------------------------------------------------------- writing shards

def write_split(frame: pd.DataFrame, out: Path, shard_rows: int, seed: int) -> int:
    """Shuffle a split's rows (seeded) and write them as part-00000.parquet, ...

    Shuffling here makes every shard a class-mixed sample, so Ray Data's block-level
    parallelism and per-worker splits each see all classes.
    """
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    n_shards = max(1, int(np.ceil(len(frame) / shard_rows)))
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), n_shards)):
        pq.write_table(shard_table(frame.iloc[chunk]), out / f"part-{i:05d}.parquet")
    return n_shards


def shard_schema(rr: bool = True) -> pa.Schema:
    """The shard layout (build.json `layout`): the beat as one FixedSizeList<float32>[187]
    column, then target, record, sample and (built shards only) the RR_FEATURES."""
    return pa.schema([(BEAT, pa.list_(pa.float32(), BEAT_LEN)), ("target", pa.int64()),
                      ("record", pa.string()), ("sample", pa.int64())]
                     + [(c, pa.float32()) for c in (RR_FEATURES if rr else [])])


def shard_table(frame: pd.DataFrame) -> pa.Table:
    """A frame with the hackathon's columns '0'..'186' (+ target, record, sample, RR) as a
    table of the shard layout."""
    rr = all(c in frame for c in RR_FEATURES)
    beats = np.ascontiguousarray(frame[FEATURES].to_numpy(np.float32))
    columns = [pa.FixedSizeListArray.from_arrays(pa.array(beats.ravel()), BEAT_LEN)]
    columns += [pa.array(frame[c].to_numpy(), type=t) for c, t in (
        ("target", pa.int64()), ("record", pa.string()), ("sample", pa.int64()))]
    columns += [pa.array(frame[c].to_numpy(np.float32)) for c in (RR_FEATURES if rr else [])]
    return pa.Table.from_arrays(columns, schema=shard_schema(rr))


def class_counts(frame: pd.DataFrame) -> list[int]:
    return np.bincount(frame["target"].to_numpy(), minlength=NUM_CLASSES).tolist()


def write_dataset(splits: dict[str, pd.DataFrame], dest: Path, meta: dict, shard_rows: int,
                  seed: int) -> dict:
    """Write splits + build.json into a folder beside `dest`, then swap it into place."""
    with staged_dir(dest) as tmp:
        meta = dict(meta, splits={})
        for i, (split, frame) in enumerate(splits.items()):
            shards = write_split(frame, tmp / split, shard_rows, seed + i)
            meta["splits"][split] = {"rows": len(frame), "shards": shards,
                                     "class_counts": class_counts(frame)}
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        (tmp / "build.json").write_text(json.dumps(meta, indent=2))
    return meta


# ---------------------------------------------------------------- the build

def fingerprint(records_dir: Path, names: list[str]) -> str:
    """Cheap identity of the inputs: names, sizes and mtimes of every record file."""
    h = hashlib.sha256()
    for n in names:
        for ext in ("hea", "dat", "atr"):
            p = records_dir / f"{n}.{ext}"
            st = p.stat() if p.exists() else None
            h.update(f"{n}.{ext}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};"
                     .encode())
    return h.hexdigest()


def is_current(dest: Path, params: dict, fp: str) -> bool:
    """True when dest holds a build of the same inputs with the same parameters."""
    meta_path = dest / "build.json"
    if not meta_path.exists():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    return (meta.get("version") == BUILD_VERSION and meta.get("layout") == LAYOUT
            and meta.get("params") == params
            and meta.get("fingerprint") == fp)


def refuse_shrinking(dest: Path, names: list[str]) -> None:
    """A build from fewer records must not silently replace a fuller one (--force does)."""
    try:
        old = json.loads((dest / "build.json").read_text()).get("records") or []
    except (OSError, ValueError):
        return
    lost = sorted(set(old) - set(names))
    if lost:
        raise DataError(f"{dest} holds a build of {len(old)} records and these {len(names)} "
                        f"lack {len(lost)} of them ({', '.join(lost[:5])}"
                        f"{', ...' if len(lost) > 5 else ''}); pass --force to replace it, "
                        f"or build into another --out")


def missing_classes(meta: dict) -> list[str]:
    """Warnings: splits that lack a class the build holds (a small or odd set of records)."""
    from raytasks.data import CLASS_SHORT

    splits = meta.get("splits", {})
    total = np.sum([s["class_counts"] for s in splits.values()], axis=0)
    out = []
    for split, info in splits.items():
        gone = [CLASS_SHORT[c] for c in range(NUM_CLASSES)
                if total[c] and not info["class_counts"][c]]
        if gone:
            out.append(f"{meta.get('scheme')}/{split} has no {', '.join(gone)} beats")
    return out


PREPROCESSING = {"fs": FS, "window_s": WINDOW_S, "rr_factor": RR_FACTOR,
                 "beat_len": BEAT_LEN, "lead": "MLII else first"}


def all_beats(records_dir: Path, names: list[str], progress: bool) -> pd.DataFrame:
    """Every record's beats, one frame, with a progress bar per record."""
    frames = []
    # on a terminal only: in logs and captured output a bar is noise around the one error line
    bar = tqdm(names, desc="records", unit="rec", disable=None if progress else True)
    for name in bar:
        bar.set_postfix_str(name)
        frames.append(record_beats(records_dir, name))
    return pd.concat(frames, ignore_index=True)


def build(records_dir: Path, out: Path, schemes=("intra",), force: bool = False,
          params: dict | None = None, progress: bool = True) -> dict[str, dict]:
    """Build the shards of each scheme from a directory of raw records.

    Returns {scheme: build.json contents}. Skips a scheme whose shards are current.
    """
    params = DEFAULT_PARAMS | (params or {})
    params["inter_valid"] = sorted(str(r) for r in params["inter_valid"])
    records_dir = Path(records_dir)
    names = list_records(records_dir)
    out.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails here, before the work
    clean_leftovers(out)  # staging folders of builds that were killed
    # checked even when nothing is rebuilt: a changed SHA256SUMS.txt must not go unnoticed
    verify_checksums(records_dir, names)
    fp = fingerprint(records_dir, names)
    todo = [s for s in schemes if force or not is_current(out / s, params, fp)]
    results = {s: json.loads((out / s / "build.json").read_text())
               for s in schemes if s not in todo}
    if not todo:
        return results
    for scheme in todo:
        if not force:
            refuse_shrinking(out / scheme, names)

    beats = all_beats(records_dir, names, progress)
    for scheme in todo:
        parts = SCHEMES[scheme](beats, params)
        splits = {s: beats.iloc[idx] for s, idx in parts.items()}
        empty = [s for s, f in splits.items() if len(f) == 0]
        if empty:
            raise DataError(f"{records_dir}: scheme '{scheme}' leaves split(s) {empty} empty "
                            f"with records {names}")
        meta = {"version": BUILD_VERSION, "layout": LAYOUT, "scheme": scheme,
                "source": str(records_dir), "records": names, "fingerprint": fp,
                "params": params, "preprocessing": PREPROCESSING}
        results[scheme] = write_dataset(splits, out / scheme, meta, params["shard_rows"],
                                        params["seed"])
    return results


SHARED_MITDB = Path(__file__).resolve().parents[3] / "shared" / "data" / "mitdb"


def resolve_records(records: str | None, download_dir: Path) -> Path:
    """The raw records directory: the given one (--records, MITDB_DIR, config.toml), else the
    team's shared copy beside the project (../shared/data/mitdb), else a previous download,
    else a download from PhysioNet (needs network)."""
    if records:
        path = Path(records).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: no such directory (MITDB_DIR / --records)")
        return path
    if (SHARED_MITDB / "RECORDS").exists():
        return SHARED_MITDB
    if download_dir.is_dir() and any(download_dir.glob("*.atr")):
        return download_dir
    import wfdb

    try:
        wfdb.dl_database("mitdb", str(download_dir))
    except Exception as e:
        shutil.rmtree(download_dir, ignore_errors=True)
        raise DataError(f"cannot download mitdb from PhysioNet ({type(e).__name__}); offline? "
                        f"set MITDB_DIR to a directory holding the raw records") from None
    return download_dir


# ---------------------------------------------------------------- importing files

def read_import(path: Path) -> pd.DataFrame:
    """A hackathon parquet (columns '0'..'186', 'target') or a Kaggle CSV (188 columns, no
    header, label last) as a validated frame of shard columns."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix in (".parq", ".parquet"):
            raw = pd.read_parquet(path)
        elif path.suffix == ".csv":
            raw = pd.read_csv(path, header=None)
            if raw.shape[1] != BEAT_LEN + 1:
                raise DataError(f"{path}: rows have {raw.shape[1] - 1} samples, expected "
                                f"{BEAT_LEN} plus a label")
            raw.columns = FEATURES + ["target"]
        else:
            raise DataError(f"{path}: unknown file type (expected .parq/.parquet or .csv)")
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable ({e})") from e
    cols = [str(c) for c in raw.columns]
    raw.columns = cols
    unknown = sorted(set(cols) - set(FEATURES) - {"target", "record", "sample"})
    missing = [c for c in FEATURES + ["target"] if c not in cols]
    if unknown:
        raise DataError(f"{path}: unknown column(s) {unknown[:5]}; expected '0'..'186' "
                        f"and 'target'")
    if missing:
        raise DataError(f"{path}: rows are not {BEAT_LEN} samples long or lack 'target' "
                        f"(missing columns {missing[:5]})")
    if len(raw) == 0:
        raise DataError(f"{path}: no rows")
    values = check_import_values(path, raw[FEATURES + ["target"] + (
        ["sample"] if "sample" in cols else [])])
    frame = values[FEATURES].astype(np.float32)
    frame["target"] = values["target"].to_numpy().astype(np.int64)
    frame["record"] = raw["record"].astype(str) if "record" in cols else path.name
    frame["sample"] = (values["sample"].astype(np.int64) if "sample" in cols
                       else np.arange(len(raw), dtype=np.int64))
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
        raise DataError(f"{path}: value {worst} in row {row} is outside [0, 1]; beats must be "
                        f"min-max normalised (as in the Kaggle and hackathon files)")
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
            raise DataError(f"{path}: sample {sample[row]} in row {row} is not a sample index "
                            f"(a whole number >= 0)")
    return values


def import_files(files: dict[str, Path | None], out: Path, name: str,
                 params: dict | None = None) -> dict:
    """Write user files (train and optionally valid/test) as the shard layout <out>/<name>.

    Without a valid file, a stratified valid_frac of train becomes valid (as `intra`).
    """
    params = DEFAULT_PARAMS | (params or {})
    if not files.get("train"):
        raise DataError("import needs at least a train file")
    splits = {s: read_import(p) for s, p in files.items() if p}
    if "valid" not in splits:
        train = splits["train"].reset_index(drop=True)
        parts = split_intra(train, params | {"test_frac": 0.0})
        splits["train"], splits["valid"] = train.iloc[parts["train"]], train.iloc[parts["valid"]]
    splits = {s: splits[s] for s in SPLITS if s in splits}
    meta = {"version": BUILD_VERSION, "layout": LAYOUT, "scheme": name, "source": {
        s: str(p) for s, p in files.items() if p}, "params": params,
        "fingerprint": None, "imported": True}
    return write_dataset(splits, out / name, meta, params["shard_rows"], params["seed"])


def counts_table(metas: dict[str, dict]) -> str:
    """Class counts per split and scheme as a fixed-width table."""
    from raytasks.data import CLASS_SHORT

    head = f"{'scheme':<8}{'split':<7}" + "".join(f"{c:>8}" for c in CLASS_SHORT) + f"{'total':>9}"
    lines = [head, "-" * len(head)]
    for scheme, meta in metas.items():
        total = np.zeros(NUM_CLASSES, dtype=int)
        for split, info in meta["splits"].items():
            cc = np.asarray(info["class_counts"])
            total += cc
            lines.append(f"{scheme:<8}{split:<7}" + "".join(f"{v:>8}" for v in cc)
                         + f"{cc.sum():>9}")
        lines.append(f"{scheme:<8}{'all':<7}" + "".join(f"{v:>8}" for v in total)
                     + f"{total.sum():>9}")
    return "\n".join(lines)

