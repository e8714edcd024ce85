-- The change journal: every write, in commit order, for continuous backup
-- and point-in-time restore of the embedded store. Shipped rows are pruned,
-- always keeping the newest.
CREATE TABLE change_log (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    at   BIGINT NOT NULL,
    body TEXT   NOT NULL
);
