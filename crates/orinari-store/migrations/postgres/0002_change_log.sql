-- Same schema as SQLite for parity. PostgreSQL instances do not write it:
-- their point-in-time recovery is PostgreSQL's own WAL archiving.
CREATE TABLE change_log (
    seq  BIGSERIAL PRIMARY KEY,
    at   BIGINT NOT NULL,
    body TEXT   NOT NULL
);
