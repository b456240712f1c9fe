# lp_lib.sh -- what the two least-privilege tests share (sourced, not run):
# stopping what they started, TAP 14 lines, the prerequisites, a free port
# and random passwords. Set before sourcing: nats_server, build, conf, call,
# services (array), dir (a fresh temp folder), pids (array), n=0.
# shellcheck shell=bash disable=SC2034,SC2154 # variables set and used by the sourcing test

stop() { # PID: SIGTERM, at most 5 s to leave, then SIGKILL
  local i
  kill "$1" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
cleanup() { # the services first (they leave while NATS is there), then the server
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
  rm -rf -- "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # a test runner's timeout: cleanup still runs

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { # NAME WHY [DIRECTIVE]
  n=$((n + 1))
  echo "not ok $n - $1${3:+ # $3}"
  echo "  ---"
  echo "  message: \"$(printf '%s' "$2" | tr '\n' ' ' | sed 's/\\/\\\\/g; s/"/\\"/g' | cut -c1-900)\""
  echo "  ..."
}
check() { # NAME WHY: ok when WHY is empty
  if [[ -z $2 ]]; then ok "$1"; else not_ok "$1" "$2"; fi
}
bail() { # NAME WHY: a failed prerequisite ends the run
  not_ok "$1" "$2"
  echo "1..$n"
  exit 0
}

echo "TAP version 14"

# ---- prerequisites ------------------------------------------------------------------
why=""
for f in "$nats_server" "$call"; do
  [[ -x $f ]] || why+="$f is not an executable; "
done
for s in "${services[@]}"; do
  [[ -x $build/services/$s/$s ]] || why+="$build/services/$s/$s is not an executable; "
done
[[ -r $conf ]] || why+="$conf is not readable; "
for tool in python3 sqlite3 timeout; do
  command -v "$tool" >/dev/null || why+="$tool is not installed; "
done
[[ -z $why ]] || bail "prerequisites are there" "$why"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
newpw() { python3 -c 'import secrets; print("pw" + secrets.token_hex(16))'; }
declare -A pw
