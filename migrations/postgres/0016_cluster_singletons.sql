-- Cluster mode: jobs that must run on exactly one hub at a time (the client of The Things
-- Stack, the retention job), each under a lease of its own. As for partitions, `token`
-- rises at every change of holder and times are milliseconds of the database's clock.
CREATE TABLE cluster_singletons (
    name TEXT PRIMARY KEY,
    owner TEXT,
    token BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0
);
