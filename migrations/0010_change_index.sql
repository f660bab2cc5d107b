-- Per destination, the change index (from the one counter in settings,
-- 'grants_version') of the last change its connector must follow, so a
-- change wakes only the long polls it concerns.
CREATE TABLE change_index (
    destination TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
