#!/usr/bin/env bash
# The least-privilege identities of deploy/nats-server-durable.conf, from the
# outside: the durable-mode twin of test_least_privilege.sh. A real
# nats-server runs that file (JetStream on, its store in a temp folder, a
# free loopback port, random passwords); the example services run in
# DURABLE mode (saga log and leases in JetStream KV, events through the
# EVENTS stream and a durable consumer), each as its own user; natomic-call
# and a few lines of Python speaking the NATS text protocol act as the
# `client`, `admin` and the services' identities. It proves:
#   (a) recovery works under those identities: orders, started with a fault
#       rule that makes it crash itself after charging, dies mid-saga with
#       stock reserved, money charged and its saga record in its bucket;
#       restarted (no fault, same --instance) it claims the saga and
#       compensates: stock and money come back, the order is cancelled, the
#       record is gone;
#   (b) the saga works end to end: a confirmed order moves stock and money
#       and its event reaches notifications through EVENTS and the durable
#       consumer; a declined order is compensated; conversions' batch
#       rollback works; no service hit a permission violation (the one
#       refusal expected is the lab-only fault trace of the crash rule);
#   (c) the refusals hold on the wire: the client and admin have no
#       JetStream at all ($JS.>, $KV.>, published or subscribed);
#       inventory cannot read or write orders' saga bucket, nor delete
#       EVENTS; notifications cannot delete or add consumers; orders cannot
#       purge or delete its own log; and afterwards everything still works.
# Prints TAP 14.
#
#   test_least_privilege_durable.sh NATS_SERVER_BIN BUILD_DIR SOURCE_DIR
# shellcheck disable=SC2016,SC2317 # subjects with a literal $; stop/cleanup run from the EXIT trap
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ $# -ne 3 ]]; then
  echo "usage: $0 NATS_SERVER_BIN BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
nats_server=$1 build=$2 src=$3
conf=$src/deploy/nats-server-durable.conf
call=$build/faultinject/natomic-call
services=(inventory payments notifications conversions orders) # orders last: it calls the others
fault_rule=orders/create_order/after_charge=crash@1
n=0
dir=$(mktemp -d "${TMPDIR:-/tmp}/natomic-lpd-XXXXXX")
pids=()
declare -A spid # service -> pid of its current process
# shellcheck source=lp_lib.sh
source "$here/lp_lib.sh"
newid() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
for u in "${services[@]}" client admin; do pw[$u]=$(newpw); done
url="nats://127.0.0.1:$port"
store=$dir/js/jetstream/\$G/streams # JetStream's files: one folder per stream, consumers under obs/

# ---- the NATS text protocol, by hand: what the server answers is the proof -------------
# The NATS text protocol by hand: tests/security/nats_probe.py (its opening comment says how).
probe() { # USER OP...: output in $dir/probe.out, status in $probe_rc
  local user=$1
  shift
  PROBE_PASSWORD=${pw[$user]} timeout 10 python3 "$here/nats_probe.py" "$port" "$user" "$@" >"$dir/probe.out" 2>&1
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
# The error type of a natomic-call error answer.
error_type() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(v.get("error", {}).get("type", ""))'; }
stock() { # prints "available reserved" of book (empty when the call failed)
  call_as client inventory.get_stock '{"sku":"book"}' && echo "$(json available <"$dir/out") $(json reserved <"$dir/out")"
}
money() { # prints "balance charged" of alice
  call_as client payments.get_balance '{"customer":"alice"}' && echo "$(json balance <"$dir/out") $(json charged <"$dir/out")"
}
order_status() { # TX: the status of the order of that transaction in orders' store
  timeout 5 sqlite3 "$dir/orders.db" "SELECT status FROM orders WHERE tx = '$1'" 2>/dev/null
}
order_id_of() { # TX
  timeout 5 sqlite3 "$dir/orders.db" "SELECT order_id FROM orders WHERE tx = '$1'" 2>/dev/null
}
# The saga record of a call, read as orders reads it (its own bucket, direct get): prints the
# status line of the answer, "NATS/1.0" when the record is there, "NATS/1.0 404 ..." when not.
saga_record() { # CALL_ID
  probe orders sub _INBOX.orders.lpd - \
    pub "\$JS.API.DIRECT.GET.KV_natomic_saga_orders.\$KV.natomic_saga_orders.saga.$1" _INBOX.orders.lpd - want 1
  sed -n 's/^  status: //p' "$dir/probe.out" | head -1
}

# ---- the server, with the deployed file -------------------------------------------------
env NATOMIC_PORT="$port" NATOMIC_JS_DIR="$dir/js" ORDERS_PASSWORD="${pw[orders]}" \
  INVENTORY_PASSWORD="${pw[inventory]}" PAYMENTS_PASSWORD="${pw[payments]}" \
  NOTIFICATIONS_PASSWORD="${pw[notifications]}" CONVERSIONS_PASSWORD="${pw[conversions]}" \
  CLIENT_PASSWORD="${pw[client]}" ADMIN_PASSWORD="${pw[admin]}" \
  "$nats_server" -c "$conf" >"$dir/nats-server.log" 2>&1 &
pids+=($!)
up=false
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { up=true; break; }
  sleep 0.1
done
if ! $up || ! grep -q "Starting JetStream" "$dir/nats-server.log"; then
  bail "nats-server runs deploy/nats-server-durable.conf with JetStream" "$(cat "$dir/nats-server.log")"
fi
ok "nats-server runs deploy/nats-server-durable.conf (JetStream store, port and passwords from the environment)"

# ---- the services, each as its own user, durable mode ------------------------------------
start_service() { # NAME [VAR=VALUE...]: durable mode, instance NAME-1, log appended to NAME.log
  local s=$1
  shift
  env "$@" NATS_PASSWORD="${pw[$s]}" "$build/services/$s/$s" --server "$url" --user "$s" --inbox-prefix "_INBOX.$s" \
    --mode durable --instance "$s-1" --db "$dir/$s.db" --workers 4 >>"$dir/$s.log" 2>&1 &
  spid[$s]=$!
  pids+=($!)
  # A process that is to crash itself: out of the job table, so that bash does not report
  # its death ("Killed") on stderr. It is still stopped by pid on exit.
  [[ $# -eq 0 ]] || disown "${spid[$s]}"
}
answers() { # NAME: waits (5 s at most) until the service answers discovery
  local _
  for _ in $(seq 50); do
    call_as client --timeout 500 --list "$1" && return 0
    kill -0 "${spid[$1]}" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
for s in "${services[@]}"; do
  if [[ $s == orders ]]; then
    start_service orders NATOMIC_FAULTS="$fault_rule" # its first start crashes after charging
  else
    start_service "$s"
  fi
done
why=""
for s in "${services[@]}"; do
  answers "$s" || why+="$s does not answer discovery: $(cat "$dir/err") -- its log: $(cat "$dir/$s.log"); "
  grep -q "durable mode: instance $s-1" "$dir/$s.log" || why+="$s is not in durable mode: $(cat "$dir/$s.log"); "
done
[[ -z $why ]] || bail "the five services start under their own identities in durable mode" "$why"
ok "the five services start under their own identities in durable mode (leases, saga logs, EVENTS, consumer)"

call_as admin inventory.restock '{"sku":"book","qty":10}'
check "admin: inventory.restock works" \
  "$([[ $call_rc -eq 0 && $(json available <"$dir/out") == 10 ]] || echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"
call_as admin payments.deposit '{"customer":"alice","amount":5000}'
check "admin: payments.deposit works" \
  "$([[ $call_rc -eq 0 && $(json balance <"$dir/out") == 5000 ]] || echo "exit $call_rc: $(cat "$dir/out" "$dir/err")")"

# ==== (a) orders dies mid-saga; its restart recovers ======================================
crash_tx=$(newid)
call_as client --tx "$crash_tx" --timeout 2000 orders.create_order \
  '{"customer":"alice","sku":"book","qty":3,"amount":700}'
why=""
[[ $call_rc -eq 3 ]] || why+="natomic-call exit $call_rc, want 3 (no reply): $(cat "$dir/out" "$dir/err"); "
for _ in $(seq 50); do
  kill -0 "${spid[orders]}" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "${spid[orders]}" 2>/dev/null; then
  why+="orders still runs; "
else # gone: not ours to signal any more (its pid may be reused)
  for i in "${!pids[@]}"; do [[ ${pids[i]} == "${spid[orders]}" ]] && unset 'pids[i]'; done
  pids=("${pids[@]}")
fi
grep -q "fault point orders/create_order/after_charge fired" "$dir/orders.log" ||
  why+="the fault point did not fire: $(cat "$dir/orders.log"); "
check "orders (NATOMIC_FAULTS=$fault_rule) dies after charging, the client gets no reply" "$why"

s_now=$(stock) m_now=$(money)
crash_order=$(order_id_of "$crash_tx")
crash_call=${crash_order#ord-}
record=$( [[ -n $crash_call ]] && saga_record "$crash_call")
check "while orders is dead: 3 reserved, 700 charged, the order pending, its saga record in natomic_saga_orders" \
  "$([[ $s_now == "7 3" && $m_now == "4300 700" && $(order_status "$crash_tx") == pending && $record == NATS/1.0 ]] ||
    echo "stock '$s_now', money '$m_now', order '$crash_order' $(order_status "$crash_tx"), record '$record': $(cat "$dir/probe.out")")"

start_service orders # no fault rule, the same instance orders-1
answers orders
recovered=false
for _ in $(seq 100); do
  [[ $(order_status "$crash_tx") == cancelled && $(stock) == "10 0" && $(money) == "5000 0" ]] && {
    recovered=true
    break
  }
  sleep 0.1
done
record=$(saga_record "$crash_call")
check "orders restarted (same --instance, no fault): recovery released the stock, refunded the money, cancelled the order" \
  "$($recovered && grep -q "recovery: ended call $crash_call .*outcome compensated" "$dir/orders.log" ||
    echo "order $(order_status "$crash_tx"), stock '$(stock)', money '$(money)' -- orders log: $(cat "$dir/orders.log")")"
check "the saga record of the recovered call is gone from natomic_saga_orders" \
  "$([[ $record == "NATS/1.0 404"* ]] || echo "direct get answered '$record': $(cat "$dir/probe.out")")"

# ==== (b) the saga end to end, a declined order, conversions =============================
order_tx=$(newid)
call_as client --tx "$order_tx" orders.create_order '{"customer":"alice","sku":"book","qty":2,"amount":1200}'
order_id=$(json order_id <"$dir/out" 2>/dev/null)
check "client: orders.create_order works end to end (status confirmed)" \
  "$([[ $call_rc -eq 0 && $(json status <"$dir/out") == confirmed && -n $order_id ]] ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err") -- orders log: $(cat "$dir/orders.log")")"
s_now=$(stock) m_now=$(money)
check "stock and money moved (8 available, 2 reserved; 3800 left, 1200 charged)" \
  "$([[ $s_now == "8 2" && $m_now == "3800 1200" ]] || echo "stock '$s_now', money '$m_now'")"
found=false
for _ in $(seq 50); do
  call_as client notifications.list '{"customer":"alice"}'
  [[ $call_rc -eq 0 ]] && grep -qF -- "$order_id" "$dir/out" && { found=true; break; }
  sleep 0.1
done
check "the notification arrives through EVENTS and the durable consumer notifications-orders-order_created" \
  "$($found && [[ -d $store/EVENTS/obs/notifications-orders-order_created ]] ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err"); consumers: $(ls "$store/EVENTS/obs" 2>&1) -- notifications log: $(cat "$dir/notifications.log")")"

declined_tx=$(newid)
call_as client --tx "$declined_tx" orders.create_order '{"customer":"alice","sku":"book","qty":1,"amount":99999}'
declined_rc=$call_rc
cp "$dir/out" "$dir/declined.out"
type=$(error_type <"$dir/declined.out" 2>/dev/null)
s_now=$(stock) m_now=$(money)
check "a declined order (PaymentDeclined) is compensated: stock released, order cancelled, money untouched" \
  "$([[ $declined_rc -eq 1 && $type == PaymentDeclined ]] && grep -q '"rollback": "complete"' "$dir/declined.out" &&
    [[ $s_now == "8 2" && $m_now == "3800 1200" && $(order_status "$declined_tx") == cancelled ]] ||
    echo "exit $declined_rc: $(cat "$dir/declined.out"); stock '$s_now', money '$m_now', order $(order_status "$declined_tx")")"

call_as client conversions.inches_to_cm_batch '{"inches":[1,-2]}'
check "conversions (durable): a failed batch is rolled back through conversions.forget" \
  "$([[ $call_rc -eq 1 ]] && grep -q '"rollback": "complete"' "$dir/out" && grep -q 'forgot conversion' "$dir/conversions.log" ||
    echo "exit $call_rc: $(cat "$dir/out" "$dir/err") -- conversions log: $(cat "$dir/conversions.log")")"

# The only refusal a service may meet: the record of the fired fault point (natomic.trace.fault.>),
# lab-only and refused on purpose; everything durable mode does is allowed.
fault_trace='Publish Violation - User "orders", Subject "natomic.trace.fault.orders.orders-1"'
violations=$(grep -E 'Violation - User "(orders|inventory|payments|notifications|conversions)"' "$dir/nats-server.log" |
  grep -vF -- "$fault_trace")
check "no service hit a permission violation doing all that (JetStream, KV, acks, consumer, recovery)" "$violations"
check "the crash rule's fault trace record (lab only, natomic.trace.fault.>) was refused, as in memory mode" \
  "$(grep -qF -- "$fault_trace" "$dir/nats-server.log" || echo "no such violation in the server log")"

# ==== (c) the refusals, on the wire ========================================================
wire() { # NAME EXPECTED-LINE...: every line is in the probe's output
  local why="" line
  [[ $probe_rc -eq 0 ]] || why="probe exit $probe_rc; "
  for line in "${@:2}"; do
    grep -qxF -- "$line" "$dir/probe.out" || why+="want the line $line; "
  done
  check "$1" "${why:+$why server said: $(cat "$dir/probe.out")}"
}
pubv() { echo "-ERR 'Permissions Violation for Publish to \"$1\"'"; }
subv() { echo "-ERR 'Permissions Violation for Subscription to \"$1\"'"; }
inbox_of() { echo "_INBOX.$1.lpd"; }

ack='$JS.ACK.EVENTS.notifications-orders-order_created.1.1.1.1.0.0'
probe client \
  pub '$JS.API.INFO' "$(inbox_of client)" - \
  pub '$JS.API.STREAM.INFO.EVENTS' "$(inbox_of client)" - \
  pub '$JS.API.STREAM.DELETE.EVENTS' "$(inbox_of client)" - \
  pub '$JS.API.STREAM.CREATE.EVENTS' "$(inbox_of client)" - \
  pub '$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifications-orders-order_created' "$(inbox_of client)" - \
  pub '$JS.API.DIRECT.GET.KV_natomic_saga_orders.$KV.natomic_saga_orders.saga.x' "$(inbox_of client)" - \
  pub '$KV.natomic_saga_orders.saga.x' - - \
  pub '$KV.natomic_lease_orders.orders-1' - - \
  pub "$ack" - - \
  sub '$JS.API.>' - \
  sub '$JS.>' - \
  sub '$KV.>' - \
  sub '$KV.natomic_saga_orders.>' - \
  sub '_INBOX.orders.>' - \
  sub "$(inbox_of client)" -
wire "wire: client has no JetStream: PUB \$JS.API.INFO / STREAM.INFO|DELETE|CREATE.EVENTS / CONSUMER.MSG.NEXT / DIRECT.GET -> Permissions Violation" \
  "$(pubv '$JS.API.INFO')" "$(pubv '$JS.API.STREAM.INFO.EVENTS')" "$(pubv '$JS.API.STREAM.DELETE.EVENTS')" \
  "$(pubv '$JS.API.STREAM.CREATE.EVENTS')" \
  "$(pubv '$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifications-orders-order_created')" \
  "$(pubv '$JS.API.DIRECT.GET.KV_natomic_saga_orders.$KV.natomic_saga_orders.saga.x')"
wire "wire: client PUB \$KV.natomic_saga_orders.* / \$KV.natomic_lease_orders.* (KV writes) and \$JS.ACK.EVENTS.* -> Permissions Violation" \
  "$(pubv '$KV.natomic_saga_orders.saga.x')" "$(pubv '$KV.natomic_lease_orders.orders-1')" "$(pubv "$ack")"
wire "wire: client SUB \$JS.API.> / \$JS.> / \$KV.> / \$KV.natomic_saga_orders.> / _INBOX.orders.> -> Permissions Violation" \
  "$(subv '$JS.API.>')" "$(subv '$JS.>')" "$(subv '$KV.>')" "$(subv '$KV.natomic_saga_orders.>')" "$(subv '_INBOX.orders.>')"
check "wire: the client's controls pass (SUB its own inbox: no error; 14 refusals, no JetStream answer)" \
  "$([[ $probe_rc -eq 0 && $(grep -c 'Permissions Violation' "$dir/probe.out") -eq 14 ]] &&
    ! grep -qE '^H?MSG|_INBOX.client' "$dir/probe.out" || echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"

probe admin \
  pub '$JS.API.INFO' "$(inbox_of admin)" - \
  pub '$JS.API.STREAM.PURGE.KV_natomic_lease_payments' "$(inbox_of admin)" - \
  pub '$KV.natomic_lease_payments.payments-1' - - \
  sub '$JS.API.>' - \
  sub '$KV.>' - \
  sub "$(inbox_of admin)" -
wire "wire: admin has no JetStream either (PUB \$JS.API.INFO, STREAM.PURGE, \$KV.*; SUB \$JS.API.>, \$KV.>)" \
  "$(pubv '$JS.API.INFO')" "$(pubv '$JS.API.STREAM.PURGE.KV_natomic_lease_payments')" \
  "$(pubv '$KV.natomic_lease_payments.payments-1')" "$(subv '$JS.API.>')" "$(subv '$KV.>')"

# inventory: orders' saga bucket, every way in -- KV put, direct get, stream message get, a
# watcher's consumer, a plain subscription -- and the EVENTS stream.
probe inventory \
  sub "$(inbox_of inventory)" - \
  pub "\$KV.natomic_saga_orders.saga.$crash_call" - - \
  pub "\$JS.API.DIRECT.GET.KV_natomic_saga_orders.\$KV.natomic_saga_orders.saga.$crash_call" "$(inbox_of inventory)" - \
  pub '$JS.API.STREAM.MSG.GET.KV_natomic_saga_orders' "$(inbox_of inventory)" '{"seq":1}' \
  pub '$JS.API.CONSUMER.CREATE.KV_natomic_saga_orders' "$(inbox_of inventory)" - \
  pub '$JS.API.STREAM.INFO.KV_natomic_saga_orders' "$(inbox_of inventory)" - \
  pub '$JS.API.STREAM.MSG.DELETE.KV_natomic_saga_orders' "$(inbox_of inventory)" '{"seq":1}' \
  pub '$JS.API.STREAM.PURGE.KV_natomic_saga_orders' "$(inbox_of inventory)" - \
  sub '$KV.natomic_saga_orders.>' - \
  sub '$JS.FC.KV_natomic_saga_orders.>' -
wire "wire: inventory cannot write orders' saga bucket (PUB \$KV.natomic_saga_orders.saga.*, STREAM.MSG.DELETE, STREAM.PURGE)" \
  "$(pubv "\$KV.natomic_saga_orders.saga.$crash_call")" \
  "$(pubv '$JS.API.STREAM.MSG.DELETE.KV_natomic_saga_orders')" "$(pubv '$JS.API.STREAM.PURGE.KV_natomic_saga_orders')"
wire "wire: inventory cannot read orders' saga bucket (DIRECT.GET, STREAM.MSG.GET, STREAM.INFO, CONSUMER.CREATE, SUB \$KV.natomic_saga_orders.>)" \
  "$(pubv "\$JS.API.DIRECT.GET.KV_natomic_saga_orders.\$KV.natomic_saga_orders.saga.$crash_call")" \
  "$(pubv '$JS.API.STREAM.MSG.GET.KV_natomic_saga_orders')" "$(pubv '$JS.API.STREAM.INFO.KV_natomic_saga_orders')" \
  "$(pubv '$JS.API.CONSUMER.CREATE.KV_natomic_saga_orders')" "$(subv '$KV.natomic_saga_orders.>')" \
  "$(subv '$JS.FC.KV_natomic_saga_orders.>')"
check "wire: no JetStream answer reached inventory (9 refusals)" \
  "$([[ $probe_rc -eq 0 && $(grep -c 'Permissions Violation' "$dir/probe.out") -eq 9 ]] &&
    ! grep -qE '^H?MSG' "$dir/probe.out" || echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"

probe inventory \
  sub "$(inbox_of inventory)" - \
  pub '$JS.API.STREAM.DELETE.EVENTS' "$(inbox_of inventory)" - \
  pub '$JS.API.STREAM.PURGE.EVENTS' "$(inbox_of inventory)" - \
  pub '$JS.API.STREAM.CREATE.EVENTS' "$(inbox_of inventory)" - \
  pub '$JS.API.CONSUMER.DELETE.EVENTS.notifications-orders-order_created' "$(inbox_of inventory)" - \
  pub events.orders.order_created - - \
  pub '$KV.natomic_lease_payments.payments-1' - - \
  pub '$JS.API.STREAM.CREATE.KV_natomic_lease_inventory' "$(inbox_of inventory)" '{"name":"KV_natomic_lease_inventory","subjects":["payments.>"]}' \
  want 1
wire "wire: inventory cannot delete, purge or create EVENTS, delete its consumer, publish an event or forge payments' lease" \
  "$(pubv '$JS.API.STREAM.DELETE.EVENTS')" "$(pubv '$JS.API.STREAM.PURGE.EVENTS')" "$(pubv '$JS.API.STREAM.CREATE.EVENTS')" \
  "$(pubv '$JS.API.CONSUMER.DELETE.EVENTS.notifications-orders-order_created')" \
  "$(pubv events.orders.order_created)" "$(pubv '$KV.natomic_lease_payments.payments-1')"
# The control: an API subject it holds answers. Its permission pins the stream's name, not its
# configuration; its lease stream exists, so re-creating it with other subjects (payments.>) is
# refused by JetStream itself (10058), not by a permission.
check "wire: inventory may re-create only its own lease stream, and JetStream refuses other subjects for it (10058)" \
  "$([[ $probe_rc -eq 0 && $(grep -c 'Permissions Violation' "$dir/probe.out") -eq 6 ]] &&
    grep -q '^MSG _INBOX.inventory.lpd' "$dir/probe.out" && grep -q '"err_code":10058' "$dir/probe.out" ||
    echo "probe exit $probe_rc: $(cat "$dir/probe.out")")"

probe notifications \
  pub '$JS.API.CONSUMER.DELETE.EVENTS.notifications-orders-order_created' "$(inbox_of notifications)" - \
  pub '$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.notifications-everything' "$(inbox_of notifications)" - \
  pub '$JS.API.CONSUMER.CREATE.EVENTS' "$(inbox_of notifications)" - \
  pub '$JS.API.STREAM.DELETE.EVENTS' "$(inbox_of notifications)" - \
  pub '$JS.API.STREAM.UPDATE.EVENTS' "$(inbox_of notifications)" - \
  pub '$JS.ACK.EVENTS.orders-other.1.1.1.1.0.0' - - \
  sub 'events.>' -
wire "wire: notifications cannot delete its consumer, add another, delete or update EVENTS, ack another consumer's events, subscribe events.>" \
  "$(pubv '$JS.API.CONSUMER.DELETE.EVENTS.notifications-orders-order_created')" \
  "$(pubv '$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.notifications-everything')" \
  "$(pubv '$JS.API.CONSUMER.CREATE.EVENTS')" "$(pubv '$JS.API.STREAM.DELETE.EVENTS')" \
  "$(pubv '$JS.API.STREAM.UPDATE.EVENTS')" "$(pubv '$JS.ACK.EVENTS.orders-other.1.1.1.1.0.0')" "$(subv 'events.>')"

probe orders \
  pub '$JS.API.STREAM.PURGE.KV_natomic_saga_orders' "$(inbox_of orders)" - \
  pub '$JS.API.STREAM.DELETE.KV_natomic_saga_orders' "$(inbox_of orders)" - \
  pub '$JS.API.STREAM.UPDATE.KV_natomic_saga_orders' "$(inbox_of orders)" - \
  pub '$JS.API.STREAM.DELETE.EVENTS' "$(inbox_of orders)" - \
  pub '$JS.API.CONSUMER.DELETE.EVENTS.notifications-orders-order_created' "$(inbox_of orders)" - \
  pub '$KV.natomic_saga_payments.saga.x' - - \
  pub '$KV.natomic_lease_payments.payments-1' - - \
  pub '$JS.API.STREAM.INFO.KV_natomic_lease_payments' "$(inbox_of orders)" -
wire "wire: orders cannot purge, delete or update its own saga log, delete EVENTS or notifications' consumer, touch payments' buckets" \
  "$(pubv '$JS.API.STREAM.PURGE.KV_natomic_saga_orders')" "$(pubv '$JS.API.STREAM.DELETE.KV_natomic_saga_orders')" \
  "$(pubv '$JS.API.STREAM.UPDATE.KV_natomic_saga_orders')" "$(pubv '$JS.API.STREAM.DELETE.EVENTS')" \
  "$(pubv '$JS.API.CONSUMER.DELETE.EVENTS.notifications-orders-order_created')" \
  "$(pubv '$KV.natomic_saga_payments.saga.x')" "$(pubv '$KV.natomic_lease_payments.payments-1')" \
  "$(pubv '$JS.API.STREAM.INFO.KV_natomic_lease_payments')"

# ---- and nothing was harmed --------------------------------------------------------------
why=""
for d in EVENTS EVENTS/obs/notifications-orders-order_created KV_natomic_saga_orders KV_natomic_lease_orders \
  KV_natomic_lease_inventory KV_natomic_lease_payments KV_natomic_lease_notifications; do
  [[ -d $store/$d ]] || why+="$d is gone; "
done
again_tx=$(newid)
call_as client --tx "$again_tx" orders.create_order '{"customer":"alice","sku":"book","qty":1,"amount":300}'
again_id=$(json order_id <"$dir/out" 2>/dev/null)
[[ $call_rc -eq 0 && -n $again_id ]] || why+="a new order failed: exit $call_rc: $(cat "$dir/out" "$dir/err"); "
found=false
for _ in $(seq 50); do
  call_as client notifications.list '{"customer":"alice"}'
  [[ -n $again_id && $call_rc -eq 0 ]] && grep -qF -- "$again_id" "$dir/out" && { found=true; break; }
  sleep 0.1
done
$found || why+="its notification did not arrive: $(cat "$dir/out" "$dir/err"); "
s_now=$(stock) m_now=$(money)
[[ $s_now == "7 3" && $m_now == "3500 1500" ]] || why+="stock '$s_now', money '$m_now' (want 7 3, 3500 1500); "
check "after all the refusals: streams, buckets and the consumer are intact, a new order goes through and is notified" "$why"
why=""
for u in "${!pw[@]}"; do
  grep -qF -- "${pw[$u]}" "$dir"/*.log && why+="the password of $u is in a log; "
done
check "no password shows in any log (services, server)" "$why"

echo "1..$n"
exit 0
