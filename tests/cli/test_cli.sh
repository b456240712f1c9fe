#!/usr/bin/env bash
# natomic-call from the outside, as a user runs it: against the conversions
# service (started with NATS by `natomic-lab with`), on good input, bad
# JSON, unknown fields and methods, a business error, and an unreachable
# NATS. Checks the printed JSON, the messages and the exit status (0 ok,
# 1 service error, 2 bad input, 3 transport). Prints TAP.
set -uo pipefail
call=$1
n=0 failed=0
out=$(mktemp) errf=$(mktemp)
trap 'rm -f "$out" "$errf"' EXIT

# check NAME WANT_STATUS STDOUT_GREP STDERR_GREP -- ARGS...
check() {
  local name=$1 want=$2 want_out=$3 want_err=$4
  shift 5
  n=$((n + 1))
  "$call" "$@" >"$out" 2>"$errf"
  local got=$?
  local why=""
  [[ $got -eq $want ]] || why+="exit status $got, want $want; "
  [[ -z $want_out ]] || grep -q -- "$want_out" "$out" || why+="stdout lacks '$want_out'; "
  [[ -z $want_err ]] || grep -q -- "$want_err" "$errf" || why+="stderr lacks '$want_err'; "
  if [[ -z $why ]]; then
    echo "ok $n - $name"
  else
    failed=$((failed + 1))
    echo "not ok $n - $name"
    echo "  ---"
    echo "  message: \"${why%; }\""
    echo "  stdout: \"$(tr '\n' ' ' <"$out" | sed 's/"/\\"/g')\""
    echo "  stderr: \"$(tr '\n' ' ' <"$errf" | sed 's/"/\\"/g')\""
    echo "  ..."
  fi
}

echo "TAP version 14"
check "good input prints the reply as JSON" 0 '"cm": 25.4' '' -- conversions.inches_to_cm '{"inches": 10}'
check "business error prints the error type, exit 1" 1 '"type": "InvalidLength"' '' -- conversions.inches_to_cm '{"inches": -1}'
check "the error says the rollback completed" 1 '"rollback": "complete"' '' -- conversions.inches_to_cm '{"inches": -2}'
check "bad JSON is refused with line and column, exit 2" 2 '' 'bad JSON at line 1, column' -- conversions.inches_to_cm '{"inches": '
check "unknown field is refused, exit 2" 2 '' "unknown field 'inch' in conversions.InchesToCmRequest" -- conversions.inches_to_cm '{"inch": 1}'
check "wrong type is refused, exit 2" 2 '' "field 'inches'" -- conversions.inches_to_cm '{"inches": "ten"}'
check "unknown method lists the methods, exit 2" 2 'conversions.inches_to_cm' "has no method 'nope'" -- conversions.nope '{}'
check "unknown service is a transport failure, exit 3" 3 '' "no service 'nosuch'" -- nosuch.method '{}'
check "not SERVICE.METHOD, exit 2" 2 '' 'is not SERVICE.METHOD' -- justaword '{}'
check "--list shows the method and its types" 0 'conversions.InchesToCmRequest -> conversions.InchesToCmReply' '' -- --list conversions
check "--tx runs the call in that transaction" 0 '"cm": 2.54' '' -- --tx cli-test-tx conversions.inches_to_cm '{"inches": 1}'
check "bad --timeout is refused, exit 2" 2 '' '--timeout wants milliseconds' -- --timeout abc conversions.inches_to_cm '{}'
check "--help explains the exit status" 0 'Exit status' '' -- --help
check "unreachable NATS is a transport failure, exit 3" 3 '' 'cannot connect to nats://127.0.0.1:9' -- --nats nats://127.0.0.1:9 conversions.inches_to_cm '{}'
echo "1..$n"
exit 0
