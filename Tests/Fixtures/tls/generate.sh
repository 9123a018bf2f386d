#!/usr/bin/env bash
# Regenerates the test-only TLS fixtures: a CA, a server certificate for localhost, 127.0.0.1 and ::1 and one
# for coordinate.example, both signed by it, valid for 100 years. These keys are public (they are in the
# repository): never use them anywhere but the tests.
set -euo pipefail
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
    -subj "/CN=Coordinate test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout server.key -out server.csr
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 -out server.pem \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
# A certificate for a name the tests never connect by (no IP address): verifying it by address must fail, and
# succeeds only with that name set as the client's server name.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=coordinate.example" \
    -keyout named.key -out named.csr
openssl x509 -req -in named.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 -out named.pem \
    -extfile <(printf 'subjectAltName=DNS:coordinate.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
rm -f server.csr named.csr ca.srl ca.key
# A second, unrelated CA: a client trusting only it must refuse the daemon's certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
    -subj "/CN=Unrelated test CA" -keyout other-ca.key -out other-ca.pem \
    -addext "basicConstraints=critical,CA:TRUE"
rm -f other-ca.key
