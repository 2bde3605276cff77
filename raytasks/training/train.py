"""Training: a per-worker loop run by Ray Train's TorchTrainer, fed by Ray Data (the worker's
`get_dataset_shard("train")`, class-balanced and shuffled per epoch), validated on the whole
valid split after every epoch, checkpointed, and exported.

    raytasks train --arch resnet1d --epochs 30 --balance 0.5 --loss focal

The same epoch loop (`train_loop`) also runs in a single process (`fit_local`), which is what
a one-worker Tune trial uses. Data flows one way: shards -> Ray Data -> workers ->
checkpoints (runs/) -> models/<tag>/.
"""

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import torch.nn.functional as F

from raytasks.core.constants import BEAT_LEN, FS, RR_FEATURES
from raytasks.core.metrics import compute_metrics
from raytasks.core.ray_connect import quiet_sigterm_exit
from raytasks.data.features import split_templates
from raytasks.data.stream import dataset_arrays, epoch_batches, open_split, split_files
from raytasks.models import saved
from raytasks.models.saved import predict_logits
from raytasks.nets import create_model
from raytasks.training.settings import (
    TrainConfigError,
    TrainData,
    TrainSettings,
    as_settings,
    derive,
)

CPU = torch.device("cpu")
RR = len(RR_FEATURES)

# ---------------------------------------------------------------- pieces of the loop


def loss_fn(s: TrainSettings, weights, device: torch.device = CPU):
    weight = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None

    def loss(logits, y):
        ce = F.cross_entropy(
            logits, y, weight=weight, label_smoothing=s.label_smoothing, reduction="none"
        )
        if s.loss == "focal":
            pt = torch.exp(-F.cross_entropy(logits, y, reduction="none"))
            ce = (1 - pt) ** s.focal_gamma * ce
        return ce.mean()

    return loss


def lr_lambda(s: TrainSettings, total_steps: int):
    """onecycle: 30% warm-up from lr/25 then cosine to ~0; cosine: 5% warm-up, cosine to
    lr/50. Progress is clamped, so an epoch longer than estimated never breaks it."""
    warm = 0.3 if s.schedule == "onecycle" else 0.05
    floor = 1e-4 if s.schedule == "onecycle" else 0.02
    start = 1 / 25 if s.schedule == "onecycle" else 0.1

    def f(step: int) -> float:
        t = min(step / max(total_steps, 1), 1.0)
        if t < warm:
            return start + (1 - start) * t / warm
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))

    return f


def augment(x: torch.Tensor, s: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    """Amplitude scaling, baseline wander and Gaussian noise (per beat) and a small time
    shift (one per batch, the edge zero-filled) on the beat's samples; detector errors
    (`rr_errors`) on its RR features, the 4 columns after them (a template model's
    deviations follow those and pass through).
    """
    if x.shape[1] > BEAT_LEN:
        rest = x[:, BEAT_LEN:]
        if s.aug_rr_errors:
            rest = torch.cat([rr_errors(rest[:, :RR], s.aug_rr_errors, gen), rest[:, RR:]], 1)
        return torch.cat([augment(x[:, :BEAT_LEN], s, gen), rest], dim=1)
    n, length = x.shape
    dev = {"generator": gen, "device": x.device}  # gen lives on x's device
    if s.aug_scale:
        x = x * (1 + s.aug_scale * (2 * torch.rand(n, 1, **dev) - 1))
    if s.aug_wander:
        t = torch.arange(length, device=x.device) / float(FS)
        freq = 0.1 + 0.4 * torch.rand(n, 1, **dev)
        phase = 2 * math.pi * torch.rand(n, 1, **dev)
        amp = s.aug_wander * torch.rand(n, 1, **dev)
        x = x + amp * torch.sin(2 * math.pi * freq * t + phase)
    if s.aug_noise:
        x = x + s.aug_noise * torch.randn(x.shape, **dev)
    if s.aug_shift:
        k = int(torch.randint(-s.aug_shift, s.aug_shift + 1, (1,), **dev))
        x = torch.roll(x, k, dims=1)
        if k > 0:
            x[:, :k] = 0
        elif k < 0:
            x[:, k:] = 0
    return x


def rr_errors(rr: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """RR features (pre/local, post/local, local s, pre/record mean: data.beats.rr_features)
    as `predict` computes them when the detector errs beside a beat, for `share` of the beats.

    On raw recordings a missed or extra detection shifts the RR features of the real beats
    beside it: an extra one (a T wave, noise) splits an interval, making a normal beat look
    premature; a missed one merges two. Each chosen beat gets one of the four, equally
    often: its previous or next interval split at U(0.25, 0.75) of its length, or extended
    by a missed beat's interval of U(0.8, 1.2) x the local mean. Its class does not change,
    so the model learns to tell a premature beat by more than its RR. rr_record follows
    rr_pre (same interval over another mean); the local mean over 31 beats barely moves.
    """
    n, dev = len(rr), {"generator": gen, "device": rr.device}
    hit = torch.rand(n, **dev) < share
    kind = torch.randint(0, 4, (n,), **dev)  # 0/1: extra before/after, 2/3: missed
    split = 0.25 + 0.5 * torch.rand(n, **dev)
    merged = 0.8 + 0.4 * torch.rand(n, **dev)
    pre, post = rr[:, 0], rr[:, 1]
    new_pre = torch.where(kind == 0, pre * split, torch.where(kind == 2, pre + merged, pre))
    new_post = torch.where(kind == 1, post * split, torch.where(kind == 3, post + merged, post))
    new_pre, new_post = torch.where(hit, new_pre, pre), torch.where(hit, new_post, post)
    record = rr[:, 3] * new_pre / pre.clamp_min(1e-6)
    return torch.stack([new_pre, new_post, rr[:, 2], record], dim=1)


def train_device(s: TrainSettings, train_worker: bool = False) -> torch.device:
    """cuda with `gpu`, else cpu; one clear error when a GPU was asked for and this process
    sees none. A TorchTrainer worker takes the device Ray Train assigned it; a Tune trial's
    own process sees only its GPU (Ray sets CUDA_VISIBLE_DEVICES)."""
    if not s.gpu:
        return CPU
    if not torch.cuda.is_available():
        raise TrainConfigError(
            f"--gpu: no CUDA device visible to this process (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda})"
        )
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
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch,
            "metrics": metrics,
            "start_epoch": start_epoch,
        },
        path / "state.pt",
    )


# ---------------------------------------------------------------- the epoch loop


def restore(s: TrainSettings, data: TrainData, world: int, device: torch.device, checkpoint):
    """(model, optimizer, scheduler, first epoch): fresh, or as the checkpoint left them."""
    model = create_model(
        s.arch, rr=s.rr, rr_beat_dropout=s.rr_beat_dropout, template=s.template, **s.model
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    steps = math.ceil(data.train_rows / world / s.batch_size) * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(s, steps))
    if checkpoint is None:
        return model, opt, sched, 0
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", weights_only=False, map_location=device)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return model, opt, sched, state["epoch"] + 1


def make_step(s: TrainSettings, data: TrainData, net, opt, sched, device, rank: int):
    """step(batch) -> the batch's summed loss, after one optimizer step on it."""
    loss = loss_fn(s, data.class_weights, device)
    amp_dtype, scaler = mixed_precision(device)
    gen = torch.Generator(device=device).manual_seed(s.seed * 7919 + rank)

    def step(batch) -> float:
        x, y = augment(batch["x"], s, gen), batch["y"]
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            batch_loss = loss(net(x), y)
        scaler.scale(batch_loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        return batch_loss.item() * len(y)

    return step


def run_epoch(step, batches) -> dict:
    """One pass over `batches`: mean loss, speed, and the time spent waiting for data."""
    t0, seen, total, wait = time.perf_counter(), 0, 0.0, 0.0
    ready = t0
    for batch in batches:
        wait += time.perf_counter() - ready  # the loop idle, waiting for data
        total += step(batch)
        seen += len(batch["y"])
        ready = time.perf_counter()
    return {
        "train_loss": total / max(seen, 1),
        "train_beats_per_s": seen / (time.perf_counter() - t0),
        "data_wait_s": wait,
    }


def train_loop(
    s: TrainSettings,
    data: TrainData,
    *,
    rank: int,
    world: int,
    checkpoint,
    batches,
    valid,
    report,
    worker_nodes: int = 1,
    device: torch.device = CPU,
):
    """Train s.epochs epochs (after the checkpoint's, if given); batches(epoch) yields
    {'x', 'y'} on `device`; valid() -> the valid (x, y) arrays, on rank 0; report(metrics,
    state_dir or None) once per epoch per rank, rank 0 validating and attaching the state
    (None: no validation, no state: a CV fold scores itself). Returns the last model."""
    torch.manual_seed(s.seed + rank)
    torch.set_num_threads(s.threads or max(1, round(s.cpus_per_worker)))
    model, opt, sched, start = restore(s, data, world, device, checkpoint)
    net = model
    if world > 1:
        import ray.train.torch

        net = ray.train.torch.prepare_model(model)  # DDP (gloo on CPU, nccl on GPU)
    step = make_step(s, data, net, opt, sched, device, rank)
    valid_x, valid_y = valid() if rank == 0 and report else (None, None)
    for epoch in range(start, s.epochs):
        net.train()
        metrics = {"epoch": epoch, "start_epoch": start, "worker_nodes": worker_nodes}
        metrics |= {**run_epoch(step, batches(epoch)), "lr": sched.get_last_lr()[0]}
        if report is None:
            continue
        if rank != 0:
            report(metrics, None)
            continue
        metrics.update(valid_metrics(model, valid_x, valid_y, device))
        with tempfile.TemporaryDirectory() as d:
            save_state(Path(d), model, opt, sched, epoch, metrics, start)
            report(metrics, d)
    return model


def valid_metrics(model, x: np.ndarray, y: np.ndarray, device: torch.device) -> dict:
    """Every metric of the model on the valid split, and its cross-entropy (valid_loss)."""
    logits = predict_logits(model, x, device=device)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.as_tensor(y).long()).item()
    return {**compute_metrics(y, logits.argmax(axis=1)), "valid_loss": loss}


def stream_args(s: TrainSettings, data: TrainData) -> dict:
    """What the settings and the data tell `epoch_batches`, on every path alike."""
    return {
        "counts": data.train_counts,
        "balance": s.balance,
        "record_counts": data.record_counts,
        "record_balance": s.record_balance,
        "seed": s.seed,
        "batch_size": s.batch_size,
        "rr": s.rr,
        "template": s.template,
        "prefetch": s.prefetch,
    }


def train_loop_per_worker(config: dict):
    """The TorchTrainer entry point: Ray Train context -> train_loop, fed by this worker's
    shard of the train dataset (and the whole valid one). config holds the settings, the
    data they resolve to, and an optional `wrap_batches(batches, rank) -> batches` (a hook
    around this worker's batches, e.g. a test's failure)."""
    import ray.train

    quiet_sigterm_exit()
    s, data = config["settings"], config["data"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = train_device(s, train_worker=True)
    shard = ray.train.get_dataset_shard("train")
    # DDP ranks must take the same number of steps; one worker takes its whole epoch
    steps = data.train_rows // world // s.batch_size if world > 1 else None

    def batches(epoch):
        share = epoch_batches(
            shard, epoch, rank=rank, steps=steps, device=device, **stream_args(s, data)
        )
        return share if rank else progress(share, s, data, epoch, world, "rank 0")

    def report(metrics, state_dir):
        ckpt = ray.train.Checkpoint.from_directory(state_dir) if state_dir else None
        ray.train.report(
            metrics, checkpoint=ckpt, checkpoint_dir_name=f"epoch_{metrics['epoch']:04d}"
        )

    wrap = config.get("wrap_batches")
    train_loop(
        s,
        data,
        rank=rank,
        world=world,
        checkpoint=ray.train.get_checkpoint(),
        batches=wrap(batches, rank) if wrap else batches,
        valid=lambda: dataset_arrays(ray.train.get_dataset_shard("valid"), s.rr, s.template),
        report=report,
        worker_nodes=worker_nodes(world),
        device=device,
    )


def worker_nodes(world: int) -> int:
    """How many nodes the workers landed on (reported; placement is Ray's)."""
    nodes = [ray.get_runtime_context().get_node_id()]
    if world > 1:
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, nodes[0])
        nodes = gathered
    return len(set(nodes))


# ---------------------------------------------------------------- drivers


def check_gpus(s: TrainSettings) -> None:
    """With `gpu`, refuse (one line) a Ray cluster without the GPUs the workers ask for."""
    want = s.workers * s.gpus_per_worker
    have = ray.cluster_resources().get("GPU", 0)
    if s.gpu and have < want:
        raise TrainConfigError(
            f"--gpu: no GPU available (the Ray cluster has {have:g}; "
            f"{s.workers} worker(s) x {s.gpus_per_worker:g} GPU "
            f"needed); train without --gpu or on a machine with one"
        )


def open_datasets(data_dir: str | Path, seed: int = 0, log=print, template: bool = False) -> dict:
    """A built scheme's train and valid splits as Ray Data datasets (data.stream.open_split):
    train read once or streamed, by its size; valid (small, read whole by rank 0) read once.
    With `template`, rows also carry the beat's deviation from its record's template, taken
    from the split's own beats. A search opens them once and hands them to every trial."""
    train, valid = split_files(data_dir, "train"), split_files(data_dir, "valid")
    templates = (split_templates(train), split_templates(valid)) if template else (None, None)
    return {
        "train": open_split(train, seed=seed, log=log, templates=templates[0]),
        "valid": open_split(
            valid, seed=seed, mode="materialize", log=lambda _: None, templates=templates[1]
        ),
    }


def build_trainer(
    s: TrainSettings,
    name: str,
    storage: Path | str,
    callbacks=(),
    filesystem=None,
    data: TrainData | None = None,
    wrap_batches=None,
    datasets: dict | None = None,
):
    """A TorchTrainer for `s`, fed by Ray Data: the train dataset is split between the
    workers (equal rows each), the valid one goes whole to every worker."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_gpus(s)
    data = data or derive(s)
    datasets = datasets or open_datasets(data.data_dir, s.seed, template=s.template)
    resources = {"CPU": s.cpus_per_worker} | ({"GPU": s.gpus_per_worker} if s.gpu else {})
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": s, "data": data, "wrap_batches": wrap_batches},
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        scaling_config=ScalingConfig(
            num_workers=s.workers,
            use_gpu=s.gpu,
            resources_per_worker=resources,
            placement_strategy=s.placement,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            storage_filesystem=filesystem,
            callbacks=list(callbacks),
            checkpoint_config=CheckpointConfig(
                num_to_keep=s.keep,
                checkpoint_score_attribute=s.metric,
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=s.max_failures),
        ),
    )


def fit(settings: TrainSettings | dict, name: str, storage: Path, callbacks=(), wrap_batches=None):
    """Train with TorchTrainer; returns (best checkpoint, its metrics, the Result)."""
    s = as_settings(settings)
    result = build_trainer(s, name, storage, callbacks, wrap_batches=wrap_batches).fit()
    if not result.best_checkpoints:
        raise RuntimeError(f"training reported no checkpoint ({result.error})")
    best, metrics = max(result.best_checkpoints, key=lambda cm: cm[1][s.metric])
    return best, metrics, result


def fit_local(
    settings: TrainSettings | dict,
    report,
    checkpoint=None,
    label: str = "train",
    datasets: dict | None = None,
):
    """The same loop in this process (no TorchTrainer), iterating the Ray Data datasets
    itself: one Tune trial per CPU slot; `label` starts its progress lines (a Tune trial's:
    <arch>-<trial id>)."""
    s = as_settings(settings)
    data = derive(s)
    device = train_device(s)
    datasets = datasets or open_datasets(data.data_dir, s.seed, template=s.template)

    def batches(epoch):
        every = epoch_batches(datasets["train"], epoch, device=device, **stream_args(s, data))
        return progress(every, s, data, epoch, 1, label)

    train_loop(
        s,
        data,
        rank=0,
        world=1,
        checkpoint=checkpoint,
        batches=batches,
        valid=lambda: dataset_arrays(datasets["valid"], s.rr, s.template),
        report=report,
        device=device,
    )


def progress(
    batches,
    s: TrainSettings,
    data: TrainData,
    epoch: int,
    world: int,
    label: str,
    min_s: float = 5.0,
):
    """An epoch's batches, with a line at every 25% once the epoch has run min_s seconds:
    a job log shows where a long epoch is (with an ETA); a short epoch prints nothing."""
    total = max(1, math.ceil(data.train_rows / world / s.batch_size))
    t0, mark = time.perf_counter(), 0.25
    for i, batch in enumerate(batches, 1):
        yield batch
        if i / total < mark or i >= total:
            continue
        mark = (int(i / total * 4) + 1) / 4
        took = time.perf_counter() - t0
        if took >= min_s:
            print(
                f"{label} epoch {epoch + 1}/{s.epochs}: {i / total:.0%} of {total} "
                f"batches in {took:.0f} s, ETA {took * (total - i) / i:.0f} s",
                flush=True,
            )


def export(
    checkpoint, metrics: dict, settings: TrainSettings | dict, out_dir: Path, source: str = ""
) -> Path:
    """The checkpoint -> a saved model in out_dir (raytasks.models.saved.export_checkpoint)."""
    s = as_settings(settings)
    return saved.export_checkpoint(checkpoint, metrics, s, derive(s), out_dir, source)
