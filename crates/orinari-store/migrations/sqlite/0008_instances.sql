-- The instances of a cluster sharing this store (`/admin/v1/instances`):
-- each writes its own row at start and every few seconds after (a
-- heartbeat), so the others see its version, configuration hash and
-- leadership. Liveness, not history: kept out of the change journal.
-- `pid` tells two processes of one instance apart across an upgrade;
-- `stopped_at` is set by an orderly exit.
CREATE TABLE instances (
    id          TEXT PRIMARY KEY,
    region      TEXT,
    version     TEXT   NOT NULL,
    config_hash TEXT   NOT NULL,
    leader      BIGINT NOT NULL DEFAULT 0,
    pid         BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    stopped_at  BIGINT
);
