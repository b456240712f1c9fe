#!/usr/bin/env bash
# Runs a JavaScript interop client against an embedded NATS and the five
# services: run_interop.sh NATOMIC_LAB HERE PROTO [SCRIPT]. SCRIPT (default
# conversions_interop.mjs) is a file in HERE and gets PROTO (a .proto file
# or the proto/ folder, as the script expects) as its argument. When node or
# its modules are missing it prints a TAP plan of 0 with SKIP and exits 0:
# `./lab setup` installs them with npm when npm is there.
set -euo pipefail
lab_bin=$1 here=$2 proto=$3 script=${4:-conversions_interop.mjs}
if ! command -v node >/dev/null || [ ! -d "$here/node_modules/nats" ] || [ ! -d "$here/node_modules/protobufjs" ]; then
  echo "1..0 # SKIP node or tests/interop/node_modules missing (npm ci in tests/interop)"
  exit 0
fi
cd "$here"
exec "$lab_bin" with -- node "$here/$script" "$proto"
