-- The event log's table as an ordinary (rowid) table with its key as a unique index.
-- Its rows are large (a message's JSON), and SQLite appends large rows to a rowid
-- table's right edge without rebalancing its neighbours; as a `WITHOUT ROWID` table it
-- redistributed leaf pages every few commits (docs/benchmarks.md, "Round 2, session
-- 12"). The reads are unchanged: a scope's range through the index.
CREATE TABLE events_by_rowid (
    id         INTEGER PRIMARY KEY,
    scope      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    marks      TEXT,
    effect     TEXT,
    created_at INTEGER NOT NULL
);
INSERT INTO events_by_rowid (scope, seq, kind, data, marks, effect, created_at)
SELECT scope, seq, kind, data, marks, effect, created_at FROM events ORDER BY created_at, scope, seq;
DROP TABLE events;
ALTER TABLE events_by_rowid RENAME TO events;
CREATE UNIQUE INDEX events_scope_seq ON events (scope, seq);
