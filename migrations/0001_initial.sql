-- One schema for SQLite and PostgreSQL: only TEXT and BIGINT columns,
-- application-generated ids, times in Unix seconds (audit: milliseconds).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL DEFAULT 'user',
    password_hash TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    last_seen_at  BIGINT
);

CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE identities (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    subject_kind TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    destination  TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (subject_kind, subject_id, destination, role)
);
CREATE INDEX grants_destination ON grants (destination);

CREATE TABLE destinations (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    url          TEXT NOT NULL,
    ca           TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    last_seen_at BIGINT
);

CREATE TABLE access_keys (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    owner_kind          TEXT NOT NULL,
    owner_id            TEXT NOT NULL,
    secret_hash         TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    inactivity_timeout  BIGINT NOT NULL,
    inactivity_deadline BIGINT NOT NULL,
    last_used_at        BIGINT,
    UNIQUE (owner_kind, owner_id, name)
);
CREATE INDEX access_keys_owner ON access_keys (owner_kind, owner_id);

CREATE TABLE providers (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL,
    url               TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    client_secret_enc TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    auth_url          TEXT NOT NULL,
    token_url         TEXT NOT NULL,
    userinfo_url      TEXT NOT NULL,
    jwks_url          TEXT NOT NULL,
    scopes            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    result      TEXT NOT NULL,
    remote_addr TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_action ON audit_log (action, result, time_ms);

-- Key/value settings that every replica shares.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
