"""Beats/s of a TorchTrainer epoch vs a bare single-process PyTorch loop, same model/shards.

The Ray path: one TorchTrainer worker (1 CPU, one torch thread) fed by its Ray Data shard
(the split read once into the object store, resampled and shuffled per block every epoch);
its beats/s is what the worker measured over its epoch loop. The bare loop: the same model, batch
size, thread count and number of rows, over tensors already in memory. Goal: keep the Ray
path >= 0.95x. Run inside `unshare -n`.

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/train_overhead.py [arch]'
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raytasks.core import config
from raytasks.data.stream import class_counts, load_split, split_files
from raytasks.nets import create_model
from raytasks.training.train import fit

BATCH = 256


def bare(arch: str, files, rows: int) -> float:
    torch.set_num_threads(1)
    x, y = load_split(files)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = create_model(arch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.from_numpy(np.random.default_rng(0).integers(0, len(y), rows))
    t0 = time.perf_counter()
    for i in range(0, rows, BATCH):
        b = idx[i : i + BATCH]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    return rows / (time.perf_counter() - t0)


def main():
    import ray  # after raytasks, which sets Ray's auth/usage environment

    arch = sys.argv[1] if len(sys.argv) > 1 else "cnn1d"
    cfg = config.load()
    data = config.scheme_dir(cfg)
    files = split_files(data, "train")
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False)
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        _, _, result = fit(
            {
                "arch": arch,
                "data": str(data),
                "epochs": 2,
                "batch_size": BATCH,
                "workers": 1,
                "cpus_per_worker": 1.0,
                "keep": 1,
            },
            "bench",
            Path(runs),
        )
        wall = time.perf_counter() - t0
    ray_bps = result.metrics["train_beats_per_s"]  # the last epoch: everything warm
    bare_bps = bare(arch, files, rows=int(class_counts(files).sum()))
    print(f"{arch}, batch {BATCH}, 1 worker x 1 thread, train split of {data.name}")
    print(f"  TorchTrainer epoch (balanced stream) : {ray_bps:8.0f} beats/s")
    print(f"  bare loop over in-memory tensors     : {bare_bps:8.0f} beats/s")
    print(f"  ratio Ray / bare                     : {ray_bps / bare_bps:8.3f}  (goal >= 0.95)")
    print(f"  (whole fit() call incl. startup and 2 validations: {wall:.0f} s)")
    print(
        f"  the worker's loop waited {result.metrics['data_wait_s']:.2f} s for batches in its "
        f"last epoch ({int(class_counts(files).sum()) / ray_bps:.1f} s)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
