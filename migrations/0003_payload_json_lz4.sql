-- Event payloads are written once and read whole, never queried inside: `json` (validated text)
-- saves the jsonb conversion on every append and every read, and lz4 compresses large payloads
-- (TipServed carries every candidate's feature vector) several times faster than pglz.
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
ALTER TABLE snapshots ALTER COLUMN state SET COMPRESSION lz4;
