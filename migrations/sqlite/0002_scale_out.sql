-- Lease next looks for one model's runnable jobs; the pseudonym salt moved to a file
-- outside the database (the catalog moves it there once, then forgets it).
CREATE INDEX jobs_queued ON jobs (model_version, run_after_ms, id) WHERE state = 'queued';
CREATE INDEX jobs_leased ON jobs (model_version, lease_expires_ms) WHERE state = 'leased';
CREATE INDEX studies_center_received ON studies (imaging_center, first_received_ms);
CREATE INDEX readings_study ON readings (study_uid);
