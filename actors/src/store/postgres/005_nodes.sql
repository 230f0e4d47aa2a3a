-- Version 5: several nodes. A computer's holder keeps it for a lease after
-- its last commit for it (see `Pg::own` in actors/src/store/postgres.rs).
ALTER TABLE owners ADD COLUMN until timestamptz NOT NULL DEFAULT now();
-- Every node hears what another changed (see
-- actors/src/store/postgres/notices.rs). The settings, groups and users,
-- and the revocations, whoever writes them, notify their channel once per
-- statement; a node that takes a computer notifies `otpgate_owners` itself.
CREATE FUNCTION otpgate_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
$$;
CREATE TRIGGER policy_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON meta
    FOR EACH STATEMENT EXECUTE FUNCTION otpgate_notify('otpgate_policy');
CREATE TRIGGER policy_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON groups
    FOR EACH STATEMENT EXECUTE FUNCTION otpgate_notify('otpgate_policy');
CREATE TRIGGER policy_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION otpgate_notify('otpgate_policy');
CREATE TRIGGER revoked AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON revocations
    FOR EACH STATEMENT EXECUTE FUNCTION otpgate_notify('otpgate_revocations');
