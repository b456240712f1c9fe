#!/usr/bin/env bash
# The least-privilege identities of deploy/nats-server.conf, from the outside
# (issue 11, item 4, first increment). A real nats-server runs that file with
# a free loopback port and random passwords from the environment; the five
# example services run in memory mode, each as its own user (--user, password
# in NATS_PASSWORD); natomic-call and a few lines of Python speaking the NATS
# text protocol act as the `client` and `admin` users. It proves:
#   (a) the saga works end to end under those identities: admin seeds stock
#       and money, client creates an order, stock and money moved, the event
#       reached notifications, and no service hit a permission violation;
#   (b) what the client may not do is refused by the server (the
#       `Permissions Violation` it answers and logs) and changes nothing in
#       any store: compensations, saga steps, deposits, restocks, events,
#       fault control, joining a service's queue group -- and a reply of a
#       service redirected to a forbidden subject;
#   (c) a wrong password is refused (Authorization Violation).
# The last test is the hole no server permission closes: a reply of orders
# redirected to payments.refund (orders may publish that subject). A
# service refuses a call whose reply subject is not an inbox
# (NATOMIC_DEFAULT_INBOX_PREFIX), so the refund never happens. Prints TAP 14.
#
#   test_least_privilege.sh NATS_SERVER_BIN BUILD_DIR SOURCE_DIR
# shellcheck disable=SC2016,SC2317 # subjects with a literal $; stop/cleanup run from the EXIT trap
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $# -ne 3 ]]; then
  echo "usage: $0 NATS_SERVER_BIN BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
nats_server=$1 build=$2 src=$3
conf=$src/deploy/nats-server.conf
call=$build/faultinject/natomic-call
services=(inventory payments notifications conversions orders) # orders last: it calls the others
n=0
dir=$(mktemp -d "${TMPDIR:-/tmp}/natomic-lp-XXXXXX")
pids=()
# shellcheck source=lp_lib.sh
source "$here/lp_lib.sh"
for u in "${services[@]}" client admin; do pw[$u]=$(newpw); done
url="nats://127.0.0.1:$port"

# ---- the NATS text protocol, by hand: what the server answers is the proof -------------
# The NATS text protocol by hand: tests/security/nats_probe.py (its opening comment says how).
probe() { # USER PASSWORD OP...: output in $dir/probe.out, status in $probe_rc
  local user=$1 pass=$2
  shift 2
  PROBE_PASSWORD=$pass timeout 10 python3 "$here/nats_probe.py" "$port" "$user" "$@" >"$dir/probe.out" 2>&1
  probe_rc=$?
}

# natomic-call as USER: output in $dir/out and $dir/err, status in $call_rc
call_as() { # USER natomic-call ARGS...
  local user=$1
  shift
  NATS_PASSWORD=${pw[$user]} timeout 15 "$call" --server "$url" --user "$user" --inbox-prefix "_INBOX.$user" "$@" \
    >"$dir/out" 2>"$dir/err"
  call_rc=$?
  return $call_rc
}
# json FIELD < natomic-call output: one top-level field (natomic-call prints JSON)
json() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(v.get(sys.argv[1], "") if isinstance(v, dict) else "")' "$1"; }
# How many lines of the server's log hold PATTERN (fixed string).
log_count() { grep -cF -- "$1" "$dir/nats-server.log"; }
# Waits (at most 3 s) until the server's log holds PATTERN on more than BEFORE lines (default 0).
logged() {
  local i
  for i in $(seq 30); do
    (($(log_count "$1") > ${2:-0})) && return 0
    sleep 0.1
  done
  return 1
}

# ---- the server, with the deployed file -------------------------------------------------
env NATOMIC_PORT="$port" ORDERS_PASSWORD="${pw[orders]}" INVENTORY_PASSWORD="${pw[inventory]}" \
  PAYMENTS_PASSWORD="${pw[payments]}" NOTIFICATIONS_PASSWORD="${pw[notifications]}" \
  CONVERSIONS_PASSWORD="${pw[conversions]}" CLIENT_PASSWORD="${pw[client]}" ADMIN_PASSWORD="${pw[admin]}" \
  "$nats_server" -c "$conf" >"$dir/nats-server.log" 2>&1 &
pids+=($!)
up=false
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=true; break; }
  sleep 0.1
done
$up || bail "nats-server runs deploy/nats-server.conf" "$(cat "$dir/nats-server.log")"
ok "nats-server runs deploy/nats-server.conf (port and passwords from the environment)"

# ---- the services, each as its own user, memory mode -------------------------------------
for s in "${services[@]}"; do
  NATS_PASSWORD=${pw[$s]} "$build/services/$s/$s" --server "$url" --user "$s" --inbox-prefix "_INBOX.$s" --mode memory \
    --db "$dir/$s.db" --workers 4 >"$dir/$s.log" 2>&1 &
  pids+=($!)
done
why=""
for s in "${services[@]}"; do
  up=false
  for _ in $(seq 50); do
    call_as client --timeout 500 --list "$s" && { up=true; break; }
    sleep 0.1
  done
  $up || why+="$s does not answer discovery: $(cat "$dir/err") -- its log: $(cat "$dir/$s.log"); "
done
[[ -z $why ]] || bail "the five services start under their own identities (memory mode)" "$why"
ok "the five services start under their own identities (memory mode) and answer discovery"

# ==== (a) what is allowed works =========================================================
call_as admin inventory.restock '{"sku":"book","qty":10}'
check "admin: inventory.restock works" \
  "$([[ $call_rc -eq 0 && $(json available <"$dir/out") == 10 ]] || echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"
call_as admin payments.deposit '{"customer":"alice","amount":5000}'
check "admin: payments.deposit works" \
  "$([[ $call_rc -eq 0 && $(json balance <"$dir/out") == 5000 ]] || echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"

# The client chooses the transaction id (--tx): it knows it, as it would from the reply's Natomic-Tx.
order_tx=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
call_as client --tx "$order_tx" orders.create_order '{"customer":"alice","sku":"book","qty":2,"amount":1200}'
order_id=$(json order_id <"$dir/out" 2>/dev/null)
check "client: orders.create_order works end to end (status confirmed)" \
  "$([[ $call_rc -eq 0 && $(json status <"$dir/out") == confirmed && -n $order_id ]] ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err") -- orders log: $(cat "$dir/orders.log")")"
call_as client inventory.get_stock '{"sku":"book"}'
check "client: inventory.get_stock shows the stock moved (8 available, 2 reserved)" \
  "$([[ $call_rc -eq 0 && $(json available <"$dir/out") == 8 && $(json reserved <"$dir/out") == 2 ]] ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"
call_as client payments.get_balance '{"customer":"alice"}'
check "client: payments.get_balance shows the money moved (3800 left, 1200 charged)" \
  "$([[ $call_rc -eq 0 && $(json balance <"$dir/out") == 3800 && $(json charged <"$dir/out") == 1200 ]] ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"
found=false
for _ in $(seq 30); do
  call_as client notifications.list '{"customer":"alice"}'
  [[ $call_rc -eq 0 ]] && grep -qF -- "$order_id" "$dir/out" && { found=true; break; }
  sleep 0.1
done
check "client: notifications.list shows the order (events.orders.order_created reached notifications)" \
  "$($found || echo "exit $call_rc: $(cat "$dir/out" "$dir/err") -- notifications log: $(cat "$dir/notifications.log")")"
call_as client conversions.inches_to_cm_batch '{"inches":[1,-2]}'
check "client: a failed conversions batch is rolled back through conversions.forget (conversions' own call)" \
  "$([[ $call_rc -eq 1 ]] && grep -q '"rollback": "complete"' "$dir/out" && grep -q 'forgot conversion' "$dir/conversions.log" ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err") -- conversions log: $(cat "$dir/conversions.log")")"
violations=$(grep -E 'Violation - User "(orders|inventory|payments|notifications|conversions)"' "$dir/nats-server.log")
check "no service hit a permission violation doing all that" "$violations"

# ==== (b) what the client may not do is refused, and changes nothing ====================
snapshot() { # the whole of every store, as SQL text
  local s
  for s in "${services[@]}"; do
    echo "-- $s"
    timeout 5 sqlite3 "$dir/$s.db" .dump 2>&1
  done
}
snapshot >"$dir/before.sql"

# refused CALLER NAME SUBJECT JSON: natomic-call exits 3 (no reply: the server dropped the
# request) and the server logged a Publish Violation of that user on that subject.
refused() {
  local user=$1 name=$2 subject=$3 body=$4 why="" pattern before
  pattern="Publish Violation - User \"$user\", Subject \"$subject\""
  before=$(log_count "$pattern")
  call_as "$user" --timeout 1000 "$subject" "$body"
  [[ $call_rc -eq 3 ]] || why+="natomic-call exit $call_rc, want 3: $(cat "$dir/out" "$dir/err"); "
  grep -q "refused by the server: .*Permissions Violation for Publish to \"$subject\"" "$dir/err" ||
    why+="natomic-call does not say the server refused it: $(cat "$dir/err"); "
  logged "$pattern" "$before" ||
    why+="the server logged no Publish Violation of $user on $subject; "
  check "$name" "$why"
}
refused client "client: payments.refund of the confirmed order is refused" payments.refund \
  "{\"order_id\":\"$order_id\"}"
refused client "client: inventory.release of the confirmed order is refused" inventory.release \
  "{\"order_id\":\"$order_id\"}"
refused client "client: payments.charge for a made-up order is refused" payments.charge \
  '{"order_id":"ord-made-up","customer":"alice","amount":1}'
refused client "client: payments.deposit to itself is refused" payments.deposit \
  '{"customer":"alice","amount":100000}'
refused client "client: inventory.reserve is refused" inventory.reserve '{"order_id":"ord-made-up","sku":"book","qty":1}'
refused client "client: inventory.restock is refused" inventory.restock '{"sku":"book","qty":1000}'
refused client "client: conversions.forget (conversions' rollback) is refused" conversions.forget '{"conversion_id":1}'

# The same, on the wire: what the server answers the client itself.
probe client "${pw[client]}" \
  pub payments.refund - "f1:$order_id" \
  pub inventory.release - "f1:$order_id" \
  pub payments.charge - - \
  pub payments.deposit - - \
  pub inventory.reserve - - \
  pub '$NATOMIC.FAULTS.payments' - 'natomic/before_reply=drop' \
  pub events.orders.order_created - - \
  sub 'payments.>' payments \
  sub 'payments.>' - \
  sub 'orders.>' orders \
  sub '$NATOMIC.FAULTS.>' - \
  sub 'events.>' - \
  sub '_INBOX.>' - \
  sub '_INBOX.orders.>' - \
  pub '$SRV.PING' - - \
  sub '_INBOX.client.lp-probe' -
wire() { # NAME EXPECTED-LINE
  check "$1" "$([[ $probe_rc -eq 0 ]] && grep -qxF -- "$2" "$dir/probe.out" ||
    echo "want the line $2; probe exit $probe_rc, server said: $(cat "$dir/probe.out")")"
}
wire "wire: client PUB payments.refund -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"payments.refund\"'"
wire "wire: client PUB inventory.release -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"inventory.release\"'"
wire "wire: client PUB payments.charge -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"payments.charge\"'"
wire "wire: client PUB payments.deposit -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"payments.deposit\"'"
wire "wire: client PUB inventory.reserve -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"inventory.reserve\"'"
wire "wire: client PUB \$NATOMIC.FAULTS.payments (fault control) -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"\$NATOMIC.FAULTS.payments\"'"
wire "wire: client PUB events.orders.order_created (a forged event) -> Permissions Violation" \
  "-ERR 'Permissions Violation for Publish to \"events.orders.order_created\"'"
wire "wire: client SUB payments.> in queue group payments -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"payments.>\" using queue \"payments\"'"
wire "wire: client SUB payments.> (plain) -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"payments.>\"'"
wire "wire: client SUB orders.> in queue group orders -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"orders.>\" using queue \"orders\"'"
wire "wire: client SUB \$NATOMIC.FAULTS.> -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"\$NATOMIC.FAULTS.>\"'"
wire "wire: client SUB events.> -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"events.>\"'"
wire "wire: client SUB _INBOX.> (everybody's replies) -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"_INBOX.>\"'"
wire "wire: client SUB _INBOX.orders.> (orders' replies) -> Permissions Violation" \
  "-ERR 'Permissions Violation for Subscription to \"_INBOX.orders.>\"'"
check "wire: the controls pass (client PUB \$SRV.PING, SUB _INBOX.client.*: no error; 14 refusals, no more)" \
  "$([[ $probe_rc -eq 0 && $(grep -c 'Permissions Violation' "$dir/probe.out") -eq 14 ]] &&
    ! grep -qE 'SRV.PING|_INBOX.client' "$dir/probe.out" || echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"

# A compromised service is contained too: inventory cannot spend or refund money, nor take payments' calls.
probe inventory "${pw[inventory]}" \
  pub payments.refund - "f1:$order_id" \
  pub payments.deposit - - \
  sub 'payments.>' payments
check "wire: inventory's identity cannot publish payments.refund / payments.deposit nor join payments' queue group" \
  "$([[ $probe_rc -eq 0 && $(grep -c 'Permissions Violation' "$dir/probe.out") -eq 3 ]] ||
    echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"

# A reply redirected: the client calls inventory.get_stock {sku: book} with the reply subject
# payments.deposit. Under allow_responses inventory's StockReply {sku: book, available: 8} would
# reach payments as a DepositRequest {customer: book, amount: 8}. Two walls: inventory refuses a
# call whose reply subject is not an inbox (libatomic, NATOMIC_DEFAULT_INBOX_PREFIX) and says so
# in its log; and were it to answer, replies may go to _INBOX.> only here (the check above shows
# the server refusing inventory's own publish to payments.deposit).
probe client "${pw[client]}" pub inventory.get_stock payments.deposit "f1:book"
why=""
[[ $probe_rc -eq 0 && ! -s $dir/probe.out ]] || why+="the client's own publish was refused? $(cat "$dir/probe.out"); "
for _ in $(seq 30); do
  grep -q "reply subject payments.deposit is not an inbox" "$dir/inventory.log" && break
  sleep 0.1
done
grep -q "reply subject payments.deposit is not an inbox" "$dir/inventory.log" ||
  why+="inventory did not refuse the call with a reply subject that is no inbox; "
sleep 0.3
accounts=$(timeout 5 sqlite3 "$dir/payments.db" "SELECT customer || ' ' || balance FROM accounts WHERE customer = 'book'")
[[ -z $accounts ]] || why+="payments now has an account: $accounts; "
check "a service's reply redirected by the client to payments.deposit is refused (by the service, and the server would too)" "$why"
snapshot >"$dir/after.sql"
check "the stores are unchanged by all of (b): balance, charged, charges, stock, reservations, barrier, orders, notifications" \
  "$(diff "$dir/before.sql" "$dir/after.sql" || true)"
call_as client payments.get_balance '{"customer":"alice"}'
check "client: payments.get_balance still 3800 / 1200 charged" \
  "$([[ $call_rc -eq 0 && $(json balance <"$dir/out") == 3800 && $(json charged <"$dir/out") == 1200 ]] ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"

# ==== (c) authentication =================================================================
probe client wrong-password pub orders.get_order - -
check "wire: a wrong password is refused (Authorization Violation, connection closed)" \
  "$([[ $probe_rc -eq 4 ]] && grep -qxF -- "-ERR 'Authorization Violation'" "$dir/probe.out" ||
    echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"
probe payments "${pw[client]}" pub orders.get_order - -
check "wire: the client's password does not open the payments identity" \
  "$([[ $probe_rc -eq 4 ]] && grep -qxF -- "-ERR 'Authorization Violation'" "$dir/probe.out" ||
    echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"
NATS_PASSWORD=wrong-password timeout 15 "$call" --server "$url" --user client orders.get_order \
  "{\"order_id\":\"$order_id\"}" >"$dir/out" 2>"$dir/err"
call_rc=$?
check "natomic-call with a wrong password: exit 3, Authorization Violation" \
  "$([[ $call_rc -eq 3 ]] && grep -qi 'authorization' "$dir/err" || echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"

why=""
for u in "${!pw[@]}"; do
  grep -qF -- "${pw[$u]}" "$dir"/*.log && why+="the password of $u is in a log; "
done
check "no password shows in any log (services, server)" "$why"

# ==== a reply of orders redirected to a compensation ======================================
# orders may publish payments.refund (its own compensation), so the server lets through a reply
# of orders.get_order that the client addressed to payments.refund, carrying the order's
# transaction id (Natomic-Tx): payments would read OrderReply {order_id} as RefundRequest
# {order_id}, and the barrier would see the right transaction. libatomic refuses a call whose
# reply subject is not an inbox: orders neither runs nor answers it, and logs why.
probe client "${pw[client]}" hpub orders.get_order payments.refund "Natomic-Tx=$order_tx" "f1:$order_id"
sleep 0.5
state=$(timeout 5 sqlite3 "$dir/payments.db" "SELECT state FROM charges WHERE order_id='$order_id'")
if [[ $state == charged ]] && grep -q "reply subject payments.refund is not an inbox" "$dir/orders.log"; then
  ok "a reply of orders redirected to payments.refund refunds nothing (orders refuses the call, and says why)"
else
  not_ok "a reply of orders redirected to payments.refund refunds nothing" \
    "the charge of $order_id is now '$state'; orders' log: $(grep -h 'not an inbox' "$dir/orders.log" | head -2)"
fi

echo "1..$n"
exit 0
