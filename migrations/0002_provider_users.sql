-- Sign-in through identity providers: each provider's CA bundle, the link
-- between a user and their account at a provider (with the provider's
-- refresh token, encrypted), and which group memberships a provider manages.

ALTER TABLE providers ADD COLUMN ca_pem TEXT NOT NULL DEFAULT '';

-- NULL: added by an admin; otherwise the provider that asserted it.
ALTER TABLE group_members ADD COLUMN provider_id TEXT;

CREATE TABLE provider_users (
    provider_id       TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subject           TEXT NOT NULL,
    email             TEXT NOT NULL,
    refresh_token_enc TEXT NOT NULL,
    last_check_at     BIGINT NOT NULL,
    -- The re-check lease: only the replica holding it talks to the provider.
    checking_until    BIGINT NOT NULL DEFAULT 0,
    -- After a 429 or an outage, when to try the provider again.
    backoff_until     BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (provider_id, user_id)
);
CREATE INDEX provider_users_user ON provider_users (user_id);
