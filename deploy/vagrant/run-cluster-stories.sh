#!/usr/bin/env bash
# run-cluster-stories.sh -- in the lab VM: the cluster group of the scenario suite against the
# three NATS VMs (nats1..nats3), nodes stopped, started, cut and healed through
# node-control.sh. Extra arguments go to ./lab run (e.g. --filter durable, or other paths).
#
#   NATOMIC_CLUSTER=1 vagrant up
#   vagrant ssh lab -c 'sudo /vagrant/deploy/vagrant/run-cluster-stories.sh'
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/../.."
servers=nats://192.168.56.11:4222,nats://192.168.56.12:4222,nats://192.168.56.13:4222
paths=()
(($# > 0)) && [[ $1 != -* ]] || paths=(scenarios/cluster)
exec ./lab run "${paths[@]}" "$@" --server "$servers" --monitor-port 8222 \
  --node-control "$PWD/deploy/vagrant/node-control.sh"
