#!/usr/bin/env bash
# gen-certs.sh -- a private CA, a server certificate and one client certificate per identity,
# for running the example services over TLS with client certificates verified (nats-server
# --tlsverify). The lab makes a fresh set for each secure story (scenarios/security/); use it
# for a try-out of deploy/ too. Not for production: the keys are unencrypted and the CA lives
# next to them.
#
#   deploy/gen-certs.sh DIR [IDENTITY...]
#
# Writes into DIR (made if missing, mode 0700):
#   ca.pem                     the CA certificate (clients: --tlsca; nats-server: --tlscacert)
#   server.pem server-key.pem  the server's, for 127.0.0.1 and localhost (--tlscert/--tlskey)
#   <id>.pem <id>-key.pem      each identity's client certificate (default identities: orders
#                              inventory payments notifications conversions client admin)
# Keys are ECDSA P-256 (fast to make), valid for 2 days, readable by the owner only.
# Needs openssl. Prints nothing on success; on failure, openssl's own words and exit 1.
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -ge 1 ]] && exit 0 || exit 2
fi
dir=$1
shift
ids=("$@")
((${#ids[@]} > 0)) || ids=(orders inventory payments notifications conversions client admin)
for id in "${ids[@]}"; do
  [[ $id =~ ^[A-Za-z0-9_-]+$ ]] || { echo "gen-certs.sh: '$id' is not an identity name ([A-Za-z0-9_-])" >&2; exit 2; }
done
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

mkdir -p -- "$dir"
chmod 700 -- "$dir"
cd -- "$dir"
umask 077
log=$(mktemp)
trap 'rm -f -- "$log" ./*.csr ./*.ext ca.srl' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" >>"$log" 2>&1; }
sign() { # NAME CN [EXTENSIONS]
  key "$1-key.pem"
  openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$1.csr" >>"$log" 2>&1
  printf '%s\n' "${3:-extendedKeyUsage=clientAuth}" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile "$1.ext" \
    -out "$1.pem" >>"$log" 2>&1
}
if ! {
  key ca-key.pem &&
    openssl req -x509 -new -key ca-key.pem -days 2 -subj "/CN=natomic lab CA" -out ca.pem >>"$log" 2>&1 &&
    sign server 127.0.0.1 $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth' &&
    for id in "${ids[@]}"; do sign "$id" "$id" || exit 1; done
}; then
  echo "gen-certs.sh: openssl failed:" >&2
  cat "$log" >&2
  exit 1
fi
