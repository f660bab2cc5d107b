-- Machine identities log in with their own OIDC JWT ("oidc-auth").
--
-- identity_oidc_auth: one configuration per identity: where to find the
-- issuer's keys (discovery URL, CA bundle), the bounds a JWT must meet
-- (issuer; subject, audiences and claims as glob patterns; audiences and
-- trusted IPs as JSON arrays of strings, claims as a JSON object of
-- strings), and what the access tokens it yields may do (TTL, max TTL and
-- max uses, 0 = unlimited; seconds).
--
-- identity_access_tokens: the access keys issued by such a login, with
-- the bounds copied at login: when it happened (the max TTL counts from
-- there), how often the key was used and may be, and from where.

CREATE TABLE identity_oidc_auth (
    identity_id          TEXT PRIMARY KEY REFERENCES identities (id) ON DELETE CASCADE,
    discovery_url        TEXT NOT NULL,
    issuer               TEXT NOT NULL,
    ca_pem               TEXT NOT NULL DEFAULT '',
    subject              TEXT NOT NULL DEFAULT '',
    audiences            TEXT NOT NULL DEFAULT '[]',
    claims               TEXT NOT NULL DEFAULT '{}',
    access_token_ttl     BIGINT NOT NULL,
    access_token_max_ttl BIGINT NOT NULL,
    access_token_max_uses BIGINT NOT NULL,
    trusted_ips          TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE TABLE identity_access_tokens (
    key_id      TEXT PRIMARY KEY REFERENCES access_keys (id) ON DELETE CASCADE,
    identity_id TEXT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    login_at    BIGINT NOT NULL,
    ttl         BIGINT NOT NULL,
    max_ttl     BIGINT NOT NULL,
    uses        BIGINT NOT NULL DEFAULT 0,
    max_uses    BIGINT NOT NULL,
    trusted_ips TEXT NOT NULL
);
CREATE INDEX identity_access_tokens_identity ON identity_access_tokens (identity_id);
