-- Visitors subscribed by webhook. A row is written only after the endpoint
-- answered a signed verification challenge. `secret` signs every delivery
-- (HMAC-SHA256); `failures` counts consecutive undelivered notifications and
-- `disabled_at` is set when it reaches the configured limit.
CREATE TABLE status_webhooks (
    id                TEXT PRIMARY KEY,
    url               TEXT   NOT NULL,
    components        TEXT   NOT NULL,
    secret            TEXT   NOT NULL,
    unsubscribe_token TEXT   NOT NULL UNIQUE,
    created_at        BIGINT NOT NULL,
    failures          BIGINT NOT NULL DEFAULT 0,
    last_failure_at   BIGINT,
    disabled_at       BIGINT,
    unsubscribed_at   BIGINT
);
