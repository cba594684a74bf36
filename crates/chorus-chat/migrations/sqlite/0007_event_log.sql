-- The event log (docs/design-event-log.md): every durable event, written in the
-- transaction of the change it describes, at its scope's next offset.
--
-- `scope_heads` holds each scope's latest offset. Its row with the empty scope is the
-- database's offset base (its creation time in microseconds): a scope's first offset is
-- one more than the base, so offsets of a database that replaced a lost one never equal
-- those handed out before.
CREATE TABLE scope_heads (
    scope TEXT PRIMARY KEY,
    head  INTEGER NOT NULL
);
INSERT INTO scope_heads (scope, head)
VALUES ('', CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));

CREATE TABLE events (
    scope      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    marks      TEXT,
    effect     TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, seq)
) WITHOUT ROWID;
