#!/usr/bin/env bash
# Runs the JavaScript interop client against an embedded NATS and the
# conversions service. Skips (exit 77) when node or its modules are missing:
# `./lab setup` installs them with npm when npm is there.
set -euo pipefail
lab_bin=$1 here=$2 proto=$3
if ! command -v node >/dev/null || [ ! -d "$here/node_modules/nats" ] || [ ! -d "$here/node_modules/protobufjs" ]; then
  echo "1..0 # SKIP node or tests/interop/node_modules missing (npm ci in tests/interop)"
  exit 0
fi
cd "$here"
exec "$lab_bin" with -- node "$here/conversions_interop.mjs" "$proto"
