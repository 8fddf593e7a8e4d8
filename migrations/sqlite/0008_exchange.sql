-- Exchange of services (src/routing/): a study may be read at another center than its
-- home one. home_center_id: where it would be read without exchange; routed_ms: when it
-- was put on its current center's worklist (monthly caps count these).
ALTER TABLE worklist_items ADD COLUMN home_center_id TEXT;
ALTER TABLE worklist_items ADD COLUMN routed_ms INTEGER;
UPDATE worklist_items SET home_center_id = center_id, routed_ms = created_ms;
CREATE INDEX worklist_exchanged ON worklist_items (routed_ms) WHERE home_center_id <> center_id;
-- Every move of a queued item by the rebalancing pass, with its reason.
CREATE TABLE worklist_moves (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES worklist_items(id),
    study_uid   TEXT NOT NULL,
    from_center TEXT NOT NULL,
    to_center   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    moved_ms    INTEGER NOT NULL
);
CREATE INDEX worklist_moves_study ON worklist_moves (study_uid);
-- The monthly accounts read readings by time.
CREATE INDEX readings_created ON readings (created_ms);
