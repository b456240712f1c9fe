#!/usr/bin/env bash
# profile_saga.sh -- where the order saga's CPU goes, process by process.
#
# What it does. Starts natomic-bench-saga on one variant (memory by default:
# raw, chain, memory or durable) with one long throughput phase at a fixed
# number of clients, and while that load runs, samples every CPU of the
# machine with `perf record -a -g` for a fixed time. Then it prints, from
# the samples:
#   1. the share of the CPU each process took (perf's comm: the bench client
#      and its proxies, orders, inventory, payments, notifications,
#      nats-server, and the rest of the machine), and
#   2. for each of them, the functions that took most of it (self time,
#      with the library -- libnatomic, libnats, libsqlite3, libc, the
#      kernel -- beside each).
# The raw perf data stays in the output folder (perf.data, report-*.txt) for
# `perf report -i` or a flame graph.
#
# Why perf and not callgrind: the saga's cost is spread over six processes
# and is as much the kernel's (sockets, futexes, fsync) as user code;
# sampling the whole machine under load sees all of it at once, at the
# price of a ~1% sampling overhead. Figures are shares of samples, so they
# do not depend on how fast the machine is; they do depend on the load
# (clients) -- say which when quoting them.
#
# Bounds: the bench runs with --max-seconds; perf samples for SECONDS (default
# 10) at 499 Hz; everything started is stopped on exit.
#
# Usage: bench/profile_saga.sh [--variant V] [--clients N] [--seconds S] [--out DIR]
set -euo pipefail

variant=memory
clients=32
seconds=10
out=bench-results/profile
build=${BUILD_DIR:-build}

usage() {
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
}

while (($#)); do
  case $1 in
    --variant) variant=${2:?--variant needs raw, chain, memory or durable}; shift 2 ;;
    --clients) clients=${2:?--clients needs a number}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "profile_saga: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case $variant in raw | chain | memory | durable) ;; *)
  echo "profile_saga: --variant must be raw, chain, memory or durable, not '$variant'" >&2; exit 2 ;;
esac
[[ $clients =~ ^[0-9]+$ && $clients -ge 1 && $clients -le 256 ]] ||
  { echo "profile_saga: --clients must be 1..256" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+$ && $seconds -ge 1 && $seconds -le 120 ]] ||
  { echo "profile_saga: --seconds must be 1..120" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile_saga: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
bench=$build/bench/natomic-bench-saga
[[ -x $bench ]] || { echo "profile_saga: $bench is not built (./lab build)" >&2; exit 1; }

mkdir -p "$out"
log=$out/bench.log
# Enough orders that the load outlasts the sampling at any speed this machine reaches.
calls=$((seconds * 6000 + 2000))
"$bench" --variants "$variant" --clients "$clients" --rounds 1 --calls 20 --warmup 50 \
  --throughput-calls "$calls" --max-seconds $((seconds + 60)) --json "$out/bench.json" >"$log" 2>&1 &
bench_pid=$!
cleanup() { kill "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; }
trap cleanup EXIT

# Wait for the throughput phase: the services are up and the latency phase is done.
for _ in $(seq 1 300); do
  grep -q "throughput" "$log" 2>/dev/null && break
  kill -0 "$bench_pid" 2>/dev/null || { cat "$log" >&2; echo "profile_saga: the bench stopped early" >&2; exit 1; }
  sleep 0.1
done
sleep 1
echo "profile_saga: sampling every CPU for ${seconds}s under $clients clients ($variant)" >&2
perf record -a -g -F 499 -o "$out/perf.data" -- sleep "$seconds" 2>"$out/perf-record.log"

perf report -i "$out/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null |
  grep -v '^#' | grep -v '^$' >"$out/report-comm.txt" || true
echo "== CPU share by process ($variant, $clients clients, ${seconds}s) =="
head -10 "$out/report-comm.txt"
# The saga's own processes, in a fixed order (comm is cut at 15 characters).
for comm in orders inventory payments notifications nats-server natomic-bench-s; do
  grep -q " $comm *\$" "$out/report-comm.txt" || continue
  perf report -i "$out/perf.data" --no-children --comm "$comm" --sort dso --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$out/report-$comm-dso.txt" || true
  perf report -i "$out/perf.data" --no-children --comm "$comm" --sort dso,sym --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' >"$out/report-$comm.txt" || true
  echo
  echo "== $comm: by library (share of all samples) =="
  head -6 "$out/report-$comm-dso.txt"
  echo "-- $comm: top functions --"
  head -10 "$out/report-$comm.txt"
done
echo
echo "profile_saga: perf data and reports in $out/ (perf report -i $out/perf.data)" >&2
