# tap.sh -- TAP 14 for the shell tests, sourced (not run): prints the version line and defines
#   ok NAME             a passing point
#   not_ok NAME WHY     a failing one, WHY in its YAML block (one line, at most 900 characters)
#   check NAME WHY      ok when WHY is empty, else not_ok
# and the counter n, for the closing "1..$n".
# shellcheck shell=bash disable=SC2034 # n is read by the sourcing test
n=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  printf '  ---\n  message: "%s"\n  ...\n' "$(printf '%s' "$2" | tr '\n"\\' '   ' | cut -c1-900)"
}
check() { if [[ -z $2 ]]; then ok "$1"; else not_ok "$1" "$2"; fi; }
echo "TAP version 14"
