"""`ray up cluster.yaml` on simulated machines: tests/scenarios/ray_up_hosts.sh (a head, two
workers and a teammate's laptop as network namespaces running sshd on a private bridge; the
shipped cluster.yaml filled in by `raytasks cluster render`; a teammate's `ray job submit`
through an SSH tunnel with the head's token; trials on both workers; `raytasks pull`;
`ray down` leaving no Ray process). Skipped where it cannot run (not root, no sshd); CI
sets RAYTASKS_REQUIRE_HOSTS=1, which turns that skip into a failure."""

import os
import re
import shutil
import signal
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "scenarios" / "ray_up_hosts.sh"
TOOLS = ("/usr/sbin/sshd", "ssh", "scp", "ssh-keygen", "rsync", "curl", "ip", "unshare", "setpriv")
TIMEOUT_S = 1200  # under 2 minutes on an idle 2-core machine; up to 16 on a busy one


def cannot_run() -> str | None:
    """Why the scenario cannot run here; None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd)"
    gone = [tool for tool in TOOLS if not shutil.which(tool)]
    if gone:
        return f"needs {', '.join(gone)} (apt-get install openssh-server rsync)"
    if subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True).returncode:
        return "unshare --net --mount is refused here"
    return None


@pytest.mark.cluster
@pytest.mark.slow
def test_ray_up_on_simulated_hosts(mitdb):
    why = cannot_run()
    if why and os.environ.get("RAYTASKS_REQUIRE_HOSTS") == "1":
        pytest.fail(f"RAYTASKS_REQUIRE_HOSTS=1 but the scenario {why}")
    if why:
        pytest.skip(f"ray up on simulated hosts {why}")
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)],
        env={**os.environ, "MITDB_DIR": str(mitdb)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one killpg ends it; its hosts die with it (pdeathsig)
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n(killed after {TIMEOUT_S} s)"
    finally:
        work = re.search(r"work dir (\S+)", out or "")
        if work:  # the script removes it, unless it was killed
            shutil.rmtree(work.group(1), ignore_errors=True)
    assert proc.returncode == 0, out[-8000:]
    assert re.search(r"trials ran on .*10\.77\.0\.11.*10\.77\.0\.12", out), out[-3000:]
    assert "no Ray process left on head w1 w2" in out, out[-3000:]
