//! SQLite's ingest commit: one batch written by one call on the calling thread.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement is a
//! round trip to it. A commit of a hundred readings and an alarm is a dozen
//! statements; on a busy machine each round trip waits for a core (about 0.1–0.3 ms
//! measured under ingest load), which put most of an alarm's time on the desk into
//! these hand-overs. Here the whole transaction runs as one call with cached one-row
//! statements, in the turn of the store's writers. The inserts and upserts are the same
//! text as the multi-row statements PostgreSQL gets (`sql.rs`); the residents check and
//! the devices update are their one-row equivalents.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};

use super::sql::{
    device_updates, reading_data, reading_position, rejected_kinds, rejected_prune,
    ALERTS_CONFLICT, ALERTS_INSERT, AUDIT_INSERT, HISTORY_INSERT, OUTBOX_CONFLICT, OUTBOX_INSERT,
    PAUSE_DELETE, PAUSE_INSERT, READINGS_INSERT, REJECTED_INSERT, RULE_STATE_CONFLICT,
    RULE_STATE_INSERT,
};
use super::{ms, Batch, StoreError, StoreResult};
use crate::alerts::PauseChange;

/// Statements kept prepared: every one a commit can run, with room to spare.
const CACHED_STATEMENTS: usize = 32;

/// The connection the pipeline's commits are written on.
pub(crate) struct BatchWriter {
    conn: Mutex<Connection>,
}

impl BatchWriter {
    /// The writer of the (already migrated) database file, or `None` where this file is
    /// not the hub's database; the store then commits through sqlx, as PostgreSQL does.
    /// (A database in memory, which no second connection reaches, never gets here.)
    pub(crate) fn open_migrated(path: &Path, journal_limit: u64) -> Option<BatchWriter> {
        let found = BatchWriter::open(path, journal_limit).and_then(|w| {
            let migrated = w.lock().query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'readings')",
                [],
                |row| row.get::<_, bool>(0),
            )?;
            Ok(migrated.then_some(w))
        });
        let why = match found {
            Ok(Some(writer)) => return Some(writer),
            Ok(None) => "no migrated database in this file".to_string(),
            Err(e) => format!("no second connection to this database: {e}"),
        };
        tracing::info!(path = %path.display(), why, "commits go through the pool");
        None
    }

    /// Opens the database file with the settings of the store's pool, but its own cache.
    fn open(path: &Path, journal_limit: u64) -> rusqlite::Result<BatchWriter> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // As the pool's connections (see `connect`): checkpoints are the background
        // task's, and the statement journal of a multi-row insert stays in memory. Unlike
        // them it keeps SQLite's default page cache: every commit rewrites the indexes'
        // pages, which the pool's small caches would read back from the OS each time.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = {journal_limit};"
        ))?;
        conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
        Ok(BatchWriter {
            conn: Mutex::new(conn),
        })
    }

    /// Writes the batch as one transaction: all of it, or (on error) none of it.
    pub(crate) fn write(&self, batch: &Batch) -> StoreResult<()> {
        let mut conn = self.lock();
        let written = write_in_transaction(&mut conn, batch);
        // Dropping the transaction rolls it back; should even that fail, the connection
        // must not stay inside it, or every later commit would fail to begin.
        if written.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        written.map_err(failed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn write_in_transaction(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    write_rows(&tx, batch)?;
    tx.commit()
}

/// Runs blocking work where the caller is. On the multi-threaded runtime the worker's
/// other tasks move to another thread meanwhile; a single-threaded one (some tests)
/// just waits.
pub(crate) fn in_place<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// SQLite's refusal as the store's error: a second row for a unique key is a `Conflict`,
/// as sqlx reports it on the other commit path.
fn failed(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.extended_code,
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Sqlite(e.to_string()),
    }
}

/// The same rows, in the same order, as `commit_in_statements` writes.
fn write_rows(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    let alive = existing_residents(tx, &batch.residents())?;
    insert_readings(tx, batch, &alive)?;
    update_devices_seen(tx, batch)?;
    if !batch.rejected.is_empty() {
        insert_rejected(tx, batch)?;
    }
    upsert_rule_states(tx, batch, &alive)?;
    let written = upsert_alerts(tx, batch, &alive)?;
    insert_history(tx, batch, &written)?;
    insert_audit(tx, batch)?;
    insert_outbox(tx, batch, &alive)?;
    write_pauses(tx, batch, &alive)
}

/// The texts of the statements a commit runs, built once: the statement cache is looked
/// up by text, and building them for every commit cost more than running a small one.
struct Texts {
    readings: String,
    rejected: String,
    rule_state: String,
    alerts: String,
    history: String,
    audit: String,
    outbox: String,
    pause_insert: String,
    pause_delete: String,
}

fn texts() -> &'static Texts {
    static TEXTS: OnceLock<Texts> = OnceLock::new();
    TEXTS.get_or_init(|| Texts {
        readings: one_row(READINGS_INSERT, 10, ""),
        rejected: one_row(REJECTED_INSERT, 6, ""),
        rule_state: one_row(RULE_STATE_INSERT, 3, RULE_STATE_CONFLICT),
        alerts: one_row(ALERTS_INSERT, 20, ALERTS_CONFLICT),
        history: one_row(HISTORY_INSERT, 6, ""),
        audit: numbered(AUDIT_INSERT),
        outbox: one_row(OUTBOX_INSERT, 15, OUTBOX_CONFLICT),
        pause_insert: numbered(PAUSE_INSERT),
        pause_delete: numbered(PAUSE_DELETE),
    })
}

/// `prefix VALUES (?1, …, ?n) suffix`: the one-row form of a multi-row statement.
fn one_row(prefix: &str, columns: usize, suffix: &str) -> String {
    let values: Vec<String> = (1..=columns).map(|i| format!("?{i}")).collect();
    format!("{prefix}VALUES ({}){suffix}", values.join(", "))
}

/// The statement with PostgreSQL's `$n` as SQLite's `?n`. SQLite reads `$1` as a
/// parameter *named* "$1", numbered by where it first appears, so positional values
/// would land in the wrong places wherever `$2` comes before `$1`; `?n` is the n-th.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.chars().peekable();
    while let Some(c) = rest.next() {
        let digit_follows = rest.peek().is_some_and(char::is_ascii_digit);
        out.push(if c == '$' && digit_follows { '?' } else { c });
    }
    out
}

fn existing_residents(
    tx: &Transaction<'_>,
    ids: &BTreeSet<i64>,
) -> rusqlite::Result<BTreeSet<i64>> {
    let mut exists = tx.prepare_cached("SELECT 1 FROM residents WHERE id = ?1")?;
    let mut alive = BTreeSet::new();
    for id in ids {
        if exists.exists([id])? {
            alive.insert(*id);
        }
    }
    Ok(alive)
}

fn insert_readings(
    tx: &Transaction<'_>,
    batch: &Batch,
    alive: &BTreeSet<i64>,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(&texts().readings)?;
    for ev in batch
        .readings
        .iter()
        .filter(|r| alive.contains(&r.resident_id))
    {
        let (lat, lon, acc) = reading_position(ev);
        insert.execute(params![
            ev.resident_id,
            ev.device_id,
            ev.reading.kind_str(),
            ms(ev.ts),
            ms(ev.received_at),
            lat,
            lon,
            acc,
            ev.battery.map(i32::from),
            reading_data(ev),
        ])?;
    }
    Ok(())
}

fn update_devices_seen(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    let mut update = tx.prepare_cached(
        "UPDATE devices SET last_seen_at = CASE WHEN last_seen_at IS NULL OR last_seen_at < ?2 \
         THEN ?2 ELSE last_seen_at END, battery = COALESCE(?3, battery) WHERE id = ?1",
    )?;
    for (device, (seen, battery)) in device_updates(&batch.readings) {
        update.execute(params![device, seen, battery.map(i32::from)])?;
    }
    Ok(())
}

fn insert_rejected(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(&texts().rejected)?;
    for r in &batch.rejected {
        insert.execute(params![
            ms(r.received_at),
            r.device_id,
            r.topic,
            r.reason.as_str(),
            r.detail,
            r.payload,
        ])?;
    }
    for (kind, keep, touched) in rejected_kinds(&batch.rejected) {
        if touched {
            tx.prepare_cached(&numbered(&rejected_prune(kind)))?
                .execute([keep - 1])?;
        }
    }
    Ok(())
}

fn upsert_rule_states(
    tx: &Transaction<'_>,
    batch: &Batch,
    alive: &BTreeSet<i64>,
) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(&texts().rule_state)?;
    let at = ms(batch.at);
    for (rid, state) in batch.rule_states.iter().filter(|(r, _)| alive.contains(r)) {
        upsert.execute(params![rid, state, at])?;
    }
    Ok(())
}

/// Returns the ids of the alerts written.
fn upsert_alerts(
    tx: &Transaction<'_>,
    batch: &Batch,
    alive: &BTreeSet<i64>,
) -> rusqlite::Result<BTreeSet<i64>> {
    let mut upsert = tx.prepare_cached(&texts().alerts)?;
    let mut written = BTreeSet::new();
    for r in batch
        .effects
        .alerts
        .values()
        .filter(|r| alive.contains(&r.alert.resident_id))
    {
        let a = &r.alert;
        upsert.execute(params![
            a.id,
            a.resident_id,
            a.device_id,
            a.kind.as_str(),
            r.subject,
            a.severity.as_str(),
            a.state.as_str(),
            a.escalated,
            ms(a.opened_at),
            a.acknowledged_at.map(ms),
            a.acknowledged_by,
            a.resolved_at.map(ms),
            a.resolved_by,
            a.resolution,
            a.details.to_string(),
            ms(a.updated_at),
            a.assigned_to,
            a.snoozed_until.map(ms),
            i64::from(a.tier),
            r.ladder,
        ])?;
        written.insert(a.id);
    }
    Ok(written)
}

fn insert_history(
    tx: &Transaction<'_>,
    batch: &Batch,
    written: &BTreeSet<i64>,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(&texts().history)?;
    for h in batch
        .effects
        .history
        .iter()
        .filter(|h| written.contains(&h.alert_id))
    {
        insert.execute(params![
            h.alert_id,
            ms(h.at),
            h.action,
            h.actor,
            h.note,
            h.details
        ])?;
    }
    Ok(())
}

fn insert_audit(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(&texts().audit)?;
    for e in &batch.effects.audit {
        let details = e.details.as_ref().map(|d| d.to_string());
        insert.execute(params![ms(e.at), e.actor, e.action, e.target, details])?;
    }
    Ok(())
}

fn insert_outbox(
    tx: &Transaction<'_>,
    batch: &Batch,
    alive: &BTreeSet<i64>,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(&texts().outbox)?;
    for o in batch
        .effects
        .outbox
        .iter()
        .filter(|o| alive.contains(&o.resident_id))
    {
        let c = &o.contact;
        insert.execute(params![
            o.key,
            o.resident_id,
            o.alert_id,
            c.id,
            c.name,
            o.event.as_str(),
            c.channel.as_str(),
            c.address,
            o.secret,
            c.language.as_str(),
            o.payload,
            "pending",
            0,
            ms(o.created_at),
            ms(o.created_at),
        ])?;
    }
    Ok(())
}

fn write_pauses(
    tx: &Transaction<'_>,
    batch: &Batch,
    alive: &BTreeSet<i64>,
) -> rusqlite::Result<()> {
    for change in batch
        .effects
        .pauses
        .iter()
        .filter(|p| alive.contains(&p.resident_id()))
    {
        match change {
            PauseChange::Add(p) => {
                tx.prepare_cached(&texts().pause_insert)?.execute(params![
                    p.id,
                    p.resident_id,
                    ms(p.from),
                    ms(p.until),
                    p.reason.as_str(),
                    p.note,
                    p.created_by,
                    ms(p.created_at),
                ])?;
            }
            PauseChange::Remove { resident_id, id } => {
                tx.prepare_cached(&texts().pause_delete)?
                    .execute(params![id, resident_id])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_become_sqlites_numbered_ones() {
        assert_eq!(
            numbered("UPDATE t SET a = $2 WHERE id = $1 AND b = '$x' AND c = $10"),
            "UPDATE t SET a = ?2 WHERE id = ?1 AND b = '$x' AND c = ?10"
        );
    }

    /// A second connection is used only where it reaches the pool's database.
    #[tokio::test]
    async fn only_a_migrated_file_gets_a_writer_and_memory_still_commits() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"")?;
        assert!(
            BatchWriter::open_migrated(&empty, 1 << 20).is_none(),
            "an empty file is not the hub's database"
        );
        let file = dir.path().join("hub.db");
        let _store = super::super::connect(&format!("sqlite:{}", file.display())).await?;
        assert!(BatchWriter::open_migrated(&file, 1 << 20).is_some());
        let memory = super::super::connect("sqlite::memory:").await?;
        assert!(
            !std::path::Path::new("file:sqlx-in-memory-0").exists(),
            "a database in memory leaves no file behind"
        );
        let batch = Batch {
            rule_states: vec![(1, "{}".into())],
            ..Batch::default()
        };
        memory.commit_batch(&batch).await?;
        Ok(())
    }

    #[test]
    fn a_second_row_for_a_unique_key_is_a_conflict() -> rusqlite::Result<()> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch("CREATE TABLE t (k INTEGER UNIQUE, v INTEGER CHECK (v > 0))")?;
        conn.execute("INSERT INTO t VALUES (1, 1)", [])?;
        let twice = conn
            .execute("INSERT INTO t VALUES (1, 2)", [])
            .map_err(failed);
        assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
        let refused = conn
            .execute("INSERT INTO t VALUES (2, 0)", [])
            .map_err(failed);
        assert!(matches!(refused, Err(StoreError::Sqlite(_))), "{refused:?}");
        Ok(())
    }

    /// The binding that went wrong with `$n`: a later number before an earlier one.
    #[test]
    fn values_land_in_their_numbered_places() -> rusqlite::Result<()> {
        let conn = Connection::open_in_memory()?;
        let (first, second): (i64, i64) =
            conn.query_row(&numbered("SELECT $2 - 0, $1 - 0"), params![1, 2], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        assert_eq!((first, second), (2, 1));
        assert_eq!(
            one_row("INSERT INTO t (a, b) ", 2, ""),
            "INSERT INTO t (a, b) VALUES (?1, ?2)"
        );
        Ok(())
    }
}
