"""The PostgreSQL backend's schema, one migration per version, applied in order at open.

Writes run in one server-side function, so the revision counter's row lock is held for one
statement and a COMMIT instead of a client round trip per step: writers queue on that lock, and
the time they hold it bounds the writes per second of every auth server sharing the database.
"""

from __future__ import annotations

SCHEMA_VERSION = 2
CHANNEL = "teleport_backend"
PUT, DELETE = 1, 2
#: SQLSTATEs teleport_write raises; they map to AlreadyExists, NotFound and CompareFailed.
EXISTS, MISSING, CHANGED = "TP001", "TP002", "TP003"

_WRITE = f"""
CREATE FUNCTION teleport_write(op text, now_us bigint, k bytea, k_end bytea, val bytea,
                               exp bigint, want_value bytea, want_revision bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
-- Purge what expired by now_us, apply op, record every event in changes with consecutive
-- revisions. Returns the last revision used (the stored item's for a put), 0 if nothing changed.
DECLARE
    first_rev bigint;
    rev bigint;
    n bigint;
    cur_value bytea;
    cur_rev bigint;
BEGIN
    -- The lock every writer takes first: revisions commit in the order they are handed out.
    SELECT value INTO first_rev FROM meta WHERE name = 'revision' FOR UPDATE;
    rev := first_rev;
    WITH gone AS (DELETE FROM kv WHERE expires <= now_us RETURNING key)
    INSERT INTO changes (revision, type, key)
    SELECT rev + row_number() OVER (ORDER BY key), {DELETE}, key FROM gone;
    GET DIAGNOSTICS n = ROW_COUNT;
    rev := rev + n;
    IF op = 'create' THEN
        IF EXISTS (SELECT 1 FROM kv WHERE key = k) THEN
            RAISE EXCEPTION 'exists' USING ERRCODE = '{EXISTS}';
        END IF;
    ELSIF op = 'update' THEN
        IF NOT EXISTS (SELECT 1 FROM kv WHERE key = k) THEN
            RAISE EXCEPTION 'missing' USING ERRCODE = '{MISSING}';
        END IF;
    ELSIF op = 'swap' THEN
        SELECT value, revision INTO cur_value, cur_rev FROM kv WHERE key = k;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'missing' USING ERRCODE = '{MISSING}';
        END IF;
        IF cur_value <> want_value OR cur_rev <> coalesce(want_revision, cur_rev) THEN
            RAISE EXCEPTION 'changed' USING ERRCODE = '{CHANGED}';
        END IF;
    ELSIF op = 'delete' THEN
        DELETE FROM kv WHERE key = k;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'missing' USING ERRCODE = '{MISSING}';
        END IF;
        rev := rev + 1;
        INSERT INTO changes (revision, type, key) VALUES (rev, {DELETE}, k);
    ELSIF op = 'delete_range' THEN
        WITH gone AS (DELETE FROM kv WHERE key >= k AND key < k_end RETURNING key)
        INSERT INTO changes (revision, type, key)
        SELECT rev + row_number() OVER (ORDER BY key), {DELETE}, key FROM gone;
        GET DIAGNOSTICS n = ROW_COUNT;
        rev := rev + n;
    ELSIF op = 'keep_alive' THEN
        -- Only the expiry moves: no revision, no event, as an etcd lease.
        UPDATE kv SET expires = exp WHERE key = k;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'missing' USING ERRCODE = '{MISSING}';
        END IF;
    ELSIF op <> 'purge' AND op <> 'put' THEN
        RAISE EXCEPTION 'unknown write %', op;
    END IF;
    IF op IN ('put', 'create', 'update', 'swap') THEN
        rev := rev + 1;
        INSERT INTO kv (key, value, expires, revision) VALUES (k, val, exp, rev)
        ON CONFLICT (key) DO UPDATE
        SET value = excluded.value, expires = excluded.expires, revision = excluded.revision;
        INSERT INTO changes (revision, type, key, value, expires) VALUES (rev, {PUT}, k, val, exp);
    END IF;
    IF rev = first_rev THEN
        RETURN 0;
    END IF;
    UPDATE meta SET value = rev WHERE name = 'revision';
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN rev;
END
$fn$
"""

#: teleport_write for one write of a group committed together: a refusal (exists, missing,
#: changed) rolls back that write alone and comes back as REFUSED_BY[sqlstate]; the lock on the
#: revision row, taken by the group's first write, is held until the group's COMMIT.
REFUSED_BY = {EXISTS: -1, MISSING: -2, CHANGED: -3}
_TRY_WRITE = f"""
CREATE FUNCTION teleport_try_write(op text, now_us bigint, k bytea, k_end bytea, val bytea,
                                   exp bigint, want_value bytea, want_revision bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN teleport_write(op, now_us, k, k_end, val, exp, want_value, want_revision);
EXCEPTION
    WHEN SQLSTATE '{EXISTS}' THEN RETURN {REFUSED_BY[EXISTS]};
    WHEN SQLSTATE '{MISSING}' THEN RETURN {REFUSED_BY[MISSING]};
    WHEN SQLSTATE '{CHANGED}' THEN RETURN {REFUSED_BY[CHANGED]};
END
$fn$
"""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE kv (key bytea PRIMARY KEY, value bytea NOT NULL, expires bigint,"
        " revision bigint NOT NULL)",
        "CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL",
        # One row whose lock serialises writers; revisions never repeat, even after deletes.
        "CREATE TABLE meta (name text PRIMARY KEY, value bigint NOT NULL)",
        "INSERT INTO meta (name, value) VALUES ('revision', 0)",
        "CREATE TABLE changes (revision bigint PRIMARY KEY, type smallint NOT NULL,"
        " key bytea NOT NULL, value bytea, expires bigint,"
        " created timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX changes_created ON changes (created)",
        _WRITE,
    ),
    # A random name for this database's revisions, so a watcher holding a revision of another
    # store (say, before a migration) is not resumed here; and writes committed in groups.
    2: ("INSERT INTO meta (name, value) VALUES ('store', floor(random() * 9e18)::bigint)",
        _TRY_WRITE),
}
