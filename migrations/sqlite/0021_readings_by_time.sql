-- Retention picks old readings of one class by time. Each class has an index of its
-- own, whose condition is word for word the one retention picks by, so a pass reads
-- only the rows it removes, never those of the other class that it keeps.
CREATE INDEX readings_positions_ts ON readings(ts) WHERE kind IN ('gps', 'sighting');
CREATE INDEX readings_others_ts ON readings(ts) WHERE kind NOT IN ('gps', 'sighting');
