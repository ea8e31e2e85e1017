-- Retention picks old readings by time: with this index a pass reads only the rows it
-- removes instead of the whole table.
CREATE INDEX readings_ts ON readings(ts);
