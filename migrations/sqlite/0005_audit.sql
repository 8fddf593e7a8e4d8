-- Who read or changed which study's patient data, when, from where and through which
-- route. Append-only: rows are never changed or removed.
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at_ms     INTEGER NOT NULL,
    user_id   INTEGER,
    user_name TEXT NOT NULL,
    role      TEXT NOT NULL,
    action    TEXT NOT NULL,
    route     TEXT NOT NULL,
    study_uid TEXT,
    item_id   INTEGER,
    center_id TEXT,
    address   TEXT
);
CREATE INDEX audit_log_time ON audit_log (at_ms);
CREATE INDEX audit_log_user ON audit_log (user_name, at_ms);
CREATE INDEX audit_log_study ON audit_log (study_uid, at_ms);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
