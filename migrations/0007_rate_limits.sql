-- Standing up to hostile traffic: login rate limits that every replica
-- shares, and an audit log that stays small.
--
-- rate_limits: one counter per key (the SHA-256, hex, of what is counted:
-- failed logins per client address, per account and address, per account;
-- device codes and wrong user codes per address; see src/server/ratelimit.rs).
-- hits counts events until expires_ms (Unix milliseconds); a row whose
-- expires_ms has passed counts as absent and is reset at the next hit, and
-- removed by the periodic pruning. last_ms is the time of the latest hit
-- (the back-off counts from there).
--
-- audit_log.count and last_ms: an entry that stands for `count` repeats of
-- one unauthenticated event (the same failure from the same source), the
-- first at time_ms and the latest at last_ms. repeat_key (the SHA-256, hex,
-- of what is repeated and the window; NULL for ordinary entries) is unique,
-- so every replica adds to the same row with one upsert.

CREATE TABLE rate_limits (
    key        TEXT PRIMARY KEY,
    hits       BIGINT NOT NULL,
    last_ms    BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX rate_limits_expires ON rate_limits (expires_ms);

ALTER TABLE audit_log ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN last_ms BIGINT NOT NULL DEFAULT 0;
UPDATE audit_log SET last_ms = time_ms;
ALTER TABLE audit_log ADD COLUMN repeat_key TEXT;
CREATE UNIQUE INDEX audit_log_repeat ON audit_log (repeat_key);
