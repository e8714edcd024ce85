#!/usr/bin/env bash
# Install the test tools that a fresh machine of this kind may lack.
set -euo pipefail
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest ..." >&2
  cargo install --locked cargo-nextest
fi
for tool in python3 node npm; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install it (apt-get install -y ${tool/python3/python3-venv})" >&2; exit 1; }
done
python3 -c 'import venv' 2>/dev/null || { echo "python3 venv module missing (apt-get install -y python3-venv)" >&2; exit 1; }
# promtool lints the /metrics exposition in the server's tests.
if ! command -v promtool >/dev/null; then
  echo "installing prometheus (for promtool) ..." >&2
  apt-get install -y prometheus >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y prometheus >/dev/null; }
fi
# aiosmtpd: a real SMTP server for the status page's email tests.
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/test-venv"
if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "creating $venv with aiosmtpd ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet aiosmtpd
fi
# pebble: Let's Encrypt's ACME test server, for the ACME client's test;
# slowhttptest: slowloris / slow-POST attacks for `make slowloris`.
for pkg in pebble slowhttptest; do
  if ! command -v "$pkg" >/dev/null; then
    echo "installing $pkg ..." >&2
    apt-get install -y "$pkg" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y "$pkg" >/dev/null; }
  fi
done
