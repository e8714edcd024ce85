-- The public status page: components (their effective status and what the
-- probes last saw), the history of status changes (for time-based uptime),
-- incidents and scheduled maintenances (one table, `kind` tells them apart),
-- the components each affects, and their timestamped updates.
CREATE TABLE status_components (
    id          TEXT PRIMARY KEY,
    name        TEXT   NOT NULL,
    description TEXT,
    position    BIGINT NOT NULL,
    group_id    TEXT,
    is_group    BIGINT NOT NULL,
    showcase    BIGINT NOT NULL,
    status      TEXT   NOT NULL,
    observed    TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE status_component_events (
    id           BIGSERIAL PRIMARY KEY,
    component_id TEXT   NOT NULL,
    at           BIGINT NOT NULL,
    status       TEXT   NOT NULL
);
CREATE INDEX status_component_events_at ON status_component_events (component_id, at);

CREATE TABLE status_incidents (
    id              TEXT PRIMARY KEY,
    kind            TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    impact          TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    started_at      BIGINT NOT NULL,
    monitoring_at   BIGINT,
    resolved_at     BIGINT,
    scheduled_for   BIGINT,
    scheduled_until BIGINT
);
CREATE INDEX status_incidents_kind_created ON status_incidents (kind, created_at);

CREATE TABLE status_incident_components (
    incident_id  TEXT NOT NULL,
    component_id TEXT NOT NULL,
    status       TEXT NOT NULL,
    PRIMARY KEY (incident_id, component_id)
);

CREATE TABLE status_incident_updates (
    id          TEXT PRIMARY KEY,
    incident_id TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    affected    TEXT
);
CREATE INDEX status_incident_updates_incident ON status_incident_updates (incident_id, created_at);

-- Visitors subscribed by email (double opt-in): only the hash of the
-- confirmation token is kept; the unsubscribe token goes in every email.
CREATE TABLE status_subscriptions (
    id                TEXT PRIMARY KEY,
    email             TEXT   NOT NULL,
    components        TEXT   NOT NULL,
    confirm_hash      TEXT   NOT NULL UNIQUE,
    unsubscribe_token TEXT   NOT NULL UNIQUE,
    created_at        BIGINT NOT NULL,
    confirmed_at      BIGINT,
    unsubscribed_at   BIGINT
);
CREATE INDEX status_subscriptions_email ON status_subscriptions (email);
