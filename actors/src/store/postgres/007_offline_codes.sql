-- Version 7: offline codes (see actors/src/offline.rs), by computer and OS
-- user, as the sled store keeps them: verifiers only, never a code.
CREATE TABLE offline_codes (key bytea PRIMARY KEY, value bytea NOT NULL);
