-- A user claimed by a provider account signs in only through it. Older
-- versions left a claimed invitation 'invited' (and a password set on it
-- afterwards made it 'local'): such users become 'provider' users, and the
-- password they could set themselves goes.
UPDATE users SET origin = 'provider', password_hash = NULL
    WHERE origin IN ('invited', 'local') AND id IN (SELECT user_id FROM provider_users);
