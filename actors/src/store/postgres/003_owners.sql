-- Version 3: which node holds each computer. A node takes a computer by
-- raising its fence; a commit carrying writes of a computer taken with an
-- older fence leaves them out (see actors/src/store/turn.rs).
CREATE TABLE owners (key bytea PRIMARY KEY, fence bigint NOT NULL);
