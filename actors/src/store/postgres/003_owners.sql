-- Version 3: which node holds each computer, and the fence it took it with.
-- A node takes a computer by raising its fence; a commit carrying writes of
-- a computer taken with an older fence leaves them out (see
-- actors/src/store/turn.rs). `node` names the process that holds it, so
-- that its own actor, started again, keeps the fence.
CREATE TABLE owners (key bytea PRIMARY KEY, fence bigint NOT NULL, node bigint NOT NULL);
