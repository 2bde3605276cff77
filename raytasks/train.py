"""Training: a per-worker loop run by Ray Train's TorchTrainer, fed by the balanced Ray Data
stream, validated on the whole valid split after every epoch, checkpointed, and exported.

    raytasks train --arch resnet1d --epochs 30 --balance 0.5 --loss focal

The same epoch loop (`train_loop`) also runs in a single process (`fit_local`), which is what
a one-worker Tune trial uses. Data flows one way: shards -> Ray Data -> workers ->
checkpoints (runs/) -> models/<tag>/.
"""

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import torch.nn.functional as F

from raytasks.data import BEAT_LEN, DataError
from raytasks.data.stream import (
    BalancedStream,
    class_counts,
    load_split,
    resample_rates,
    split_files,
)
from raytasks.metrics import OBJECTIVE, compute_metrics, fit_offsets
from raytasks.nets import create_model, input_width, model_config, num_params
from raytasks.paths import staged_dir

CPU = torch.device("cpu")
# every training setting, with its default; each is a `raytasks train` flag and a TOML key
DEFAULTS = {
    "arch": "resnet1d",
    "model": {},  # architecture config fields (see raytasks.nets); -m key=value
    "data": "data/processed/intra",  # a built scheme: <processed>/<scheme>
    "epochs": 10,
    "batch_size": 256,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "schedule": "onecycle",  # onecycle | cosine
    "loss": "ce",  # ce | weighted_ce | focal
    "focal_gamma": 2.0,
    "label_smoothing": 0.0,
    "class_weight_power": 0.5,  # weighted_ce/focal: weight_c ~ (1 / stream share_c)^power
    "balance": 0.5,  # 0 natural class frequencies .. 1 equal classes
    "aug_scale": 0.0,  # amplitude x U(1-s, 1+s)
    "aug_wander": 0.0,  # baseline wander amplitude
    "aug_noise": 0.0,  # Gaussian noise sigma
    "aug_shift": 0,  # time shift, +-samples
    "seed": 0,
    "workers": 1,
    "cpus_per_worker": 1.0,  # Ray bookkeeping; fractional values share a core
    "threads": 0,  # torch threads per worker; 0 = the worker's CPUs, rounded, at least 1
    "placement": "PACK",  # PACK | SPREAD: workers on as few / as many nodes as possible
    "metric": OBJECTIVE,  # checkpoint ranking / export choice
    "keep": 2,  # best checkpoints kept
    "max_failures": 2,
    "prefetch": 4,  # batches each worker gathers ahead of its train loop
    "gpu": False,  # train on GPUs: TorchTrainer use_gpu, mixed precision, batches on device
    "gpus_per_worker": 1.0,  # with gpu: GPU share per worker (Tune trials may ask for less)
    "rr": False,  # also read the beat's RR-interval features (raytasks.data.RR_FEATURES)
    "rr_beat_dropout": 0.0,  # with rr: share of training beats the RR path classifies alone
}
HELP = {
    "arch": "architecture (raytasks.nets registry)",
    "epochs": "training epochs",
    "batch_size": "batch size per worker",
    "lr": "peak learning rate (AdamW)",
    "weight_decay": "AdamW weight decay",
    "schedule": "learning-rate schedule",
    "loss": "ce, class-weighted ce, or focal loss",
    "focal_gamma": "focal loss gamma",
    "label_smoothing": "label smoothing of the cross-entropy",
    "class_weight_power": "weighted_ce/focal: weight ~ (1/class share in the stream)^power",
    "balance": "class balance of the stream: 0 natural .. 1 equal classes",
    "aug_scale": "augment: amplitude x U(1-s, 1+s); 0 off",
    "aug_wander": "augment: baseline wander amplitude; 0 off",
    "aug_noise": "augment: Gaussian noise sigma; 0 off",
    "aug_shift": "augment: random time shift, +- samples; 0 off",
    "seed": "seed of weights, stream resampling and shuffling",
    "workers": "TorchTrainer workers (DDP)",
    "cpus_per_worker": "CPUs per worker (Ray bookkeeping; fractions share a core)",
    "threads": "torch threads per worker (0: its CPUs, rounded); more than its CPUs is "
               "worth it once Ray Data has streamed ahead",
    "placement": "PACK fills a node before the next; SPREAD puts workers on different nodes",
    "metric": "valid metric that ranks checkpoints and picks the export",
    "keep": "best checkpoints kept on disk",
    "max_failures": "worker-group restarts (from the latest checkpoint) before giving up",
    "prefetch": "batches each worker gathers ahead of its train loop",
    "gpu": "train on GPU(s): use_gpu workers, mixed precision, pinned batches on the device",
    "gpus_per_worker": "with --gpu: GPUs per worker (a fraction shares one GPU)",
    "rr": "also feed the beat's RR intervals (pre/post/local RR) to the model",
    "rr_beat_dropout": "with rr: share of training beats whose beat logits are hidden, so the "
                       "RR path learns to classify alone too",
}
CHOICES = {"schedule": ("onecycle", "cosine"), "loss": ("ce", "weighted_ce", "focal"),
           "placement": ("PACK", "SPREAD")}


# type and inclusive range (None: open) of every numeric or boolean setting
LIMITS = {
    "epochs": (int, 1, None), "batch_size": (int, 1, None), "lr": (float, 1e-9, 10.0),
    "weight_decay": (float, 0.0, None), "focal_gamma": (float, 0.0, None),
    "label_smoothing": (float, 0.0, 1.0), "class_weight_power": (float, 0.0, None),
    "balance": (float, 0.0, 1.0), "aug_scale": (float, 0.0, 1.0),
    "aug_wander": (float, 0.0, None), "aug_noise": (float, 0.0, None),
    "aug_shift": (int, 0, BEAT_LEN - 1), "seed": (int, None, None), "workers": (int, 1, None),
    "cpus_per_worker": (float, 0.01, None), "threads": (int, 0, None), "keep": (int, 1, None),
    "max_failures": (int, -1, None), "prefetch": (int, 1, None), "rr": (bool, None, None),
    "rr_beat_dropout": (float, 0.0, 0.99), "gpu": (bool, None, None),
    "gpus_per_worker": (float, 0.01, None),
}


class TrainConfigError(ValueError):
    pass


def check_setting(key: str, value) -> str | None:
    """What is wrong with `value` for training setting `key` (None: nothing)."""
    from raytasks.metrics import METRIC_NAMES, RECALL_NAMES
    from raytasks.nets import check_value, list_models

    allowed = {**CHOICES, "arch": tuple(list_models()),
               "metric": tuple(METRIC_NAMES + RECALL_NAMES)}.get(key)
    if allowed is not None:
        return None if isinstance(value, str) and value in allowed else (
            f"{key} must be one of {list(allowed)}, got {value!r}")
    if key in LIMITS:
        return check_value(key, value, *LIMITS[key])
    if key == "data" and not isinstance(value, str):
        return f"data must be a path (a string), got {value!r}"
    return None


def make_config(overrides: dict | None = None) -> dict:
    """DEFAULTS with overrides applied and checked: unknown keys, each setting's type and
    range, the architecture's fields (and that the model can be built from them)."""
    from raytasks.nets import check_model

    cfg = {**DEFAULTS, **(overrides or {})}
    unknown = sorted(k for k in set(cfg) - set(DEFAULTS) if not k.startswith("_"))
    if unknown:
        raise TrainConfigError(f"unknown training setting(s) {unknown}")
    for key in DEFAULTS:
        problem = check_setting(key, cfg[key])
        if problem:
            raise TrainConfigError(problem)
    if not isinstance(cfg["model"], dict):
        raise TrainConfigError(f"model must be a table of architecture fields, got "
                               f"{cfg['model']!r}")
    try:
        check_model(cfg["arch"], cfg["model"])
    except (ValueError, TypeError) as e:
        raise TrainConfigError(str(e)) from None
    return cfg


# ---------------------------------------------------------------- pieces of the loop

def stream_weights(counts: np.ndarray, cfg: dict) -> list[float] | None:
    """Class weights for the loss, from the class shares the balanced stream delivers."""
    if cfg["loss"] == "ce" or cfg["class_weight_power"] == 0:
        return None
    share = counts * resample_rates(counts, cfg["balance"])
    present = share > 0
    w = np.ones_like(share)
    w[present] = (share[present].mean() / share[present]) ** cfg["class_weight_power"]
    w /= (w * share).sum() / share.sum()  # keep the loss scale of unweighted CE
    return w.tolist()


def loss_fn(cfg: dict, weights, device: torch.device = CPU):
    weight = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None

    def loss(logits, y):
        ce = F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg["label_smoothing"],
                             reduction="none")
        if cfg["loss"] == "focal":
            pt = torch.exp(-F.cross_entropy(logits, y, reduction="none"))
            ce = (1 - pt) ** cfg["focal_gamma"] * ce
        return ce.mean()
    return loss


def lr_lambda(cfg: dict, total_steps: int):
    """onecycle: 30% warm-up from lr/25 then cosine to ~0; cosine: 5% warm-up, cosine to
    lr/50. Progress is clamped, so an epoch longer than estimated never breaks it."""
    warm = 0.3 if cfg["schedule"] == "onecycle" else 0.05
    floor = 1e-4 if cfg["schedule"] == "onecycle" else 0.02
    start = 1 / 25 if cfg["schedule"] == "onecycle" else 0.1

    def f(step: int) -> float:
        t = min(step / max(total_steps, 1), 1.0)
        if t < warm:
            return start + (1 - start) * t / warm
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))
    return f


def augment(x: torch.Tensor, cfg: dict, gen: torch.Generator) -> torch.Tensor:
    """Amplitude scaling, baseline wander, Gaussian noise, small time shifts (per beat).

    Only the beat's samples are augmented; RR features after them pass through.
    """
    if x.shape[1] > BEAT_LEN:
        return torch.cat([augment(x[:, :BEAT_LEN], cfg, gen), x[:, BEAT_LEN:]], dim=1)
    n, length = x.shape
    dev = {"generator": gen, "device": x.device}  # gen lives on x's device
    if cfg["aug_scale"]:
        x = x * (1 + cfg["aug_scale"] * (2 * torch.rand(n, 1, **dev) - 1))
    if cfg["aug_wander"]:
        t = torch.arange(length, device=x.device) / 125.0
        freq = 0.1 + 0.4 * torch.rand(n, 1, **dev)
        phase = 2 * math.pi * torch.rand(n, 1, **dev)
        amp = cfg["aug_wander"] * torch.rand(n, 1, **dev)
        x = x + amp * torch.sin(2 * math.pi * freq * t + phase)
    if cfg["aug_noise"]:
        x = x + cfg["aug_noise"] * torch.randn(x.shape, **dev)
    if cfg["aug_shift"]:
        s = int(torch.randint(-cfg["aug_shift"], cfg["aug_shift"] + 1, (1,), **dev))
        x = torch.roll(x, s, dims=1)
        if s > 0:
            x[:, :s] = 0
        elif s < 0:
            x[:, s:] = 0
    return x


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: np.ndarray, batch: int = 4096,
                   device: torch.device = CPU) -> np.ndarray:
    model.eval()
    # a copy per batch: x may be a read-only Arrow buffer (from_numpy warns on those)
    out = [model(torch.tensor(x[i:i + batch]).to(device)).float().cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 5), dtype=np.float32)


def train_device(cfg: dict, train_worker: bool = False) -> torch.device:
    """cuda with `gpu`, else cpu; one clear error when a GPU was asked for and this process
    sees none. A TorchTrainer worker takes the device Ray Train assigned it; a Tune trial's
    own process sees only its GPU (Ray sets CUDA_VISIBLE_DEVICES)."""
    if not cfg["gpu"]:
        return CPU
    if not torch.cuda.is_available():
        raise TrainConfigError(f"--gpu: no CUDA device visible to this process (torch "
                               f"{torch.__version__}, CUDA build {torch.version.cuda})")
    if train_worker:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda")


def mixed_precision(device: torch.device):
    """(autocast dtype or None, GradScaler): bf16 where the GPU has it, else fp16 + scaling;
    off on CPU (the scaler then passes losses and steps through unchanged)."""
    if device.type != "cuda":
        return None, torch.amp.GradScaler("cuda", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


def save_state(path: Path, model, opt, sched, epoch: int, metrics: dict, start_epoch: int):
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch, "metrics": metrics,
                "start_epoch": start_epoch}, path / "state.pt")


# ---------------------------------------------------------------- the epoch loop

def wait_until_registered(snapshot: str | None, checkpoint_dir: str, timeout: float = 60.0):
    """Test-only: block until Ray Train's controller has recorded checkpoint_dir.

    The controller collects reports asynchronously; a worker killed right after reporting
    can die before its checkpoint is registered, and the retry then starts from scratch.
    """
    deadline = time.monotonic() + timeout
    while snapshot and time.monotonic() < deadline:
        path = Path(snapshot)
        if path.exists() and checkpoint_dir in path.read_text():
            return
        time.sleep(0.2)


def train_loop(cfg: dict, *, rank: int, world: int, checkpoint, batches, report,
               worker_nodes: int = 1, device: torch.device = CPU):
    """Train cfg["epochs"] epochs, resuming after the checkpoint's epoch if one is given.

    batches(epoch) yields {'x', 'y'} torch batches on `device`; report(metrics, state_dir or
    None) is called once per epoch on every rank (rank 0 attaches the checkpoint).
    """
    torch.manual_seed(cfg["seed"] + rank)
    torch.set_num_threads(cfg["threads"] or max(1, round(cfg["cpus_per_worker"])))
    model = create_model(cfg["arch"], rr=cfg["rr"], rr_beat_dropout=cfg["rr_beat_dropout"],
                         **cfg["model"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    steps = math.ceil(cfg["train_rows"] / world / cfg["batch_size"]) * cfg["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps))
    start = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = state["epoch"] + 1
    net = model
    if world > 1:
        import ray.train.torch

        net = ray.train.torch.prepare_model(model)  # DDP (gloo on CPU, nccl on GPU)
    loss = loss_fn(cfg, cfg.get("class_weights"), device)
    amp_dtype, scaler = mixed_precision(device)
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] * 7919 + rank)
    valid_x, valid_y = (load_split(cfg["valid_files"], rr=cfg["rr"]) if rank == 0
                        else (None, None))
    fail = cfg.get("_fail_once")  # test-only: kill this worker once at (epoch, step, rank)

    for epoch in range(start, cfg["epochs"]):
        net.train()
        t0, seen, total, wait = time.perf_counter(), 0, 0.0, 0.0
        ready = t0
        for step, batch in enumerate(batches(epoch)):
            wait += time.perf_counter() - ready  # the loop idle, waiting for data
            if fail and (epoch, step, rank) == tuple(fail["at"]) and not Path(
                    fail["marker"]).exists():
                wait_until_registered(fail.get("snapshot"), f"epoch_{epoch - 1:04d}")
                Path(fail["marker"]).write_text(f"killed epoch {epoch} step {step}")
                os._exit(1)
            x, y = augment(batch["x"], cfg, gen), batch["y"]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                batch_loss = loss(net(x), y)
            scaler.scale(batch_loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            seen += len(y)
            total += batch_loss.item() * len(y)
            ready = time.perf_counter()
        metrics = {"epoch": epoch, "start_epoch": start, "worker_nodes": worker_nodes,
                   "train_loss": total / max(seen, 1),
                   "train_beats_per_s": seen / (time.perf_counter() - t0),
                   "data_wait_s": wait,
                   "lr": sched.get_last_lr()[0]}
        if rank == 0:
            logits = predict_logits(model, valid_x, device=device)
            metrics.update(compute_metrics(valid_y, logits.argmax(axis=1)))
            metrics["valid_loss"] = F.cross_entropy(torch.from_numpy(logits),
                                                    torch.as_tensor(valid_y).long()).item()
            with tempfile.TemporaryDirectory() as d:
                save_state(Path(d), model, opt, sched, epoch, metrics, start)
                report(metrics, d)
        else:
            report(metrics, None)


def train_loop_per_worker(cfg: dict):
    """The TorchTrainer entry point: Ray Train context -> train_loop."""
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = train_device(cfg, train_worker=True)

    def batches(epoch):  # this rank's equal share of the epoch, from the object store
        share = cfg["stream"].batches(epoch, cfg["batch_size"], rank, world, device,
                                      cfg["prefetch"])
        return share if rank else progress(share, cfg, epoch, world, "rank 0")

    def report(metrics, state_dir):
        ckpt = ray.train.Checkpoint.from_directory(state_dir) if state_dir else None
        ray.train.report(metrics, checkpoint=ckpt,
                         checkpoint_dir_name=f"epoch_{metrics['epoch']:04d}")

    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:  # how many nodes the workers landed on (reported; placement is Ray's)
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, nodes[0])
        nodes = gathered
    train_loop(cfg, rank=rank, world=world, checkpoint=ray.train.get_checkpoint(),
               batches=batches, report=report, worker_nodes=len(set(nodes)), device=device)


# ---------------------------------------------------------------- drivers

def prepare(cfg: dict) -> dict:
    """Resolve the data: shard lists, class counts, stream size and loss weights."""
    from raytasks.config import resolve

    data_dir = resolve(cfg["data"])
    train_files = split_files(data_dir, "train")
    counts = class_counts(train_files)
    return {**cfg, "data": str(data_dir), "train_files": train_files,
            "valid_files": split_files(data_dir, "valid"), "train_counts": counts.tolist(),
            "train_rows": int(counts.sum()),
            "class_weights": stream_weights(counts, cfg)}


def check_gpus(cfg: dict) -> None:
    """With `gpu`, refuse (one line) a Ray cluster without the GPUs the workers ask for."""
    want = cfg["workers"] * cfg["gpus_per_worker"]
    have = ray.cluster_resources().get("GPU", 0)
    if cfg["gpu"] and have < want:
        raise TrainConfigError(f"--gpu: no GPU available (the Ray cluster has {have:g}; "
                               f"{cfg['workers']} worker(s) x {cfg['gpus_per_worker']:g} GPU "
                               f"needed); train without --gpu or on a machine with one")


def build_trainer(cfg: dict, name: str, storage: Path | str, callbacks=(),
                  filesystem=None):
    """A TorchTrainer for `cfg` (already `prepare`d), fed by the balanced stream: the train
    split is read once into the object store here; every worker resamples it per epoch."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_gpus(cfg)
    cfg = {**cfg, "stream": BalancedStream.materialize(cfg["train_files"], cfg["balance"],
                                                       cfg["seed"], rr=cfg["rr"])}
    resources = {"CPU": cfg["cpus_per_worker"]} | (
        {"GPU": cfg["gpus_per_worker"]} if cfg["gpu"] else {})
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=cfg["workers"], use_gpu=cfg["gpu"],
                                     resources_per_worker=resources,
                                     placement_strategy=cfg["placement"]),
        run_config=RunConfig(
            name=name, storage_path=str(storage), storage_filesystem=filesystem,
            callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg["keep"],
                                               checkpoint_score_attribute=cfg["metric"],
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg["max_failures"])),
    )


def fit(cfg: dict, name: str, storage: Path, callbacks=()):
    """Train with TorchTrainer; returns (best checkpoint, its metrics, the Result)."""
    cfg = prepare(make_config(cfg))
    result = build_trainer(cfg, name, storage, callbacks).fit()
    if not result.best_checkpoints:
        raise RuntimeError(f"training reported no checkpoint ({result.error})")
    best, metrics = max(result.best_checkpoints, key=lambda cm: cm[1][cfg["metric"]])
    return best, metrics, result


def fit_local(cfg: dict, report):
    """The same loop in this process (no TorchTrainer): one Tune trial per CPU slot."""
    cfg = prepare(make_config(cfg))
    device = train_device(cfg)
    stream = BalancedStream.materialize(cfg["train_files"], cfg["balance"], cfg["seed"],
                                        rr=cfg["rr"])

    def batches(epoch):
        every = stream.batches(epoch, cfg["batch_size"], device=device, prefetch=cfg["prefetch"])
        return progress(every, cfg, epoch, 1, cfg.get("_progress", "train"))

    train_loop(cfg, rank=0, world=1, checkpoint=cfg.pop("_checkpoint", None), batches=batches,
               report=report, device=device)


def progress(batches, cfg: dict, epoch: int, world: int, label: str, min_s: float = 5.0):
    """An epoch's batches, with a line at every 25% once the epoch has run min_s seconds:
    a job log shows where a long epoch is (with an ETA); a short epoch prints nothing."""
    total = max(1, math.ceil(cfg["train_rows"] / world / cfg["batch_size"]))
    t0, mark = time.perf_counter(), 0.25
    for i, batch in enumerate(batches, 1):
        yield batch
        if i / total < mark or i >= total:
            continue
        mark = (int(i / total * 4) + 1) / 4
        took = time.perf_counter() - t0
        if took >= min_s:
            print(f"{label} epoch {epoch + 1}/{cfg['epochs']}: {i / total:.0%} of {total} "
                  f"batches in {took:.0f} s, ETA {took * (total - i) / i:.0f} s", flush=True)


# ---------------------------------------------------------------- export

TRAIN_KEYS = [k for k in DEFAULTS if k not in ("arch", "model")]


def export(checkpoint, metrics: dict, cfg: dict, out_dir: Path, source: str = "") -> Path:
    """Write models/<tag>/: model.pt (weights only) and model.json (everything else needed to
    rebuild and evaluate it: architecture and config, training settings, valid metrics,
    the data build it was trained on)."""
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=False, map_location="cpu")
    model = create_model(cfg["arch"], rr=cfg["rr"], **cfg["model"])
    model.load_state_dict(state["model"])
    # the recall-first operating point: offsets fitted on the valid split (see evaluate)
    valid_x, valid_y = load_split(cfg["valid_files"], rr=cfg["rr"])
    offsets = fit_offsets(predict_logits(model, valid_x), valid_y)
    build_meta = {}
    meta_path = Path(cfg["data"]) / "build.json"
    if meta_path.exists():
        build_meta = json.loads(meta_path.read_text())
        build_meta = {k: build_meta.get(k) for k in ("scheme", "params", "preprocessing",
                                                     "records", "source", "version")}
    info = {
        "tag": out_dir.name,
        "arch": cfg["arch"],
        "rr": cfg["rr"],  # the model reads x = beat + RR_FEATURES
        "model": model_config(cfg["arch"], **cfg["model"]).__dict__,
        "train": {k: cfg[k] for k in TRAIN_KEYS if k in cfg} | {"data": portable(cfg["data"])},
        "valid_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "epoch": state["epoch"],
        "data": build_meta,
        "params": num_params(model),
        "offsets": offsets.tolist(),
        "offsets_fit": {"on": "valid", "objective": "F2scoremacro"},
        "source": source,
        "torch": torch.__version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in info["model"].items()}
    with staged_dir(out_dir) as tmp:  # swapped in whole: never half a model
        torch.save(model.state_dict(), tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(info, indent=2))
    return out_dir


def portable(path: str) -> str:
    """A path relative to the project root when it lies inside it (model.json travels)."""
    from raytasks.config import ROOT

    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def load_model(model_dir: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild an exported model: (module in eval mode, its model.json)."""
    model_dir = Path(model_dir)
    try:
        info = json.loads((model_dir / "model.json").read_text())
        if info["arch"] == "ensemble":
            from raytasks.ensemble import load_members

            model = load_members(model_dir, info)
        else:
            # a record-features model (raytasks.records) reads beat + RR, then features of them
            wrap = info.get("rr", False) and not info.get("record_features")
            model = create_model(info["arch"], rr=wrap, **info["model"])
            model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True,
                                             map_location="cpu"))
            model.input_width = input_width(info.get("rr", False))  # columns of x it reads
    except FileNotFoundError as e:
        raise DataError(f"{model_dir}: missing {Path(e.filename).name}") from None
    except Exception as e:
        raise DataError(f"{model_dir}: corrupt or incompatible model files "
                        f"({type(e).__name__}: {str(e)[:120]})") from None
    model.eval()
    return model, info


def init_ray():
    """Connect to RAY_ADDRESS when set (e.g. under `ray job submit`), else start locally."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True,
                 configure_logging=False)
