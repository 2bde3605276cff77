"""The shared-cluster workflow: a local head (+ extra raylets), job submission per dev tag.

    raytasks cluster up [--nodes 2]     # make cluster-up [NODES=2]
    raytasks cluster down               # make cluster-down
    raytasks submit --space gru [-- tune args]   # make submit SPACE=gru ARGS="..."
    raytasks jobs | logs JOB | stop JOB # make jobs / logs JOB=... / stop JOB=...

Security: Ray's job API runs any code for whoever reaches it. The dashboard and job server
bind to 127.0.0.1 unless `host` is set explicitly (config.toml / RAYTASKS_HOST), and Ray's
token authentication stays on (the token is ~/.ray/auth_token on the head; clients need it
and RAY_AUTH_MODE=token). Teammates reach a shared head through an SSH port-forward.

Ports derive from the team's `port` P (dashboard + job server): GCS P+10000, Ray client
P+10001, then P+10002.. for each node's agents and P+11000.. for worker processes, so teams
with ports at least 2000 apart can run heads on one machine. `cluster down` stops only the
processes of this cluster (its own temp dir), never other Ray clusters (`ray stop` would).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from raytasks import config

TOKEN_PATH = Path.home() / ".ray" / "auth_token"
EXCLUDES = ["/data/",  # anchored: "data/" also dropped raytasks/data/
            "runs/", ".venv/", "wandb/", ".git/", "results/", "__pycache__/"]


class ClusterError(config.ConfigError):
    """Something to fix before the cluster can be used; the message says what."""


def temp_dir(port: int, node: int = 1) -> str:
    # short: Ray's unix socket paths must stay under ~107 characters
    return f"/tmp/raytasks-{port}" + ("" if node == 1 else f"-n{node}")


def node_ports(port: int, node: int) -> list[str]:
    base = port + 10002 + 8 * (node - 1)
    workers = port + 11000 + 400 * (node - 1)
    return [f"--node-manager-port={base}", f"--object-manager-port={base + 1}",
            f"--dashboard-agent-listen-port={base + 2}", f"--dashboard-agent-grpc-port={base + 3}",
            f"--runtime-env-agent-port={base + 4}", f"--metrics-export-port={base + 5}",
            f"--min-worker-port={workers}", f"--max-worker-port={workers + 399}"]


def ray_env() -> dict:
    """Environment for `ray` commands: this venv first on PATH, so jobs run its python."""
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


def job_address(cfg: dict) -> str:
    return f"http://{cfg['host']}:{cfg['port']}"


def reachable(cfg: dict, timeout: float = 2.0) -> bool:
    """True when a dashboard answers at host:port (any HTTP answer, 401 included)."""
    try:
        urllib.request.urlopen(f"{job_address(cfg)}/api/version", timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def require_cluster(cfg: dict) -> None:
    if not reachable(cfg):
        raise ClusterError(
            f"no Ray cluster answers at {job_address(cfg)}: start one with `make cluster-up`, "
            f"or forward the shared head's port: ssh -N -L {cfg['port']}:127.0.0.1:"
            f"{cfg['port']} <user>@<head>; and check `port` in config.toml")
    if not TOKEN_PATH.exists() and not os.environ.get("RAY_AUTH_TOKEN"):
        raise ClusterError(f"no Ray auth token: copy the head's ~/.ray/auth_token to "
                           f"{TOKEN_PATH} (or set RAY_AUTH_TOKEN)")


def up(cfg: dict, nodes: int = 1, cpus: int | None = None) -> str:
    """Start a head (dashboard + job server on host:port) and nodes-1 more raylets here."""
    port, host = cfg["port"], cfg["host"]
    if reachable(cfg):
        raise ClusterError(f"something already answers at {job_address(cfg)}: "
                           f"`make cluster-down` first, or pick another port")
    gcs = f"127.0.0.1:{port + 10000}"
    cpu_flag = [f"--num-cpus={cpus}"] if cpus else []
    ray = str(Path(sys.executable).parent / "ray")
    commands = [[ray, "start", "--head", f"--port={port + 10000}", f"--dashboard-host={host}",
                 f"--dashboard-port={port}", f"--ray-client-server-port={port + 10001}",
                 f"--temp-dir={temp_dir(port)}", "--include-dashboard=true",
                 "--disable-usage-stats", *node_ports(port, 1), *cpu_flag]]
    for n in range(2, nodes + 1):
        commands.append([ray, "start", f"--address={gcs}", f"--temp-dir={temp_dir(port, n)}",
                         "--disable-usage-stats", *node_ports(port, n), *cpu_flag])
    for cmd in commands:
        res = subprocess.run(cmd, env=ray_env(), capture_output=True, text=True)
        if res.returncode != 0:
            down(cfg)
            raise ClusterError(f"`{' '.join(cmd[1:4])} ...` failed:\n{res.stderr[-1500:]}")
    wait_for_nodes(gcs, nodes)
    return job_address(cfg)


def wait_for_nodes(gcs: str, nodes: int, timeout: float = 60) -> None:
    import ray

    ray.init(address=gcs, log_to_driver=False, configure_logging=False)
    try:
        deadline = time.time() + timeout
        while sum(n["Alive"] for n in ray.nodes()) < nodes:
            if time.time() > deadline:
                raise ClusterError(f"only {sum(n['Alive'] for n in ray.nodes())} of {nodes} "
                                   f"nodes came up")
            time.sleep(0.5)
    finally:
        ray.shutdown()


def cluster_processes(port: int) -> list:
    """This cluster's processes: those naming its temp dirs, and all their descendants."""
    import psutil

    marker = temp_dir(port)
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if marker in cmd:
                found[p.pid] = p
                for child in p.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def down(cfg: dict) -> int:
    """Stop this cluster's processes (SIGTERM, then SIGKILL); returns how many there were."""
    import psutil

    procs = cluster_processes(cfg["port"])
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    for n in range(1, 9):
        shutil.rmtree(temp_dir(cfg["port"], n), ignore_errors=True)
    return len(procs)


def client(cfg: dict):
    from ray.job_submission import JobSubmissionClient

    require_cluster(cfg)
    return JobSubmissionClient(job_address(cfg))


def submit(cfg: dict, space: str, args: list[str], wait: bool = False) -> str:
    """`ray job submit` a search for this dev: id <dev>-<space>-<utc>, metadata {dev, space}.

    The working dir is uploaded without data/, runs/, .venv/ ...; the job reads the shards and
    writes runs/, results/ and models/ of this checkout (absolute paths in its env), which
    the head must see: a local head, or the same path on a shared filesystem.
    """
    from raytasks.spaces import load_space

    dev = config.require_dev(cfg)
    load_space(space)  # a malformed space fails here, not on the cluster
    jobs = client(cfg)
    submission_id = f"{dev}-{space}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    env_vars = {"RAYTASKS_DEV": dev, "RAY_USAGE_STATS_ENABLED": "0"}
    for key, var in (("processed", "RAYTASKS_PROCESSED"), ("runs", "RAYTASKS_RUNS"),
                     ("results", "RAYTASKS_RESULTS"), ("models", "RAYTASKS_MODELS")):
        env_vars[var] = str(config.resolve(cfg[key]))
    env_vars["WANDB_DIR"] = str(config.ROOT)
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        if os.environ.get(var):
            env_vars[var] = os.environ[var]
    entrypoint = " ".join(["python", "-m", "raytasks.tune", "--space", space, *args])
    jobs.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                    metadata={"dev": dev, "space": space},
                    runtime_env={"working_dir": str(config.ROOT), "excludes": EXCLUDES,
                                 "env_vars": env_vars})
    if wait:
        wait_for(jobs, submission_id)
    return submission_id


def wait_for(jobs, submission_id: str, timeout: float = 3600) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.get_job_status(submission_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status)
        time.sleep(2)
    raise ClusterError(f"{submission_id} still running after {timeout:.0f} s")


def my_jobs(cfg: dict) -> list:
    dev = config.require_dev(cfg)
    return [j for j in client(cfg).list_jobs() if (j.metadata or {}).get("dev") == dev]


def job_table(jobs: list) -> str:
    if not jobs:
        return "no jobs for this dev tag"
    rows = [f"{'submission id':<40}{'status':<11}{'started (UTC)':<21}entrypoint"]
    for j in sorted(jobs, key=lambda j: j.start_time or 0):
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((j.start_time or 0) / 1000))
        rows.append(f"{j.submission_id:<40}{str(j.status):<11}{start:<21}{j.entrypoint}")
    return "\n".join(rows)

