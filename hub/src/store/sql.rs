//! The SQL behind [`Store`], written once and expanded for SQLite and PostgreSQL.
//!
//! Both dialects accept the same statements here (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`, partial unique indexes); only the DDL differs, so the migrations
//! are kept per backend in `migrations/sqlite` and `migrations/postgres`. A macro
//! rather than a generic impl keeps each expansion concrete, without the trait
//! bounds sqlx would otherwise need on every query.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mimamori_protocol::alert::AlertEvent;
use mimamori_protocol::api::{Device, RejectedMessage, Resident, Role, User};
use mimamori_protocol::card::ResidentCard;
use mimamori_protocol::gateway::{
    BleTag, EchonetDevice, LoraFields, LoraProfile, LorawanDevice, NewLoraFields, Receiver,
    ZigbeeDevice,
};
use mimamori_protocol::zone::{Zone, ZoneShape};
use mimamori_protocol::{Alert, DeviceEvent, DeviceKind, Reading};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::QueryBuilder;
use tokio::sync::{Mutex, MutexGuard};

use crate::alerts::{AlertRecord, HistoryRow, OutboxEntry, PauseChange};
use crate::notify::message::Notice;
use crate::notify::policy::{Next, NoticeEvent};
use crate::notify::summary::DayFacts;
use mimamori_protocol::contact::{Contact, Delivery};

use super::outbox::*;
use super::rows::*;
use super::sqlite_batch::{in_place, BatchWriter};
use super::*;

/// The columns of a stored pause, in [`PauseRow`]'s order.
const PAUSE_COLS: &str = "id, resident_id, from_at, until_at, reason, note, created_by, created_at";

/// The rules engine's view of a device.
fn device_info(d: &Device) -> mimamori_rules::DeviceInfo {
    mimamori_rules::DeviceInfo {
        id: d.id.clone(),
        kind: d.kind,
        room: d.room.clone(),
        role: d.role,
    }
}

/// How often the SQLite write-ahead log is copied back into the database when it has
/// changed. Each copy writes every page changed since the last one once, however often it
/// was rewritten in between, so copies a few seconds apart write far less than copies
/// every second; the log grows meanwhile by what ingest writes in that time.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// How often the log written since its last restart is looked at between those copies.
const CHECKPOINT_LOOK: Duration = Duration::from_millis(100);
/// The size the log file is kept under at any ingest rate. Only a reader can hold it
/// past this: SQLite copies no frame that a snapshot still being read may need.
const WAL_BOUND: u64 = 64 << 20;
/// Log written since its last restart that is copied at the next look rather than at
/// the next [`CHECKPOINT_EVERY`], so that under load the log starts over every few
/// hundred milliseconds, well before the file reaches [`WAL_LIMIT`].
const RESTART_AT: u64 = WAL_BOUND / 4;
/// What SQLite cuts the log file back to when it starts it over (`journal_size_limit`).
/// The log restarts long before it fills this, so SQLite normally has nothing to cut:
/// cutting the file inside the commit that restarts the log (freeing tens of MiB of
/// cached pages) held that commit, and every alert behind it, for 20–30 ms.
const WAL_LIMIT: u64 = WAL_BOUND * 3 / 4;
/// Log written since its last restart past which the rest is copied in the writers'
/// turn even when it is more than [`FINISH_IN_TURN`]: holding the writers longer is the
/// price of the bound when a burst kept the rounds from catching up.
const FORCE_TURN_AT: u64 = WAL_BOUND / 2;
/// The most frames a forced turn copies (32 MiB of 4 KiB pages): more left over means a
/// reader had held the copy back, and holding every writer (and alert) while all of it
/// is copied would cost more than the log's length.
const FORCE_AT_MOST: i64 = 8_192;
/// Rounds of copying beside the writers before the rest is copied in their turn: each
/// round copies what the writers appended during the one before, so the rest shrinks.
const CHECKPOINT_ROUNDS: usize = 4;
/// Frames left over that are small enough to copy in the writers' turn (4 MiB of 4 KiB
/// pages).
const FINISH_IN_TURN: i64 = 1_024;
/// Page cache of each of the pool's connections; the batch writer keeps SQLite's default.
const POOL_CACHE_KIB: u32 = 256;

/// The database file's companions whose state the background checkpoint looks at.
struct LogFiles {
    wal: std::path::PathBuf,
    shm: std::path::PathBuf,
}

impl LogFiles {
    fn beside(db: &std::path::Path) -> LogFiles {
        let with = |suffix: &str| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            std::path::PathBuf::from(p)
        };
        LogFiles {
            wal: with("-wal"),
            shm: with("-shm"),
        }
    }

    /// Bytes of log written since it last started over, from the wal-index header at the
    /// start of the `-shm` file (its `mxFrame` and page size, in native byte order; see
    /// SQLite's "WAL-mode File Format"). A heuristic: read without SQLite's locks, it may
    /// be one commit old. `None` if the file cannot be read.
    fn written(&self) -> Option<u64> {
        use std::io::Read;
        let mut header = [0u8; 20];
        std::fs::File::open(&self.shm)
            .and_then(|mut f| f.read_exact(&mut header))
            .ok()?;
        let page = match u16::from_ne_bytes([header[14], header[15]]) {
            1 => 65_536,
            n => u64::from(n),
        };
        let frames = u64::from(u32::from_ne_bytes([
            header[16], header[17], header[18], header[19],
        ]));
        Some(frames * (page + 24))
    }
}

/// Copies the write-ahead log into the database file beside the writers, every
/// [`CHECKPOINT_EVERY`] while the log changes, or at the next look once [`RESTART_AT`]
/// was written since it last started over (past [`FORCE_TURN_AT`], see
/// [`checkpoint_whole_log`]). SQLite's automatic checkpoint runs inside
/// whichever COMMIT crosses the log's size limit, with two fsyncs: on this machine's
/// disks that stalled an ingest commit, and every alert waiting behind it, by up to
/// 200 ms. An idle hub's log does not change, so it costs nothing. Ends when the pool is
/// closed.
async fn checkpoint_in_background(pool: SqlitePool, files: LogFiles, writer: Arc<Mutex<()>>) {
    let mut tick = tokio::time::interval(CHECKPOINT_LOOK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut copied_up_to = None;
    let mut last_copy = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        let meta = std::fs::metadata(&files.wal).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        // Without the header (never seen with WAL on), only the 5 s rule applies: the
        // file's length says how long the log once was, not what it holds now.
        let written = files.written().unwrap_or(0);
        let full = written >= RESTART_AT;
        if (modified.is_some() && modified == copied_up_to)
            || (!full && last_copy.elapsed() < CHECKPOINT_EVERY)
        {
            continue;
        }
        last_copy = tokio::time::Instant::now();
        match checkpoint_whole_log(&pool, &writer, written >= FORCE_TURN_AT).await {
            Ok(true) => copied_up_to = modified,
            Ok(false) => {}
            Err(_) if pool.is_closed() => return,
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; retrying later"),
        }
    }
}

/// Copies every frame of the log into the database, so that the next commit starts the
/// log over from its beginning. Under steady writes a PASSIVE checkpoint alone never gets
/// there: writers append while it copies, so the log is never all copied and grows
/// without end. So: PASSIVE rounds beside the writers (they wait for nothing) until what
/// was appended meanwhile is small, then that rest in the writers' turn, which holds
/// commits for a few milliseconds rather than the whole copy (a TRUNCATE checkpoint in
/// their turn held them for hundreds). With `force`, a rest of up to [`FORCE_AT_MOST`]
/// frames is copied in their turn too. `false` if the writers outran the copy or a
/// reader kept some frames from being copied.
async fn checkpoint_whole_log(
    pool: &SqlitePool,
    writer: &Mutex<()>,
    force: bool,
) -> Result<bool, sqlx::Error> {
    let mut rest = i64::MAX;
    let mut first_copied = None;
    // Rounds that copy nothing new while frames wait mean a reader holds them.
    let mut advanced = false;
    for _ in 0..CHECKPOINT_ROUNDS {
        let (_, log, copied) = passive_checkpoint(pool).await?;
        rest = log - copied;
        if rest <= FINISH_IN_TURN {
            break;
        }
        advanced = copied > *first_copied.get_or_insert(copied);
    }
    let in_turn = if force && advanced {
        FORCE_AT_MOST
    } else {
        FINISH_IN_TURN
    };
    if rest > in_turn {
        // The writers outran the copy, or a reader holds it back: holding the writers for
        // the rest would stall every PUBACK behind it, so try again at the next look.
        return Ok(false);
    }
    let _turn = writer.lock().await;
    let (busy, log, copied) = passive_checkpoint(pool).await?;
    Ok(busy == 0 && log == copied)
}

/// One PASSIVE checkpoint: (busy, frames in the log, frames copied).
async fn passive_checkpoint(pool: &SqlitePool) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await
}

/// Rows per multi-row INSERT, well under both backends' bind-parameter limits.
const CHUNK: usize = 500;

/// Splits rows into statements of at most [`CHUNK`] rows whose sizes are [`CHUNK`] or a
/// power of two, so that a batch of any size is written by statements prepared before:
/// each distinct row count is a distinct SQL text, prepared anew on first use.
fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= CHUNK {
            CHUNK
        } else {
            1 << rest.len().ilog2()
        };
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// Opens the store the URL names (`postgres://…` or `sqlite:…`) and runs its migrations.
pub async fn connect(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = PgConnectOptions::from_str(url)
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .context("cannot connect to PostgreSQL")?;
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .context("PostgreSQL migrations failed")?;
        Ok(Arc::new(PgStore::from_pool(pool)))
    } else {
        let opts = SqliteConnectOptions::from_str(url).with_context(|| {
            format!("DATABASE_URL {url:?} is neither postgres:// nor a valid sqlite: URL")
        })?;
        let memory = in_memory(url);
        if !memory {
            create_private(opts.get_filename())?;
        }
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL loses no committed transaction on a process crash; only an OS
            // crash could, which a SIGKILL of the hub is not.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // A multi-row insert into a table with foreign keys keeps a statement journal;
            // in a temporary file it costs a write per page (a third of a commit's time).
            .pragma("temp_store", "memory")
            // Checkpoints run beside the writers (see `checkpoint_in_background`); when
            // one has copied the whole log, the next commit starts it over, and cuts the
            // file back to this size if it ever grew past it.
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", WAL_LIMIT.to_string())
            // The pool serves the API's reads and the checkpoints; the bulk of the writing
            // has its own connection. SQLite's default cache of 2,000 KiB for each of the
            // pool's connections filled over twenty minutes of steady ingest and was most
            // of the hub's growth in memory; the file's pages stay in the OS's cache.
            .pragma("cache_size", format!("-{POOL_CACHE_KIB}"))
            .busy_timeout(Duration::from_secs(10));
        let files = LogFiles::beside(opts.get_filename());
        let opts_file = opts.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open SQLite database {url:?}"))?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&pool)
            .await
            .context("SQLite migrations failed")?;
        let mut store = SqliteStore::from_pool(pool.clone());
        if !memory {
            store.batches = BatchWriter::open_migrated(&opts_file, WAL_LIMIT);
        }
        tokio::spawn(checkpoint_in_background(pool, files, store.writer.clone()));
        Ok(Arc::new(store))
    }
}

/// Opens an existing hub database for reading only, for tools beside a running hub (`hub
/// replay --database-url`): nothing is created, migrated or written, and a database of
/// another schema than this binary's is refused with a reason rather than misread.
pub async fn open_read_only(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = PgConnectOptions::from_str(url)
            .context("the database URL is not a valid PostgreSQL URL")?
            .options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(opts)
            .await
            .context("cannot connect to PostgreSQL")?;
        let store = PgStore::from_pool(pool);
        let expected = latest(&sqlx::migrate!("../migrations/postgres"));
        check_schema(store.schema_version().await, expected)?;
        Ok(Arc::new(store))
    } else {
        let opts = SqliteConnectOptions::from_str(url).with_context(|| {
            format!("database URL {url:?} is neither postgres:// nor a valid sqlite: URL")
        })?;
        let path = opts.get_filename().to_owned();
        if !path.is_file() {
            anyhow::bail!("there is no SQLite database at {}", path.display());
        }
        let opts = opts
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
        let store = SqliteStore::from_pool(pool);
        let expected = latest(&sqlx::migrate!("../migrations/sqlite"));
        check_schema(store.schema_version().await, expected)?;
        Ok(Arc::new(store))
    }
}

fn latest(m: &sqlx::migrate::Migrator) -> i64 {
    m.iter().map(|m| m.version).max().unwrap_or(0)
}

fn check_schema(stored: Result<Option<i64>, sqlx::Error>, expected: i64) -> anyhow::Result<()> {
    match stored {
        Err(e) => Err(anyhow::anyhow!(
            "this is not a Mimamori hub database (no migrations recorded: {e})"
        )),
        Ok(Some(v)) if v == expected => Ok(()),
        Ok(Some(v)) if v < expected => anyhow::bail!(
            "the database is at schema {v}, older than this hub's {expected}: start the hub on it once to migrate it"
        ),
        Ok(Some(v)) => anyhow::bail!(
            "the database is at schema {v}, newer than this hub's {expected}: use the hub that wrote it"
        ),
        Ok(None) => anyhow::bail!("this is not a Mimamori hub database (no migration applied)"),
    }
}

/// Whether a `sqlite:` URL names a database in memory (`:memory:` or `mode=memory`),
/// which has no file: sqlx renames `:memory:` to `file:sqlx-in-memory-N`, so the
/// parsed options cannot tell.
fn in_memory(url: &str) -> bool {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || query.split('&').any(|p| p == "mode=memory")
}

/// Creates a new database file readable by the hub's user only; SQLite gives its
/// `-wal` and `-shm` files the same mode. An existing file keeps the mode it has.
fn create_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create the database {}", path.display())),
    }
}

/// PostgreSQL, for installations that outgrow one file.
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    pub fn from_pool(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// PostgreSQL serialises conflicting writers itself.
    pub(super) async fn write_guard(&self) -> Option<MutexGuard<'_, ()>> {
        None
    }

    /// PostgreSQL checkpoints on its own schedule.
    async fn checkpoint_now(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn write_batch(&self, batch: &Batch) -> StoreResult<()> {
        self.commit_in_statements(batch).await
    }
}

/// SQLite, the embedded default.
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// SQLite allows one writer; taking turns here avoids `SQLITE_BUSY` when a deferred
    /// transaction that began with a read tries to write after another writer.
    writer: Arc<Mutex<()>>,
    /// The ingest commit's own connection to the file; `None` for a database opened
    /// only to read.
    batches: Option<BatchWriter>,
}

impl SqliteStore {
    pub fn from_pool(pool: SqlitePool) -> Self {
        SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(())),
            batches: None,
        }
    }

    /// Writes a batch in the writers' turn. Without a fence (SQLite never has one: a
    /// cluster runs on PostgreSQL) it is one call to the batch writer, rather than a
    /// round trip to a connection's thread per statement: under load a round trip
    /// waits for a busy core, and an alarm's commit is made of a dozen of them.
    async fn write_batch(&self, batch: &Batch) -> StoreResult<()> {
        match (&self.batches, &batch.fence) {
            (Some(writer), None) => {
                let _w = self.write_guard().await;
                in_place(|| writer.write(batch))
            }
            _ => self.commit_in_statements(batch).await,
        }
    }

    pub(super) async fn write_guard(&self) -> Option<MutexGuard<'_, ()>> {
        Some(self.writer.lock().await)
    }

    /// Copies the whole log into the database and empties it, in the writers' turn.
    async fn checkpoint_now(&self) -> StoreResult<()> {
        let _w = self.write_guard().await;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Appends `IN (…)` with one bound parameter per id.
pub(super) fn push_id_list<'args, DB>(
    q: &mut QueryBuilder<'args, DB>,
    ids: impl IntoIterator<Item = i64>,
) where
    DB: sqlx::Database,
    i64: 'args + sqlx::Encode<'args, DB> + sqlx::Type<DB>,
{
    q.push("IN (");
    let mut sep = q.separated(", ");
    for id in ids {
        sep.push_bind(id);
    }
    q.push(")");
}

/// The columns of `alerts` in the order `AlertRow` reads them.
pub(super) const ALERT_COLS: &str =
    "id, resident_id, device_id, kind, severity, state, escalated, opened_at, acknowledged_at, \
     acknowledged_by, resolved_at, resolved_by, resolution, details, updated_at, assigned_to, \
     snoozed_until, tier";

// The ingest commit's statements, shared by the multi-row statements built here and the
// one-row statements of SQLite's batch writer (`sqlite_batch.rs`).
pub(super) const READINGS_INSERT: &str =
    "INSERT INTO readings (resident_id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery, data) ";
pub(super) const REJECTED_INSERT: &str =
    "INSERT INTO rejected (received_at, device_id, topic, reason, detail, payload) ";
pub(super) const RULE_STATE_INSERT: &str =
    "INSERT INTO rule_state (resident_id, state, updated_at) ";
pub(super) const RULE_STATE_CONFLICT: &str =
    " ON CONFLICT (resident_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at";
pub(super) const ALERTS_INSERT: &str =
    "INSERT INTO alerts (id, resident_id, device_id, kind, subject, severity, state, escalated, opened_at, \
     acknowledged_at, acknowledged_by, resolved_at, resolved_by, resolution, details, updated_at, assigned_to, \
     snoozed_until, tier, ladder) ";
pub(super) const ALERTS_CONFLICT: &str =
    " ON CONFLICT (id) DO UPDATE SET device_id = excluded.device_id, severity = excluded.severity, state = excluded.state, \
     escalated = excluded.escalated, acknowledged_at = excluded.acknowledged_at, acknowledged_by = excluded.acknowledged_by, \
     resolved_at = excluded.resolved_at, resolved_by = excluded.resolved_by, resolution = excluded.resolution, \
     details = excluded.details, updated_at = excluded.updated_at, assigned_to = excluded.assigned_to, \
     snoozed_until = excluded.snoozed_until, tier = excluded.tier, ladder = excluded.ladder";
pub(super) const HISTORY_INSERT: &str =
    "INSERT INTO alert_events (alert_id, at, action, actor, note, details) ";
pub(super) const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)";
pub(super) const OUTBOX_INSERT: &str =
    "INSERT INTO deliveries (idempotency_key, resident_id, alert_id, contact_id, contact_name, event, channel, address, \
     secret, language, payload, state, attempts, created_at, next_attempt_at) ";
pub(super) const OUTBOX_CONFLICT: &str = " ON CONFLICT (idempotency_key) DO NOTHING";
pub(super) const PAUSE_INSERT: &str =
    "INSERT INTO resident_pauses (id, resident_id, from_at, until_at, reason, note, created_by, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const PAUSE_DELETE: &str =
    "DELETE FROM resident_pauses WHERE id = $1 AND resident_id = $2";

/// Each kind of dead letter keeps its own newest rows: a flood of unauthenticated
/// requests (no device) can never push out what authenticated devices did. Each entry:
/// the kind's condition, how many it keeps, and whether these rows have any of it.
pub(super) fn rejected_kinds(rejected: &[RejectedRow]) -> [(&'static str, i64, bool); 2] {
    [
        (
            "device_id IS NOT NULL",
            REJECTED_KEEP,
            rejected.iter().any(|r| r.device_id.is_some()),
        ),
        (
            "device_id IS NULL",
            REJECTED_ANONYMOUS_KEEP,
            rejected.iter().any(|r| r.device_id.is_none()),
        ),
    ]
}

/// Removes the dead letters of one kind beyond the newest `$1`.
pub(super) fn rejected_prune(kind: &str) -> String {
    format!(
        "DELETE FROM rejected WHERE {kind} AND id < \
         (SELECT id FROM rejected WHERE {kind} ORDER BY id DESC LIMIT 1 OFFSET $1)"
    )
}

/// What a reading carries beyond its columns, as JSON. Written field by field rather than
/// through a `serde_json::Value` (a map and a string per key, for every motion reading);
/// the keys keep the sorted order stored rows have always had.
pub(super) fn reading_data(ev: &DeviceEvent) -> Option<String> {
    #[derive(serde::Serialize)]
    struct Motion<'a> {
        motion: bool,
        room: &'a Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Door {
        open: bool,
    }
    #[derive(serde::Serialize)]
    struct Sighting<'a> {
        place: &'a str,
        receiver: &'a str,
    }
    let json = match &ev.reading {
        Reading::Motion { motion, room } => serde_json::to_string(&Motion {
            motion: *motion,
            room,
        }),
        Reading::Door { open } => serde_json::to_string(&Door { open: *open }),
        Reading::Sighting {
            receiver, place, ..
        } => serde_json::to_string(&Sighting { place, receiver }),
        _ => return None,
    };
    json.ok()
}

pub(super) fn reading_position(ev: &DeviceEvent) -> (Option<f64>, Option<f64>, Option<f64>) {
    match ev.reading {
        Reading::Position {
            lat,
            lon,
            accuracy_m,
        }
        | Reading::Sighting {
            lat,
            lon,
            accuracy_m,
            ..
        } => (Some(lat), Some(lon), accuracy_m),
        _ => (None, None, None),
    }
}

/// The newest receive time and last battery level of each device in a batch.
pub(super) fn device_updates(readings: &[DeviceEvent]) -> HashMap<&str, (i64, Option<u8>)> {
    let mut out: HashMap<&str, (i64, Option<u8>)> = HashMap::new();
    for ev in readings {
        let e = out.entry(ev.device_id.as_str()).or_insert((i64::MIN, None));
        e.0 = e.0.max(ms(ev.received_at));
        if ev.battery.is_some() {
            e.1 = ev.battery;
        }
    }
    out
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $name:literal) => {
        impl $store {
            /// The newest migration applied; an error when there is no migrations table.
            async fn schema_version(&self) -> Result<Option<i64>, sqlx::Error> {
                let (v,): (Option<i64>,) =
                    sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(v)
            }

            async fn user_resident_ids(&self, user_id: i64) -> StoreResult<Vec<i64>> {
                let ids: Vec<(i64,)> =
                    sqlx::query_as("SELECT resident_id FROM user_residents WHERE user_id = $1 ORDER BY resident_id")
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(ids.into_iter().map(|(i,)| i).collect())
            }

            /// Refuses the commit unless its lease is still the partition's current one,
            /// and records how far into the event log it reaches.
            async fn check_fence(tx: &mut sqlx::Transaction<'_, $db>, f: &Fence) -> StoreResult<()> {
                let seq = i64::try_from(f.applied_seq).unwrap_or(i64::MAX);
                let done = sqlx::query(
                    "UPDATE cluster_leases SET applied_seq = CASE WHEN applied_seq < $1 THEN $1 ELSE applied_seq END \
                     WHERE part = $2 AND owner = $3 AND token = $4",
                )
                .bind(seq)
                .bind(i64::from(f.partition))
                .bind(&f.owner)
                .bind(f.token)
                .execute(&mut **tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Fenced(f.partition));
                }
                Ok(())
            }

            /// Finishes a change of one user's credentials (`updated` rows changed): every
            /// session of theirs ends in the same transaction, since a session made with the
            /// old credential must not outlive it. Returns how many ended.
            async fn credential_changed(mut tx: sqlx::Transaction<'_, $db>, updated: u64, user_id: i64) -> StoreResult<u64> {
                if updated != 1 {
                    return Err(StoreError::NotFound);
                }
                let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(ended)
            }

            /// Which of these residents still exist: a batch may trail a deletion.
            async fn existing_residents(tx: &mut sqlx::Transaction<'_, $db>, ids: &BTreeSet<i64>) -> StoreResult<BTreeSet<i64>> {
                if ids.is_empty() {
                    return Ok(BTreeSet::new());
                }
                // A restore or a burst of timers mentions every resident: keep each query
                // under SQLite's limit of bound parameters (32,766).
                let ids: Vec<i64> = ids.iter().copied().collect();
                let mut alive = BTreeSet::new();
                for chunk in ids.chunks(10_000) {
                    let mut q = QueryBuilder::<$db>::new("SELECT id FROM residents WHERE id ");
                    push_id_list(&mut q, chunk.iter().copied());
                    let rows: Vec<(i64,)> = q.build_query_as().fetch_all(&mut **tx).await?;
                    alive.extend(rows.into_iter().map(|(i,)| i));
                }
                Ok(alive)
            }

            // One statement per chunk rather than per device or resident: each statement is
            // a round trip to the database (for SQLite, to its worker thread), and a batch
            // touches hundreds of devices and residents.
            async fn update_devices_seen(tx: &mut sqlx::Transaction<'_, $db>, updates: &[(&str, (i64, Option<u8>))]) -> StoreResult<()> {
                for chunk in statement_chunks(updates) {
                    // VALUES columns are column1.. in both SQLite (>= 3.33 for UPDATE FROM) and PostgreSQL.
                    let mut q = QueryBuilder::<$db>::new(
                        "UPDATE devices SET last_seen_at = CASE WHEN devices.last_seen_at IS NULL OR devices.last_seen_at < v.column2 \
                         THEN v.column2 ELSE devices.last_seen_at END, battery = COALESCE(v.column3, devices.battery) FROM (",
                    );
                    q.push_values(chunk, |mut b, (device, (seen, battery))| {
                        b.push_bind(*device).push_bind(*seen).push_bind(battery.map(i32::from));
                    });
                    q.push(") AS v WHERE devices.id = v.column1");
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn upsert_rule_states(tx: &mut sqlx::Transaction<'_, $db>, states: &[&(i64, String)], at: i64) -> StoreResult<()> {
                for chunk in statement_chunks(states) {
                    let mut q = QueryBuilder::<$db>::new(RULE_STATE_INSERT);
                    q.push_values(chunk, |mut b, (rid, state)| {
                        b.push_bind(*rid).push_bind(state.as_str()).push_bind(at);
                    });
                    q.push(RULE_STATE_CONFLICT);
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn insert_readings(tx: &mut sqlx::Transaction<'_, $db>, readings: &[&DeviceEvent]) -> StoreResult<()> {
                for chunk in statement_chunks(readings) {
                    let mut q = QueryBuilder::<$db>::new(READINGS_INSERT);
                    q.push_values(chunk, |mut b, ev| {
                        let (lat, lon, acc) = reading_position(ev);
                        b.push_bind(ev.resident_id)
                            .push_bind(ev.device_id.clone())
                            .push_bind(ev.reading.kind_str())
                            .push_bind(ms(ev.ts))
                            .push_bind(ms(ev.received_at))
                            .push_bind(lat)
                            .push_bind(lon)
                            .push_bind(acc)
                            .push_bind(ev.battery.map(i32::from))
                            .push_bind(reading_data(ev));
                    });
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn insert_rejected(tx: &mut sqlx::Transaction<'_, $db>, rejected: &[RejectedRow]) -> StoreResult<()> {
                for chunk in statement_chunks(rejected) {
                    let mut q = QueryBuilder::<$db>::new(REJECTED_INSERT);
                    q.push_values(chunk, |mut b, r| {
                        b.push_bind(ms(r.received_at))
                            .push_bind(r.device_id.clone())
                            .push_bind(r.topic.clone())
                            .push_bind(r.reason.as_str())
                            .push_bind(r.detail.clone())
                            .push_bind(r.payload.clone());
                    });
                    q.build().execute(&mut **tx).await?;
                }
                for (kind, keep, touched) in rejected_kinds(rejected) {
                    if touched {
                        sqlx::query(&rejected_prune(kind)).bind(keep - 1).execute(&mut **tx).await?;
                    }
                }
                Ok(())
            }

            // One statement per chunk: a burst of timers opens thousands of alerts in one commit.
            async fn upsert_alerts(tx: &mut sqlx::Transaction<'_, $db>, records: &[&AlertRecord]) -> StoreResult<()> {
                for chunk in statement_chunks(records) {
                    let mut q = QueryBuilder::<$db>::new(ALERTS_INSERT);
                    q.push_values(chunk, |mut b, r| {
                        let a = &r.alert;
                        b.push_bind(a.id)
                            .push_bind(a.resident_id)
                            .push_bind(a.device_id.clone())
                            .push_bind(a.kind.as_str())
                            .push_bind(r.subject.clone())
                            .push_bind(a.severity.as_str())
                            .push_bind(a.state.as_str())
                            .push_bind(a.escalated)
                            .push_bind(ms(a.opened_at))
                            .push_bind(a.acknowledged_at.map(ms))
                            .push_bind(a.acknowledged_by.clone())
                            .push_bind(a.resolved_at.map(ms))
                            .push_bind(a.resolved_by.clone())
                            .push_bind(a.resolution.clone())
                            .push_bind(a.details.to_string())
                            .push_bind(ms(a.updated_at))
                            .push_bind(a.assigned_to.clone())
                            .push_bind(a.snoozed_until.map(ms))
                            .push_bind(i64::from(a.tier))
                            .push_bind(r.ladder.clone());
                    });
                    q.push(ALERTS_CONFLICT);
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn insert_history(tx: &mut sqlx::Transaction<'_, $db>, rows: &[HistoryRow]) -> StoreResult<()> {
                for chunk in statement_chunks(rows) {
                    let mut q = QueryBuilder::<$db>::new(HISTORY_INSERT);
                    q.push_values(chunk, |mut b, h| {
                        b.push_bind(h.alert_id)
                            .push_bind(ms(h.at))
                            .push_bind(h.action)
                            .push_bind(h.actor.clone())
                            .push_bind(h.note.clone())
                            .push_bind(h.details.clone());
                    });
                    q.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            async fn write_pauses(tx: &mut sqlx::Transaction<'_, $db>, changes: &[&PauseChange]) -> StoreResult<()> {
                for change in changes {
                    match change {
                        PauseChange::Add(p) => {
                            sqlx::query(PAUSE_INSERT)
                            .bind(&p.id)
                            .bind(p.resident_id)
                            .bind(ms(p.from))
                            .bind(ms(p.until))
                            .bind(p.reason.as_str())
                            .bind(&p.note)
                            .bind(&p.created_by)
                            .bind(ms(p.created_at))
                            .execute(&mut **tx)
                            .await?;
                        }
                        PauseChange::Remove { resident_id, id } => {
                            sqlx::query(PAUSE_DELETE)
                                .bind(id)
                                .bind(resident_id)
                                .execute(&mut **tx)
                                .await?;
                        }
                    }
                }
                Ok(())
            }

            async fn insert_audit(tx: &mut sqlx::Transaction<'_, $db>, rows: &[AuditEntry]) -> StoreResult<()> {
                for e in rows {
                    sqlx::query(AUDIT_INSERT)
                        .bind(ms(e.at))
                        .bind(&e.actor)
                        .bind(&e.action)
                        .bind(&e.target)
                        .bind(e.details.as_ref().map(|d| d.to_string()))
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// Inserts outbox rows; a key already there is left as it is. Returns how many were new.
            async fn insert_outbox(tx: &mut sqlx::Transaction<'_, $db>, rows: &[OutboxEntry]) -> StoreResult<u64> {
                let mut added = 0;
                for chunk in statement_chunks(rows) {
                    let mut q = QueryBuilder::<$db>::new(OUTBOX_INSERT);
                    q.push_values(chunk, |mut b, o| {
                        let c = &o.contact;
                        b.push_bind(o.key.clone())
                            .push_bind(o.resident_id)
                            .push_bind(o.alert_id)
                            .push_bind(c.id)
                            .push_bind(c.name.clone())
                            .push_bind(o.event.as_str())
                            .push_bind(c.channel.as_str())
                            .push_bind(c.address.clone())
                            .push_bind(o.secret.clone())
                            .push_bind(c.language.as_str())
                            .push_bind(o.payload.clone())
                            .push("'pending'")
                            .push("0")
                            .push_bind(ms(o.created_at))
                            .push_bind(ms(o.created_at));
                    });
                    q.push(OUTBOX_CONFLICT);
                    added += q.build().execute(&mut **tx).await?.rows_affected();
                }
                Ok(added)
            }

            async fn contacts_of(&self, resident_id: Option<i64>) -> StoreResult<Vec<(Contact, Option<String>)>> {
                let q = format!("SELECT {CONTACT_COLS} FROM contacts WHERE $1 IS NULL OR resident_id = $1 ORDER BY id");
                let rows: Vec<ContactRow> = sqlx::query_as(&q).bind(resident_id).fetch_all(&self.pool).await?;
                rows.into_iter().map(ContactRow::into_parts).collect()
            }

            /// Writes a batch as one transaction of multi-row statements, each a round trip.
            async fn commit_in_statements(&self, batch: &Batch) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                if let Some(fence) = &batch.fence {
                    // First, so the lease row stays locked until the commit: a takeover
                    // waits for this commit, and a commit after a takeover is refused.
                    Self::check_fence(&mut tx, fence).await?;
                }
                let e = &batch.effects;
                let alive = Self::existing_residents(&mut tx, &batch.residents()).await?;
                let readings: Vec<&DeviceEvent> = batch.readings.iter().filter(|r| alive.contains(&r.resident_id)).collect();
                Self::insert_readings(&mut tx, &readings).await?;
                let updates: Vec<_> = device_updates(&batch.readings).into_iter().collect();
                Self::update_devices_seen(&mut tx, &updates).await?;
                if !batch.rejected.is_empty() {
                    Self::insert_rejected(&mut tx, &batch.rejected).await?;
                }
                let states: Vec<&(i64, String)> = batch.rule_states.iter().filter(|(r, _)| alive.contains(r)).collect();
                Self::upsert_rule_states(&mut tx, &states, ms(batch.at)).await?;
                // Alerts, their history, the audit of staff actions and the notifications
                // they call for are one transaction with the state that decided them: a
                // crash keeps all or none, so nothing is lost and nothing sent twice.
                let records: Vec<&AlertRecord> = e.alerts.values().filter(|r| alive.contains(&r.alert.resident_id)).collect();
                Self::upsert_alerts(&mut tx, &records).await?;
                let written: BTreeSet<i64> = records.iter().map(|r| r.alert.id).collect();
                let history: Vec<HistoryRow> = e.history.iter().filter(|h| written.contains(&h.alert_id)).cloned().collect();
                Self::insert_history(&mut tx, &history).await?;
                Self::insert_audit(&mut tx, &e.audit).await?;
                let outbox: Vec<OutboxEntry> = e.outbox.iter().filter(|o| alive.contains(&o.resident_id)).cloned().collect();
                Self::insert_outbox(&mut tx, &outbox).await?;
                let pauses: Vec<&PauseChange> = e.pauses.iter().filter(|p| alive.contains(&p.resident_id())).collect();
                Self::write_pauses(&mut tx, &pauses).await?;
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn checkpoint(&self) -> StoreResult<()> {
                self.checkpoint_now().await
            }

            async fn create_user(&self, username: &str, password_hash: &str, role: Role, resident_ids: &[i64], at: DateTime<Utc>) -> StoreResult<User> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(username)
                .bind(password_hash)
                .bind(role.as_str())
                .bind(ms(at))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| match StoreError::from(e) {
                    StoreError::Conflict(_) => StoreError::Conflict(format!("a user named {username:?} already exists")),
                    other => other,
                })?;
                let ids: BTreeSet<i64> = resident_ids.iter().copied().collect();
                let existing = Self::existing_residents(&mut tx, &ids).await?;
                if let Some(missing) = ids.difference(&existing).next() {
                    return Err(StoreError::Conflict(format!("resident {missing} does not exist")));
                }
                for rid in &ids {
                    sqlx::query("INSERT INTO user_residents (user_id, resident_id) VALUES ($1, $2)")
                        .bind(id)
                        .bind(rid)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(User { id, username: username.to_string(), role, resident_ids: ids.into_iter().collect(), created_at: from_ms(ms(at)), totp: false })
            }

            async fn user_by_name(&self, username: &str) -> StoreResult<Option<UserRecord>> {
                let row: Option<UserRow> =
                    sqlx::query_as("SELECT id, username, password_hash, role, created_at, totp_secret FROM users WHERE username = $1")
                        .bind(username)
                        .fetch_optional(&self.pool)
                        .await?;
                let Some(row) = row else { return Ok(None) };
                let ids = self.user_resident_ids(row.id).await?;
                let (user, password_hash, totp_secret) = row.into_user(ids)?;
                Ok(Some(UserRecord { user, password_hash, totp_secret }))
            }

            async fn list_users(&self) -> StoreResult<Vec<User>> {
                let rows: Vec<UserRow> =
                    sqlx::query_as("SELECT id, username, password_hash, role, created_at, totp_secret FROM users ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let ids = self.user_resident_ids(row.id).await?;
                    out.push(row.into_user(ids)?.0);
                }
                Ok(out)
            }

            async fn delete_user(&self, id: i64) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&self.pool).await?;
                touched(done.rows_affected())
            }

            async fn set_password(&self, user_id: i64, password_hash: &str) -> StoreResult<u64> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(password_hash)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                Self::credential_changed(tx, updated.rows_affected(), user_id).await
            }

            async fn totp(&self, user_id: i64) -> StoreResult<TotpRow> {
                let row: Option<(Option<String>, Option<String>, i64)> = sqlx::query_as(
                    "SELECT totp_secret, totp_pending, totp_last_step FROM users WHERE id = $1",
                )
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
                let (secret, pending, last_step) = row.ok_or(StoreError::NotFound)?;
                Ok(TotpRow { secret, pending, last_step })
            }

            async fn set_totp_pending(&self, user_id: i64, secret: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("UPDATE users SET totp_pending = $1 WHERE id = $2")
                    .bind(secret)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn enable_totp(&self, user_id: i64, step: i64) -> StoreResult<bool> {
                let _w = self.write_guard().await;
                let done = sqlx::query(
                    "UPDATE users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 \
                     WHERE id = $2 AND totp_pending IS NOT NULL",
                )
                .bind(step)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn disable_totp(&self, user_id: i64) -> StoreResult<u64> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE users SET totp_secret = NULL, totp_pending = NULL, totp_last_step = 0 WHERE id = $1",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
                Self::credential_changed(tx, done.rows_affected(), user_id).await
            }

            async fn use_totp_step(&self, user_id: i64, step: i64) -> StoreResult<bool> {
                let _w = self.write_guard().await;
                // One conditional update: two logins racing with the same code cannot both win.
                let done = sqlx::query(
                    "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1",
                )
                .bind(step)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_session(&self, token_hash: &str, user_id: i64, expires_at: DateTime<Utc>) -> StoreResult<()> {
                let _w = self.write_guard().await;
                sqlx::query("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
                    .bind(token_hash)
                    .bind(user_id)
                    .bind(ms(expires_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session_user(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = sqlx::query_as(
                    "SELECT u.id, u.username, u.password_hash, u.role, u.created_at, u.totp_secret FROM sessions s \
                     JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2",
                )
                .bind(token_hash)
                .bind(ms(now))
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let ids = self.user_resident_ids(row.id).await?;
                Ok(Some(row.into_user(ids)?.0))
            }

            async fn purge_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(ms(now)).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(&self.pool).await?;
                Ok(())
            }

            async fn create_resident(&self, r: &NewResidentRow) -> StoreResult<Resident> {
                let _w = self.write_guard().await;
                let rules = serde_json::to_string(&r.rules).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO residents (name, timezone, home_lat, home_lon, rules, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(&r.name)
                .bind(&r.timezone)
                .bind(r.home.map(|h| h.lat))
                .bind(r.home.map(|h| h.lon))
                .bind(rules)
                .bind(ms(r.created_at))
                .fetch_one(&self.pool)
                .await?;
                Ok(Resident {
                    id,
                    name: r.name.clone(),
                    timezone: r.timezone.clone(),
                    home: r.home,
                    rules: r.rules.clone(),
                    created_at: from_ms(ms(r.created_at)),
                })
            }

            async fn resident(&self, id: i64) -> StoreResult<Resident> {
                let row: ResidentRow = sqlx::query_as(
                    "SELECT id, name, timezone, home_lat, home_lon, rules, created_at FROM residents WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
                row.try_into()
            }

            async fn list_residents(&self, within: Option<&[i64]>) -> StoreResult<Vec<Resident>> {
                let mut q = QueryBuilder::<$db>::new("SELECT id, name, timezone, home_lat, home_lon, rules, created_at FROM residents");
                if let Some(ids) = within {
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    q.push(" WHERE id ");
                    push_id_list(&mut q, ids.iter().copied());
                }
                q.push(" ORDER BY id");
                let rows: Vec<ResidentRow> = q.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(Resident::try_from).collect()
            }

            async fn update_resident(&self, r: &Resident) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let rules = serde_json::to_string(&r.rules).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let done = sqlx::query(
                    "UPDATE residents SET name = $1, timezone = $2, home_lat = $3, home_lon = $4, rules = $5 WHERE id = $6",
                )
                .bind(&r.name)
                .bind(&r.timezone)
                .bind(r.home.map(|h| h.lat))
                .bind(r.home.map(|h| h.lon))
                .bind(rules)
                .bind(r.id)
                .execute(&self.pool)
                .await?;
                touched(done.rows_affected())
            }

            async fn delete_resident(&self, id: i64) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                // Erasure: what has no foreign key to the resident goes by hand; readings,
                // alerts, contacts, consents and the rest follow the resident by cascade.
                sqlx::query("DELETE FROM rejected WHERE device_id IN (SELECT id FROM devices WHERE resident_id = $1)")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM access_log WHERE resident_id = $1").bind(id).execute(&mut *tx).await?;
                let done = sqlx::query("DELETE FROM residents WHERE id = $1").bind(id).execute(&mut *tx).await?;
                touched(done.rows_affected())?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_zone(&self, resident_id: i64, name: &str, shape: &ZoneShape, at: DateTime<Utc>) -> StoreResult<Zone> {
                let _w = self.write_guard().await;
                let text = serde_json::to_string(shape).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO geofences (resident_id, name, shape, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(resident_id)
                .bind(name)
                .bind(text)
                .bind(ms(at))
                .fetch_one(&self.pool)
                .await?;
                Ok(Zone { id, resident_id, name: name.to_string(), shape: shape.clone() })
            }

            async fn list_zones(&self, resident_id: i64) -> StoreResult<Vec<Zone>> {
                let rows: Vec<ZoneRow> =
                    sqlx::query_as("SELECT id, resident_id, name, shape FROM geofences WHERE resident_id = $1 ORDER BY id")
                        .bind(resident_id)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(Zone::try_from).collect()
            }

            async fn zone(&self, id: i64) -> StoreResult<Zone> {
                let row: ZoneRow = sqlx::query_as("SELECT id, resident_id, name, shape FROM geofences WHERE id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                row.try_into()
            }

            async fn delete_zone(&self, id: i64) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM geofences WHERE id = $1").bind(id).execute(&self.pool).await?;
                touched(done.rows_affected())
            }

            async fn resident_setup(&self, id: i64) -> StoreResult<ResidentSetup> {
                let resident = self.resident(id).await?;
                let zones = self.list_zones(id).await?;
                let devices = self
                    .list_devices(Some(&[id]))
                    .await?
                    .into_iter()
                    .map(|d| device_info(&d))
                    .collect();
                let contacts = self.contacts_of(Some(id)).await?;
                let pauses = self.pauses(id).await?;
                Ok(ResidentSetup { resident, zones, devices, contacts, pauses })
            }

            async fn all_resident_setups(&self) -> StoreResult<Vec<ResidentSetup>> {
                let residents = self.list_residents(None).await?;
                let zones: Vec<ZoneRow> = sqlx::query_as("SELECT id, resident_id, name, shape FROM geofences ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                let devices = self.list_devices(None).await?;
                let pauses: Vec<PauseRow> = sqlx::query_as(&format!("SELECT {PAUSE_COLS} FROM resident_pauses ORDER BY from_at, id"))
                    .fetch_all(&self.pool)
                    .await?;
                let mut setups: HashMap<i64, ResidentSetup> = residents
                    .into_iter()
                    .map(|r| (r.id, ResidentSetup { resident: r, zones: Vec::new(), devices: Vec::new(), contacts: Vec::new(), pauses: Vec::new() }))
                    .collect();
                for p in pauses {
                    let p = mimamori_protocol::pause::Pause::try_from(p)?;
                    if let Some(s) = setups.get_mut(&p.resident_id) {
                        s.pauses.push(p);
                    }
                }
                for z in zones {
                    let zone = Zone::try_from(z)?;
                    if let Some(s) = setups.get_mut(&zone.resident_id) {
                        s.zones.push(zone);
                    }
                }
                for d in devices {
                    if let Some(s) = setups.get_mut(&d.resident_id) {
                        s.devices.push(device_info(&d));
                    }
                }
                for (c, secret) in self.contacts_of(None).await? {
                    if let Some(s) = setups.get_mut(&c.resident_id) {
                        s.contacts.push((c, secret));
                    }
                }
                let mut out: Vec<ResidentSetup> = setups.into_values().collect();
                out.sort_by_key(|s| s.resident.id);
                Ok(out)
            }

            async fn create_device(&self, d: &Device, secret_hash: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO devices (id, resident_id, kind, name, secret_hash, created_at, room, role) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&d.id)
                .bind(d.resident_id)
                .bind(d.kind.as_str())
                .bind(&d.name)
                .bind(secret_hash)
                .bind(ms(d.created_at))
                .bind(&d.room)
                .bind(d.role.map(role_name))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn device(&self, id: &str) -> StoreResult<Device> {
                let row: DeviceRow = sqlx::query_as(
                    "SELECT id, resident_id, kind, name, created_at, last_seen_at, battery, room, role FROM devices WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
                row.try_into()
            }

            async fn list_devices(&self, within: Option<&[i64]>) -> StoreResult<Vec<Device>> {
                let mut q = QueryBuilder::<$db>::new(
                    "SELECT id, resident_id, kind, name, created_at, last_seen_at, battery, room, role FROM devices",
                );
                if let Some(ids) = within {
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    q.push(" WHERE resident_id ");
                    push_id_list(&mut q, ids.iter().copied());
                }
                q.push(" ORDER BY resident_id, id");
                let rows: Vec<DeviceRow> = q.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(Device::try_from).collect()
            }

            async fn delete_device(&self, id: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM devices WHERE id = $1").bind(id).execute(&self.pool).await?;
                touched(done.rows_affected())
            }

            async fn set_device_secret(&self, id: &str, secret_hash: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("UPDATE devices SET secret_hash = $1 WHERE id = $2")
                    .bind(secret_hash)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                touched(done.rows_affected())
            }

            async fn set_device_place(&self, id: &str, room: Option<&str>, role: Option<mimamori_protocol::DeviceRole>) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("UPDATE devices SET room = $1, role = $2 WHERE id = $3")
                    .bind(room)
                    .bind(role.map(role_name))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                touched(done.rows_affected())
            }

            async fn device_auth(&self, id: &str) -> StoreResult<Option<DeviceAuth>> {
                let row: Option<(String, i64, String, String)> =
                    sqlx::query_as("SELECT id, resident_id, kind, secret_hash FROM devices WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                let Some((id, resident_id, kind, secret_hash)) = row else { return Ok(None) };
                let kind = DeviceKind::parse(&kind).ok_or_else(|| StoreError::Invalid(format!("device kind {kind:?}")))?;
                Ok(Some(DeviceAuth { id, resident_id, kind, secret_hash }))
            }

            async fn commit_batch(&self, batch: &Batch) -> StoreResult<()> {
                if batch.is_empty() {
                    return Ok(());
                }
                self.write_batch(batch).await
            }

            async fn live_alerts(&self) -> StoreResult<Vec<StoredAlert>> {
                let q = format!("SELECT {ALERT_COLS}, subject, ladder FROM alerts WHERE state <> 'resolved' ORDER BY id");
                let rows: Vec<LiveAlertRow> = sqlx::query_as(&q).fetch_all(&self.pool).await?;
                rows.into_iter().map(StoredAlert::try_from).collect()
            }

            async fn next_alert_id(&self) -> StoreResult<i64> {
                let (max,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM alerts").fetch_one(&self.pool).await?;
                Ok(max.unwrap_or(0) + 1)
            }

            async fn alerts_opened(&self, from: DateTime<Utc>, to: DateTime<Utc>, within: Option<&[i64]>) -> StoreResult<Vec<Alert>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {ALERT_COLS} FROM alerts WHERE opened_at >= "));
                q.push_bind(ms(from)).push(" AND opened_at < ").push_bind(ms(to));
                if let Some(ids) = within {
                    q.push(" AND resident_id ");
                    push_id_list(&mut q, ids.iter().copied());
                }
                q.push(" ORDER BY id");
                let rows: Vec<AlertRow> = q.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(Alert::try_from).collect()
            }

            async fn pauses(&self, resident_id: i64) -> StoreResult<Vec<mimamori_protocol::pause::Pause>> {
                let rows: Vec<PauseRow> = sqlx::query_as(&format!("SELECT {PAUSE_COLS} FROM resident_pauses WHERE resident_id = $1 ORDER BY from_at, id"))
                    .bind(resident_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(mimamori_protocol::pause::Pause::try_from).collect()
            }

            async fn rule_states(&self) -> StoreResult<Vec<(i64, String)>> {
                Ok(sqlx::query_as("SELECT resident_id, state FROM rule_state ORDER BY resident_id").fetch_all(&self.pool).await?)
            }

            async fn rule_state(&self, resident_id: i64) -> StoreResult<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT state FROM rule_state WHERE resident_id = $1")
                    .bind(resident_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(s,)| s))
            }

            async fn list_rejected(&self, limit: i64) -> StoreResult<Vec<RejectedMessage>> {
                let rows: Vec<RejectedDbRow> = sqlx::query_as(
                    "SELECT id, received_at, device_id, topic, reason, detail, payload FROM rejected ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(RejectedMessage::from).collect())
            }

            async fn count_readings(&self, resident_id: i64) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM readings WHERE resident_id = $1")
                    .bind(resident_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn readings_between(
                &self,
                resident_id: i64,
                from: DateTime<Utc>,
                until: DateTime<Utc>,
                after: Option<(DateTime<Utc>, i64)>,
                limit: i64,
            ) -> StoreResult<Vec<StoredReading>> {
                // Keyset paging on the (resident_id, ts) index: each page starts past the
                // last row of the one before, so a long history costs the same per page.
                let (after_ts, after_id) = after.map_or((ms(from), i64::MIN), |(t, id)| (ms(t), id));
                let rows: Vec<ReadingRow> = sqlx::query_as(
                    "SELECT id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery, data FROM readings \
                     WHERE resident_id = $1 AND ts >= $2 AND ts < $3 AND (ts > $4 OR (ts = $4 AND id > $5)) \
                     ORDER BY ts, id LIMIT $6",
                )
                .bind(resident_id)
                .bind(ms(from))
                .bind(ms(until))
                .bind(after_ts)
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(StoredReading::from).collect())
            }

            async fn recent_readings(&self, resident_id: i64, limit: i64) -> StoreResult<Vec<StoredReading>> {
                let rows: Vec<ReadingRow> = sqlx::query_as(
                    "SELECT id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery, data FROM readings \
                     WHERE resident_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(resident_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(StoredReading::from).collect())
            }

            async fn list_alerts(&self, f: &AlertFilter) -> StoreResult<Vec<Alert>> {
                let mut q = QueryBuilder::<$db>::new(format!("SELECT {ALERT_COLS} FROM alerts WHERE 1 = 1"));
                if let Some(s) = f.state {
                    q.push(" AND state = ").push_bind(s.as_str());
                }
                if let Some(r) = f.resident_id {
                    q.push(" AND resident_id = ").push_bind(r);
                }
                if let Some(k) = f.kind {
                    q.push(" AND kind = ").push_bind(k.as_str());
                }
                if let Some(ids) = &f.within {
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    q.push(" AND resident_id ");
                    push_id_list(&mut q, ids.iter().copied());
                }
                q.push(" ORDER BY opened_at DESC, id DESC LIMIT ").push_bind(f.limit);
                let rows: Vec<AlertRow> = q.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(Alert::try_from).collect()
            }

            async fn alert(&self, id: i64) -> StoreResult<Alert> {
                let q = format!("SELECT {ALERT_COLS} FROM alerts WHERE id = $1");
                let row: AlertRow = sqlx::query_as(&q).bind(id).fetch_one(&self.pool).await?;
                row.try_into()
            }

            async fn alert_history(&self, id: i64) -> StoreResult<Vec<AlertEvent>> {
                let rows: Vec<AlertEventRow> =
                    sqlx::query_as("SELECT at, action, actor, note FROM alert_events WHERE alert_id = $1 ORDER BY id")
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(AlertEvent::from).collect())
            }

            async fn audit(&self, e: &AuditEntry) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                Self::insert_audit(&mut tx, std::slice::from_ref(e)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_audit(&self, limit: i64) -> StoreResult<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> =
                    sqlx::query_as("SELECT at, actor, action, target, details FROM audit_log ORDER BY id DESC LIMIT $1")
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(AuditEntry::from).collect())
            }

            // -- dashboard (issue 4): add methods below this line --
            async fn activity_per_hour(&self, resident_id: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<Vec<(DateTime<Utc>, i64)>> {
                // Integer division of epoch ms buckets by hour identically in both dialects.
                // Motion data is written by `reading_data` with sorted keys, so the
                // pattern below matches exactly the readings that saw movement.
                // Hours whose raw readings retention purged live on in `activity_hourly`;
                // an hour part purged counts from both.
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT hour, CAST(SUM(n) AS BIGINT) FROM ( \
                       SELECT ts / 3600000 AS hour, COUNT(*) AS n FROM readings \
                       WHERE resident_id = $1 AND ts >= $2 AND ts < $3 \
                         AND (kind = 'door' OR (kind = 'motion' AND data LIKE '{\"motion\":true%')) \
                       GROUP BY ts / 3600000 \
                       UNION ALL \
                       SELECT hour / 3600000 AS hour, count AS n FROM activity_hourly \
                       WHERE resident_id = $1 AND hour >= $2 AND hour < $3 \
                     ) AS t GROUP BY hour ORDER BY hour",
                )
                .bind(resident_id)
                .bind(ms(from))
                .bind(ms(to))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(h, n)| (from_ms(h * 3_600_000), n)).collect())
            }

            async fn positions_since(&self, resident_id: i64, since: DateTime<Utc>, limit: i64) -> StoreResult<Vec<StoredReading>> {
                let rows: Vec<ReadingRow> = sqlx::query_as(
                    "SELECT id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery, data FROM readings \
                     WHERE resident_id = $1 AND kind IN ('gps', 'sighting') AND ts >= $2 ORDER BY ts DESC, id DESC LIMIT $3",
                )
                .bind(resident_id)
                .bind(ms(since))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut fixes: Vec<StoredReading> = rows.into_iter().map(StoredReading::from).collect();
                fixes.reverse();
                Ok(fixes)
            }


            // -- notifications (issue 6): add methods below this line --
            async fn create_contact(&self, c: &NewContactRow) -> StoreResult<Contact> {
                let _w = self.write_guard().await;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO contacts (resident_id, name, relation, tier, channel, address, secret, kinds, min_severity, \
                     quiet_hours, language, daily_summary_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
                )
                .bind(c.resident_id)
                .bind(&c.name)
                .bind(&c.relation)
                .bind(i64::from(c.tier))
                .bind(c.channel.as_str())
                .bind(&c.address)
                .bind(c.secret.as_deref())
                .bind(kinds_text(&c.kinds))
                .bind(c.min_severity.as_str())
                .bind(c.quiet_hours.as_deref())
                .bind(c.language.as_str())
                .bind(c.daily_summary_at.as_deref())
                .bind(ms(c.created_at))
                .fetch_one(&self.pool)
                .await?;
                self.contact(id).await
            }

            async fn list_contacts(&self, resident_id: i64) -> StoreResult<Vec<Contact>> {
                let q = format!("SELECT {CONTACT_COLS} FROM contacts WHERE resident_id = $1 ORDER BY tier, id");
                let rows: Vec<ContactRow> = sqlx::query_as(&q).bind(resident_id).fetch_all(&self.pool).await?;
                rows.into_iter().map(|r| r.into_parts().map(|(c, _)| c)).collect()
            }

            async fn contact(&self, id: i64) -> StoreResult<Contact> {
                let q = format!("SELECT {CONTACT_COLS} FROM contacts WHERE id = $1");
                let row: ContactRow = sqlx::query_as(&q).bind(id).fetch_one(&self.pool).await?;
                Ok(row.into_parts()?.0)
            }

            async fn delete_contact(&self, id: i64) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE deliveries SET state = 'failed', last_error = 'contact deleted before delivery', claimed_at = NULL \
                     WHERE contact_id = $1 AND state = 'pending' AND claimed_at IS NULL",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let done = sqlx::query("DELETE FROM contacts WHERE id = $1").bind(id).execute(&mut *tx).await?;
                touched(done.rows_affected())?;
                tx.commit().await?;
                Ok(())
            }

            async fn alert_deliveries(&self, alert_id: i64) -> StoreResult<Vec<Delivery>> {
                let rows: Vec<DeliveryRow> = sqlx::query_as(
                    "SELECT id, event, channel, contact_id, contact_name, state, attempts, last_error, idempotency_key, created_at, delivered_at \
                     FROM deliveries WHERE alert_id = $1 ORDER BY id",
                )
                .bind(alert_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(Delivery::try_from).collect()
            }

            async fn release_claims(&self, claimed_before: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
                let _w = self.write_guard().await;
                let done = sqlx::query(
                    "UPDATE deliveries SET claimed_at = NULL, next_attempt_at = $1 WHERE state = 'pending' AND claimed_at IS NOT NULL AND claimed_at <= $2",
                )
                .bind(ms(now))
                .bind(ms(claimed_before))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected())
            }

            async fn claim_deliveries(&self, now: DateTime<Utc>, limit: i64) -> StoreResult<Vec<OutboxItem>> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let rows: Vec<OutboxRow> = sqlx::query_as(
                    "SELECT id, idempotency_key, alert_id, contact_id, channel, address, secret, language, payload, attempts, created_at \
                     FROM deliveries WHERE state = 'pending' AND claimed_at IS NULL AND next_attempt_at <= $1 \
                     ORDER BY next_attempt_at, id LIMIT $2",
                )
                .bind(ms(now))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                // Only rows still unclaimed are taken: in cluster mode another hub's
                // notifier may have claimed some since the SELECT.
                let mut q = QueryBuilder::<$db>::new("UPDATE deliveries SET claimed_at = ");
                q.push_bind(ms(now)).push(" WHERE claimed_at IS NULL AND id ");
                push_id_list(&mut q, rows.iter().map(|r| r.id));
                q.push(" RETURNING id");
                let taken: BTreeSet<i64> = q.build_query_scalar::<i64>().fetch_all(&mut *tx).await?.into_iter().collect();
                tx.commit().await?;
                rows.into_iter().filter(|r| taken.contains(&r.id)).map(OutboxItem::try_from).collect()
            }

            async fn finish_attempt(&self, id: i64, at: DateTime<Utc>, error: Option<&str>, next: Next) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO delivery_attempts (delivery_id, at, ok, error) VALUES ($1, $2, $3, $4)")
                    .bind(id)
                    .bind(ms(at))
                    .bind(error.is_none())
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                let (state, next_at, delivered_at) = match next {
                    Next::Delivered => ("delivered", at, Some(ms(at))),
                    Next::RetryAt(t) => ("pending", t, None),
                    Next::GiveUp => ("failed", at, None),
                };
                sqlx::query(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = $1, state = $2, next_attempt_at = $3, \
                     delivered_at = $4, claimed_at = NULL WHERE id = $5",
                )
                .bind(error)
                .bind(state)
                .bind(ms(next_at))
                .bind(delivered_at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if next == Next::GiveUp {
                    // The failure belongs on the alert's own trail, where staff look.
                    let row: Option<(Option<i64>, String, String)> =
                        sqlx::query_as("SELECT alert_id, contact_name, channel FROM deliveries WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if let Some((Some(alert_id), name, channel)) = row {
                        let note = format!("{channel} notification to {name} failed: {}", error.unwrap_or("gave up"));
                        let line = HistoryRow { alert_id, at, action: "notification_failed", actor: "hub".into(), note: Some(note), details: None };
                        Self::insert_history(&mut tx, &[line]).await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn next_delivery_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
                let (t,): (Option<i64>,) = sqlx::query_as(
                    "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending' AND claimed_at IS NULL",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(t.map(from_ms))
            }

            async fn summary_targets(&self) -> StoreResult<Vec<SummaryTarget>> {
                let contacts: Vec<ContactRow> = sqlx::query_as(&format!(
                    "SELECT {CONTACT_COLS} FROM contacts WHERE daily_summary_at IS NOT NULL ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(contacts.len());
                for row in contacts {
                    let (contact, _) = row.into_parts()?;
                    let (resident_name, timezone): (String, String) =
                        sqlx::query_as("SELECT name, timezone FROM residents WHERE id = $1")
                            .bind(contact.resident_id)
                            .fetch_one(&self.pool)
                            .await?;
                    out.push(SummaryTarget { contact, resident_name, timezone });
                }
                Ok(out)
            }

            async fn delivery_exists(&self, idempotency_key: &str) -> StoreResult<bool> {
                let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM deliveries WHERE idempotency_key = $1")
                    .bind(idempotency_key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn delivered_since(&self, channel: mimamori_protocol::contact::Channel, since: DateTime<Utc>) -> StoreResult<i64> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM deliveries WHERE channel = $1 AND state = 'delivered' AND delivered_at >= $2",
                )
                .bind(channel.as_str())
                .bind(ms(since))
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn day_facts(&self, resident_id: i64, from: DateTime<Utc>, to: DateTime<Utc>) -> StoreResult<DayFacts> {
                // The same notion of activity as the dashboard's chart: motion seen, door used.
                let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT MIN(ts), MAX(ts) FROM readings WHERE resident_id = $1 AND ts >= $2 AND ts < $3 \
                       AND (kind = 'door' OR (kind = 'motion' AND data LIKE '{\"motion\":true%'))",
                )
                .bind(resident_id)
                .bind(ms(from))
                .bind(ms(to))
                .fetch_one(&self.pool)
                .await?;
                let active_hours = self.activity_per_hour(resident_id, from, to).await?;
                let q = format!("SELECT {ALERT_COLS} FROM alerts WHERE resident_id = $1 AND opened_at >= $2 AND opened_at < $3 ORDER BY opened_at");
                let rows: Vec<AlertRow> = sqlx::query_as(&q)
                    .bind(resident_id)
                    .bind(ms(from))
                    .bind(ms(to))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(DayFacts {
                    first_activity: first.map(from_ms),
                    last_activity: last.map(from_ms),
                    active_hours,
                    alerts: rows.into_iter().map(Alert::try_from).collect::<StoreResult<Vec<_>>>()?,
                })
            }

            async fn enqueue_summary(&self, contact_id: i64, idempotency_key: &str, notice: &Notice, at: DateTime<Utc>) -> StoreResult<bool> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let q = format!("SELECT {CONTACT_COLS} FROM contacts WHERE id = $1");
                let row: ContactRow = sqlx::query_as(&q).bind(contact_id).fetch_one(&mut *tx).await?;
                let (contact, secret) = row.into_parts()?;
                let payload = serde_json::to_string(notice).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let row = OutboxEntry {
                    key: idempotency_key.to_owned(),
                    resident_id: contact.resident_id,
                    alert_id: None,
                    contact,
                    secret,
                    event: NoticeEvent::DailySummary,
                    payload,
                    created_at: at,
                };
                let added = Self::insert_outbox(&mut tx, &[row]).await?;
                tx.commit().await?;
                Ok(added == 1)
            }

            // -- gateways (issue 7): add methods below this line --
            async fn create_zigbee_device(&self, gateway_id: &str, friendly_name: &str, device_id: &str, actions: &ButtonActions, at: DateTime<Utc>) -> StoreResult<()> {
                let json = |a: &[String]| serde_json::to_string(a).map_err(|e| StoreError::Invalid(e.to_string()));
                let (sos, ok) = (json(&actions.sos)?, json(&actions.ok)?);
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO zigbee_devices (gateway_id, friendly_name, device_id, sos_actions, ok_actions, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(gateway_id)
                .bind(friendly_name)
                .bind(device_id)
                .bind(sos)
                .bind(ok)
                .bind(ms(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn zigbee_devices(&self, gateway_id: Option<&str>) -> StoreResult<Vec<ZigbeeDevice>> {
                let rows: Vec<(String, String, String, String, i64, String, String, i64)> = sqlx::query_as(
                    "SELECT z.gateway_id, z.friendly_name, z.device_id, d.kind, d.resident_id, z.sos_actions, z.ok_actions, z.created_at \
                     FROM zigbee_devices z JOIN devices d ON d.id = z.device_id \
                     WHERE $1 IS NULL OR z.gateway_id = $1 ORDER BY z.gateway_id, z.friendly_name",
                )
                .bind(gateway_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(gateway_id, friendly_name, device_id, kind, resident_id, sos, ok, created_at)| {
                        let device_kind = DeviceKind::parse(&kind).ok_or_else(|| StoreError::Invalid(format!("device kind {kind:?}")))?;
                        let actions = |name: &str, text: &str| serde_json::from_str(text).map_err(|e| StoreError::Invalid(format!("{name}: {e}")));
                        let (sos_actions, ok_actions) = (actions("sos_actions", &sos)?, actions("ok_actions", &ok)?);
                        Ok(ZigbeeDevice { gateway_id, friendly_name, device_id, device_kind, resident_id, sos_actions, ok_actions, created_at: from_ms(created_at) })
                    })
                    .collect()
            }

            async fn delete_zigbee_device(&self, gateway_id: &str, friendly_name: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM zigbee_devices WHERE gateway_id = $1 AND friendly_name = $2")
                    .bind(gateway_id)
                    .bind(friendly_name)
                    .execute(&self.pool)
                    .await?;
                touched(done.rows_affected())
            }

            async fn vapid_key(&self, generated: &str, at: DateTime<Utc>) -> StoreResult<String> {
                let _w = self.write_guard().await;
                // Two hubs starting on one database at once both end up with the first key.
                sqlx::query("INSERT INTO vapid_keys (id, private_key, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
                    .bind(generated)
                    .bind(ms(at))
                    .execute(&self.pool)
                    .await?;
                let (key,): (String,) = sqlx::query_as("SELECT private_key FROM vapid_keys WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(key)
            }

            async fn add_push_subscription(&self, user_id: i64, endpoint: &str, p256dh: &str, auth: &str, max: i64, at: DateTime<Utc>) -> StoreResult<PushSubscriptionRow> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let (others,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = $1 AND endpoint <> $2")
                    .bind(user_id)
                    .bind(endpoint)
                    .fetch_one(&mut *tx)
                    .await?;
                if others >= max {
                    return Err(StoreError::Conflict(format!(
                        "this user already has {others} browsers subscribed, the most allowed; remove one first"
                    )));
                }
                let q = format!(
                    "INSERT INTO push_subscriptions (user_id, endpoint, p256dh, auth, created_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (endpoint) DO UPDATE SET user_id = excluded.user_id, p256dh = excluded.p256dh, \
                     auth = excluded.auth, created_at = excluded.created_at RETURNING {PUSH_COLS}"
                );
                let row: PushSubscriptionRow = sqlx::query_as(&q)
                    .bind(user_id)
                    .bind(endpoint)
                    .bind(p256dh)
                    .bind(auth)
                    .bind(ms(at))
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row)
            }

            async fn push_subscriptions(&self, user_id: i64) -> StoreResult<Vec<PushSubscriptionRow>> {
                let q = format!("SELECT {PUSH_COLS} FROM push_subscriptions WHERE user_id = $1 ORDER BY id");
                Ok(sqlx::query_as(&q).bind(user_id).fetch_all(&self.pool).await?)
            }

            async fn delete_push_subscription(&self, id: i64, user_id: i64) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(user_id)
                    .execute(&self.pool)
                    .await?;
                touched(done.rows_affected())
            }

            async fn create_lorawan_device(&self, gateway_id: &str, dev_eui: &str, device_id: &str, fields: &LoraFields, profile: Option<&str>, at: DateTime<Utc>) -> StoreResult<()> {
                let fields = serde_json::to_string(fields).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO lorawan_devices (gateway_id, dev_eui, device_id, fields, profile, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(gateway_id)
                .bind(dev_eui)
                .bind(device_id)
                .bind(fields)
                .bind(profile)
                .bind(ms(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn lorawan_devices(&self, gateway_id: Option<&str>) -> StoreResult<Vec<LorawanDevice>> {
                type Row = (String, String, String, String, i64, String, Option<String>, Option<String>, i64);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT l.gateway_id, l.dev_eui, l.device_id, d.kind, d.resident_id, l.fields, l.profile, p.fields, l.created_at \
                     FROM lorawan_devices l JOIN devices d ON d.id = l.device_id \
                     LEFT JOIN lorawan_profiles p ON p.gateway_id = l.gateway_id AND p.name = l.profile \
                     WHERE $1 IS NULL OR l.gateway_id = $1 ORDER BY l.gateway_id, l.dev_eui",
                )
                .bind(gateway_id)
                .fetch_all(&self.pool)
                .await?;
                let bad = |e: serde_json::Error| StoreError::Invalid(format!("lorawan fields: {e}"));
                rows.into_iter()
                    .map(|(gateway_id, dev_eui, device_id, kind, resident_id, own, profile, shared, created_at)| {
                        let device_kind = DeviceKind::parse(&kind).ok_or_else(|| StoreError::Invalid(format!("device kind {kind:?}")))?;
                        let fields = match shared {
                            Some(shared) => crate::ingest::lorawan::resolve_fields(device_kind, Some(serde_json::from_str(&shared).map_err(bad)?)),
                            None => serde_json::from_str(&own).map_err(bad)?,
                        };
                        Ok(LorawanDevice { gateway_id, dev_eui, device_id, device_kind, resident_id, fields, profile, created_at: from_ms(created_at) })
                    })
                    .collect()
            }

            async fn put_lorawan_profile(&self, gateway_id: &str, name: &str, fields: &NewLoraFields, at: DateTime<Utc>) -> StoreResult<LoraProfile> {
                let text = serde_json::to_string(fields).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let _w = self.write_guard().await;
                let (created_at,): (i64,) = sqlx::query_as(
                    "INSERT INTO lorawan_profiles (gateway_id, name, fields, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (gateway_id, name) DO UPDATE SET fields = excluded.fields RETURNING created_at",
                )
                .bind(gateway_id)
                .bind(name)
                .bind(text)
                .bind(ms(at))
                .fetch_one(&self.pool)
                .await?;
                Ok(LoraProfile { gateway_id: gateway_id.to_string(), name: name.to_string(), fields: fields.clone(), created_at: from_ms(created_at) })
            }

            async fn lorawan_profiles(&self, gateway_id: &str) -> StoreResult<Vec<LoraProfile>> {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT name, fields, created_at FROM lorawan_profiles WHERE gateway_id = $1 ORDER BY name",
                )
                .bind(gateway_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(name, fields, created_at)| {
                        let fields = serde_json::from_str(&fields).map_err(|e| StoreError::Invalid(format!("lorawan profile fields: {e}")))?;
                        Ok(LoraProfile { gateway_id: gateway_id.to_string(), name, fields, created_at: from_ms(created_at) })
                    })
                    .collect()
            }

            async fn delete_lorawan_profile(&self, gateway_id: &str, name: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let (used,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM lorawan_devices WHERE gateway_id = $1 AND profile = $2")
                    .bind(gateway_id)
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
                if used > 0 {
                    return Err(StoreError::Conflict(format!("{used} devices follow profile {name:?}")));
                }
                let done = sqlx::query("DELETE FROM lorawan_profiles WHERE gateway_id = $1 AND name = $2")
                    .bind(gateway_id)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                touched(done.rows_affected())
            }

            async fn sightings(&self, resident_id: i64, limit: i64) -> StoreResult<Vec<StoredReading>> {
                let rows: Vec<ReadingRow> = sqlx::query_as(
                    "SELECT id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery, data FROM readings \
                     WHERE resident_id = $1 AND kind = 'sighting' ORDER BY ts DESC, id DESC LIMIT $2",
                )
                .bind(resident_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(StoredReading::from).collect())
            }

            async fn put_receiver(&self, r: &Receiver) -> StoreResult<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO ble_receivers (device_id, place, room, lat, lon, range_m, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (device_id) DO UPDATE SET place = excluded.place, room = excluded.room, lat = excluded.lat, lon = excluded.lon, range_m = excluded.range_m",
                )
                .bind(&r.device_id)
                .bind(&r.place)
                .bind(&r.room)
                .bind(r.lat)
                .bind(r.lon)
                .bind(r.range_m)
                .bind(ms(r.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn receivers(&self) -> StoreResult<Vec<Receiver>> {
                let rows: Vec<(String, i64, String, Option<String>, Option<f64>, Option<f64>, f64, i64)> = sqlx::query_as(
                    "SELECT r.device_id, d.resident_id, r.place, r.room, r.lat, r.lon, r.range_m, r.created_at \
                     FROM ble_receivers r JOIN devices d ON d.id = r.device_id ORDER BY r.device_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(device_id, resident_id, place, room, lat, lon, range_m, created_at)| Receiver {
                        device_id, resident_id, place, room, lat, lon, range_m, created_at: from_ms(created_at),
                    })
                    .collect())
            }

            async fn create_ble_tag(&self, tag_id: &str, device_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
                let _w = self.write_guard().await;
                sqlx::query("INSERT INTO ble_tags (tag_id, device_id, created_at) VALUES ($1, $2, $3)")
                    .bind(tag_id)
                    .bind(device_id)
                    .bind(ms(at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn ble_tags(&self) -> StoreResult<Vec<BleTag>> {
                let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                    "SELECT t.tag_id, t.device_id, d.resident_id, t.created_at \
                     FROM ble_tags t JOIN devices d ON d.id = t.device_id ORDER BY t.tag_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(tag_id, device_id, resident_id, created_at)| BleTag { tag_id, device_id, resident_id, created_at: from_ms(created_at) })
                    .collect())
            }

            async fn create_echonet_device(&self, gateway_id: &str, echonet_id: &str, device_id: &str, activity_above_w: f64, at: DateTime<Utc>) -> StoreResult<()> {
                let _w = self.write_guard().await;
                sqlx::query(
                    "INSERT INTO echonet_devices (gateway_id, echonet_id, device_id, activity_above_w, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(gateway_id)
                .bind(echonet_id)
                .bind(device_id)
                .bind(activity_above_w)
                .bind(ms(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn echonet_devices(&self, gateway_id: Option<&str>) -> StoreResult<Vec<EchonetDevice>> {
                let rows: Vec<(String, String, String, String, i64, f64, i64)> = sqlx::query_as(
                    "SELECT e.gateway_id, e.echonet_id, e.device_id, d.kind, d.resident_id, e.activity_above_w, e.created_at \
                     FROM echonet_devices e JOIN devices d ON d.id = e.device_id \
                     WHERE $1 IS NULL OR e.gateway_id = $1 ORDER BY e.gateway_id, e.echonet_id",
                )
                .bind(gateway_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(gateway_id, echonet_id, device_id, kind, resident_id, activity_above_w, created_at)| {
                        let device_kind = DeviceKind::parse(&kind).ok_or_else(|| StoreError::Invalid(format!("device kind {kind:?}")))?;
                        Ok(EchonetDevice { gateway_id, echonet_id, device_id, device_kind, resident_id, activity_above_w, created_at: from_ms(created_at) })
                    })
                    .collect()
            }

            async fn resident_card(&self, resident_id: i64) -> StoreResult<ResidentCard> {
                let row: Option<(String,)> = sqlx::query_as("SELECT card FROM resident_cards WHERE resident_id = $1")
                    .bind(resident_id)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some((text,)) => serde_json::from_str(&text)
                        .map_err(|e| StoreError::Invalid(format!("card of resident {resident_id}: {e}"))),
                    None => Ok(ResidentCard::default()),
                }
            }

            async fn put_resident_card(&self, resident_id: i64, card: &ResidentCard, at: DateTime<Utc>) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let text = serde_json::to_string(card).map_err(|e| StoreError::Invalid(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO resident_cards (resident_id, card, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (resident_id) DO UPDATE SET card = excluded.card, updated_at = excluded.updated_at",
                )
                .bind(resident_id)
                .bind(text)
                .bind(ms(at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_lorawan_device(&self, gateway_id: &str, dev_eui: &str) -> StoreResult<()> {
                let _w = self.write_guard().await;
                let done = sqlx::query("DELETE FROM lorawan_devices WHERE gateway_id = $1 AND dev_eui = $2")
                    .bind(gateway_id)
                    .bind(dev_eui)
                    .execute(&self.pool)
                    .await?;
                touched(done.rows_affected())
            }
        }
    };
}

impl_store!(PgStore, sqlx::Postgres, "postgres");
impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");

#[cfg(test)]
mod tests {
    use super::*;

    /// What a replay reads back is what ingest wrote, for every kind of reading.
    #[test]
    fn a_stored_reading_reads_back_as_it_was_taken() {
        let readings = [
            Reading::Motion {
                motion: true,
                room: Some("bathroom".into()),
            },
            Reading::Motion {
                motion: false,
                room: None,
            },
            Reading::Door { open: true },
            Reading::Position {
                lat: 35.7,
                lon: 139.6,
                accuracy_m: Some(12.0),
            },
            Reading::Position {
                lat: 35.7,
                lon: 139.6,
                accuracy_m: None,
            },
            Reading::Sighting {
                lat: 35.7,
                lon: 139.6,
                accuracy_m: Some(30.0),
                receiver: "rx-1".into(),
                place: "Nakano station".into(),
            },
            Reading::Sos,
            Reading::Heartbeat,
            Reading::Offline,
            Reading::Ok,
        ];
        for reading in readings {
            let ev = DeviceEvent {
                device_id: "d".into(),
                device_kind: DeviceKind::Motion,
                resident_id: 1,
                ts: Utc::now(),
                received_at: Utc::now(),
                reading: reading.clone(),
                battery: None,
            };
            let (lat, lon, accuracy_m) = reading_position(&ev);
            let row = ReadingRow {
                id: 1,
                device_id: "d".into(),
                kind: ev.reading.kind_str().into(),
                ts: 0,
                received_at: 0,
                lat,
                lon,
                accuracy_m,
                battery: None,
                data: reading_data(&ev),
            };
            assert_eq!(StoredReading::from(row).reading(), Some(reading));
        }
    }

    /// Rows written before and after `reading_data` stopped building a map hold the
    /// same text.
    #[test]
    fn reading_data_is_the_text_stored_rows_have_always_had() {
        let ev = |reading| DeviceEvent {
            device_id: "d".into(),
            device_kind: DeviceKind::Motion,
            resident_id: 1,
            ts: Utc::now(),
            received_at: Utc::now(),
            reading,
            battery: None,
        };
        let cases = [
            (
                Reading::Motion {
                    motion: true,
                    room: Some("kitchen".into()),
                },
                serde_json::json!({"motion": true, "room": "kitchen"}),
            ),
            (
                Reading::Motion {
                    motion: false,
                    room: None,
                },
                serde_json::json!({"motion": false, "room": null}),
            ),
            (
                Reading::Door { open: true },
                serde_json::json!({"open": true}),
            ),
            (
                Reading::Sighting {
                    lat: 35.7,
                    lon: 139.6,
                    accuracy_m: None,
                    receiver: "rx-1".into(),
                    place: "Nakano \"station\"".into(),
                },
                serde_json::json!({"receiver": "rx-1", "place": "Nakano \"station\""}),
            ),
        ];
        for (reading, map) in cases {
            assert_eq!(reading_data(&ev(reading)), Some(map.to_string()));
        }
        assert_eq!(reading_data(&ev(Reading::Heartbeat)), None);
    }

    #[test]
    fn urls_of_databases_in_memory_are_told_apart_from_files() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite:hub.db?mode=memory&cache=shared",
        ] {
            assert!(in_memory(url), "{url}");
        }
        for url in [
            "sqlite:hub.db",
            "sqlite://hub.db?mode=rwc",
            "sqlite:/data/memory.db",
        ] {
            assert!(!in_memory(url), "{url}");
        }
    }

    #[test]
    fn statement_chunks_cover_every_row_in_reusable_sizes() {
        for n in [0, 1, 2, 3, 7, 499, 500, 501, 1337, 2000] {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
            assert_eq!(chunks.concat(), rows, "{n} rows, in order, once");
            assert!(chunks
                .iter()
                .all(|c| c.len() == CHUNK || c.len().is_power_of_two()));
        }
    }
}
