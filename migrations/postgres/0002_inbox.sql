-- Bucket inbox: which API node is ingesting which dropped file, until when (epoch ms of
-- the database clock). A row exists only while a file is being handled.
CREATE TABLE inbox_claims (
    object_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
