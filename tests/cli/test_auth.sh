#!/usr/bin/env bash
# The connection flags from the outside (issue 11, item 3): a real
# nats-server that wants a user and password over TLS (certificates made
# here with openssl), and a second one that wants a token. The conversions
# service and natomic-call connect with --server, --user and NATS_PASSWORD,
# --token, --tlsca, --tlscert/--tlskey; wrong or missing credentials are
# refused by the server; a missing file, a password without a user, a
# certificate without its key are refused before connecting; no password
# or token ever shows in what the programs print or log. Prints TAP.
#
#   test_auth.sh NATS_SERVER NATOMIC_CALL CONVERSIONS
set -uo pipefail
nats_server=$1 call=$2 conversions=$3
n=0
dir=$(mktemp -d "${TMPDIR:-/tmp}/natomic-auth-XXXXXX")
pids=()
cleanup() { # the service first (it leaves while NATS is there), then the servers
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null
    wait "${pids[i]}" 2>/dev/null
  done
  rm -rf -- "$dir"
}
trap cleanup EXIT

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  echo "  ---"
  echo "  message: \"$(printf '%s' "$2" | tr '\n' ' ' | sed 's/"/\\"/g' | cut -c1-600)\""
  echo "  ..."
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT: until something listens, at most 5 s
  local i
  for i in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

echo "TAP version 14"

# ---- certificates: a CA, the server's (127.0.0.1), a client's ------------------
(
  cd "$dir" || exit 1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=natomic test CA" -keyout ca-key.pem -out ca.pem
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile san.ext -out server.pem
  openssl req -newkey rsa:2048 -nodes -subj "/CN=client" -keyout client-key.pem -out client.csr
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -out client.pem
) >"$dir/openssl.log" 2>&1 && ok "certificates made with openssl" || {
  not_ok "certificates made with openssl" "$(cat "$dir/openssl.log")"
  echo "1..$n"
  exit 1
}

# ---- server 1: users over TLS (client certificates verified) -------------------
svc_pw='svc-Pw-7f3a91' client_pw='client-Pw-55e0b2'
tls_port=$(free_port)
cat >"$dir/tls.conf" <<CONF
listen: 127.0.0.1:$tls_port
tls {
  cert_file: "$dir/server.pem"
  key_file: "$dir/server-key.pem"
  ca_file: "$dir/ca.pem"
  verify: true
  timeout: 2
}
authorization {
  users = [
    {user: svc, password: "$svc_pw"}
    {user: client, password: "$client_pw"}
  ]
}
CONF
"$nats_server" -c "$dir/tls.conf" >"$dir/tls-server.log" 2>&1 &
pids+=($!)
# ---- server 2: a token, no TLS -------------------------------------------------
token='tok-0c9d8e7f6a'
tok_port=$(free_port)
"$nats_server" -a 127.0.0.1 -p "$tok_port" --auth "$token" >"$dir/tok-server.log" 2>&1 &
pids+=($!)
if wait_port "$tls_port" && wait_port "$tok_port"; then ok "two nats-servers listen"; else
  not_ok "two nats-servers listen" "$(cat "$dir"/*-server.log)"
  echo "1..$n"
  exit 1
fi
tls_url="tls://127.0.0.1:$tls_port"
tls_client=(--tlsca "$dir/ca.pem" --tlscert "$dir/client.pem" --tlskey "$dir/client-key.pem")

# ---- the service comes up with its own identity, the password from the environment
NATS_PASSWORD=$svc_pw "$conversions" --server "$tls_url" --user svc "${tls_client[@]}" --db "$dir/conv.db" \
  --mode memory >"$dir/conversions.log" 2>&1 &
pids+=($!)

# expect NAME WANT_STATUS STDOUT_GREP STDERR_GREP -- natomic-call ARGS (env from CALL_ENV)
expect() {
  local name=$1 want=$2 want_out=$3 want_err=$4
  shift 5
  local got why=""
  env "${CALL_ENV[@]}" "$call" "$@" >"$dir/out" 2>"$dir/err"
  got=$?
  [[ $got -eq $want ]] || why+="exit status $got, want $want; "
  [[ -z $want_out ]] || grep -q -- "$want_out" "$dir/out" || why+="stdout lacks '$want_out'; "
  [[ -z $want_err ]] || grep -q -- "$want_err" "$dir/err" || why+="stderr lacks '$want_err'; "
  for secret in "$svc_pw" "$client_pw" "$token" wrong-Pw-1234; do
    grep -q -- "$secret" "$dir/out" "$dir/err" && why+="a secret is printed; "
  done
  if [[ -z $why ]]; then ok "$name"; else not_ok "$name" "$why stdout: $(cat "$dir/out") stderr: $(cat "$dir/err")"; fi
}
CALL_ENV=(NATS_PASSWORD="$client_pw")
up=false
for _ in $(seq 50); do
  env "${CALL_ENV[@]}" "$call" --server "$tls_url" --user client "${tls_client[@]}" --list conversions \
    >/dev/null 2>&1 && { up=true; break; }
  sleep 0.1
done
$up && ok "the service connected over TLS as svc (NATS_PASSWORD) and answers" ||
  not_ok "the service connected over TLS as svc (NATS_PASSWORD) and answers" "$(cat "$dir/conversions.log")"

expect "a call over TLS with user and password works" 0 '"cm": 25.4' '' -- \
  --server "$tls_url" --user client "${tls_client[@]}" conversions.inches_to_cm '{"inches": 10}'
CALL_ENV=(NATS_PASSWORD=wrong-Pw-1234)
expect "a wrong password is refused by the server, exit 3, and not printed" 3 '' 'uthorization' -- \
  --server "$tls_url" --user client "${tls_client[@]}" conversions.inches_to_cm '{"inches": 1}'
CALL_ENV=()
expect "no credentials: refused, exit 3" 3 '' 'cannot connect' -- \
  --server "$tls_url" "${tls_client[@]}" conversions.inches_to_cm '{"inches": 1}'
expect "user info in the URL is shown as ***@" 3 '' "tls://\\*\\*\\*@127.0.0.1:$tls_port" -- \
  --server "tls://client:wrong-Pw-1234@127.0.0.1:$tls_port" "${tls_client[@]}" conversions.inches_to_cm '{}'
CALL_ENV=(NATS_PASSWORD="$client_pw")
expect "without the client certificate the server refuses (verify), exit 3" 3 '' 'cannot connect' -- \
  --server "$tls_url" --user client --tlsca "$dir/ca.pem" conversions.inches_to_cm '{}'
expect "a missing CA file is refused before connecting, exit 2" 2 '' "--tlsca $dir/nope.pem: No such file" -- \
  --server "$tls_url" --user client --tlsca "$dir/nope.pem" conversions.inches_to_cm '{}'
expect "a certificate without its key is refused, exit 2" 2 '' 'needs its key' -- \
  --server "$tls_url" --user client --tlsca "$dir/ca.pem" --tlscert "$dir/client.pem" conversions.inches_to_cm '{}'
CALL_ENV=()
expect "a password without a user is refused, exit 2" 2 '' 'needs a user' -- \
  --server "$tls_url" --password "$client_pw" conversions.inches_to_cm '{}'
expect "a file that is no certificate is refused before connecting, exit 2" 2 '' '--tlscert/--tlskey' -- \
  --server "$tls_url" --user client --tlsca "$dir/ca.pem" --tlscert "$dir/san.ext" --tlskey "$dir/client-key.pem" \
  conversions.inches_to_cm '{}'
expect "two ways to authenticate are refused, exit 2" 2 '' 'more than one way' -- \
  --server "nats://127.0.0.1:$tok_port" --user client --token "$token" conversions.inches_to_cm '{}'

# ---- the token server: --token and NATS_TOKEN ----------------------------------
CALL_ENV=(NATS_TOKEN="$token")
expect "NATS_TOKEN gets in (no service there: exit 3 'no service')" 3 '' "no service 'conversions'" -- \
  --server "nats://127.0.0.1:$tok_port" conversions.inches_to_cm '{}'
expect "a comma list of servers: the dead first, the live one reached" 3 '' "no service 'conversions'" -- \
  --server "nats://127.0.0.1:1,nats://127.0.0.1:$tok_port" conversions.inches_to_cm '{}'
CALL_ENV=()
expect "a wrong token is refused, exit 3" 3 '' 'uthorization' -- \
  --server "nats://127.0.0.1:$tok_port" --token wrong-Pw-1234 conversions.inches_to_cm '{}'

# ---- server 3: an nkey user (the public key listed, the seed file given) ------------
if python3 "$(dirname "$0")/make_nkey.py" "$dir" alice && python3 "$(dirname "$0")/make_nkey.py" "$dir" mallory; then
  nk_port=$(free_port)
  printf 'authorization { users = [ { nkey: %s } ] }\n' "$(cat "$dir/alice.pub")" >"$dir/nkey.conf"
  "$nats_server" -c "$dir/nkey.conf" -a 127.0.0.1 -p "$nk_port" >"$dir/nk-server.log" 2>&1 &
  pids+=($!)
  wait_port "$nk_port" && ok "an nkey server listens, and seeds were made (openssl, make_nkey.py)" ||
    not_ok "an nkey server listens, and seeds were made (openssl, make_nkey.py)" "$(cat "$dir/nk-server.log")"
  seed=$(cat "$dir/alice.nk")
  CALL_ENV=()
  expect "--nkey: the library derives the public key from the seed file and gets in" 3 '' "no service 'conversions'" -- \
    --server "nats://127.0.0.1:$nk_port" --nkey "$dir/alice.nk" conversions.inches_to_cm '{}'
  CALL_ENV=(NATS_NKEY="$dir/alice.nk")
  expect "NATS_NKEY does the same" 3 '' "no service 'conversions'" -- \
    --server "nats://127.0.0.1:$nk_port" conversions.inches_to_cm '{}'
  CALL_ENV=()
  expect "another user's seed is refused by the server, exit 3" 3 '' 'uthorization' -- \
    --server "nats://127.0.0.1:$nk_port" --nkey "$dir/mallory.nk" conversions.inches_to_cm '{}'
  sed 's/^SU\(.\)/SU\1\1/; s/.$//' "$dir/alice.nk" >"$dir/typo.nk"
  expect "a seed with a typo is refused before connecting (checksum), exit 2" 2 '' 'checksum is wrong' -- \
    --server "nats://127.0.0.1:$nk_port" --nkey "$dir/typo.nk" conversions.inches_to_cm '{}'
  echo "not a seed" >"$dir/junk.nk"
  expect "a file with no seed is refused before connecting, exit 2" 2 '' 'no user nkey seed' -- \
    --server "nats://127.0.0.1:$nk_port" --nkey "$dir/junk.nk" conversions.inches_to_cm '{}'
  expect "--nkey with a user too: two ways, refused, exit 2" 2 '' 'more than one way' -- \
    --server "nats://127.0.0.1:$nk_port" --nkey "$dir/alice.nk" --user alice conversions.inches_to_cm '{}'
  if grep -rqF -- "$seed" "$dir/out" "$dir/err" "$dir/nk-server.log"; then
    not_ok "the seed is printed nowhere" "found in the output or the server log"
  else
    ok "the seed is printed nowhere"
  fi
else
  not_ok "an nkey server listens, and seeds were made (openssl, make_nkey.py)" "make_nkey.py failed"
fi

# ---- the service refuses a file it cannot use before connecting ----------------
"$conversions" --server "$tls_url" --user svc --password "$svc_pw" --tlsca "$dir/nope.pem" --db "$dir/c2.db" \
  >"$dir/refused.log" 2>&1
status=$?
if [[ $status -eq 2 ]] && grep -q -- "--tlsca $dir/nope.pem: No such file" "$dir/refused.log" &&
  ! grep -q -- "$svc_pw" "$dir/refused.log" && [[ ! -e $dir/c2.db ]]; then
  ok "the service refuses a missing CA file (exit 2), creates no store, prints no password"
else
  not_ok "the service refuses a missing CA file (exit 2), creates no store, prints no password" \
    "status $status: $(cat "$dir/refused.log")"
fi

# ---- nothing the service printed holds a secret --------------------------------
if grep -q -- "$svc_pw" "$dir/conversions.log"; then
  not_ok "the service's log holds no password" "$(cat "$dir/conversions.log")"
else
  ok "the service's log holds no password"
fi
echo "1..$n"
exit 0
