"""Splitting beats: `intra` stratified by class at beat level, `inter` patient-level
(DS1/DS2 of de Chazal 2004). SCHEMES maps a scheme's name to its split."""

import numpy as np
import pandas as pd

from raytasks.core.constants import SPLIT_SEED
from raytasks.data import NUM_CLASSES, SPLITS, DataError

# de Chazal et al. 2004; the paced records 102, 104, 107, 217 belong to neither set
DS1 = [
    "101",
    "106",
    "108",
    "109",
    "112",
    "114",
    "115",
    "116",
    "118",
    "119",
    "122",
    "124",
    "201",
    "203",
    "205",
    "207",
    "208",
    "209",
    "215",
    "220",
    "223",
    "230",
]
DS2 = [
    "100",
    "103",
    "105",
    "111",
    "113",
    "117",
    "121",
    "123",
    "200",
    "202",
    "210",
    "212",
    "213",
    "214",
    "219",
    "221",
    "222",
    "228",
    "231",
    "232",
    "233",
    "234",
]

# whole DS1 records held out for validation under `inter`: together they hold S, V and F
# beats in roughly DS1's proportions while leaving most of each rare class to train on
INTER_VALID = ["118", "207", "223"]

DEFAULT_PARAMS = {
    "seed": SPLIT_SEED,
    "test_frac": 0.2,
    "valid_frac": 0.2,
    "shard_rows": 4000,
    "inter_valid": INTER_VALID,
}


def split_intra(beats: pd.DataFrame, params: dict) -> dict[str, np.ndarray]:
    """Beat-level split stratified by class: test_frac test, valid_frac of the rest valid."""
    rng = np.random.default_rng(params["seed"])
    parts = {s: [] for s in SPLITS}
    y = beats["target"].to_numpy()
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(params["test_frac"] * len(idx))
        rest = idx[n_test:]
        n_valid = round(params["valid_frac"] * len(rest))
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
