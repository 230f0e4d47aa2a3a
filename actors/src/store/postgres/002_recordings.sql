-- Version 2: the terminal recordings (see src/server/recordings), kept in
-- sled in a database of their own beside the store: the same keys and values
-- here. A chunk is one row, its events deflated (at most 48 KiB of events
-- before deflating); bytea is kept out of line and not compressed again.
CREATE TABLE recordings (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE recording_chunks (key bytea PRIMARY KEY, value bytea NOT NULL);
ALTER TABLE recording_chunks ALTER COLUMN value SET STORAGE EXTERNAL;
CREATE TABLE recording_keys (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE recording_usage (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE recording_refused (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE recording_census (key bytea PRIMARY KEY, value bytea NOT NULL);
