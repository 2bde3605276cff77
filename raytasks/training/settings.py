"""Training settings: one typed dataclass whose fields carry their default, help, choices
and limits, validated once (`TrainSettings.from_dict`), and `TrainData`, what is derived
from the data they name (`derive`).

Every field is a `raytasks train` flag (cli.train_options generates them from FIELDS), a key
of a `--config` TOML and of a search space's [fixed]/[space] tables (raytasks.tune.spaces).
"""

import copy
import dataclasses
from dataclasses import dataclass, field

from raytasks.core.constants import BEAT_LEN
from raytasks.core.errors import RaytasksError
from raytasks.core.metrics import OBJECTIVE


class TrainConfigError(RaytasksError):
    pass


def setting(default, help: str, *, choices=None, limits=None):
    """A field with its help, its choices (a tuple, or the name of a registry: 'arch',
    'metric') and its limits (type, lo, hi; None: open)."""
    meta = {"help": help, "choices": choices, "limits": limits}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainSettings:
    arch: str = setting("resnet1d", "architecture (raytasks.nets registry)", choices="arch")
    model: dict = setting({}, "architecture config fields (see raytasks.nets); -m key=value")  # noqa: RUF009 (a field(default_factory=dict))
    data: str = setting("data/processed/intra", "a built scheme: <processed>/<scheme>")
    epochs: int = setting(10, "training epochs", limits=(int, 1, None))
    batch_size: int = setting(256, "batch size per worker", limits=(int, 1, None))
    lr: float = setting(3e-3, "peak learning rate (AdamW)", limits=(float, 1e-9, 10.0))
    weight_decay: float = setting(1e-4, "AdamW weight decay", limits=(float, 0.0, None))
    schedule: str = setting("onecycle", "learning-rate schedule", choices=("onecycle", "cosine"))
    loss: str = setting(
        "ce", "ce, class-weighted ce, or focal loss", choices=("ce", "weighted_ce", "focal")
    )
    focal_gamma: float = setting(2.0, "focal loss gamma", limits=(float, 0.0, None))
    label_smoothing: float = setting(
        0.0, "label smoothing of the cross-entropy", limits=(float, 0.0, 1.0)
    )
    class_weight_power: float = setting(
        0.5,
        "weighted_ce/focal: weight ~ (1/class share in the stream)^power",
        limits=(float, 0.0, None),
    )
    balance: float = setting(
        0.5, "class balance of the stream: 0 natural .. 1 equal classes", limits=(float, 0.0, 1.0)
    )
    record_balance: float = setting(
        0.0,
        "subject-invariant stream: within each class, a record's share ~ its beats^(1 - this): "
        "0 natural .. 1 every record holding the class equal",
        limits=(float, 0.0, 1.0),
    )
    aug_scale: float = setting(
        0.0, "augment: amplitude x U(1-s, 1+s); 0 off", limits=(float, 0.0, 1.0)
    )
    aug_wander: float = setting(
        0.0, "augment: baseline wander amplitude; 0 off", limits=(float, 0.0, None)
    )
    aug_noise: float = setting(
        0.0, "augment: Gaussian noise sigma; 0 off", limits=(float, 0.0, None)
    )
    aug_shift: int = setting(
        0, "augment: random time shift, +- samples; 0 off", limits=(int, 0, BEAT_LEN - 1)
    )
    aug_rr_errors: float = setting(
        0.0,
        "augment: share of beats given the RR features a detector error would give them "
        "(a neighbour missed, or an extra detection beside them; the class stays); 0 off",
        limits=(float, 0.0, 1.0),
    )
    seed: int = setting(
        0, "seed of weights, stream resampling and shuffling", limits=(int, None, None)
    )
    workers: int = setting(1, "TorchTrainer workers (DDP)", limits=(int, 1, None))
    cpus_per_worker: float = setting(
        1.0, "CPUs per worker (Ray bookkeeping; fractions share a core)", limits=(float, 0.01, None)
    )
    threads: int = setting(
        0,
        "torch threads per worker (0: its CPUs, rounded); more than its "
        "CPUs is worth it once Ray Data has streamed ahead",
        limits=(int, 0, None),
    )
    placement: str = setting(
        "PACK",
        "PACK fills a node before the next; SPREAD puts workers on different nodes",
        choices=("PACK", "SPREAD"),
    )
    metric: str = setting(
        OBJECTIVE, "valid metric that ranks checkpoints and picks the export", choices="metric"
    )
    keep: int = setting(2, "best checkpoints kept on disk", limits=(int, 1, None))
    max_failures: int = setting(
        2,
        "worker-group restarts (from the latest checkpoint) before giving up",
        limits=(int, -1, None),
    )
    prefetch: int = setting(
        4, "Ray Data blocks each worker fetches ahead of its train loop", limits=(int, 1, None)
    )
    gpu: bool = setting(
        False,
        "train on GPU(s): use_gpu workers, mixed precision, pinned batches on the device",
        limits=(bool, None, None),
    )
    gpus_per_worker: float = setting(
        1.0, "with --gpu: GPUs per worker (a fraction shares one GPU)", limits=(float, 0.01, None)
    )
    rr: bool = setting(
        False,
        "also feed the beat's RR intervals (pre/post/local RR) to the model",
        limits=(bool, None, None),
    )
    template: bool = setting(
        False,
        "patient-adaptive input: also feed the beat minus its record's template (the median "
        "beat of its recording, no labels) as a second channel",
        limits=(bool, None, None),
    )
    rr_beat_dropout: float = setting(
        0.0,
        "with rr: share of training beats whose beat logits are hidden, so the RR path "
        "learns to classify alone too",
        limits=(float, 0.0, 0.99),
    )

    @classmethod
    def from_dict(cls, values: dict | None = None) -> "TrainSettings":
        """Defaults with `values` applied and checked: unknown keys, each setting's type,
        choices and range, the architecture's fields (and that the model can be built)."""
        values = dict(values or {})
        if isinstance(values.get("model"), dict):  # the caller's table stays the caller's
            values["model"] = copy.deepcopy(values["model"])
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise TrainConfigError(f"unknown training setting(s) {unknown}")
        settings = cls(**values)
        for f in FIELDS:
            problem = check_setting(f.name, getattr(settings, f.name))
            if problem:
                raise TrainConfigError(problem)
        check_architecture(settings.arch, settings.model)
        return settings

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in FIELDS}


FIELDS = dataclasses.fields(TrainSettings)
NAMES = tuple(f.name for f in FIELDS)


def defaults() -> dict:
    """Every setting's default (a fresh copy: the `model` table is a new dict)."""
    return TrainSettings().to_dict()


def choices(key: str) -> tuple | None:
    """The values setting `key` accepts (registries are read when asked), None: any."""
    from raytasks.core.metrics import METRIC_NAMES, RECALL_NAMES

    named = {f.name: f.metadata["choices"] for f in FIELDS}.get(key)
    if named == "arch":
        from raytasks.nets import list_models  # imports torch: only when asked

        return tuple(list_models())
    if named == "metric":
        return tuple(METRIC_NAMES + RECALL_NAMES)
    return named


def check_setting(key: str, value) -> str | None:
    """What is wrong with `value` for training setting `key` (None: nothing)."""
    from raytasks.nets import check_value

    allowed = choices(key)
    if allowed is not None:
        return (
            None
            if isinstance(value, str) and value in allowed
            else (f"{key} must be one of {list(allowed)}, got {value!r}")
        )
    limits = {f.name: f.metadata["limits"] for f in FIELDS}.get(key)
    if limits:
        return check_value(key, value, *limits)
    if key == "data" and not isinstance(value, str):
        return f"data must be a path (a string), got {value!r}"
    if key == "model" and not isinstance(value, dict):
        return f"model must be a table of architecture fields, got {value!r}"
    return None


def check_architecture(arch: str, model: dict) -> None:
    from raytasks.nets import check_model

    try:
        check_model(arch, model)
    except (ValueError, TypeError) as e:
        raise TrainConfigError(str(e)) from None


def as_settings(settings) -> TrainSettings:
    """A TrainSettings as is; a dict validated into one (the only place that happens)."""
    return settings if isinstance(settings, TrainSettings) else TrainSettings.from_dict(settings)


def parse_value(text: str):
    """A -m value as TOML would read it (numbers, booleans, [lists]), else the string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def read_config_file(path) -> dict:
    """A --config FILE.toml of training settings (its [model] table: architecture fields)."""
    import tomllib

    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TrainConfigError(f"{path}: not valid TOML ({e})") from None
    if not isinstance(values.get("model", {}), dict):
        raise TrainConfigError(f"{path}: 'model' must be a [model] table")
    return values


def layered(config_file, flags: dict, model_fields, data, default_data: str) -> TrainSettings:
    """`raytasks train`'s settings: --config FILE.toml, then the flags typed, then
    -m KEY=VALUE architecture fields, then --data (else the file's, else default_data);
    checked once, the error saying where the settings came from."""
    values = read_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    model = dict(values.get("model", {}))
    for field_value in model_fields:
        if "=" not in field_value:
            raise TrainConfigError(f"-m/--model-field: {field_value!r} is not KEY=VALUE")
        key, value = field_value.split("=", 1)
        model[key.strip()] = parse_value(value.strip())
    values["model"] = model
    values["data"] = data or values.get("data") or default_data
    try:
        return TrainSettings.from_dict(values)
    except TrainConfigError as e:
        where = f"{config_file} or flags" if config_file else "flags"
        raise TrainConfigError(f"training settings ({where}): {e}") from None


# ---------------------------------------------------------------- derived from the data


@dataclass(frozen=True)
class TrainData:
    """What the settings' `data` resolves to: shard lists, class counts, loss weights."""

    data_dir: str
    train_files: list
    valid_files: list
    train_counts: list
    class_weights: list | None
    record_counts: dict | None = None  # per record (crc32) and class, with a record balance

    @property
    def train_rows(self) -> int:
        return int(sum(self.train_counts))


def derive(settings: TrainSettings) -> TrainData:
    """Resolve the data: shard lists, class counts and the loss's class weights."""
    from raytasks.core.config import resolve
    from raytasks.data.stream import check_rr, class_counts, record_class_counts, split_files

    data_dir = resolve(settings.data)
    train_files = split_files(data_dir, "train")
    if settings.rr or settings.template:  # before any Ray work: the stream carries RR
        # columns (and records worth a template) only when the shards were built from records
        check_rr(train_files)
    counts = class_counts(train_files)
    return TrainData(
        str(data_dir),
        train_files,
        split_files(data_dir, "valid"),
        counts.tolist(),
        stream_weights(counts, settings),
        record_class_counts(train_files) if settings.record_balance else None,
    )


def stream_weights(counts, settings: TrainSettings) -> list[float] | None:
    """Class weights for the loss, from the class shares the balanced stream delivers."""
    import numpy as np

    from raytasks.data.stream import resample_rates

    if settings.loss == "ce" or settings.class_weight_power == 0:
        return None
    counts = np.asarray(counts, dtype=np.float64)
    share = counts * resample_rates(counts, settings.balance)
    present = share > 0
    w = np.ones_like(share)
    w[present] = (share[present].mean() / share[present]) ** settings.class_weight_power
    w /= (w * share).sum() / share.sum()  # keep the loss scale of unweighted CE
    return w.tolist()
