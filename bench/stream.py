"""Rows/s of the balanced Ray Data stream vs the same shards as in-memory torch tensors.

Both sides produce the same thing (an epoch of balanced, shuffled (x, y) batches of 256),
measured one after the other in this run. Run inside `unshare -n` (it starts Ray).

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/stream.py'
"""

import os
import time

import numpy as np
import torch

from raytasks import config
from raytasks.data.stream import (
    balanced_stream,
    class_counts,
    load_split,
    resample_rates,
    split_files,
)

BATCH, BALANCE, EPOCHS = 256, 0.5, 3


def in_memory(files):
    t0 = time.perf_counter()
    x, y = load_split(files)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    rates = resample_rates(np.bincount(y.numpy(), minlength=5), BALANCE)
    rows = 0
    for epoch in range(EPOCHS):
        g = np.random.default_rng(epoch)
        rate = rates[y.numpy()]
        copies = np.floor(rate).astype(int) + (g.random(len(y)) < rate - np.floor(rate))
        idx = torch.from_numpy(g.permutation(np.repeat(np.arange(len(y)), copies)))
        for i in range(0, len(idx), BATCH):
            b = idx[i:i + BATCH]
            batch = {"x": x[b], "y": y[b]}
            rows += len(batch["y"])
    return rows / (time.perf_counter() - t0)


def streamed(files):
    counts = class_counts(files)
    t0 = time.perf_counter()
    rows = 0
    for epoch in range(EPOCHS):
        ds = balanced_stream(files, BALANCE, seed=0, epoch=epoch, counts=counts)
        for batch in ds.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=2048):
            rows += len(batch["y"])
    return rows / (time.perf_counter() - t0)


def main():
    import ray  # after raytasks, which sets Ray's auth/usage environment

    cfg = config.load()
    files = split_files(config.resolve(cfg["processed"]) / cfg["scheme"], "train")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    stream_rps = streamed(files)
    memory_rps = in_memory(files)
    print(f"{len(files)} shards, {EPOCHS} epochs, balance {BALANCE}, batch {BATCH}")
    print(f"  Ray Data balanced stream : {stream_rps:10.0f} rows/s")
    print(f"  in-memory torch tensors  : {memory_rps:10.0f} rows/s")
    print(f"  ratio stream / memory    : {stream_rps / memory_rps:10.3f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
