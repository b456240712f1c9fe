#!/usr/bin/env bash
# The fault points named in the code (every NATOMIC_FAULT("...") literal in
# libatomic/ and services/) are exactly the ones docs/fault-points.md lists
# in its table. Prints the difference and exits 1 otherwise.
set -uo pipefail
root=$1
code=$(grep -rhoE 'NATOMIC_FAULT\([^;]*' "$root/libatomic/src" "$root/services" --include='*.c' |
  grep -oE '"[a-z_]+(/[a-z_]+)+"' | tr -d '"' | sort -u)
docs=$(grep -oE '^\| `[a-z_]+(/[a-z_]+)+` \|' "$root/docs/fault-points.md" | grep -oE '[a-z_]+(/[a-z_]+)+' | sort -u)
if [[ -z $code ]]; then
  echo "no fault point found in the code: the scan is broken"
  exit 1
fi
if [[ $code != "$docs" ]]; then
  echo "fault points differ (< only in code, > only in docs/fault-points.md):"
  diff <(echo "$code") <(echo "$docs")
  exit 1
fi
echo "$(echo "$code" | wc -l) fault points, documented and in the code"
