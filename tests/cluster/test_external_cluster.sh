#!/usr/bin/env bash
# test_external_cluster.sh -- the cluster stories on NATS the lab did not start: the path a
# Vagrant cluster (deploy/vagrant/) takes, played on this machine. Three nats-servers named
# n1..n3 run here as an operator would run them (routes, JetStream, monitoring ports); the lab
# gets their URLs with --server and a node-control program that stops and starts them, and must
#   - pass a story that kills the node orders is connected to mid-saga, and one that kills the
#     meta leader during recovery (both through --node-control, /jsz and /healthz);
#   - pass a plain single-server story on the cluster, twice (each story starts from cleared
#     streams: no saga of the one before is recovered into the next);
#   - leave the servers running and refuse what it cannot do (a cluster story on one server,
#     TLS through its proxies, a node step without --node-control).
#   test_external_cluster.sh NATS_SERVER NATOMIC_LAB SOURCE_ROOT
set -uo pipefail
nats_server=$1
lab=$2
root=$3
source "$(dirname "${BASH_SOURCE[0]}")/../tap.sh"

work=$(mktemp -d)
cleanup() {
  local f
  for f in "$work"/n*.pid; do [[ -r $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.5
  for f in "$work"/n*.pid; do [[ -r $f ]] && kill -9 "$(cat "$f")" 2>/dev/null; done
  rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export TMPDIR=$work

ports=$(python3 -c 'import socket
ss=[socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
read -r -a p <<<"$ports" # client n1..n3, cluster n1..n3, monitoring n1..n3

# The node-control program an operator would write: here, a pid file per node and its command
# line kept for a start. (Vagrant's is deploy/vagrant/node-control.sh: systemctl over ssh.)
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do [[ $j != "$i" ]] && routes+="${routes:+,}nats-route://127.0.0.1:${p[$((j + 2))]}"; done
  printf '%s\n' "$nats_server" -a 127.0.0.1 -p "${p[$((i - 1))]}" -js -sd "$work/js-n$i" -l "$work/n$i.log" \
    -m "${p[$((i + 5))]}" --name "n$i" --cluster_name natomic --cluster "nats://127.0.0.1:${p[$((i + 2))]}" \
    --routes "$routes" >"$work/n$i.args"
done
cat >"$work/ctl.sh" <<'CTL'
#!/usr/bin/env bash
# ctl.sh stop|start|cut|heal <node> <host>
set -u
dir=$(dirname "$0")
case $1 in
  stop)
    pid=$(cat "$dir/$2.pid") && kill "$pid" && for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.05; done
    kill -9 "$pid"
    ;;
  start)
    mapfile -t args <"$dir/$2.args"
    setsid "${args[@]}" >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/$2.pid"
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/${args[4]}") 2>/dev/null && exit 0; sleep 0.05; done
    exit 1
    ;;
  *) echo "ctl.sh: $1 is not done here" >&2; exit 1 ;;
esac
CTL
chmod +x "$work/ctl.sh"
why=""
for i in 1 2 3; do "$work/ctl.sh" start "n$i" 127.0.0.1 || why+="n$i did not start; "; done
check "three nats-servers n1..n3 run as one cluster" "$why"
urls="nats://127.0.0.1:${p[0]},nats://127.0.0.1:${p[1]},nats://127.0.0.1:${p[2]}"
monitor="${p[6]},${p[7]},${p[8]}"

run() { # NAME ARGS...: natomic-lab run on the outside cluster; its TAP in $work/NAME.tap
  local name=$1
  shift
  "$lab" run --server "$urls" --monitor-port "$monitor" --node-control "$work/ctl.sh" --report "$work/report-$name" \
    "$@" >"$work/$name.tap" 2>"$work/$name.err"
}
summary() { grep -m3 -A4 '^not ok' "$work/$1.tap"; tail -c 600 "$work/$1.err"; }

run kill "$root/scenarios/cluster/kill-connected-node-durable.yaml" \
  "$root/scenarios/cluster/meta-leader-killed-during-recovery-durable.yaml"
rc=$?
check "cluster stories pass on the outside cluster (node killed mid-saga; meta leader killed in recovery)" \
  "$([[ $rc -eq 0 ]] || echo "exit $rc: $(summary kill)")"
grep -q 'NATS node n[123] (connected-to:orders) killed' "$work"/report-kill/*.md &&
  grep -q 'NATS node n[123] (meta-leader) killed' "$work"/report-kill/*.md
check "the report names the nodes the targets resolved to" "$([[ $? -eq 0 ]] || echo "no 'NATS node nK (...) killed' line")"

# A stale EVENTS stream from "an earlier run", on the wrong subjects: a story that kept it would
# publish its events into nothing. The lab must clear it.
PROBE_PASSWORD=x python3 "$root/tests/security/nats_probe.py" "${p[0]}" nobody sub _INBOX.probe - \
  pub '$JS.API.STREAM.DELETE.EVENTS' _INBOX.probe - want 1 >/dev/null 2>&1
probe=$(PROBE_PASSWORD=x python3 "$root/tests/security/nats_probe.py" "${p[0]}" nobody sub _INBOX.probe - \
  pub '$JS.API.STREAM.CREATE.EVENTS' _INBOX.probe '{"name":"EVENTS","subjects":["stale.>"],"num_replicas":3}' \
  want 1 2>&1)
check "a stale EVENTS stream was planted" \
  "$(grep -q '"subjects":\["stale' <<<"$probe" && ! grep -q '"error"' <<<"$probe" || echo "$probe")"
run twice "$root/scenarios/saga/confirmed-order.yaml" "$root/scenarios/dispatch/dispatch-order-durable.yaml" \
  "$root/scenarios/orchestrator/crash-after-charge-durable.yaml"
rc=$?
check "single-server stories pass on the cluster, durable ones included (streams cleared before each)" \
  "$([[ $rc -eq 0 ]] || echo "exit $rc: $(summary twice)")"

why=""
for i in 1 2 3; do kill -0 "$(cat "$work/n$i.pid")" 2>/dev/null || why+="n$i is gone; "; done
check "the lab left the servers running" "$why"

"$lab" run --server "nats://127.0.0.1:${p[0]}" --monitor-port "${p[6]}" \
  "$root/scenarios/cluster/kill-connected-node.yaml" >"$work/one.tap" 2>"$work/one.err"
rc=$?
grep -q 'fewer servers in --server' "$work/one.tap"
check "a cluster story on one outside server fails clearly" "$([[ $rc -eq 1 && $? -eq 0 ]] || echo "exit $rc: $(head -c 400 "$work/one.tap")")"

"$lab" run --server "$urls" --monitor-port "$monitor" "$root/scenarios/cluster/kill-connected-node.yaml" \
  >"$work/noctl.tap" 2>"$work/noctl.err"
rc=$?
grep -q -- '--node-control' "$work/noctl.err"
check "a node step without --node-control fails, saying what to give" "$([[ $rc -eq 1 && $? -eq 0 ]] || echo "exit $rc: $(head -c 400 "$work/noctl.err")")"

"$lab" run --server "$urls" --tlsca /dev/null "$root/scenarios/saga/confirmed-order.yaml" >"$work/tls.tap" 2>"$work/tls.err"
rc=$?
check "TLS through the lab's proxies is refused with a reason" \
  "$([[ $rc -ne 0 ]] && grep -q 'host name' "$work/tls.err" "$work/tls.tap" || echo "exit $rc: $(head -c 400 "$work/tls.err")")"
echo "1..$n"
