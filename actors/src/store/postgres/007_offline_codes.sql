-- Version 7: offline codes (see actors/src/offline.rs), by computer and OS
-- user, as the sled store keeps them: verifiers only, never a code.
CREATE TABLE offline_codes (key bytea PRIMARY KEY, value bytea NOT NULL);
-- Every node hears whose offline codes changed (the computer's name: the
-- key up to its first zero byte), so that the computer's agent, whichever
-- node it is connected to, asks for them again at once.
CREATE FUNCTION otpgate_offline_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k bytea;
    p integer;
BEGIN
    IF TG_OP = 'DELETE' THEN
        k := OLD.key;
    ELSE
        k := NEW.key;
    END IF;
    p := position(decode('00', 'hex') in k);
    IF p > 1 THEN
        PERFORM pg_notify('otpgate_offline', convert_from(substring(k from 1 for p - 1), 'UTF8'));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER offline_changed AFTER INSERT OR UPDATE OR DELETE ON offline_codes
    FOR EACH ROW EXECUTE FUNCTION otpgate_offline_changed();
