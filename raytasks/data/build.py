"""Raw MIT-BIH records -> parquet beat shards, as in Kachuee et al. 2018.

    records (data.mitdb) -> beats + RR features (data.beats) -> splits (data.splits)
    -> shards + build.json (data.shards)

Per record: lead MLII (else the first channel), resampled 360 -> 125 Hz, cut into
10-second windows each min-max normalised to [0, 1]; every annotated beat becomes the
1.2 x (window's median RR) samples from its R-peak, cropped/zero-padded to 187; labels
follow the AAMI mapping. Beats are then split (`intra`: stratified by class at beat level;
`inter`: patient-level DS1/DS2 of de Chazal 2004) and written as shards of a few thousand
rows: <out>/<scheme>/{train,valid,test}/part-*.parquet, plus build.json describing them.
A scheme is skipped when its build.json says it was built from the same records with the
same parameters and BUILD_VERSION. Files of other sources come in through data.imports.

Everything is written into a temporary directory renamed into place, so a failed or
interrupted build leaves nothing half-written.
"""

import hashlib
import json
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from raytasks.core.paths import clean_leftovers
from raytasks.data import LAYOUT, DataError, scheme_path
from raytasks.data.beats import PREPROCESSING, record_beats
from raytasks.data.mitdb import list_records, verify_checksums
from raytasks.data.shards import BUILD_VERSION, write_dataset
from raytasks.data.splits import DEFAULT_PARAMS, SCHEMES


def fingerprint(records_dir: Path, names: list[str]) -> str:
    """Cheap identity of the inputs: names, sizes and mtimes of every record file."""
    h = hashlib.sha256()
    for n in names:
        for ext in ("hea", "dat", "atr"):
            p = records_dir / f"{n}.{ext}"
            st = p.stat() if p.exists() else None
            h.update(
                f"{n}.{ext}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1};".encode()
            )
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
    return (
        meta.get("version") == BUILD_VERSION
        and meta.get("layout") == LAYOUT
        and meta.get("params") == params
        and meta.get("fingerprint") == fp
    )


def refuse_shrinking(dest: Path, names: list[str]) -> None:
    """A build from fewer records must not silently replace a fuller one (--force does)."""
    try:
        old = json.loads((dest / "build.json").read_text()).get("records") or []
    except (OSError, ValueError):
        return
    lost = sorted(set(old) - set(names))
    if lost:
        raise DataError(
            f"{dest} holds a build of {len(old)} records and these {len(names)} "
            f"lack {len(lost)} of them ({', '.join(lost[:5])}"
            f"{', ...' if len(lost) > 5 else ''}); pass --force to replace it, "
            f"or build into another --out"
        )


def all_beats(records_dir: Path, names: list[str], progress: bool) -> pd.DataFrame:
    """Every record's beats, one frame, with a progress bar per record."""
    frames = []
    # on a terminal only: in logs and captured output a bar is noise around the one error line
    bar = tqdm(names, desc="records", unit="rec", disable=None if progress else True)
    for name in bar:
        bar.set_postfix_str(name)
        frames.append(record_beats(records_dir, name))
    return pd.concat(frames, ignore_index=True)


def write_scheme(beats: pd.DataFrame, scheme: str, out: Path, common: dict) -> dict:
    """One scheme's splits of the beats as shards + build.json; a split left empty (too few
    or odd records) is refused, naming them. common: source, records, fingerprint, params."""
    meta = {"version": BUILD_VERSION, "layout": LAYOUT, "scheme": scheme}
    meta |= common | {"preprocessing": PREPROCESSING}
    parts = SCHEMES[scheme](beats, meta["params"])
    splits = {s: beats.iloc[idx] for s, idx in parts.items()}
    empty = [s for s, f in splits.items() if len(f) == 0]
    if empty:
        raise DataError(
            f"{meta['source']}: scheme '{scheme}' leaves split(s) {empty} empty "
            f"with records {meta['records']}"
        )
    return write_dataset(
        splits, scheme_path(out, scheme), meta, meta["params"]["shard_rows"], meta["params"]["seed"]
    )


def build(
    records_dir: Path,
    out: Path,
    schemes=("intra",),
    force: bool = False,
    params: dict | None = None,
    progress: bool = True,
) -> dict[str, dict]:
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
    todo = [s for s in schemes if force or not is_current(scheme_path(out, s), params, fp)]
    results = {
        s: json.loads((scheme_path(out, s) / "build.json").read_text())
        for s in schemes
        if s not in todo
    }
    if not todo:
        return results
    for scheme in todo:
        if not force:
            refuse_shrinking(scheme_path(out, scheme), names)

    beats = all_beats(records_dir, names, progress)
    common = {"source": str(records_dir), "records": names, "fingerprint": fp, "params": params}
    for scheme in todo:
        results[scheme] = write_scheme(beats, scheme, out, common)
    return results
