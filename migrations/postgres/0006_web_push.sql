-- Web Push (issue 19): the hub's VAPID key pair, made at first start, and the browsers
-- each user subscribed. A push contact names a user; its notices go to that user's browsers.
CREATE TABLE vapid_keys (
    -- One row: the key the hub signs with. Browsers subscribed with its public half,
    -- so replacing it would silently orphan every subscription.
    id BIGINT PRIMARY KEY CHECK (id = 1),
    -- base64url of the P-256 private scalar; the hub must read it back to sign, so not hashed.
    private_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE push_subscriptions (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The push service URL; one browser subscription is one endpoint.
    endpoint TEXT NOT NULL UNIQUE,
    -- The browser's P-256 public key and authentication secret (base64url).
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX push_subscriptions_user ON push_subscriptions(user_id);
