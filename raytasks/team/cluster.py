"""The shared-cluster workflow: a local head (+ extra raylets), jobs attributed to dev tags.

    raytasks cluster up [--nodes 2]     # make cluster-up [NODES=2]; prints the shell exports
    eval "$(raytasks cluster env)"      # then the raw Ray CLI works as typed:
    ray job submit --working-dir . -- python -m raytasks.tune --space gru
    raytasks submit --space gru [-- tune args]   # the same, with a readable submission id
    raytasks jobs | logs JOB | stop JOB # your own jobs (--force for someone else's)
    raytasks logs JOB --follow --tail 50  # the last 50 lines, then new ones until it ends
    raytasks pull JOB|EXPERIMENT        # a finished search -> models/ and results/
    raytasks cluster down               # make cluster-down
    raytasks cluster render --head IP --worker IP -o c.yaml   # several machines: ray up c.yaml

Attribution: a job takes its dev tag and settings from the checkout it was submitted from
(the uploaded working dir with its config.toml, and the runtime env's variables), never
from the head's environment: `cluster up` starts Ray without the head owner's RAYTASKS_* /
WANDB_* variables and hands the cluster's own data and storage folders over as
RAYTASKS_CLUSTER_PROCESSED / RAYTASKS_CLUSTER_STORAGE (used by a job whose config leaves
them relative). Every search prints `raytasks: dev <dev>, experiment <name>, ...` first:
`raytasks jobs` finds raw `ray job submit` jobs by that line.

Security: Ray's job API runs any code for whoever reaches it with the cluster's token. Every
port binds 127.0.0.1 unless `host` is set (config.toml / RAYTASKS_HOST; anything else prints
a warning), and Ray's token authentication stays on. Teammates reach a shared head through an
SSH port-forward. Dev tags protect the team from mistakes (stop/logs refuse another dev's
job without --force), not from someone holding the token.

Ports derive from the team's `port` P (dashboard + job server): GCS P+10000, Ray client
P+10001, then P+10002.. for each node's agents and P+11000.. (400 per node) for worker
processes, so teams with ports at least 1000 + 400 × nodes apart (2000 for 2 nodes) can run
heads on one machine. `cluster up` starts every
`ray start` in a session of its own and records those sessions and their processes (PID and
start time) in <temp dir>/raytasks-cluster.json; `cluster down` stops exactly those and
their descendants (SIGTERM, SIGKILL only for what is left after a grace period), never
another cluster or a process that merely mentions this one (`ray stop` kills every Ray).
"""

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from raytasks.core import config
from raytasks.core.constants import utc_stamp
from raytasks.core.paths import write_text
from raytasks.core.storage import Storage, run_dev

TOKEN_PATH = Path.home() / ".ray" / "auth_token"
EXCLUDES = [
    "/data/",
    "/runs/",
    ".venv",
    "/wandb/",
    ".git/",
    "/results/",
    "/models/",
    "/storage/",
    "__pycache__/",
]  # anchored: "data/" also dropped raytasks/data/
RECORD = "raytasks-cluster.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# the first line of every search's output (raytasks.tune.search.run): the tag the job ran under
MARKER = re.compile(r"^raytasks: dev (\S+), experiment (\S+),", re.M)
GRACE_S = 10  # SIGTERM, then this long before SIGKILL


class ClusterError(config.ConfigError):
    """Something to fix before the cluster can be used; the message says what."""


def temp_dir(port: int, node: int = 1) -> str:
    # short: Ray's unix socket paths must stay under ~107 characters
    return f"/tmp/raytasks-{port}" + ("" if node == 1 else f"-n{node}")


def node_ports(port: int, node: int) -> list[str]:
    base = port + 10002 + 8 * (node - 1)
    workers = port + 11000 + 400 * (node - 1)
    return [
        f"--node-manager-port={base}",
        f"--object-manager-port={base + 1}",
        f"--dashboard-agent-listen-port={base + 2}",
        f"--dashboard-agent-grpc-port={base + 3}",
        f"--runtime-env-agent-port={base + 4}",
        f"--metrics-export-port={base + 5}",
        f"--min-worker-port={workers}",
        f"--max-worker-port={workers + 399}",
    ]


def _psutil():
    """Ray ships psutil (ray/thirdparty_files, put on sys.path by `import ray`)."""
    import importlib

    import ray  # noqa: F401

    return importlib.import_module("psutil")


def token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or TOKEN_PATH).expanduser()


def ray_env() -> dict:
    """Environment for `ray` commands: this venv first on PATH, so jobs run its python."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def head_env(cfg: dict) -> dict:
    """The cluster's processes (and so every job's driver) get none of the head owner's
    raytasks / W&B settings, only the cluster's own data and storage folders."""
    env = {
        k: v
        for k, v in ray_env().items()
        if not k.startswith(("RAYTASKS_", "WANDB_")) and k not in ("MITDB_DIR", "RAY_ADDRESS")
    }
    env["RAYTASKS_CLUSTER_PROCESSED"] = str(config.where(cfg, "processed"))
    env["RAYTASKS_CLUSTER_STORAGE"] = Storage.from_setting(cfg["storage"]).uri
    return env


def node_ip(host: str) -> str | None:
    """The address Ray's GCS, raylets and agents bind to: loopback unless `host` says
    otherwise (None for 0.0.0.0 / :: = Ray picks this machine's address)."""
    if host in LOOPBACK:
        return "127.0.0.1"
    return None if host in ("0.0.0.0", "::", "") else host


def exposure_warning(cfg: dict) -> str | None:
    host, port = cfg["host"], cfg["port"]
    if host in LOOPBACK:
        return None
    return (
        f"warning: host {host!r} is not loopback: the job API ({port}), GCS ({port + 10000}),"
        f" Ray client ({port + 10001}) and node ports ({port + 10002}-{port + 11399}) accept"
        f" connections from other machines, and anyone who reaches them with the cluster's"
        f" token can run any code as {os.environ.get('USER', 'you')} here; prefer host "
        f"127.0.0.1 and `ssh -N -L {port}:127.0.0.1:{port}` for teammates"
    )


def job_address(cfg: dict) -> str:
    host = "127.0.0.1" if cfg["host"] in ("0.0.0.0", "::", "") else cfg["host"]
    return f"http://{host}:{cfg['port']}"


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
            f"{cfg['port']} <user>@<head>; and check `port` in config.toml"
        )
    if not token_path().exists() and not os.environ.get("RAY_AUTH_TOKEN"):
        raise ClusterError(
            f"no Ray auth token: copy the head's ~/.ray/auth_token to "
            f"{token_path()} (or set RAY_AUTH_TOKEN)"
        )


def shell_env(cfg: dict) -> str:
    """The exports after which `ray job submit` (and raytasks) reach this team's cluster."""
    record = load_record(cfg["port"])  # a head on this machine says where its storage is
    lines = [
        '# eval "$(raytasks cluster env)"',
        f"export RAY_ADDRESS={job_address(cfg)}",
        "export RAY_AUTH_MODE=token",
        f"export RAY_AUTH_TOKEN_PATH={shlex.quote(str(token_path()))}",
        f"export RAYTASKS_PORT={cfg['port']}",
    ]
    if record:
        lines.append(f"export RAYTASKS_STORAGE={shlex.quote(record['storage'])}")
    return "\n".join(lines)


def record_path(port: int) -> Path:
    return Path(temp_dir(port)) / RECORD


def load_record(port: int) -> dict | None:
    try:
        return json.loads(record_path(port).read_text())
    except (OSError, ValueError):
        return None


def save_record(record: dict) -> None:
    write_text(record_path(record["port"]), json.dumps(record, indent=2))


def session_members(sid: int) -> list[list]:
    """[pid, start time, session] of every process in session `sid`."""
    psutil = _psutil()

    members = []
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getsid(p.pid) == sid:
                members.append([p.pid, p.info["create_time"], sid])
        except (ProcessLookupError, PermissionError):
            continue
    return members


def ensure_token() -> None:
    if not token_path().exists() and not os.environ.get("RAY_AUTH_TOKEN"):
        subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "get-auth-token", "--generate"],
            env=ray_env(),
            capture_output=True,
            check=True,
        )


def up(cfg: dict, nodes: int = 1, cpus: int | None = None) -> str:
    """Start a head (dashboard + job server on host:port) and nodes-1 more raylets here."""
    port = cfg["port"]
    if reachable(cfg):
        raise ClusterError(
            f"something already answers at {job_address(cfg)}: "
            f"`make cluster-down` first, or pick another port"
        )
    ensure_token()
    ip = node_ip(cfg["host"])
    gcs = f"{ip or '127.0.0.1'}:{port + 10000}"
    commands = start_commands(cfg, ip, nodes, cpus)
    env = head_env(cfg)
    record = {
        "port": port,
        "host": cfg["host"],
        "nodes": nodes,
        "root": str(config.ROOT),
        "storage": env["RAYTASKS_CLUSTER_STORAGE"],
        "processed": env["RAYTASKS_CLUSTER_PROCESSED"],
        "processes": [],
    }
    for cmd in commands:
        # a session of its own: every process this `ray start` leaves running is in it
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        _, err = proc.communicate()
        record["processes"] += session_members(proc.pid)
        save_record(record)  # before the next start: `down` stops a half-started cluster too
        if proc.returncode != 0:
            down(cfg)
            raise ClusterError(f"`{' '.join(cmd[1:4])} ...` failed:\n{err[-1500:]}")
    wait_for_nodes(gcs, nodes)
    return job_address(cfg)


def start_commands(cfg: dict, ip: str | None, nodes: int, cpus: int | None) -> list[list]:
    """`ray start` for the head (dashboard + job server on host:port), then for each more
    raylet; every node on ports of its own (node_ports), under this port's temp dir."""
    port = cfg["port"]
    extra = ([f"--node-ip-address={ip}"] if ip else []) + ([f"--num-cpus={cpus}"] if cpus else [])
    ray = str(Path(sys.executable).parent / "ray")
    head = [
        ray,
        "start",
        "--head",
        f"--port={port + 10000}",
        f"--dashboard-host={cfg['host']}",
        f"--dashboard-port={port}",
        f"--ray-client-server-port={port + 10001}",
        f"--temp-dir={temp_dir(port)}",
        "--include-dashboard=true",
        "--disable-usage-stats",
        *node_ports(port, 1),
    ]
    gcs = f"{ip or '127.0.0.1'}:{port + 10000}"
    more = [
        [
            ray,
            "start",
            f"--address={gcs}",
            f"--temp-dir={temp_dir(port, n)}",
            "--disable-usage-stats",
            *node_ports(port, n),
        ]
        for n in range(2, nodes + 1)
    ]
    return [[*cmd, *extra] for cmd in [head, *more]]


def wait_for_nodes(gcs: str, nodes: int, timeout: float = 60) -> None:
    import ray

    ray.init(address=gcs, log_to_driver=False, configure_logging=False)
    try:
        deadline = time.time() + timeout
        while sum(n["Alive"] for n in ray.nodes()) < nodes:
            if time.time() > deadline:
                raise ClusterError(
                    f"only {sum(n['Alive'] for n in ray.nodes())} of {nodes} nodes came up"
                )
            time.sleep(0.5)
    finally:
        ray.shutdown()


def cluster_processes(record: dict) -> list:
    """The recorded processes still alive (same PID *and* start time), every other process
    of their sessions, and all their descendants (workers, job drivers, trials)."""
    psutil = _psutil()

    found, sessions = {}, set()
    for pid, created, sid in record["processes"]:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 0.01:
                found[pid] = p
                sessions.add(sid)  # a live member keeps its session id from being reused
        except psutil.NoSuchProcess:
            continue
    for sid in sessions:
        for pid, _, _ in session_members(sid):
            try:
                found.setdefault(pid, psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def terminate(procs: list) -> list[str]:
    """SIGTERM, then SIGKILL for whatever is still there after GRACE_S; names of those."""
    psutil = _psutil()

    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    names = []
    for p in alive:
        try:
            names.append(p.name())
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return names


def reports_to_gcs(proc) -> bool:
    """A raylet or the autoscaler's monitor (not the log monitor)."""
    psutil = _psutil()

    try:
        return proc.name() == "raylet" or any(
            os.path.basename(arg) == "monitor.py" for arg in proc.cmdline()
        )
    except psutil.Error:
        return False


def down(cfg: dict) -> tuple[int, list[str]]:
    """Stop the processes this port's `cluster up` started: (how many, names of those that
    needed SIGKILL)."""
    record = load_record(cfg["port"])
    if record is None:
        if reachable(cfg):
            raise ClusterError(
                f"the cluster at {job_address(cfg)} was not started by "
                f"`raytasks cluster up` here (no {record_path(cfg['port'])}): "
                f"stop it where it was started"
            )
        return 0, []
    procs = cluster_processes(record)
    # the raylets and the autoscaler's monitor first, while the GCS is there to hear that
    # they are going: stopped together with it, each waits out an RPC timeout to the gone
    # GCS and needs SIGKILL (a 2-node cluster: 12 s, 6 killed; in this order ~5 s, none)
    first = [p for p in procs if reports_to_gcs(p)]
    killed = terminate(first)
    killed += terminate([p for p in procs if p not in first])
    for n in range(1, record.get("nodes", 1) + 1):
        shutil.rmtree(temp_dir(cfg["port"], n), ignore_errors=True)
    return len(procs), killed


# -- several machines: Ray's cluster launcher (`ray up`) with cluster.yaml ------------------

CLUSTER_YAML = config.ROOT / "cluster.yaml"
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]*")  # an IPv4/IPv6 address or a host name


def render(
    head: str,
    workers: list[str],
    user: str | None = None,
    key: str | None = None,
    template: Path = CLUSTER_YAML,
) -> str:
    """cluster.yaml with the team's machines filled in: provider.head_ip, worker_ips,
    max_workers (= the workers) and the SSH user / key; everything else as shipped, so the
    file in git keeps its placeholders and `ray up` gets the real machines."""
    import yaml

    for host in [head, *workers]:
        if not HOST.fullmatch(host):
            raise ClusterError(f"{host!r} is not an IP address or host name")
    if not workers:
        raise ClusterError("give at least one --worker")
    if len(set(workers)) < len(workers) or head in workers:
        raise ClusterError(f"each machine once: head {head}, workers {', '.join(workers)}")
    try:
        cluster = yaml.safe_load(Path(template).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClusterError(f"cannot read {template}: {e}") from None
    cluster["provider"] |= {"head_ip": head, "worker_ips": list(workers)}
    cluster["max_workers"] = len(workers)
    if user:
        cluster["auth"]["ssh_user"] = user
    if key:
        cluster["auth"]["ssh_private_key"] = key
    header = f"# {Path(template).name} with the machines filled in (raytasks cluster render)\n"
    return header + yaml.safe_dump(cluster, sort_keys=False, width=1000)


def client(cfg: dict):
    from ray.job_submission import JobSubmissionClient

    require_cluster(cfg)
    return JobSubmissionClient(job_address(cfg))


def submit(cfg: dict, space: str, args: list[str]) -> str:
    """`ray job submit` a search as this dev: id <dev>-<space>-<utc>, metadata {dev, space},
    this checkout uploaded as the working dir, the dev tag and explicit (absolute or URI)
    storage / data settings in the runtime env; relative ones mean the cluster's."""
    from raytasks.tune.spaces import load_space

    dev = run_dev(cfg)
    if any(a == "--dev" or a.startswith("--dev=") for a in args):
        raise ClusterError(
            "give your tag to `raytasks submit --dev` (or config.toml), not to "
            "the search's arguments"
        )
    load_space(space)  # a malformed space fails here, not on the cluster
    jobs = client(cfg)
    submission_id = f"{dev}-{space}-{utc_stamp()}"
    env_vars = {
        "RAYTASKS_DEV": dev,
        "RAYTASKS_EXPERIMENT": submission_id,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for key in ("storage", "processed"):
        value = str(cfg[key])
        if "://" in value or Path(value).expanduser().is_absolute():
            env_vars[f"RAYTASKS_{key.upper()}"] = value
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        if os.environ.get(var):
            env_vars[var] = os.environ[var]
    entrypoint = " ".join(
        ["python", "-m", "raytasks.tune", "--space", space, *map(shlex.quote, args)]
    )
    jobs.submit_job(
        entrypoint=entrypoint,
        submission_id=submission_id,
        metadata={
            "dev": dev,
            "space": space,  # job_name: the dashboard's Name
            "job_name": job_name(dev, space, args),
        },
        runtime_env={"working_dir": str(config.ROOT), "excludes": EXCLUDES, "env_vars": env_vars},
    )
    return submission_id


def job_name(dev: str, space: str, args: list[str]) -> str:
    return " ".join([f"{dev}: tune --space {space}", *args])[:120]


def tail(text: str, lines: int | None) -> str:
    """The last `lines` lines of text (all of it for None)."""
    if lines is None:
        return text
    return "".join(text.splitlines(keepends=True)[-lines:]) if lines > 0 else ""


def follow(jobs, submission_id: str, lines: int | None, echo, every: float = 2.0) -> str:
    """Print a job's log (its last `lines` lines first), then what it adds, until it ends;
    returns its final status."""
    from ray.job_submission import JobStatus

    seen = jobs.get_job_logs(submission_id)
    echo(tail(seen, lines))
    while True:
        status = jobs.get_job_status(submission_id)  # before reading: no line is missed
        logs = jobs.get_job_logs(submission_id)
        echo(logs[len(seen) :])
        seen = logs
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status)
        time.sleep(every)


def wait_for(jobs, submission_id: str, timeout: float = 3600) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = jobs.get_job_status(submission_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status)
        time.sleep(2)
    raise ClusterError(f"{submission_id} still running after {timeout:.0f} s")


def ran_as(jobs, job) -> tuple[str, str] | None:
    """(dev, experiment) from the first line a search prints, when the job has printed it."""
    if not job.submission_id or "raytasks" not in (job.entrypoint or ""):
        return None
    try:
        match = MARKER.search(jobs.get_job_logs(job.submission_id))
    except RuntimeError:
        return None
    return match.groups() if match else None


def owner(jobs, job) -> str | None:
    """The dev a job belongs to: `raytasks submit`'s metadata, a RAYTASKS_DEV in its runtime
    env, else the tag the search printed it runs under (raw `ray job submit`)."""
    dev = (job.metadata or {}).get("dev") or (
        ((job.runtime_env or {}).get("env_vars") or {}).get("RAYTASKS_DEV")
    )
    if dev:
        return dev
    found = ran_as(jobs, job)
    return found[0] if found else None


def list_jobs(cfg: dict, everyone: bool = False) -> list[tuple]:
    """[(owner, job)] of this dev's jobs (of every submitted job with everyone=True)."""
    dev = None if everyone else run_dev(cfg)
    jobs = client(cfg)
    found = [(owner(jobs, j), j) for j in jobs.list_jobs() if j.submission_id]
    return [(o, j) for o, j in found if everyone or o == dev]


def job_info(jobs, submission_id: str, missing: str):
    """The job's info from the cluster; `missing` is the one-line error when there is none."""
    try:
        return jobs.get_job_info(submission_id)
    except RuntimeError:
        raise ClusterError(missing) from None


def own_job(cfg: dict, submission_id: str, force: bool, action: str):
    """(client, owner) for a job this dev may act on; another dev's job is refused."""
    dev = run_dev(cfg)
    jobs = client(cfg)
    job = job_info(
        jobs,
        submission_id,
        f"no job {submission_id!r} on {job_address(cfg)} (`raytasks jobs` lists yours)",
    )
    who = owner(jobs, job)
    if who != dev and not force:
        whose = f"{who}'s job" if who else "a job without a dev tag"
        raise ClusterError(
            f"{submission_id} is {whose}, not yours ({dev}): not {action} it "
            f"(--force to do it anyway)"
        )
    return jobs, who


def job_table(found: list[tuple]) -> str:
    if not found:
        return "no jobs for this dev tag"
    rows = [f"{'submission id':<40}{'dev':<12}{'status':<11}{'started (UTC)':<21}entrypoint"]
    for who, j in sorted(found, key=lambda oj: oj[1].start_time or 0):
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((j.start_time or 0) / 1000))
        rows.append(
            f"{j.submission_id:<40}{who or '?':<12}{j.status!s:<11}{start:<21}{j.entrypoint}"
        )
    return "\n".join(rows)


def find_experiment(cfg: dict, store: Storage, name: str) -> tuple[str, str]:
    """(dev, experiment) for an experiment name (this dev's first, then anyone's) or for a
    submission id (the experiment the job printed it runs)."""
    mine = store.dev(run_dev(cfg))
    for area in [mine] + [a for a in store.devs() if a.dev != mine.dev]:
        if area.exists("results", name) or area.exists("runs", name):
            return area.dev, name
    jobs = client(cfg)
    job = job_info(
        jobs,
        name,
        f"{name!r} is neither an experiment in {store.uri} nor a job on {job_address(cfg)}",
    )
    found = ran_as(jobs, job)
    if not found:
        raise ClusterError(f"job {name} ({job.status}) has not started a raytasks search")
    return found


def pull(cfg: dict, name: str) -> tuple[dict, list[Path], Path]:
    """A finished search's exported models -> models/<tag>/, its results (rows, plot,
    job.json) -> results/<experiment>/, its rows merged into results/leaderboard.csv."""
    import pandas as pd

    from raytasks.tune.leaderboard import sync as sync_leaderboard

    store = Storage.from_setting(cfg["storage"])
    dev, exp = find_experiment(cfg, store, name)
    area = store.dev(dev)
    if not area.exists("results", exp, "job.json"):
        raise ClusterError(
            f"{dev}'s search {exp} has not finished: no results in {area.results(exp)} yet"
        )
    info = json.loads(area.read_bytes("results", exp, "job.json"))
    models = config.where(cfg, "models")
    pulled = [area.get_dir(models / tag, "models", tag) for tag in info["models"]]
    results = config.where(cfg, "results")
    local = area.get_dir(results / exp, "results", exp)
    if (local / "leaderboard.csv").exists():
        sync_leaderboard(pd.read_csv(local / "leaderboard.csv"), results)
    return info, pulled, local
