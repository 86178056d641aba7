#!/usr/bin/env bash
# Makes a private CA and certificates for a backend and its guests with the openssl CLI, for trying TLS out
# and for the tests (which make theirs at test time: no private key is kept in the repository).
#   scripts/tls-certs.sh DIR [BACKEND_NAME_OR_IP ...] [-- GUEST_NAME ...]
# DIR gets ca.pem (+ ca.key), backend.pem/backend.key (serverAuth, SAN the names given; 127.0.0.1 and
# localhost by default) and GUEST.pem/GUEST.key per guest (clientAuth, CN and SAN DNS the guest's name;
# "guest" by default). Keys are 0600.
set -euo pipefail
dir=${1:?usage: tls-certs.sh DIR [BACKEND_NAME_OR_IP ...] [-- GUEST_NAME ...]}
shift
backend=() guests=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; guests=("$@"); break; fi
  backend+=("$1"); shift
done
((${#backend[@]})) || backend=(127.0.0.1 localhost)
((${#guests[@]})) || guests=(guest)
mkdir -p "$dir"
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
san() {
  local out=() n
  for n in "$@"; do
    if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then out+=("IP:$n"); else out+=("DNS:$n"); fi
  done
  local IFS=,; echo "${out[*]}"
}
if [[ ! -f $dir/ca.pem ]]; then
  key "$dir/ca.key"
  openssl req -new -x509 -key "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/O=Paradice/CN=Paradice CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi
issue() {   # name subject san eku
  key "$dir/$1.key"
  openssl req -new -key "$dir/$1.key" -subj "$2" -out "$dir/$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$4" "$3" >"$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 825 \
    -extfile "$dir/$1.ext" -out "$dir/$1.pem" 2>/dev/null
  rm -f "$dir/$1.csr" "$dir/$1.ext"
}
issue backend "/O=Paradice/CN=${backend[0]}" "$(san "${backend[@]}")" serverAuth
for g in "${guests[@]}"; do issue "$g" "/O=Paradice/CN=$g" "DNS:$g" clientAuth; done
chmod 0644 "$dir"/*.pem
