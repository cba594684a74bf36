-- Migration 0008's `CHECK (state IN ('complete', 'streaming', 'aborted'))` made SQLite
-- build a temporary B-tree of the three values for every message row it inserts (an IN
-- list of more than two constants is evaluated through an ephemeral table, and a CHECK
-- is evaluated per row): ~1.3 µs a send on the writer's thread (docs/benchmarks.md,
-- "Round 2, session 15"). The same rule written with OR is three comparisons.
--
-- SQLite (3.46) cannot change a CHECK with ALTER TABLE. This is the procedure its ALTER
-- TABLE documentation gives (section 7, "the simpler procedure") for a constraint every
-- stored row already satisfies: the table's definition is edited in place, no row is
-- copied. `RESET` reloads this connection's schema; the DDL after it changes the schema
-- cookie, so every other connection reloads it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql,
                     'CHECK (state IN (''complete'', ''streaming'', ''aborted''))',
                     'CHECK (state = ''complete'' OR state = ''streaming'' OR state = ''aborted'')')
 WHERE type = 'table' AND name = 'messages';
PRAGMA writable_schema = RESET;
CREATE TABLE schema_changed (x);
DROP TABLE schema_changed;
