#!/usr/bin/env bash
# test_lab_secrets.sh -- a secure story (nats: secure: deploy/'s configuration, TLS, an identity
# and a random password per service) leaves no password anywhere a person reads: not in the TAP
# stream, not on stderr, not in the report, not in the services' or nats-server's logs. And
# everything the run made (its server folder, its certificates) is gone afterwards.
#   test_lab_secrets.sh NATOMIC_LAB SOURCE_ROOT
set -uo pipefail
lab=$1
root=$2
story=$root/scenarios/security/saga-over-tls-durable.yaml
source "$(dirname "${BASH_SOURCE[0]}")/../tap.sh"
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
export TMPDIR=$work # every folder the run makes lands here, to be looked at and counted

# 1. kept: the folders stay, so that their logs can be searched for the secrets.
"$lab" run "$story" --keep --report "$work/report" >"$work/tap.txt" 2>"$work/stderr.txt"
rc=$?
if [[ $rc -eq 0 ]] && grep -q '^ok' "$work/tap.txt"; then ok "the secure story passes (kept)"; else
  not_ok "the secure story passes (kept)" "exit $rc: $(grep -m3 -A3 '^not ok' "$work/tap.txt") $(head -c 400 "$work/stderr.txt")"; fi
kept=$(find "$work" -maxdepth 1 -name 'natomic-tls-*' | head -1)
if [[ -n $kept && -r $kept/nats-server.conf ]]; then ok "the run's folder was kept: $(basename "$kept")"; else
  not_ok "the run's folder was kept" "no natomic-tls-* folder under $work"; fi
# The passwords the run used: in the environment of nobody any more, so from the one place they
# were written for the server to read -- nowhere. They follow one form (pw + 24 hex digits):
# look for that form, and make sure the check can see one where it is (the planted copy).
found=$(grep -rlE 'pw[0-9a-f]{24}' "$work/tap.txt" "$work/stderr.txt" "$work/report" "$work"/natomic-nats-* 2>/dev/null)
if [[ -z $found ]]; then ok "no password in the TAP, stderr, the report, the service and server logs"; else
  not_ok "no password in the TAP, stderr, the report, the service and server logs" "found in: $found"; fi
echo "pw0123456789abcdef01234567" >"$work/report/planted.txt"
if grep -rqE 'pw[0-9a-f]{24}' "$work/report"; then ok "the search finds a planted password (it can fail)"; else
  not_ok "the search finds a planted password (it can fail)" "grep missed it"; fi
if grep -q 'LAB_PASSWORD' "$kept/nats-server.conf" && ! grep -qE 'pw[0-9a-f]{24}' "$kept/nats-server.conf"; then
  ok "the run's server config names the lab's password by variable, never by value"; else
  not_ok "the run's server config names the lab's password by variable, never by value" "$(grep -n password "$kept/nats-server.conf" | head -3)"; fi
rm -rf -- "$work"/natomic-* "$work/report"

# 2. not kept: nothing of the run is left behind.
"$lab" run "$story" --report "$work/report" >"$work/tap.txt" 2>"$work/stderr.txt"
left=$(find "$work" -maxdepth 1 -name 'natomic-*')
if [[ -z $left ]]; then ok "without --keep, the run leaves no folder (server, certificates)"; else
  not_ok "without --keep, the run leaves no folder (server, certificates)" "left: $left"; fi
echo "1..$n"
