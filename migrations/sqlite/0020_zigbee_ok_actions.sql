-- The `action` values of a Zigbee button that answer "are you OK?". Mappings made before
-- this column existed answer nothing, as they did; a new mapping takes a button's
-- double press unless it names others.
ALTER TABLE zigbee_devices ADD COLUMN ok_actions TEXT NOT NULL DEFAULT '[]';
