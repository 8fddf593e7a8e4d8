-- The tamiz catalog (embedded mode, SQLite). Times are Unix epoch milliseconds (UTC).

-- Installation-wide values, e.g. the salt of patient pseudonyms.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,          -- setting name
    value TEXT NOT NULL              -- its value
);

-- Imaging and diagnosis centers, mirrored from pipeline.toml at every start.
CREATE TABLE centers (
    id          TEXT PRIMARY KEY,    -- id used in pipeline.toml, URLs and headers
    kind        TEXT NOT NULL CHECK (kind IN ('imaging', 'diagnosis')),
    name        TEXT NOT NULL,       -- display name
    home_center TEXT                 -- imaging centers: the diagnosis center reading them
);

-- Women screened, by pseudonym only: no name or patient ID is stored.
CREATE TABLE patients (
    id         INTEGER PRIMARY KEY,
    pseudo_key TEXT NOT NULL UNIQUE  -- hex SHA-256 of (salt, issuer, patient ID)
);

-- One screening exam (DICOM study).
CREATE TABLE studies (
    study_uid         TEXT PRIMARY KEY,                -- Study Instance UID (0020,000D)
    patient_id        INTEGER NOT NULL REFERENCES patients(id),
    imaging_center    TEXT,                            -- center it came from; NULL if not configured
    state             TEXT NOT NULL
        CHECK (state IN ('receiving', 'ready', 'worklisted', 'read')),
                                                       -- receiving: instances arriving;
                                                       -- ready: triage job created;
                                                       -- worklisted: on a worklist; read: reading recorded
    first_received_ms INTEGER NOT NULL,                -- first instance accepted: the wait starts here
    last_received_ms  INTEGER NOT NULL,                -- latest instance accepted (for stability)
    ready_ms          INTEGER,                         -- when it became ready
    ready_reason      TEXT                             -- "four screening views" or "stable after ..."
);
CREATE INDEX studies_state ON studies (state, last_received_ms);

-- Every accepted DICOM instance; its bytes are in the object store under object_key.
CREATE TABLE instances (
    sop_uid         TEXT PRIMARY KEY,                  -- SOP Instance UID (0008,0018)
    study_uid       TEXT NOT NULL REFERENCES studies(study_uid),
    series_uid      TEXT NOT NULL,                     -- Series Instance UID (0020,000E)
    sop_class_uid   TEXT NOT NULL,                     -- SOP Class UID (0008,0016)
    transfer_syntax TEXT NOT NULL,                     -- Transfer Syntax UID (0002,0010)
    laterality      TEXT NOT NULL CHECK (laterality IN ('L', 'R')),
    view            TEXT NOT NULL,                     -- CC, MLO or another projection
    rows            INTEGER NOT NULL,
    columns         INTEGER NOT NULL,
    size_bytes      INTEGER NOT NULL,                  -- stored object size
    sha256          TEXT NOT NULL,                     -- hex digest: tells a resend from a conflict
    object_key      TEXT NOT NULL,                     -- key in the object store
    received_ms     INTEGER NOT NULL
);
CREATE INDEX instances_study ON instances (study_uid);

-- Triage jobs: exactly one per study and model version.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    study_uid        TEXT NOT NULL REFERENCES studies(study_uid),
    model_version    TEXT NOT NULL,                    -- model card name@version
    state            TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,       -- leases taken; fences every later update
    run_after_ms     INTEGER NOT NULL,                 -- not leased before (retry backoff)
    lease_owner      TEXT,                             -- worker holding the lease
    lease_expires_ms INTEGER,                          -- lease is void after this
    last_error       TEXT,                             -- why the last attempt failed
    created_ms       INTEGER NOT NULL,
    finished_ms      INTEGER,                          -- done or dead-lettered at
    UNIQUE (study_uid, model_version)
);
CREATE INDEX jobs_runnable ON jobs (state, run_after_ms);

-- The radiologists' queues: one item per study, forever (the AI never removes one).
CREATE TABLE worklist_items (
    id            INTEGER PRIMARY KEY,
    study_uid     TEXT NOT NULL UNIQUE REFERENCES studies(study_uid),
    center_id     TEXT NOT NULL,                       -- diagnosis center whose queue holds it
    priority      TEXT NOT NULL CHECK (priority IN ('urgent', 'routine', 'untriaged', 'low')),
    priority_rank INTEGER NOT NULL,                    -- sort key: urgent 0, routine/untriaged 1, low 2
    triaged       INTEGER NOT NULL,                    -- 1 if the model scored the study
    score         REAL,                                -- study suspicion in [0,1]
    score_left    REAL,                                -- left breast suspicion
    score_right   REAL,                                -- right breast suspicion
    view_scores   TEXT,                                -- JSON [{laterality, view, score}]
    model_version TEXT,                                -- model that scored it
    due_ms        INTEGER NOT NULL,                    -- read by this time
    reason        TEXT NOT NULL,                       -- why this priority and this center
    state         TEXT NOT NULL CHECK (state IN ('queued', 'claimed', 'read')),
    claimed_by    TEXT,                                -- radiologist holding the claim
    claimed_ms    INTEGER,                             -- claim time (claims expire)
    created_ms    INTEGER NOT NULL
);
CREATE INDEX worklist_order ON worklist_items (center_id, state, priority_rank, due_ms, id);

-- A radiologist's reading of a study.
CREATE TABLE readings (
    id               INTEGER PRIMARY KEY,
    worklist_item_id INTEGER NOT NULL UNIQUE REFERENCES worklist_items(id),
    study_uid        TEXT NOT NULL REFERENCES studies(study_uid),
    radiologist      TEXT NOT NULL,
    birads           INTEGER NOT NULL CHECK (birads BETWEEN 0 AND 6),  -- BI-RADS assessment
    density          TEXT NOT NULL CHECK (density IN ('A', 'B', 'C', 'D')), -- breast density
    created_ms       INTEGER NOT NULL
);

-- Yearly screening targets, mirrored from pipeline.toml.
CREATE TABLE targets (
    year       INTEGER NOT NULL,
    scope      TEXT NOT NULL,        -- 'program' or an imaging center id
    mammograms INTEGER NOT NULL,     -- studies to screen that year
    PRIMARY KEY (year, scope)
);
