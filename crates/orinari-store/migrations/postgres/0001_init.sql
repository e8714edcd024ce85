-- API keys: only a hash of the key is stored, never the key.
CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    key_hash            TEXT NOT NULL UNIQUE,
    prefix              TEXT NOT NULL,
    requests_per_minute BIGINT,
    tokens_per_minute   BIGINT,
    created_at          BIGINT NOT NULL,
    revoked_at          BIGINT
);

-- Raw probe results, pruned after a retention period.
CREATE TABLE probe_results (
    id         BIGSERIAL PRIMARY KEY,
    check_id   TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    up         BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX probe_results_check_at ON probe_results (check_id, at);

-- Daily uptime per check: milliseconds observed and milliseconds up.
CREATE TABLE uptime_daily (
    check_id    TEXT   NOT NULL,
    day         BIGINT NOT NULL,
    observed_ms BIGINT NOT NULL,
    up_ms       BIGINT NOT NULL,
    PRIMARY KEY (check_id, day)
);
