-- Version 6: the web Management Tool's sessions, join tokens and enrollments.
-- The web sessions (see src/server/web/auth.rs),
-- kept here so that every node of a site knows them: an approver stays
-- signed in when the node behind the load balancer changes, and signing out
-- on one node ends the session on all. The key is a hash of the cookie, never
-- the cookie itself.
CREATE TABLE web_sessions (key bytea PRIMARY KEY, value bytea NOT NULL);
-- From this version on, each version also says the oldest schema a build
-- must know to serve a database at it (`served_from`; none means itself): a
-- version that only adds what older builds never read is served by them, so
-- that a node of the previous release still starts while the site's nodes
-- are upgraded one at a time.
ALTER TABLE otpgate_schema ADD COLUMN served_from integer;
-- Join tokens (by id) and what each enrolled computer was issued (see
-- actors/src/enroll.rs), as the sled store keeps them.
CREATE TABLE join_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE enrollments (key bytea PRIMARY KEY, value bytea NOT NULL);
