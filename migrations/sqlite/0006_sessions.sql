-- Browser sessions of people signed in with a password. The cookie value is kept only
-- as its keyed hash (like API tokens); the CSRF token is sent to the pages and must
-- come back with every state-changing request of the session.
CREATE TABLE sessions (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,
    csrf_token TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    ended_ms   INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Failed sign-ins, counted per user name and per address over a window (the limit
-- holds across API nodes because they share this table).
CREATE TABLE signin_failures (
    id        INTEGER PRIMARY KEY,
    user_name TEXT NOT NULL,
    address   TEXT,
    at_ms     INTEGER NOT NULL
);
CREATE INDEX signin_failures_name ON signin_failures (user_name, at_ms);
CREATE INDEX signin_failures_address ON signin_failures (address, at_ms);
