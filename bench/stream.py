"""Rows/s of the balanced stream vs the same shards as in-memory torch tensors.

Both sides produce the same thing (epochs of balanced, shuffled (x, y) torch batches of 256)
and read the split once first, one torch thread each; they run one after the other in
this run. Printed: the read,
the epochs' rows/s and their ratio (goal >= 0.5, and >= 300,000 rows/s), the ratio including
the read, and where the stream's time goes. Run inside `unshare -n` (it starts Ray).

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/stream.py'
"""

import os
import time

import numpy as np
import torch

from raytasks import config
from raytasks.data.stream import BalancedStream, load_split, resample_rates, split_files

BATCH, BALANCE, EPOCHS = 256, 0.5, 3


def in_memory(files) -> tuple[float, float, int]:
    """(read seconds, epochs seconds, rows): tensors in this process, numpy resampling."""
    t0 = time.perf_counter()
    x, y = load_split(files)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    read = time.perf_counter() - t0
    rates = resample_rates(np.bincount(y.numpy(), minlength=5), BALANCE)
    rows, t0 = 0, time.perf_counter()
    for epoch in range(EPOCHS):
        g = np.random.default_rng(epoch)
        rate = rates[y.numpy()]
        copies = np.floor(rate).astype(int) + (g.random(len(y)) < rate - np.floor(rate))
        idx = torch.from_numpy(g.permutation(np.repeat(np.arange(len(y)), copies)))
        for i in range(0, len(idx), BATCH):
            b = idx[i:i + BATCH]
            batch = {"x": x[b], "y": y[b]}
            rows += len(batch["y"])
    return read, time.perf_counter() - t0, rows


def streamed(files) -> tuple[float, float, int, BalancedStream]:
    """(read seconds, epochs seconds, rows, stream): read once into the object store, then
    each epoch a vectorised resample and prefetched batches."""
    t0 = time.perf_counter()
    stream = BalancedStream.materialize(files, BALANCE, seed=0)
    stream.arrays()  # what a worker does first: map the object store's copy
    read = time.perf_counter() - t0
    rows, t0 = 0, time.perf_counter()
    for epoch in range(EPOCHS):
        for batch in stream.batches(epoch, BATCH):
            rows += len(batch["y"])
    return read, time.perf_counter() - t0, rows, stream


def main():
    import ray  # after raytasks, which sets Ray's auth/usage environment

    cfg = config.load()
    files = split_files(config.scheme_dir(cfg), "train")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    # one torch thread on both sides, as a worker with --threads 1: torch's parallel indexing
    # collapses (~30x) when another process holds one of the 2 cores
    torch.set_num_threads(1)
    load_split(files)  # warm the page cache for both sides alike
    s_read, s_epochs, s_rows, stream = streamed(files)
    m_read, m_epochs, m_rows = in_memory(files)
    s_rps, m_rps = s_rows / s_epochs, m_rows / m_epochs
    st = stream.stats
    print(f"{len(files)} shards, {EPOCHS} epochs, balance {BALANCE}, batch {BATCH}")
    print(f"  {'':28}{'read (s)':>10}{'epochs rows/s':>16}{'incl. read rows/s':>20}")
    print(f"  {'object-store stream':28}{s_read:10.2f}{s_rps:16.0f}"
          f"{s_rows / (s_read + s_epochs):20.0f}")
    print(f"  {'in-memory torch tensors':28}{m_read:10.2f}{m_rps:16.0f}"
          f"{m_rows / (m_read + m_epochs):20.0f}")
    whole = (s_rows / (s_read + s_epochs)) / (m_rows / (m_read + m_epochs))
    print(f"  ratio stream / memory, epochs: {s_rps / m_rps:.3f} (goal >= 0.5 and >= 300,000 "
          f"rows/s); incl. read: {whole:.3f}")
    print(f"  stream epochs {s_epochs:.3f} s: epoch row lists {st.index_s:.3f} s, batch "
          f"gathers {st.gather_s:.3f} s (prefetch thread), consumer waiting "
          f"{st.wait_s:.3f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
