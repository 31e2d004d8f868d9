#!/usr/bin/env bash
# Generates the cluster CA and every certificate of the three-node example with openssl:
#   ca.pem / ca-key.pem                 the cluster CA (keep ca-key.pem offline once done)
#   <node>-etcd-peer.pem / -key.pem     etcd member <-> member (peer TLS, client auth required)
#   <node>-etcd-server.pem / -key.pem   etcd member serving clients (client auth required)
#   <node>-vigie-etcd.pem / -key.pem    the Vigie node as an etcd client (CN = node name)
#   <node>-vigie-https.pem / -key.pem   the Vigie node's HTTPS (advertise_url, API, UI)
# Usage: ./gen-certs.sh [OUT_DIR]   (default ./pki). Node names and addresses: NODES below.
# Idempotent: an existing CA is reused, existing certificates are kept.
set -euo pipefail
OUT=${1:-pki}
DAYS_CA=3650
DAYS=825
# name:ip:dns
NODES=("rec-a:10.20.0.11:rec-a.vigie.lan" "rec-b:10.20.0.12:rec-b.vigie.lan" "rec-c:10.20.0.13:rec-c.vigie.lan")

mkdir -p "$OUT"
chmod 700 "$OUT"
cd "$OUT"
umask 077

if [ ! -f ca.pem ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem
  openssl req -x509 -new -key ca-key.pem -sha256 -days "$DAYS_CA" -out ca.pem \
    -subj "/O=Vigie/CN=Vigie cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

# cert NAME CN EXTKEYUSAGE SAN
cert() {
  local name=$1 cn=$2 eku=$3 san=$4
  [ -f "$name.pem" ] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name-key.pem"
  openssl req -new -key "$name-key.pem" -subj "/O=Vigie/CN=$cn" -out "$name.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
    "$eku" "$san" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

for n in "${NODES[@]}"; do
  IFS=: read -r name ip dns <<< "$n"
  san="subjectAltName=DNS:$dns,IP:$ip,IP:127.0.0.1,DNS:localhost"
  cert "$name-etcd-peer"   "$name"       "serverAuth,clientAuth" "$san"
  # clientAuth too: etcd 3.4's gRPC gateway dials its own member with the server certificate.
  cert "$name-etcd-server" "$name"       "serverAuth,clientAuth" "$san"
  cert "$name-vigie-etcd"  "vigie-$name" "clientAuth"            ""
  cert "$name-vigie-https" "$dns"        "serverAuth"            "$san"
done
chmod 644 ./*.pem
chmod 600 ./*-key.pem
echo "certificates in $(pwd):"
ls -1 ./*.pem
