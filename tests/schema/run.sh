#!/usr/bin/env bash
# Schema fuzzing (issue #23 item 1): schemathesis generates requests from
# ORINARI's own OpenAPI document (GET /openapi.json) for every public and
# admin route, valid and invalid, and checks each answer: no 5xx, every
# status code and content type documented, every body (JSON and each SSE
# event) valid against its schema, invalid input refused, no answer slower
# than 30 s (`--max-response-time`; schemathesis's default, 10 s, is less
# than a 256-token answer of the embedded model on a loaded machine). Bounded examples with a fixed seed in `make test` (reproducible);
# `make schema-fuzz` runs longer with a random seed.
#
# Not checked: `positive_data_acceptance` (a request the schema allows that
# the server refuses). Many rules are not expressible in a schema — a chat
# needs a user message, a backup needs [backup] configured, a rollout's
# weights must sum to 10000 — and each such refusal is a 400 that names
# the field, which the other checks hold to the document.
#
# Usage: tests/schema/run.sh [BINARY] [--long]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/orinari}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
venv="$here/.venv"
if [[ ! -x "$venv/bin/schemathesis" ]] || ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt"; then
    echo "schema: installing schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
    cp "$here/requirements.txt" "$venv/.requirements.txt"
fi

# shellcheck source=../lib/serve.sh
source "$root/tests/lib/serve.sh"
work="$(mktemp -d)"
cleanup() {
    serve_stop
    rm -rf "$work"
}
trap cleanup EXIT
token="schema-fuzz-admin-token-$$"
# The embedded model answers the generated chats; rate limits are out of
# the way (they have tests of their own).
# A small context window bounds every generated answer: the fuzzer's
# requests set no max_tokens, and a sampled answer to an empty prompt once
# ran past 2,500 tokens (80 s) and the 30 s request timeout. With 256 tokens
# the longest answer takes seconds; longer inputs are refused with
# context_length_exceeded, a documented 400.
cat >"$work/orinari.toml" <<TOML
[[models]]
name = "orinari-small"
backend = "local"
context_size = 256
TOML
serve_start schema "$bin" "$work" "$work/server.log" \
    ORINARI_ADMIN_TOKEN="$token" \
    ORINARI_LIMITS_REQUESTS_PER_MINUTE=1000000 \
    ORINARI_LIMITS_TOKENS_PER_MINUTE=100000000

if [[ "${2:-}" == "--long" ]]; then
    bounds=(--max-examples 200 --phases examples,coverage,fuzzing,stateful)
else
    bounds=(--max-examples 8 --seed 20261206 --phases examples,coverage,fuzzing)
fi
status=0
(cd "$work" && "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$serve_url/openapi.json" \
    --url "$serve_url" \
    -H "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance \
    --request-timeout 30 \
    --max-response-time 30 \
    --workers 2 \
    --no-shrink \
    --max-failures 50 \
    --suppress-health-check all \
    "${bounds[@]}") || status=$?
if grep -q '"level":"ERROR"\|panicked' "$work/server.log"; then
    echo "schema: the server logged errors or panics:" >&2
    grep '"level":"ERROR"\|panicked' "$work/server.log" | head -n 20 >&2
    status=1
fi
exit "$status"
