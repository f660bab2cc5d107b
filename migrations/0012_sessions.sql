-- Exec and attach sessions recorded by connectors (asciicast v2).
-- grants.record_sessions (0/1): sessions under this grant are recorded, and
-- refused when they cannot be. A session row says who, where, when, the
-- command and how it ended; its recording is kept as numbered chunks of
-- asciicast text (appended as the session runs, so a connector that dies
-- loses at most its last second), pruned after --session-retention.
ALTER TABLE grants ADD COLUMN record_sessions BIGINT NOT NULL DEFAULT 0;
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    namespace TEXT NOT NULL,
    pod TEXT NOT NULL,
    container TEXT NOT NULL,
    kind TEXT NOT NULL,
    command TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    client_address TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    exit_code BIGINT,
    end_reason TEXT NOT NULL DEFAULT '',
    bytes BIGINT NOT NULL DEFAULT 0,
    chunks BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_started ON sessions (started_ms);
CREATE TABLE session_chunks (
    session_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
