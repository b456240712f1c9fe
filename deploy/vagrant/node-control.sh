#!/usr/bin/env bash
# node-control.sh -- natomic-lab run --node-control for the Vagrant cluster (provision.sh):
# does what a node step asks to the VM of that node, over ssh as root with the key the
# Vagrantfile made. natomic-lab runs it as
#
#   node-control.sh stop|start|cut|heal <node> <host>
#
#   stop    systemctl stop natomic-nats           (kill_node)
#   start   systemctl start natomic-nats, and wait until the client port answers (restart_node)
#   cut     nftables: drop the client port (4222) and the routes (6222) both ways (cut_node);
#           the node runs on, with its state, cut off
#   heal    remove that table again (heal_node)
# Exit 0 when done; anything else fails the step, with this program's output in the story's
# node-control.log.
set -euo pipefail
verb=${1:?verb} node=${2:?node} host=${3:?host}
key=${NATOMIC_NODE_KEY:-/root/.ssh/natomic-cluster}
case $verb in
  stop) remote="systemctl stop natomic-nats" ;;
  start) remote="systemctl start natomic-nats && for i in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && exit 0; sleep 0.1; done; exit 1" ;;
  cut) remote="nft -f - <<'NFT'
table inet natomic {
  chain input { type filter hook input priority 0; tcp dport { 4222, 6222 } drop; }
  chain output { type filter hook output priority 0; tcp dport 6222 drop; }
}
NFT" ;;
  heal) remote="nft delete table inet natomic 2>/dev/null || true" ;;
  *) echo "node-control.sh: unknown verb '$verb' (stop, start, cut, heal)" >&2; exit 2 ;;
esac
echo "node-control.sh: $verb $node ($host)"
exec ssh -i "$key" -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=10 "root@$host" "$remote"
