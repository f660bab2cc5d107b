-- Keys that sign cluster tokens, shared by every replica. One key per
-- rotation epoch (the UNIQUE epoch makes exactly one replica create it);
-- the private key is encrypted with the root key. A key is published in
-- the JWKS until publish_until, after it stopped signing and its last
-- tokens expired.

CREATE TABLE signing_keys (
    id            TEXT PRIMARY KEY,
    epoch         BIGINT NOT NULL UNIQUE,
    alg           TEXT NOT NULL,
    private_enc   TEXT NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    publish_until BIGINT NOT NULL
);
