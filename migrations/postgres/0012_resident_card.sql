-- The resident's card (address, phone, key holder, care level, doctor, allergies, care
-- notes, emergency contacts) as one JSON document: it is read and written whole, never
-- queried by field, and erased with the resident.
CREATE TABLE resident_cards (
    resident_id BIGINT PRIMARY KEY REFERENCES residents(id) ON DELETE CASCADE,
    card TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
