#!/usr/bin/env bash
# provision.sh -- what `vagrant up` runs in each VM of the Vagrantfile, and what anyone can run
# on a Debian 12 machine to make it the same. One script, one path for every role:
#
#   provision.sh lab  [--root DIR] [--no-build]   ./lab setup && ./lab build; the node-control key
#   provision.sh nats N [--root DIR] [--no-build] ./lab setup, then NATS node nN of the cluster:
#                                                 its config, a systemd unit (natomic-nats), started
#
# The cluster: three nodes n1..n3 on 192.168.56.11..13 (the Vagrantfile's private network),
# client port 4222, routes on 6222, monitoring on 8222, JetStream in /var/lib/natomic-nats. No
# authentication: a private network for the lab alone (the security stories run their own
# TLS server, deploy/README.md). The lab VM drives the nodes over ssh as root with the key the
# Vagrantfile made (deploy/vagrant/.key/, never committed): node-control.sh.
#
#   --root DIR   write every file under DIR and start nothing (a dry run: what the tests do)
#   --no-build   skip `./lab build` (the lab role) -- `./lab setup` always runs
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
role=${1:-}
[[ $role == -h || $role == --help ]] && { usage; exit 0; }
[[ $role == lab || $role == nats ]] || { usage >&2; exit 2; }
shift
index=0
if [[ $role == nats ]]; then
  index=${1:-}
  [[ $index =~ ^[1-3]$ ]] || { echo "provision.sh: nats wants its node number, 1 to 3" >&2; exit 2; }
  shift
fi
root="" build=1
while (($# > 0)); do
  case $1 in
    --root) root=${2:?--root wants a folder}; shift ;;
    --no-build) build=0 ;;
    *) echo "provision.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done

src=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
key=${NATOMIC_CLUSTER_KEY:-$src/deploy/vagrant/.key/id_ed25519} # the Vagrantfile makes it
ips=(192.168.56.11 192.168.56.12 192.168.56.13)

cd "$src"
./lab setup # the Debian packages: nats-server, the compilers, ... (as everywhere)

if [[ $role == lab ]]; then
  ((build)) && ./lab build
  if [[ -r $key ]]; then # the lab drives the nodes with it (node-control.sh)
    install -d -m 700 "$root/root/.ssh"
    install -m 600 "$key" "$root/root/.ssh/natomic-cluster"
  else
    echo "provision.sh: no $key: node steps will not reach the nodes (NATOMIC_CLUSTER=1 vagrant up makes it)" >&2
  fi
  exit 0
fi

# ---- a NATS node ------------------------------------------------------------------------------
me=$((index - 1))
routes=""
for i in 0 1 2; do
  ((i == me)) || routes+="${routes:+, }nats-route://${ips[i]}:6222"
done
install -d -m 755 "$root/etc/natomic" "$root/etc/systemd/system"
install -d -m 700 "$root/var/lib/natomic-nats"
cat >"$root/etc/natomic/nats.conf" <<CONF
# NATS node n$index of the lab's cluster (deploy/vagrant/provision.sh). The lab names the nodes
# n1..n3 in the order of its --server list: keep server_name and the address in step.
server_name: n$index
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
jetstream {
  store_dir: "/var/lib/natomic-nats"
}
cluster {
  name: natomic
  listen: 0.0.0.0:6222
  routes: [$routes]
}
CONF
cat >"$root/etc/systemd/system/natomic-nats.service" <<UNIT
[Unit]
Description=NATS node n$index of the nats-atomicity lab cluster
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/sbin/nats-server -c /etc/natomic/nats.conf
Restart=no
KillSignal=SIGTERM
TimeoutStopSec=10

[Install]
WantedBy=multi-user.target
UNIT
# Restart=no: a node the lab stops stays stopped until the lab starts it (kill_node, restart_node).
if [[ -r $key.pub ]]; then
  install -d -m 700 "$root/root/.ssh"
  touch "$root/root/.ssh/authorized_keys"
  grep -qxF "$(cat "$key.pub")" "$root/root/.ssh/authorized_keys" || cat "$key.pub" >>"$root/root/.ssh/authorized_keys"
  chmod 600 "$root/root/.ssh/authorized_keys"
fi
if [[ -z $root ]]; then
  systemctl daemon-reload
  systemctl enable natomic-nats
  systemctl restart natomic-nats
fi
