#!/usr/bin/env bash
# Makes the certificates of mutual TLS between kiln daemons and their clients, with openssl:
#   .certs/daemon/{ca.pem,cert.pem,key.pem}   for the Secret kilnd-daemon-certs
#   .certs/client/{ca.pem,cert.pem,key.pem}   for buildctl, buildx's remote driver, kiln --host
# The daemon's certificate names every address given (default: the Service and its pods).
#   usage: create-certs.sh [SAN ...]    (a SAN is a DNS name or an IP address)
set -euo pipefail
cd "$(dirname "$0")"
sans=("$@")
[ ${#sans[@]} -gt 0 ] || sans=(kilnd "*.kilnd" kilnd.default.svc "*.kilnd.default.svc" 127.0.0.1)
alt=()
for san in "${sans[@]}"; do
  if [[ $san =~ ^[0-9.]+$ || $san == *:* ]]; then alt+=("IP:$san"); else alt+=("DNS:$san"); fi
done
mkdir -p .certs/daemon .certs/client
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -out "$work/ca.pem" -days 825 -subj "/CN=kilnd CA"
sign() { # NAME SUBJECT EXTENSIONS
  key "$work/$1.key"
  openssl req -new -key "$work/$1.key" -out "$work/$1.csr" -subj "$2"
  printf '%s\n' "$3" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -out "$work/$1.pem" -days 825 -extfile "$work/$1.ext"
}
sign daemon "/CN=kilnd" "$(IFS=,; echo "subjectAltName=${alt[*]}")
extendedKeyUsage=serverAuth"
sign client "/CN=kilnd client" "extendedKeyUsage=clientAuth"
for who in daemon client; do
  cp "$work/ca.pem" ".certs/$who/ca.pem"
  cp "$work/$who.pem" ".certs/$who/cert.pem"
  cp "$work/$who.key" ".certs/$who/key.pem"
  chmod 600 ".certs/$who/key.pem"
done
echo "made .certs/daemon and .certs/client for: ${sans[*]}"
