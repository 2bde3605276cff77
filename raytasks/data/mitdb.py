"""Reading the raw MIT-BIH records (WFDB): which records a folder holds, their checksums,
one record's lead MLII at 360 Hz with its beat annotations mapped to the AAMI classes, and
where the records are (MITDB_DIR, the team's shared copy, a download).
"""

import hashlib
import shutil
from pathlib import Path

import numpy as np

from raytasks.data import FS_RAW, DataError

AAMI = (
    {s: 0 for s in "NLRej"}
    | {s: 1 for s in "AaJS"}
    | {"V": 2, "E": 2, "F": 3}
    | {s: 4 for s in "/fQ"}
)


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
            raise DataError(
                f"{path}: SHA256 mismatch with {sums.name} (file altered or "
                f"corrupted; fetch it again)"
            )


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
                raise DataError(
                    f"{path}: data after the annotations' end marker (corrupted; fetch it again)"
                )
            return
        if code == 59:  # SKIP: a 32-bit interval follows
            i += 2
        elif code == 63:  # AUX: val bytes of text follow, padded to a word
            i += (val + 1) // 2
    raise DataError(
        f"{path}: truncated or empty (no end marker after {len(words)} words; fetch it again)"
    )


def read_header(stem: Path):
    """The record's WFDB header, refused when the .dat is shorter than it says."""
    import wfdb

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
        raise DataError(
            f"{stem}.dat: truncated ({actual} bytes, header says "
            f"{header.sig_len} samples x {header.n_sig} signals = {expected})"
        )
    return header


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
    header = read_header(stem)
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
            raise DataError(
                f"{stem}.dat: sample checksum disagrees with {name}.hea (corrupted signal data)"
            )
    if rec.fs != FS_RAW:
        raise DataError(f"{stem}.hea: sampled at {rec.fs} Hz, expected {FS_RAW} Hz")
    lead = rec.sig_name.index("MLII") if "MLII" in rec.sig_name else 0
    signal = (rec.d_signal[:, lead] - rec.baseline[lead]) / rec.adc_gain[lead]
    samples, labels = read_beat_annotations(stem, header.sig_len)
    return signal.astype(np.float64), samples, labels


def read_atr(stem: Path):
    """stem.atr as wfdb reads it, once its end marker is checked (`check_atr`); anything
    wrong is one DataError naming the file. The one reader of .atr files (the data build,
    `raytasks score`, `predict --peaks atr`)."""
    import wfdb

    check_atr(Path(f"{stem}.atr"))
    try:
        return wfdb.rdann(str(stem), "atr")
    except Exception as e:
        raise DataError(f"{stem}.atr: unreadable annotations ({e})") from e


def beat_annotations(ann) -> tuple[np.ndarray, np.ndarray]:
    """(sample, AAMI label) of an annotation's beats; non-beat labels dropped."""
    keep = [i for i, s in enumerate(ann.symbol) if s in AAMI]
    return (
        np.asarray(ann.sample)[keep].astype(np.int64),
        np.array([AAMI[ann.symbol[i]] for i in keep], dtype=np.int64),
    )


def read_beat_annotations(stem: Path, sig_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample, AAMI label) of every beat in stem.atr, each inside the signal, in order."""
    samples, labels = beat_annotations(read_atr(stem))
    outside = (samples < 0) | (samples >= sig_len)
    if outside.any():
        raise DataError(
            f"{stem}.atr: annotation at sample {samples[outside][0]} lies outside "
            f"the signal's {sig_len} samples (corrupted; fetch it again)"
        )
    if np.any(np.diff(samples) < 0):
        raise DataError(f"{stem}.atr: annotations out of time order (corrupted; fetch it again)")
    return samples, labels


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
        raise DataError(
            f"cannot download mitdb from PhysioNet ({type(e).__name__}); offline? "
            f"set MITDB_DIR to a directory holding the raw records"
        ) from None
    return download_dir
