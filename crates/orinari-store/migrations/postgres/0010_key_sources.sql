-- Per-key source policy: which data sources a key's grounded answers may
-- search (JSON array of source names; NULL = every source of the model).
ALTER TABLE api_keys ADD COLUMN allowed_sources TEXT;
