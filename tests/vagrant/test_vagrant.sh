#!/usr/bin/env bash
# test_vagrant.sh -- the Vagrant set-up, checked where VMs cannot run: the Vagrantfile's syntax
# (ruby -c) and what it defines with and without NATOMIC_CLUSTER=1 (evaluated against a stub of
# Vagrant's API), and the provisioning script's own path run on this machine: `./lab setup` as
# in every VM, then each role's files written under a scratch root (--root) and the NATS node
# configuration accepted by nats-server -t. Nothing is started, nothing leaves the machine.
#   test_vagrant.sh SOURCE_ROOT NATS_SERVER
set -uo pipefail
root=$1
nats_server=$2
source "$(dirname "${BASH_SOURCE[0]}")/../tap.sh"
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
if ! command -v ruby >/dev/null; then
  echo "1..0 # SKIP ruby is not installed (./lab setup installs it)"
  exit 0
fi

out=$(ruby -c "$root/Vagrantfile" 2>&1)
check "ruby -c Vagrantfile" "$([[ $out == "Syntax OK" ]] || echo "$out")"

# ---- what it defines -----------------------------------------------------------------------
plain=$(cd "$root" && env -u NATOMIC_CLUSTER NATOMIC_CLUSTER_KEY="$work/key/id" ruby "$root/tests/vagrant/vagrant_stub.rb" Vagrantfile 2>&1)
check "without NATOMIC_CLUSTER: the lab VM alone, provisioned by provision.sh lab" "$(
  [[ $(wc -l <<<"$plain") -eq 1 ]] && grep -q '^lab hostname=natomic-lab ips= primary=true provision=/vagrant/deploy/vagrant/provision.sh lab$' <<<"$plain" || echo "$plain")"
check "without NATOMIC_CLUSTER no key pair is made" "$([[ ! -e $work/key/id ]] || echo "made $work/key/id")"

cluster=$(cd "$root" && NATOMIC_CLUSTER=1 NATOMIC_CLUSTER_KEY="$work/key/id" ruby "$root/tests/vagrant/vagrant_stub.rb" Vagrantfile 2>&1)
why=""
for i in 1 2 3; do
  grep -q "^nats$i hostname=nats$i ips=192.168.56.1$i primary=false provision=/vagrant/deploy/vagrant/provision.sh nats $i --no-build\$" <<<"$cluster" ||
    why+="no nats$i as expected; "
done
grep -q '^lab hostname=natomic-lab ips=192.168.56.10 primary=true provision=/vagrant/deploy/vagrant/provision.sh lab$' <<<"$cluster" ||
  why+="no lab VM on 192.168.56.10; "
check "NATOMIC_CLUSTER=1: nats1..3 on 192.168.56.11..13 and the lab VM, each by provision.sh" "${why:+$why $cluster}"
check "NATOMIC_CLUSTER=1 makes the node-control key pair once" "$([[ -r $work/key/id && -r $work/key/id.pub ]] || echo "no key in $work/key")"

# ---- the provisioning path, here ---------------------------------------------------------------
export NATOMIC_CLUSTER_KEY=$work/key/id
"$root/deploy/vagrant/provision.sh" nats 2 --root "$work/n2" --no-build >"$work/prov.log" 2>&1
rc=$?
check "provision.sh nats 2 runs here (./lab setup, then the node's files under --root)" "$([[ $rc -eq 0 ]] || echo "exit $rc: $(tail -c 600 "$work/prov.log")")"
conf=$work/n2/etc/natomic/nats.conf
check "node n2's configuration: its name, routes to n1 and n3, JetStream, monitoring" "$(
  grep -q '^server_name: n2$' "$conf" && grep -q 'routes: \[nats-route://192.168.56.11:6222, nats-route://192.168.56.13:6222\]' "$conf" &&
    grep -q 'store_dir: "/var/lib/natomic-nats"' "$conf" && grep -q '^http: 0.0.0.0:8222$' "$conf" || cat "$conf" 2>&1)"
out=$("$nats_server" -c "$conf" -t 2>&1)
check "nats-server -t accepts it" "$([[ $? -eq 0 ]] || echo "$out")"
check "the systemd unit runs that configuration, and does not restart a node the lab stopped" "$(
  grep -q '^ExecStart=/usr/sbin/nats-server -c /etc/natomic/nats.conf$' "$work/n2/etc/systemd/system/natomic-nats.service" &&
    grep -q '^Restart=no$' "$work/n2/etc/systemd/system/natomic-nats.service" || echo "unit: $(cat "$work/n2/etc/systemd/system/natomic-nats.service" 2>&1)")"
check "the node authorizes the lab's key for root" "$(grep -qxF "$(cat "$work/key/id.pub")" "$work/n2/root/.ssh/authorized_keys" 2>/dev/null || echo "not in authorized_keys")"
"$root/deploy/vagrant/provision.sh" lab --root "$work/lab" --no-build >"$work/prov-lab.log" 2>&1
rc=$?
check "provision.sh lab installs the node-control key, owner-only" "$(
  [[ $rc -eq 0 && $(stat -c %a "$work/lab/root/.ssh/natomic-cluster" 2>/dev/null) == 600 ]] || echo "exit $rc: $(tail -c 400 "$work/prov-lab.log")")"

"$root/deploy/vagrant/provision.sh" nats 4 >/dev/null 2>&1
check "provision.sh refuses a node number out of 1..3" "$([[ $? -eq 2 ]] || echo "it did not exit 2")"
"$root/deploy/vagrant/node-control.sh" reboot n1 192.0.2.1 >/dev/null 2>&1
check "node-control.sh refuses an unknown verb before any ssh" "$([[ $? -eq 2 ]] || echo "it did not exit 2")"
why=""
for f in provision.sh node-control.sh run-cluster-stories.sh; do bash -n "$root/deploy/vagrant/$f" 2>>"$work/n.log" || why+="$f; "; done
check "the scripts parse (bash -n)" "${why:+$why $(cat "$work/n.log")}"
echo "1..$n"
