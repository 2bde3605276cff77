"""raytasks cluster | submit | jobs | logs | stop | pull | leaderboard, and the
`raytasks job` group that names them as `ray job` does."""

from pathlib import Path

import click

from raytasks.cli.common import Group, examples, main
from raytasks.core import config, paths


@main.group(
    cls=Group,
    epilog=examples(
        "raytasks cluster up --nodes 2", 'eval "$(raytasks cluster env)"', "raytasks cluster down"
    ),
)
def cluster():
    """A local Ray head (dashboard + job server on 127.0.0.1:<port>) and extra raylets."""


@cluster.command(
    "up", epilog=examples("raytasks cluster up", "raytasks cluster up --nodes 2 --cpus 2")
)
@click.option(
    "--nodes",
    type=click.IntRange(1, 8),
    default=1,
    help="Raylets on this machine (2 acts as a 2-node cluster).",
)
@click.option(
    "--cpus",
    type=click.IntRange(1),
    default=None,
    show_default="all",
    help="CPUs each node offers.",
)
def cluster_up(nodes, cpus):
    """Start the team's head on this machine (port from config.toml / RAYTASKS_PORT)."""
    from raytasks.team import cluster as rc

    cfg = config.load()
    warning = rc.exposure_warning(cfg)
    if warning:
        click.echo(warning, err=True)
    address = rc.up(cfg, nodes, cpus)
    click.echo(f"Ray cluster up: {nodes} node(s); dashboard and job server at {address}")
    click.echo("teammates (and you), in a shell of your own checkout:")
    click.echo(rc.shell_env(cfg))


@cluster.command("env", epilog=examples('eval "$(raytasks cluster env)"'))
def cluster_env():
    """Shell exports for the raw Ray CLI: eval "$(raytasks cluster env)"."""
    from raytasks.team import cluster as rc

    click.echo(rc.shell_env(config.load()))


@cluster.command(
    "render",
    epilog=examples(
        "raytasks cluster render --head 10.0.0.10 --worker 10.0.0.11 --worker 10.0.0.12 "
        "--user alice -o cluster.local.yaml",
        "ray up cluster.local.yaml --yes --no-config-cache",
    ),
)
@click.option("--head", required=True, help="The head machine's IP address (or host name).")
@click.option("--worker", "workers", multiple=True, required=True, help="A worker machine.")
@click.option("--user", default=None, show_default="cluster.yaml's", help="SSH user on them.")
@click.option("--key", default=None, show_default="cluster.yaml's", help="SSH private key.")
@click.option(
    "--config",
    "template",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default="cluster.yaml",
    help="The launcher config to fill in.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default="stdout",
    help="Write it here.",
)
def cluster_render(head, workers, user, key, template, out):
    """cluster.yaml with your machines filled in, for `ray up` on several machines (the
    shipped file keeps its placeholders)."""
    from raytasks.team import cluster as rc

    text = rc.render(head, list(workers), user, key, template or rc.CLUSTER_YAML)
    if out is None:
        click.echo(text, nl=False)
    else:
        paths.write_text(out, text)
        click.echo(f"{out}: ray up {out} --yes --no-config-cache")


@cluster.command("down", epilog=examples("raytasks cluster down"))
def cluster_down():
    """Stop the processes this port's `cluster up` started (nothing else)."""
    from raytasks.team import cluster as rc

    n, killed = rc.down(config.load())
    click.echo(
        f"stopped {n} process(es)"
        + (
            f"; still running {rc.GRACE_S} s after SIGTERM, killed: {', '.join(killed)}"
            if killed
            else ""
        )
        if n
        else "no cluster started by `raytasks cluster up` on this port"
    )


@main.command(
    "submit",
    context_settings={"ignore_unknown_options": True},
    epilog=examples(
        "raytasks submit --space cnn1d -- --samples 2 --max-epochs 2",
        "raytasks submit --space all --follow -- --archs gru,cnn1d --samples 20 --export",
    ),
)
@click.option("--space", required=True, help="Search space to run (searchspaces/<SPACE>.toml).")
@click.option(
    "--dev", default=None, show_default="config.toml / RAYTASKS_DEV", help="Your dev tag."
)
@click.option(
    "--storage",
    default=None,
    show_default="config.toml; relative = the cluster's",
    help="Team storage.",
)
@click.option("--wait", is_flag=True, help="Wait until the job ends.")
@click.option("-f", "--follow", is_flag=True, help="Print the job's log until it ends.")
@click.argument("tune_args", nargs=-1, type=click.UNPROCESSED)
def submit_cmd(space, dev, storage, wait, follow, tune_args):
    """`ray job submit` a search as you: python -m raytasks.tune --space SPACE TUNE_ARGS."""
    from raytasks.team import cluster as rc

    cfg = config.load(dev=dev, storage=storage)
    job = rc.submit(cfg, space, list(tune_args))
    click.echo(f"submitted {job} to {rc.job_address(cfg)}")
    click.echo(
        f"follow: raytasks logs {job}   status: raytasks jobs   "
        f"dashboard: {rc.job_address(cfg)}   afterwards: raytasks pull {job}"
    )
    if follow:
        status = rc.follow(rc.client(cfg), job, None, lambda text: click.echo(text, nl=False))
    if wait and not follow:
        status = rc.wait_for(rc.client(cfg), job)
    if wait or follow:
        click.echo(f"{job}: {status}")
        if status != "SUCCEEDED":
            raise click.ClickException(f"{job} ended {status}; see raytasks logs {job}")


@main.command("jobs", epilog=examples("raytasks jobs", "raytasks jobs --all"))
@click.option("--all", "everyone", is_flag=True, help="Every dev's jobs, with their owner.")
def jobs_cmd(everyone):
    """Your jobs on the cluster (raytasks submit or raw ray job submit) and their status."""
    from raytasks.team import cluster as rc

    click.echo(rc.job_table(rc.list_jobs(config.load(), everyone)))


@main.command(
    "logs",
    epilog=examples(
        "raytasks logs alice-gru-20250101T120000Z --tail 40",
        "raytasks logs alice-gru-20250101T120000Z --follow",
    ),
)
@click.argument("job")
@click.option(
    "--tail",
    "lines",
    type=click.IntRange(0),
    default=None,
    show_default="all",
    help="Only the last N lines (with --follow: then the new ones).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--force", is_flag=True, help="Read another dev's job too.")
def logs_cmd(job, lines, follow, force):
    """One of your jobs' logs (JOB: its submission id, from `raytasks jobs`)."""
    from raytasks.team import cluster as rc

    jobs, _ = rc.own_job(config.load(), job, force, "reading")
    if not follow:
        click.echo(rc.tail(jobs.get_job_logs(job), lines), nl=False)
        return
    status = rc.follow(jobs, job, lines, lambda text: click.echo(text, nl=False))
    click.echo(f"{job}: {status}")


@main.command("stop", epilog=examples("raytasks stop alice-gru-20250101T120000Z"))
@click.argument("job")
@click.option("--force", is_flag=True, help="Stop another dev's job too (says whose).")
def stop_cmd(job, force):
    """Stop one of your running jobs."""
    from raytasks.team import cluster as rc

    cfg = config.load()
    jobs, who = rc.own_job(cfg, job, force, "stopping")
    stopped = jobs.stop_job(job)
    whose = "" if who == cfg["dev"] else f"{who or 'untagged'}'s job "
    click.echo(f"{whose}{job}: {'stop requested' if stopped else 'not running'}")


@main.command("pull", epilog=examples("raytasks pull alice-gru-20250101T120000Z"))
@click.argument("name")
def pull_cmd(name):
    """Copy a finished search (submission id or experiment) from storage: its exported
    models into models/, its rows and plot into results/<experiment>/, and its rows into
    results/leaderboard.csv."""
    from raytasks.team import cluster as rc

    info, models, local = rc.pull(config.load(), name)
    click.echo(f"{info['dev']}'s {info['experiment']}: {info['trials']} trial(s) -> {local}")
    for m in models:
        click.echo(f"model: {m}   (raytasks evaluate --model {m})")
    if not models:
        click.echo("no exported model (search without --export)")


@main.command("leaderboard", epilog=examples("raytasks leaderboard --top 5"))
@click.option("--top", type=int, default=15, help="Rows to print.")
def leaderboard_cmd(top):
    """The team leaderboard: every dev's rows in storage merged into results/leaderboard.csv
    (+ leaderboard.png); prints the best trials."""
    from raytasks.core.storage import Storage, team_rows
    from raytasks.tune.leaderboard import board_table
    from raytasks.tune.leaderboard import sync as sync_leaderboard

    cfg = config.load()
    store = Storage.from_setting(cfg["storage"])
    results = config.where(cfg, "results")
    board = sync_leaderboard(team_rows(store), results)
    click.echo(board_table(board, top))
    click.echo(
        f"{len(board)} rows from {board['dev'].nunique() if len(board) else 0} dev(s) "
        f"({store.uri} + earlier rows) -> {results / 'leaderboard.csv'} (+ .png)"
    )


@main.group(
    "job",
    cls=Group,
    epilog=examples(
        "raytasks job submit --space gru -- --samples 20",
        "raytasks job list",
        "raytasks job logs alice-gru-20250101T120000Z --follow",
    ),
)
def job_group():
    """Your searches on the team's cluster, named as `ray job` names them: submit, list,
    logs, stop, pull. The top-level submit, jobs, logs, stop and pull are the same commands."""


for _name, _cmd in (
    ("submit", submit_cmd),
    ("list", jobs_cmd),
    ("logs", logs_cmd),
    ("stop", stop_cmd),
    ("pull", pull_cmd),
):
    job_group.add_command(_cmd, _name)
