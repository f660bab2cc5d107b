-- Sign-in without a local browser (RFC 8628 device flow, through the
-- server's own web sign-in).
--
-- device_codes: one row per `POST /api/device`. The device code itself is
-- never stored, only its SHA-256 (hex); the user code is stored normalized
-- (upper case, no dash). status: pending -> approved | denied, and
-- approved -> consumed when the first poll collects its access key (issued
-- then, so no key is ever stored here). poll_interval (seconds) grows by 5
-- at each slow_down; last_poll_ms is when the device last asked (0: never).
-- user_id: who approved or denied. created_at_ms counts creations per
-- client address (rate limit); expires_at is in Unix seconds.
--
-- device_signins: one row per browser that entered a user code and went
-- to the provider. state_hash is the SHA-256 of the OAuth `state`,
-- binding_hash that of the random value in the browser's cookie (so only
-- the browser that started a sign-in can finish it); the nonce and PKCE
-- verifier are encrypted with the root key. status: started -> exchanging
-- -> authenticated (user_id known) -> done, or failed.

CREATE TABLE device_codes (
    id               TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code        TEXT NOT NULL UNIQUE,
    provider_id      TEXT NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    status           TEXT NOT NULL DEFAULT 'pending',
    client_addr      TEXT NOT NULL,
    poll_interval    BIGINT NOT NULL,
    last_poll_ms     BIGINT NOT NULL DEFAULT 0,
    user_id          TEXT REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms    BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    decided_at       BIGINT
);
CREATE INDEX device_codes_addr ON device_codes (client_addr, created_at_ms);
CREATE INDEX device_codes_expires ON device_codes (expires_at);

CREATE TABLE device_signins (
    id             TEXT PRIMARY KEY,
    device_code_id TEXT NOT NULL REFERENCES device_codes (id) ON DELETE CASCADE,
    state_hash     TEXT NOT NULL UNIQUE,
    binding_hash   TEXT NOT NULL,
    nonce_enc      TEXT NOT NULL,
    verifier_enc   TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'started',
    user_id        TEXT REFERENCES users (id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX device_signins_device_code ON device_signins (device_code_id);
