-- Where each grant stands on its cluster, as the destination's connector
-- last said: '' (not known), 'applied' or 'pending' with a message, and when.
-- Writing these never moves the grants' change counter, so connectors'
-- long polls do not wake for their own reports.
ALTER TABLE grants ADD COLUMN state TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN state_message TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN state_at BIGINT NOT NULL DEFAULT 0;
