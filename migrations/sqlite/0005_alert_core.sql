-- The alert core owns every live alert: who took it on, a staff pause of its ladder,
-- the highest tier told, and the ladder's own progress (JSON) so a restart resumes
-- each escalation step, reminder and held notice where it stood.
ALTER TABLE alerts ADD COLUMN assigned_to TEXT;
ALTER TABLE alerts ADD COLUMN snoozed_until BIGINT;
ALTER TABLE alerts ADD COLUMN tier BIGINT NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN ladder TEXT;
CREATE INDEX alerts_live ON alerts(state) WHERE state <> 'resolved';
