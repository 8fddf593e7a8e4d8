-- What view selection reads from each instance (see src/views.rs): its Presentation
-- Intent, its view modifiers other than "implant displaced" (comma-separated, sorted;
-- empty for a standard view), its breast implant ('', 'present', 'displaced') and when
-- it was acquired (DICOM date-time digits, empty when unknown). Instances stored
-- before this migration count as standard For Presentation views, as they were.
ALTER TABLE instances ADD COLUMN intent TEXT NOT NULL DEFAULT 'presentation'
    CHECK (intent IN ('presentation', 'processing'));
ALTER TABLE instances ADD COLUMN modifiers TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN implant TEXT NOT NULL DEFAULT ''
    CHECK (implant IN ('', 'present', 'displaced'));
ALTER TABLE instances ADD COLUMN acquired TEXT NOT NULL DEFAULT '';

-- Why a study went out untriaged (src/triage.rs UntriagedCause): view_selection,
-- input_check, unreadable or gave_up; NULL for a scored study and for items made
-- before this migration.
ALTER TABLE worklist_items ADD COLUMN untriaged_cause TEXT;

-- Late views (src/catalog/jobs.rs): a screening view arriving after its study was
-- triaged runs the study's job again, and the new triage updates its one worklist item.
-- rerun: such a view arrived while the job was leased (it runs again once finished);
-- attempts_base: the attempts taken before the current run (its retries count from
-- there, while attempts keeps growing to fence stale workers).
ALTER TABLE jobs ADD COLUMN rerun BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE jobs ADD COLUMN attempts_base BIGINT NOT NULL DEFAULT 0;

-- Drift watch (src/drift.rs) reads a week of worklist items by creation time.
CREATE INDEX worklist_items_created ON worklist_items (created_ms);
