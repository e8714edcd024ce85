-- Small instance-wide settings (e.g. the admin token's hash).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
