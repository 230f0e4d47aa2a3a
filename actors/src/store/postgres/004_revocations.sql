-- Version 4: revoked client certificates (see src/tls/revoked.rs): the
-- computer's name, and the second at or before which its certificates were
-- issued, big-endian.
CREATE TABLE revocations (key bytea PRIMARY KEY, value bytea NOT NULL);
