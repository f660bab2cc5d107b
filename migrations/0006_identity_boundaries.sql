-- Identities keyed by what the issuer vouches for, and keys bound to what
-- they may do.
--
-- users.origin: how the user came to be, which decides whether a first
-- sign-in through a provider may claim it:
--   builtin   the first admin and the connector user: never signed in through a provider
--   local     has (or had) a password: never linked to a provider account
--   provider  made by a provider sign-in
--   invited   made by an admin or the config file without a password: the
--             first sign-in whose provider vouches for the address
--             (email_verified) claims it
ALTER TABLE users ADD COLUMN origin TEXT NOT NULL DEFAULT 'invited';
UPDATE users SET origin = 'builtin' WHERE kind <> 'user' OR name = 'admin';
UPDATE users SET origin = 'provider'
    WHERE origin = 'invited' AND id IN (SELECT user_id FROM provider_users);
UPDATE users SET origin = 'local' WHERE origin = 'invited' AND password_hash IS NOT NULL;

-- Links to built-in users could only come from a takeover by display name.
DELETE FROM access_keys WHERE owner_kind = 'user'
    AND owner_id IN (SELECT id FROM users WHERE origin = 'builtin')
    AND name LIKE 'login-%'
    AND owner_id IN (SELECT user_id FROM provider_users);
DELETE FROM provider_users WHERE user_id IN (SELECT id FROM users WHERE origin = 'builtin');

-- A provider account (issuer + sub) is one user. Where older versions linked
-- one account to several users (by name), the latest link stays.
DELETE FROM provider_users WHERE EXISTS (
    SELECT 1 FROM provider_users p2
    WHERE p2.provider_id = provider_users.provider_id
      AND p2.subject = provider_users.subject
      AND (p2.updated_at > provider_users.updated_at
           OR (p2.updated_at = provider_users.updated_at AND p2.user_id > provider_users.user_id)));
CREATE UNIQUE INDEX provider_users_subject ON provider_users (provider_id, subject);

-- When a sign-in brought no refresh token the session cannot be re-checked:
-- it ends with the ID token it came from (Unix seconds; 0: a refresh token
-- keeps it).
ALTER TABLE provider_users ADD COLUMN session_expires_at BIGINT NOT NULL DEFAULT 0;

-- The claim that names users of this provider; empty: the verified email.
ALTER TABLE providers ADD COLUMN username_claim TEXT NOT NULL DEFAULT '';

-- A connector key serves exactly one destination (NULL for other keys).
ALTER TABLE access_keys ADD COLUMN destination TEXT;
-- The provider whose session a user's key stands on (NULL: none).
ALTER TABLE access_keys ADD COLUMN provider_id TEXT;
UPDATE access_keys SET provider_id = (
    SELECT MIN(p.provider_id) FROM provider_users p WHERE p.user_id = access_keys.owner_id)
    WHERE owner_kind = 'user';
