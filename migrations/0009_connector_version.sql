-- The infra version of the connector that last registered a destination
-- (its Infra-Version header), for the console and `infra destinations list`.
ALTER TABLE destinations ADD COLUMN connector_version TEXT NOT NULL DEFAULT '';
