#!/usr/bin/env bash
# check_symbols.sh LIBRARY HEADER -- API symbol visibility.
#
# Passes (exit 0) only when the shared library exports, as defined text
# symbols, exactly the natomic_ functions that HEADER declares with
# NATOMIC_API, and no natomic__ internal symbol of any kind. Otherwise it
# prints the difference and exits 1; a usage or tool error exits 2.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 LIBRARY HEADER" >&2
    exit 2
fi
lib=$1
header=$2
for f in "$lib" "$header"; do
    [[ -r $f ]] || { echo "check_symbols: cannot read $f" >&2; exit 2; }
done

# Every declaration starts on a line "NATOMIC_API <type> natomic_xxx(": take
# the identifier right before the line's first parenthesis.
declared=$(grep -E '^[[:space:]]*NATOMIC_API[[:space:]]' "$header" |
    sed -nE 's/^[^(]*[^A-Za-z0-9_](natomic_[A-Za-z0-9_]+)[[:space:]]*\(.*/\1/p' |
    sort -u)

# nm -D prints "ADDRESS TYPE NAME[@VERSION]"; keep the names, without version.
dynamic=$(nm -D --defined-only "$lib" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $2, $3 }')
exported=$(awk '$1 == "T" { print $2 }' <<<"$dynamic" | sort -u)

if [[ -z $declared ]]; then
    echo "check_symbols: no NATOMIC_API function found in $header" >&2
    exit 2
fi

status=0

missing=$(comm -23 <(echo "$declared") <(echo "$exported"))
extra=$(comm -13 <(echo "$declared") <(echo "$exported"))
if [[ -n $missing ]]; then
    echo "declared in $(basename "$header") but not exported by $(basename "$lib"):"
    sed 's/^/  - /' <<<"$missing"
    status=1
fi
if [[ -n $extra ]]; then
    echo "exported by $(basename "$lib") but not declared in $(basename "$header"):"
    sed 's/^/  + /' <<<"$extra"
    status=1
fi

internal=$(awk '$2 ~ /^natomic__/ { print $1, $2 }' <<<"$dynamic")
if [[ -n $internal ]]; then
    echo "internal symbols exported by $(basename "$lib"):"
    sed 's/^/  ! /' <<<"$internal"
    status=1
fi

if [[ $status -eq 0 ]]; then
    echo "ok: $(wc -l <<<"$exported") exported functions match $(basename "$header")"
fi
exit $status
