-- otpgate's store, version 1: one table per table of the sled store, each
-- holding the same keys and the same versioned records (see
-- actors/src/store/record.rs), and the sequence ids come from.
CREATE TABLE meta (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE computers (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE groups (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE users (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE otps (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE mailed (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE requests (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE request_index (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE sessions (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE audit (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE outbox (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE mail_failures (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE failure_buckets (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE SEQUENCE otpgate_ids START 1024 INCREMENT 1024;
