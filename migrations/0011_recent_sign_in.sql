-- Recent sign-in per grant. grants.max_auth_age_secs: how recently (in
-- seconds) the person must have signed in at the identity provider for a
-- cluster token under this grant; NULL: no such bound. access_keys.auth_time:
-- when the person last authenticated at the provider (the ID token's
-- `auth_time`, Unix seconds) for the sign-in the key stands on; NULL for keys
-- made with a password or by an admin, and for providers that did not say.
-- Refreshing a session never moves it: a refresh is not a sign-in.
ALTER TABLE grants ADD COLUMN max_auth_age_secs BIGINT;
ALTER TABLE access_keys ADD COLUMN auth_time BIGINT;
-- A device sign-in carries the same: device_codes.reauth (0/1) says the
-- device asked for a new authentication at the provider (`infra login
-- --device --reauth`); device_signins.auth_time and device_codes.auth_time
-- carry the sign-in's auth_time from the provider's callback to the key the
-- device collects.
ALTER TABLE device_codes ADD COLUMN reauth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE device_codes ADD COLUMN auth_time BIGINT;
ALTER TABLE device_signins ADD COLUMN auth_time BIGINT;
