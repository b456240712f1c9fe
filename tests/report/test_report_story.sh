#!/usr/bin/env bash
# test_report_story.sh -- the report of a real story, end to end: natomic-lab
# plays scenarios/orchestrator/crash-between-steps.yaml (orders crashes at a
# fault point between its two steps, the lab times out, restarts orders) and
# the Markdown must tell it as it happened: the rule armed, the moment the
# fault point fired (from the service's own fault record, on its lane), the
# lab's timeout after it, the restart as a restart; the confirmed order's
# reply with its status in full; the summary's "expected violation" state.
#
# usage: test_report_story.sh NATOMIC_LAB STORY.yaml   (TAP on stdout)
set -u
lab=$1
story=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/natomic-report-story-XXXXXX")
trap 'rm -rf "$dir"' EXIT

echo "TAP version 14"
if ! "$lab" run "$story" --report "$dir" --jobs 1 >"$dir/tap.txt" 2>"$dir/progress.txt"; then
  echo "1..1"
  echo "not ok 1 - the story passes (natomic-lab run failed)"
  sed 's/^/# /' "$dir/tap.txt" "$dir/progress.txt"
  exit 0
fi
md="$dir/orchestrator-crash-between-steps.md"
index="$dir/index.md"

n=0
failed=0
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  n=$((n + 1))
  if "$@"; then
    echo "ok $n - $what"
  else
    echo "not ok $n - $what"
    failed=1
  fi
}
# The first line of the Markdown that holds the text, 0 when none.
line_of() { grep -nF -m1 -- "$1" "$md" | cut -d: -f1 | grep . || echo 0; }
has() { grep -qF -- "$1" "$2"; }

armed=$(line_of 'Note over orders: ARM orders/create_order/after_reserve=crash@1')
fired=$(line_of 'Note over orders: FIRED crash at orders/create_order/after_reserve (orders-0, hit 1)')
timeout=$(line_of 'Note over lab: TIMEOUT orders.create_order: no reply in 1000 ms')
restart=$(line_of 'Note over orders: RESTART orders')
check "the rule the lab enabled is drawn as ARM" test "$armed" -gt 0
check "the crash is drawn where it fired, from the service's record" test "$fired" -gt 0
check "the lab's timeout is its own mark" test "$timeout" -gt 0
check "the restart is a RESTART, not a heal" test "$restart" -gt 0
check "no entry of the diagram is called a heal" bash -c "! grep -qiE 'Note over [^:]*: heal' '$md'"
check "armed, then fired, then the lab gave up, then the restart" \
  test "$armed" -lt "$fired" -a "$fired" -lt "$timeout" -a "$timeout" -lt "$restart"
check "the reply of the confirmed order starts with its status" has 'orders-->>lab: ok {"status":"confirmed"' "$md"
check "the summary gives the story its expected-violation state" \
  has '| **expected violation** | orchestrator | [crash-between-steps](orchestrator-crash-between-steps.md) |' "$index"
check "the summary names the invariants it expects to break" has '| order_atomicity and no_pending_orders |' "$index"
if [ "$failed" = 1 ]; then
  echo "# the story as the report tells it:"
  sed -n '/^```mermaid/,/^```$/p' "$md" | sed 's/^/# /'
fi
echo "1..$n"
