#!/bin/sh
# A local CA and one certificate for the NATS nodes, for trying TLS: `deploy/make-certs.sh [DIR] [NAME ...]`
# (default DIR deploy/certs, which .gitignore keeps out of version control). The certificate names nats-1, nats-2,
# nats-3, localhost and 127.0.0.1, and every NAME given (a DNS name, or an IP address). It serves both ends of a
# route (server and client use) and client connections. Across machines, use your own CA's certificates.
set -eu
dir=${1:-deploy/certs}
[ $# -gt 0 ] && shift
names="DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
  case "$name" in
    *[!0-9.]*) names="$names,DNS:$name" ;;
    *) names="$names,IP:$name" ;;
  esac
done
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=stock-tracker local CA" \
  -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=nats" -keyout "$dir/server-key.pem" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$names" \
  > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial -days 825 \
  -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
chmod 644 "$dir/ca.pem" "$dir/server.pem"
echo "$dir: ca.pem (give it to the services as NATS_TLS_CA), server.pem and server-key.pem (the nodes')"
