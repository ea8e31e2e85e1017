-- A person's second factor: the TOTP secret in force, the one waiting for its first code,
-- and the last time step a code was accepted for (a code is good once).
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending TEXT;
ALTER TABLE users ADD COLUMN totp_last_step BIGINT NOT NULL DEFAULT 0;
