#!/usr/bin/env bash
# `ray up cluster.yaml` on simulated machines: a head, two workers and a teammate's laptop,
# each a network namespace on a private bridge (10.77.0.0/24) with its own process table,
# /tmp and home, the hosts running sshd. From the laptop: `raytasks cluster render` the
# shipped cluster.yaml for these hosts, `ray up`, copy the head's token, tunnel the
# dashboard port (`ssh -N -L`), `ray job submit` a tiny search from a teammate's checkout,
# check that both workers ran trials, `raytasks pull`, `ray down`; then check that no Ray
# process is left on any host.
#
#   tests/scenarios/ray_up_hosts.sh        # as root; tests/test_ray_up_hosts.py runs it
#
# Needs root, sshd (openssh-server), rsync, ip, unshare, setpriv and the project's .venv.
# It makes its own network and mount namespaces first, so nothing it starts reaches outside
# this machine and its mounts vanish with it; the hosts die with this script (SIGKILL
# included). The hosts share this machine's files but for /tmp and /home/root (root's home
# inside the scenario): each host's is a folder under $WORK, prepared as a machine the
# launcher has set up before (a venv, raw records, built shards), so cluster.yaml's own
# setup_commands run unchanged and skip what is done: the hosts reach no registry.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SELF="$ROOT/tests/scenarios/ray_up_hosts.sh"
NET=10.77.0
declare -A IP=([head]=$NET.10 [w1]=$NET.11 [w2]=$NET.12 [laptop]=$NET.20)
HOSTS=(head w1 w2)
SLICE=(118 208 232) # the test records (tests/conftest.py SLICE)
PORT=8265           # cluster.yaml's dashboard port
SEARCH="--space cnn1d --samples 3 --concurrency 3 --cpus-per-trial 1.5 --max-epochs 1 --grace 1 --no-wandb --export"
SSH=(-i /home/root/.ssh/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=no
	-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=5)

say() { echo "[ray_up_hosts $(date +%T)] $*"; }
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# -- on this machine ----------------------------------------------------------------------

preflight() {
	[ "$(id -u)" = 0 ] || fail "needs root (namespaces, sshd)"
	for tool in /usr/sbin/sshd ssh scp ssh-keygen rsync curl ip unshare setpriv; do
		command -v "$tool" >/dev/null || fail "needs $tool (apt-get install openssh-server rsync)"
	done
	[ -x "$ROOT/.venv/bin/ray" ] || fail "needs the project's venv: make .venv/.installed"
	MITDB=${MITDB_DIR:-$(dirname "$ROOT")/shared/data/mitdb}
	[ -e "$MITDB/118.hea" ] || fail "raw MIT-BIH records not found at $MITDB; set MITDB_DIR"
}

main() {
	preflight
	WORK=$(mktemp -d /var/tmp/raytasks-hosts.XXXXXX) # not /tmp: each host has its own
	export WORK MITDB
	say "work dir $WORK"
	local rc=0
	# private network (only the bridge) and mounts for everything below; killed with this
	setpriv --pdeathsig KILL unshare --net --mount --propagation private "$SELF" scenario || rc=$?
	rm -rf "$WORK"
	[ $rc = 0 ] && say "passed" || say "failed ($rc)"
	return $rc
}

# -- in the scenario's namespaces -----------------------------------------------------------

scenario() {
	ip link set lo up
	# ip netns keeps its handles in /run/netns; root's home is /home/root for every host
	mount -t tmpfs -o mode=755 tmpfs /run
	mkdir -p /run/netns /run/sshd
	mount -t tmpfs -o mode=755 tmpfs /home
	mkdir -m 700 /home/root
	sed -E 's|^(root:[^:]*:0:0:[^:]*:)[^:]*|\1/home/root|' /etc/passwd >"$WORK/passwd"
	mount --bind "$WORK/passwd" /etc/passwd
	# a checkout under /tmp (a CI clone) would vanish under each host's own /tmp: keep a
	# handle on it here, and `private_tmp` binds it back in place on every host
	mkdir "$WORK/checkout" && mount --bind "$ROOT" "$WORK/checkout"

	prepare
	network
	trap stop_hosts EXIT
	for h in "${HOSTS[@]}"; do start_host "$h"; done
	say "laptop: render, ray up, token, tunnel, submit, pull, ray down"
	"${IN_HOST[@]}" laptop "${UNSHARE[@]}" "$SELF" laptop
	check_nothing_left
}

prepare() {
	say "preparing $WORK: keys, data, each host's home"
	ssh-keygen -q -t ed25519 -N '' -f "$WORK/id_ed25519"
	ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
	cat >"$WORK/sshd_config" <<-EOF
		HostKey $WORK/host_key
		PidFile none
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		UsePAM no
		AllowTcpForwarding local
		X11Forwarding no
		PrintMotd no
		Subsystem sftp internal-sftp
	EOF
	/usr/sbin/sshd -t -f "$WORK/sshd_config"
	mkdir "$WORK/mitdb"
	for r in "${SLICE[@]}"; do cp -a "$MITDB/$r".{hea,dat,atr} "$WORK/mitdb/"; done
	# the shards every host has built before (default parameters: `data build` skips them)
	"$ROOT/.venv/bin/raytasks" data build --scheme all --records "$WORK/mitdb" \
		--out "$WORK/processed" >"$WORK/data-build.log" 2>&1 ||
		fail "data build: $(tail -5 "$WORK/data-build.log")"
	for h in "${HOSTS[@]}"; do prepare_home "$h"; done
	mkdir -p -m 700 "$WORK/hosts/laptop/home/.ssh"
	cp "$WORK"/id_ed25519* "$WORK/hosts/laptop/home/.ssh/"
}

prepare_home() { # a machine set up by an earlier `ray up`: venv, records, shards
	local home="$WORK/hosts/$1/home"
	mkdir -p -m 700 "$home/.ssh" "$home/raytasks/data/raw"
	cp "$WORK/id_ed25519.pub" "$home/.ssh/authorized_keys"
	# the venv: made by this checkout's Python, with this checkout's venv's packages (a .pth
	# line, as --system-site-packages would), raytasks from ~/raytasks (as `pip install -e .`
	# there makes it) and the two commands cluster.yaml runs; its .installed stamp is new
	local venv="$home/raytasks/.venv" site=lib/python3.11/site-packages python
	python=$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
	"$python" -m venv --without-pip "$venv"
	printf '%s\n' /home/root/raytasks "$ROOT/.venv/$site" >"$venv/$site/raytasks-host.pth"
	for cmd in ray raytasks; do
		sed "1s|.*|#!/home/root/raytasks/.venv/bin/python|" "$ROOT/.venv/bin/$cmd" >"$venv/bin/$cmd"
		chmod +x "$venv/bin/$cmd"
	done
	touch "$venv/.installed"
	cp -a "$WORK/mitdb" "$home/raytasks/data/raw/mitdb"
	cp -a "$WORK/processed" "$home/raytasks/data/processed"
	# a worker's raylet outlives `ray down` by Ray's GCS reconnect timeout (60 s: see
	# cluster.yaml); 20 s here proves the same chain a minute sooner. Ray's command runner
	# sources ~/.bashrc before every command, `ray start --block` included
	[[ $1 == w* ]] && echo "export RAY_gcs_rpc_server_reconnect_timeout_s=20" >"$home/.bashrc"
	return 0
}

network() {
	ip link add br0 type bridge
	ip addr add "$NET.1/24" dev br0
	ip link set br0 up
	for h in "${!IP[@]}"; do
		ip netns add "$h"
		ip link add "v-$h" type veth peer name eth0 netns "$h"
		ip link set "v-$h" master br0 up
		ip -n "$h" link set lo up
		ip -n "$h" addr add "${IP[$h]}/24" dev eth0
		ip -n "$h" link set eth0 up
		# a default route, as on a real machine: Ray finds its node IP by routing
		ip -n "$h" route add default via "$NET.1"
	done
}

# "${IN_HOST[@]}" NAME "${UNSHARE[@]}" CMD: CMD as the first process of a new process table
# in host NAME's network namespace, with mounts of its own; killed with this script (a
# simple command, so that its parent is this script: what --pdeathsig watches)
IN_HOST=(setpriv --pdeathsig KILL ip netns exec)
UNSHARE=(unshare --mount --pid --fork --kill-child --mount-proc --propagation private)

declare -A HOST_PID
start_host() {
	"${IN_HOST[@]}" "$1" "${UNSHARE[@]}" "$SELF" host "$1" &
	HOST_PID[$1]=$!
}

stop_hosts() { # SIGKILL to a host's unshare kills its process table's first process: all
	local rc=$?
	[ $rc = 0 ] || dump_logs
	for h in "${!HOST_PID[@]}"; do kill -KILL "${HOST_PID[$h]}" 2>/dev/null || true; done
	wait 2>/dev/null || true
	exit $rc
}

host_pids() { ip netns pids "$1" 2>/dev/null || true; }

# every process of a host but its first (bash) and sshd: Ray's, once `ray down` ran
ray_left() {
	local pids
	pids=$(host_pids "$1" | paste -sd,)
	[ -n "$pids" ] || return 0
	ps -o pid=,stat=,args= -p "$pids" | awk '$2 !~ /^Z/ && !/sshd|ray_up_hosts\.sh/'
}

check_nothing_left() {
	say "after ray down: waiting for every host's Ray processes to end"
	local start=$SECONDS left seen=
	while :; do
		left=$(for h in "${HOSTS[@]}"; do ray_left "$h" | sed "s/^/$h: /"; done)
		[ -z "$left" ] && break
		if [ "$left" != "$seen" ]; then # what is still running, as it changes
			say "$((SECONDS - start)) s: $(awk '{print $1, $4}' <<<"$left" | sort -u | paste -sd' ')"
			seen=$left
		fi
		[ $((SECONDS - start)) -lt 180 ] || fail "Ray processes left 180 s after ray down:
$left"
		sleep 3
	done
	say "no Ray process left on ${HOSTS[*]} ($((SECONDS - start)) s after ray down)"
	for h in w1 w2; do # what ended the worker: its `ray start --block` (cluster.yaml)
		echo "$h: $(tail -n 1 "/proc/${HOST_PID[$h]}/root/tmp/raytasks-worker.log" 2>&1)"
	done
}

dump_logs() {
	echo "--- logs (scenario failed) ---" >&2
	for f in "$WORK"/ray-up.log "$WORK"/submit.log; do
		[ -f "$f" ] && { echo "== $f" && tail -n 40 "$f"; } >&2
	done
	for h in "${HOSTS[@]}"; do
		local pid logs
		pid=$(host_pids "$h" | head -1)
		logs=/proc/$pid/root/tmp/ray/session_latest/logs
		for f in "$logs"/monitor.log "$logs"/raylet.out "$WORK/hosts/$h/sshd.log"; do
			[ -n "$pid" ] && [ -f "$f" ] && { echo "== $h: ${f##*/}" && tail -n 25 "$f"; } >&2
		done
	done
	true
}

# -- on a host: sshd, and pid 1 reaping what Ray's daemons leave behind ----------------------

private_tmp() { # a host's own /tmp, with the checkout (and its venv) where it was
	mount -t tmpfs tmpfs /tmp
	if [[ $ROOT == /tmp/* ]]; then
		mkdir -p "$ROOT" && mount --bind "$WORK/checkout" "$ROOT"
	fi
}

host() {
	mount --bind "$WORK/hosts/$1/home" /home/root
	private_tmp
	/usr/sbin/sshd -D -e -f "$WORK/sshd_config" -o "ListenAddress=${IP[$1]}" \
		2>>"$WORK/hosts/$1/sshd.log" &
	wait $! # bash's wait also reaps the orphans this first process adopts
}

# -- on the laptop: the admin's and a teammate's commands -----------------------------------

laptop() {
	mount --bind "$WORK/hosts/laptop/home" /home/root
	private_tmp
	export HOME=/home/root PATH="$ROOT/.venv/bin:$PATH" RAY_USAGE_STATS_ENABLED=0
	unset RAY_ADDRESS RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH
	local head=${IP[head]} w1=${IP[w1]} w2=${IP[w2]}
	for h in "${HOSTS[@]}"; do wait_for_ssh "${IP[$h]}"; done

	say "raytasks cluster render + ray up"
	raytasks cluster render --head "$head" --worker "$w1" --worker "$w2" --user root \
		--key ~/.ssh/id_ed25519 -o "$WORK/cluster.yaml"
	cd "$ROOT" # ray up copies "." (file_mounts) to ~/raytasks on every host
	timeout 360 ray up "$WORK/cluster.yaml" --yes --no-config-cache >"$WORK/ray-up.log" 2>&1 ||
		fail "ray up ($?)"

	say "teammate: the head's token, the tunnel"
	mkdir -p ~/.ray
	scp -q "${SSH[@]}" "root@$head:.ray/auth_token" ~/.ray/auth_token
	ssh -N -L "$PORT:127.0.0.1:$PORT" -o ExitOnForwardFailure=yes "${SSH[@]}" "root@$head" &
	wait_for_url "http://127.0.0.1:$PORT/api/version"
	! curl -s -m 5 "http://$head:$PORT/api/version" >/dev/null ||
		fail "the dashboard answers on $head:$PORT, not only on the head's 127.0.0.1"
	local code
	code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/jobs/")
	[ "$code" = 401 ] || [ "$code" = 403 ] || fail "the job API without the token: HTTP $code"
	wait_for_nodes 3

	teammate_search
	say "ray down"
	cd "$ROOT"
	timeout 120 ray down "$WORK/cluster.yaml" --yes >"$WORK/ray-down.log" 2>&1 ||
		fail "ray down ($?): $(tail -5 "$WORK/ray-down.log")"
	grep -q "Exception occurred when stopping" "$WORK/ray-down.log" &&
		fail "ray down could not stop Ray on the head: $(cat "$WORK/ray-down.log")"
	true
}

wait_for_ssh() {
	for _ in $(seq 50); do ssh "${SSH[@]}" "root@$1" true 2>/dev/null && return; done
	fail "no sshd answers at $1"
}

wait_for_url() { # any HTTP answer (401 included)
	for _ in $(seq 60); do
		curl -s -m 2 -o /dev/null "$1" && return
		sleep 1
	done
	fail "nothing answers at $1"
}

wait_for_nodes() { # the head's autoscaler starts the workers after `ray up` returns
	local n=0
	for _ in $(seq 60); do
		n=$(RAY_AUTH_MODE=token ray list nodes --address "http://127.0.0.1:$PORT" \
			--filter state=ALIVE --format json 2>/dev/null |
			python -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null) || n=0
		[ "$n" -ge "$1" ] && return
		sleep 3
	done
	fail "$n of $1 nodes alive 180 s after ray up"
}

teammate_search() {
	local me="$WORK/alice" out id exp
	say "teammate: ray job submit --working-dir . from a checkout of her own"
	mkdir -p "$me"
	cp -r "$ROOT/raytasks" "$ROOT/searchspaces" "$me/"
	# her storage: the team's, reached by every machine at one path (NFS on a real cluster)
	printf 'dev = "alice"\nport = %s\nstorage = "%s/nfs"\n' "$PORT" "$WORK" >"$me/config.toml"
	cd "$me"
	export PYTHONPATH=$me
	eval "$(raytasks cluster env)"
	# shellcheck disable=SC2086  # SEARCH is a list of flags
	timeout 480 ray job submit --working-dir . -- python -m raytasks.tune $SEARCH \
		>"$WORK/submit.log" 2>&1 || fail "ray job submit ($?)"
	id=$(grep -oE "raysubmit_[A-Za-z0-9]+" "$WORK/submit.log" | head -1)
	exp=$(sed -nE 's/^raytasks: dev alice, experiment ([^ ,]+),.*/\1/p' "$WORK/submit.log" | head -1)
	[ -n "$id" ] && [ -n "$exp" ] || fail "no submission id / experiment in the job's output"
	out=$(ray job status "$id" 2>&1)
	grep -q "Job '$id' succeeded" <<<"$out" || fail "job $id: $out"
	check_trial_nodes "$WORK/nfs/alice/runs/$exp"

	say "teammate: raytasks pull $id"
	out=$(raytasks pull "$id" 2>&1) || fail "raytasks pull: $out"
	[ -f "$me/models/alice-cnn1d/model.pt" ] || fail "pull brought no model home: $out"
	[ -f "$me/results/$exp/job.json" ] || fail "pull brought no results home: $out"
}

check_trial_nodes() { # each worker host ran at least one trial (Tune's node_ip per result)
	python - "$1" "${IP[w1]}" "${IP[w2]}" <<-'EOF'
		import json, sys
		from pathlib import Path
		runs, workers = Path(sys.argv[1]), set(sys.argv[2:])
		ips = {json.loads(line)["node_ip"] for f in runs.glob("*/result.json")
		       for line in f.read_text().splitlines() if line.strip()}
		print(f"trials ran on {sorted(ips)}")
		sys.exit(0 if workers <= ips else f"FAIL: no trial on {sorted(workers - ips)}")
	EOF
}

case "${1:-main}" in
main) main ;;
scenario) scenario ;;
host) host "$2" ;;
laptop) laptop ;;
*) fail "usage: $0 (no arguments)" ;;
esac
