#!/usr/bin/env bash
# TLS scanners against a real `orinari serve` with [server.tls]: sslyze's
# Mozilla "intermediate" check (PyPI), then, with `modern = true`, its
# "modern" check; both must report "compliant". With the intermediate
# profile, MDN's HTTP Observatory grades the chat page, the status page and
# the API: each must be A+. A throwaway CA and leaf (openssl, P-256, 30 days)
# are made here.
#
# Usage: tests/tls/scan.sh [BINARY]   (default: target/debug/orinari)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac

venv="$here/.venv"
if [[ ! -x "$venv/bin/sslyze" ]] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
    echo "tls: installing sslyze into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/.requirements.txt"
fi

if [[ ! -d "$here/node_modules/@mdn/mdn-http-observatory" ]] || [[ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]]; then
    echo "tls: installing the MDN HTTP Observatory (npm ci)" >&2
    (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --silent) >&2
fi
# Its post-install step downloads the HSTS preload list, which cannot run
# offline; an empty list only means "not preloaded".
echo '{}' > "$here/node_modules/@mdn/mdn-http-observatory/conf/hsts-preload.json"

# shellcheck source=../lib/serve.sh
source "$root/tests/lib/serve.sh"
work="$(mktemp -d)"
trap 'serve_stop; [[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=orinari test CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=localhost" -keyout key.pem -out leaf.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile ext.cnf -out leaf.pem 2>/dev/null
cat leaf.pem ca.pem > chain.pem
# sslyze validates the chain against the platform trust stores it ships; a
# test CA is in none of them, so this venv's copies get it added (the
# originals are kept beside them and restored on every run).
for store in "$venv"/lib/python3*/site-packages/sslyze/plugins/certificate_info/trust_stores/pem_files/*.pem; do
    [[ -f "$store.orig" ]] || cp "$store" "$store.orig"
    cat "$store.orig" ca.pem > "$store"
done

failed=0
for profile in intermediate modern; do
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    modern=false; [[ "$profile" == modern ]] && modern=true
    printf '[server.tls]\nlisten = "127.0.0.1:%s"\ncert = "%s/chain.pem"\nkey = "%s/key.pem"\nmodern = %s\n' \
        "$port" "$work" "$work" "$modern" > orinari.toml
    serve_start "tls-$profile" "$bin" "$work" "$work/server-$profile.log"
    if "$venv/bin/sslyze" --mozilla_config="$profile" "localhost:$port{127.0.0.1}" > "sslyze-$profile.txt" 2>&1; then
        echo "tls: sslyze --mozilla_config=$profile: compliant" >&2
    else
        echo "tls: sslyze --mozilla_config=$profile: NOT compliant" >&2
        sed -n '/COMPLIANCE AGAINST MOZILLA/,$p' "sslyze-$profile.txt" >&2
        failed=1
    fi
    if [[ "$profile" == intermediate ]]; then
        http_port="${serve_url##*:}"
        for path in / /status /v1/models; do
            if NODE_EXTRA_CA_CERTS="$work/ca.pem" node "$here/observatory.mjs" localhost "$http_port" "$port" "$path" > "obs.txt" 2>&1; then
                echo "tls: $(head -n1 obs.txt)" >&2
            else
                echo "tls: observatory below A+:" >&2
                cat obs.txt >&2
                failed=1
            fi
        done
    fi
    serve_stop
done
exit $failed
