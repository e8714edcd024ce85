-- ACME state a cluster shares through the store (PostgreSQL; with SQLite
-- the single instance keeps its files in `cache_dir` and these stay empty).
-- Secrets — the account credentials, the certificate chain with its private
-- key — are sealed with AES-256-GCM under `[server.tls] acme.key_env`'s key
-- and named by what they are (`account …`, `certificate …`); `version`
-- goes up with each write, so instances poll it to load a new certificate.
CREATE TABLE acme_secrets (
    name       TEXT PRIMARY KEY,
    sealed     BYTEA  NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- HTTP-01 key authorizations of the leader's order in flight (public by
-- design: the CA fetches them over plain HTTP), so whichever instance the
-- CA's request reaches answers it.
CREATE TABLE acme_challenges (
    token             TEXT PRIMARY KEY,
    key_authorization TEXT   NOT NULL,
    expires_at        BIGINT NOT NULL
);
