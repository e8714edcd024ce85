-- Per-key policy: which models a key may use (JSON array; NULL = all),
-- its admission priority (higher first) and its concurrency cap.
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
ALTER TABLE api_keys ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN max_concurrent BIGINT;
