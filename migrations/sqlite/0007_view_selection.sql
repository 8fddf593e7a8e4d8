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
