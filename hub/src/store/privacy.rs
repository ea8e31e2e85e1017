//! What the store keeps for privacy law: consent records, the append-only log of who
//! read whose data, purging by data class, and the rows of one resident for an export.
//!
//! A supertrait of [`Store`](super::Store), so that every store has it and the hub
//! reaches it through the same `Arc<dyn Store>`.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use mimamori_protocol::api::RejectedMessage;
use mimamori_protocol::contact::Delivery;
use mimamori_protocol::Alert;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use super::outbox::DeliveryRow;
use super::rows::{AlertRow, AuditRow, ReadingRow, RejectedDbRow};
use super::sql::{push_id_list, PgStore, SqliteStore, ALERT_COLS};
use super::{from_ms, ms, AuditEntry, StoreError, StoreResult, StoredReading};

/// Who gave a consent: the resident, or a guardian where the resident lacks capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GivenBy {
    Resident,
    Guardian,
}

impl GivenBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GivenBy::Resident => "resident",
            GivenBy::Guardian => "guardian",
        }
    }

    fn parse(s: &str) -> StoreResult<GivenBy> {
        match s {
            "resident" => Ok(GivenBy::Resident),
            "guardian" => Ok(GivenBy::Guardian),
            other => Err(StoreError::Invalid(format!("consent given_by {other:?}"))),
        }
    }
}

/// A consent as it is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewConsent {
    pub resident_id: i64,
    pub given_on: NaiveDate,
    pub given_by: GivenBy,
    pub giver_name: String,
    pub purposes: Vec<String>,
    pub recipients: Vec<String>,
    pub document_ref: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// A stored consent; current while `withdrawn_at` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub id: i64,
    #[serde(flatten)]
    pub given: NewConsent,
    pub withdrawn_at: Option<DateTime<Utc>>,
    pub withdrawn_by: Option<String>,
    pub withdrawal_note: Option<String>,
}

/// One read of a resident's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    pub at: DateTime<Utc>,
    pub resident_id: i64,
    pub actor: String,
    pub role: String,
    /// `readings`, `track`, `positions`, `activity`, `alert`, `snapshot` or `export`.
    pub what: String,
    pub rows: i64,
}

/// A kind of stored data with a retention period of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// Raw position fixes and BLE sightings.
    Positions,
    /// Every other reading (motion, door, button, heartbeat, power…); activity is
    /// rolled up per hour before it goes.
    Sensors,
    /// The hourly activity rolled up from purged sensor readings.
    Activity,
    /// Refused device messages.
    DeadLetters,
    /// Resolved alerts, with their history and deliveries.
    Alerts,
    /// The audit trail of staff actions.
    Audit,
    /// The log of reads.
    AccessLog,
}

impl DataClass {
    pub const ALL: [DataClass; 7] = [
        DataClass::Positions,
        DataClass::Sensors,
        DataClass::Activity,
        DataClass::DeadLetters,
        DataClass::Alerts,
        DataClass::Audit,
        DataClass::AccessLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Positions => "positions",
            DataClass::Sensors => "sensors",
            DataClass::Activity => "activity",
            DataClass::DeadLetters => "dead_letters",
            DataClass::Alerts => "alerts",
            DataClass::Audit => "audit",
            DataClass::AccessLog => "access_log",
        }
    }

    /// Where the class's rows are and how retention picks them. Readings are picked by
    /// time through the index of their class (`readings_positions_ts`,
    /// `readings_others_ts`, whose conditions are these word for word), so a pass reads
    /// only the rows it removes: in id order the last pick of a pass read to the end of
    /// the table, which held one snapshot for seconds in a large store and kept the
    /// write-ahead log from starting over meanwhile.
    fn table(self) -> ClassRows {
        let rows = |table, only, age, order| ClassRows {
            table,
            only,
            age,
            order,
        };
        match self {
            DataClass::Positions => rows("readings", "kind IN ('gps', 'sighting')", "ts", "ts"),
            DataClass::Sensors => rows("readings", "kind NOT IN ('gps', 'sighting')", "ts", "ts"),
            DataClass::Activity => rows("activity_hourly", "1 = 1", "hour", "hour"),
            DataClass::DeadLetters => rows("rejected", "1 = 1", "received_at", "id"),
            // A live alert is never purged, however old.
            DataClass::Alerts => rows("alerts", "state = 'resolved'", "resolved_at", "id"),
            DataClass::Audit => rows("audit_log", "1 = 1", "at", "id"),
            DataClass::AccessLog => rows("access_log", "1 = 1", "at", "id"),
        }
    }
}

/// Motion that saw movement, or a door used: what the daily rhythm counts. Motion data
/// is written with sorted keys, so the pattern matches exactly the readings that moved.
const ACTIVITY: &str = "(kind = 'door' OR (kind = 'motion' AND data LIKE '{\"motion\":true%'))";

#[async_trait]
pub trait PrivacyStore {
    async fn record_consent(&self, c: &NewConsent) -> StoreResult<Consent>;
    /// Closes every current consent of a resident; `NotFound` if there was none.
    async fn withdraw_consent(
        &self,
        resident_id: i64,
        by: &str,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// A resident's consents, newest first: the current one (if any) and the history.
    async fn consents(&self, resident_id: i64) -> StoreResult<Vec<Consent>>;
    /// Every resident with a current consent.
    async fn consented_residents(&self) -> StoreResult<Vec<i64>>;
    async fn has_consent(&self, resident_id: i64) -> StoreResult<bool>;

    /// Appends reads to the access log in one transaction.
    async fn append_access(&self, rows: &[Access]) -> StoreResult<()>;
    /// A resident's reads, newest first.
    async fn access_log(&self, resident_id: i64, limit: i64) -> StoreResult<Vec<Access>>;

    /// Removes up to `limit` rows of a class older than `cutoff`, oldest first, in one
    /// transaction; sensor readings' activity is added to the hourly roll-up first.
    /// Returns how many rows went.
    async fn purge_batch(
        &self,
        class: DataClass,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64>;

    // One resident's rows, for an export.
    /// Readings with an id above `after`, oldest first, at most `limit`.
    async fn readings_page(
        &self,
        resident_id: i64,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredReading>>;
    async fn alerts_of(&self, resident_id: i64) -> StoreResult<Vec<Alert>>;
    /// Refused messages of the resident's devices.
    async fn dead_letters_of(&self, resident_id: i64) -> StoreResult<Vec<RejectedMessage>>;
    /// Audit entries whose target is the resident.
    async fn audit_of(&self, resident_id: i64) -> StoreResult<Vec<AuditEntry>>;
    /// The hourly activity rolled up from purged readings, oldest first.
    async fn activity_rolled_up(&self, resident_id: i64) -> StoreResult<Vec<(DateTime<Utc>, i64)>>;
    /// Every notification sent about the resident (alerts' and daily summaries'), with
    /// the alert it was about.
    async fn deliveries_of(&self, resident_id: i64) -> StoreResult<Vec<(Option<i64>, Delivery)>>;

    /// Every contact's webhook signing secret as stored, by contact id.
    async fn webhook_secrets(&self) -> StoreResult<Vec<(i64, String)>>;
    /// Replaces a contact's stored secret, and the copies its pending deliveries hold,
    /// if it is still `old`; returns whether it was.
    async fn replace_secret(&self, contact_id: i64, old: &str, new: &str) -> StoreResult<bool>;
}

#[derive(sqlx::FromRow)]
struct ResidentDeliveryRow {
    alert_id: Option<i64>,
    #[sqlx(flatten)]
    delivery: DeliveryRow,
}

#[derive(sqlx::FromRow)]
struct ConsentRow {
    id: i64,
    resident_id: i64,
    given_on: i64,
    given_by: String,
    giver_name: String,
    purposes: String,
    recipients: String,
    document_ref: String,
    recorded_by: String,
    recorded_at: i64,
    withdrawn_at: Option<i64>,
    withdrawn_by: Option<String>,
    withdrawal_note: Option<String>,
}

const CONSENT_COLS: &str =
    "id, resident_id, given_on, given_by, giver_name, purposes, recipients, \
     document_ref, recorded_by, recorded_at, withdrawn_at, withdrawn_by, withdrawal_note";

fn strings(what: &str, text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Invalid(format!("consent {what}: {e}")))
}

fn day_ms(d: NaiveDate) -> i64 {
    ms(d.and_time(chrono::NaiveTime::MIN).and_utc())
}

impl TryFrom<ConsentRow> for Consent {
    type Error = StoreError;
    fn try_from(r: ConsentRow) -> StoreResult<Consent> {
        Ok(Consent {
            id: r.id,
            given: NewConsent {
                resident_id: r.resident_id,
                given_on: from_ms(r.given_on).date_naive(),
                given_by: GivenBy::parse(&r.given_by)?,
                giver_name: r.giver_name,
                purposes: strings("purposes", &r.purposes)?,
                recipients: strings("recipients", &r.recipients)?,
                document_ref: r.document_ref,
                recorded_by: r.recorded_by,
                recorded_at: from_ms(r.recorded_at),
            },
            withdrawn_at: r.withdrawn_at.map(from_ms),
            withdrawn_by: r.withdrawn_by,
            withdrawal_note: r.withdrawal_note,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AccessRow {
    at: i64,
    resident_id: i64,
    actor: String,
    role: String,
    what: String,
    row_count: i64,
}

impl From<AccessRow> for Access {
    fn from(r: AccessRow) -> Access {
        Access {
            at: from_ms(r.at),
            resident_id: r.resident_id,
            actor: r.actor,
            role: r.role,
            what: r.what,
            rows: r.row_count,
        }
    }
}

/// Rows of the access log per INSERT statement, under both backends' parameter limits.
const ACCESS_CHUNK: usize = 1_000;

/// Where a class's rows are, and how retention picks the oldest of them.
struct ClassRows {
    /// The id-keyed table.
    table: &'static str,
    /// The condition that picks the class's rows in it.
    only: &'static str,
    /// The time column its age is read from.
    age: &'static str,
    /// The order rows are picked in: an indexed column, so a pick reads no more than it takes.
    order: &'static str,
}

macro_rules! impl_privacy {
    ($store:ty, $db:ty) => {
        #[async_trait]
        impl PrivacyStore for $store {
            async fn record_consent(&self, c: &NewConsent) -> StoreResult<Consent> {
                let _w = self.write_guard().await;
                let json = |v: &Vec<String>| serde_json::to_string(v).map_err(|e| StoreError::Invalid(e.to_string()));
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO consents (resident_id, given_on, given_by, giver_name, purposes, recipients, document_ref, \
                     recorded_by, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                )
                .bind(c.resident_id)
                .bind(day_ms(c.given_on))
                .bind(c.given_by.as_str())
                .bind(&c.giver_name)
                .bind(json(&c.purposes)?)
                .bind(json(&c.recipients)?)
                .bind(&c.document_ref)
                .bind(&c.recorded_by)
                .bind(ms(c.recorded_at))
                .fetch_one(&self.pool)
                .await?;
                Ok(Consent { id, given: c.clone(), withdrawn_at: None, withdrawn_by: None, withdrawal_note: None })
            }

            async fn withdraw_consent(&self, resident_id: i64, by: &str, note: Option<&str>, at: DateTime<Utc>) -> StoreResult<u64> {
                let _w = self.write_guard().await;
                let done = sqlx::query(
                    "UPDATE consents SET withdrawn_at = $1, withdrawn_by = $2, withdrawal_note = $3 \
                     WHERE resident_id = $4 AND withdrawn_at IS NULL",
                )
                .bind(ms(at))
                .bind(by)
                .bind(note)
                .bind(resident_id)
                .execute(&self.pool)
                .await?;
                match done.rows_affected() {
                    0 => Err(StoreError::NotFound),
                    n => Ok(n),
                }
            }

            async fn consents(&self, resident_id: i64) -> StoreResult<Vec<Consent>> {
                let q = format!("SELECT {CONSENT_COLS} FROM consents WHERE resident_id = $1 ORDER BY id DESC");
                let rows: Vec<ConsentRow> = sqlx::query_as(&q).bind(resident_id).fetch_all(&self.pool).await?;
                rows.into_iter().map(Consent::try_from).collect()
            }

            async fn consented_residents(&self) -> StoreResult<Vec<i64>> {
                let rows: Vec<(i64,)> = sqlx::query_as(
                    "SELECT DISTINCT resident_id FROM consents WHERE withdrawn_at IS NULL ORDER BY resident_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(id,)| id).collect())
            }

            async fn has_consent(&self, resident_id: i64) -> StoreResult<bool> {
                let row: Option<(i64,)> =
                    sqlx::query_as("SELECT id FROM consents WHERE resident_id = $1 AND withdrawn_at IS NULL LIMIT 1")
                        .bind(resident_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.is_some())
            }

            async fn append_access(&self, rows: &[Access]) -> StoreResult<()> {
                if rows.is_empty() {
                    return Ok(());
                }
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                for chunk in rows.chunks(ACCESS_CHUNK) {
                    let mut q = QueryBuilder::<$db>::new("INSERT INTO access_log (at, resident_id, actor, role, what, row_count) ");
                    q.push_values(chunk, |mut b, a| {
                        b.push_bind(ms(a.at))
                            .push_bind(a.resident_id)
                            .push_bind(a.actor.clone())
                            .push_bind(a.role.clone())
                            .push_bind(a.what.clone())
                            .push_bind(a.rows);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn access_log(&self, resident_id: i64, limit: i64) -> StoreResult<Vec<Access>> {
                let rows: Vec<AccessRow> = sqlx::query_as(
                    "SELECT at, resident_id, actor, role, what, row_count FROM access_log \
                     WHERE resident_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                )
                .bind(resident_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Access::from).collect())
            }

            async fn purge_batch(&self, class: DataClass, cutoff: DateTime<Utc>, limit: i64) -> StoreResult<u64> {
                if class == DataClass::Activity {
                    let _w = self.write_guard().await;
                    // Keyed by (resident, hour): whole hours go, the oldest first.
                    let done = sqlx::query(
                        "DELETE FROM activity_hourly WHERE hour IN \
                         (SELECT DISTINCT hour FROM activity_hourly WHERE hour < $1 ORDER BY hour LIMIT $2)",
                    )
                    .bind(ms(cutoff))
                    .bind(limit)
                    .execute(&self.pool)
                    .await?;
                    return Ok(done.rows_affected());
                }
                // Picking the rows is a read, done before the writers' turn: in the tables
                // picked in id order the last batch of a class reads to the end of the
                // table, which in a store of months would hold up ingest's commits.
                let ClassRows { table, only, age, order } = class.table();
                let q = format!("SELECT id FROM {table} WHERE {only} AND {age} < $1 ORDER BY {order} LIMIT $2");
                let ids: Vec<(i64,)> = sqlx::query_as(&q).bind(ms(cutoff)).bind(limit).fetch_all(&self.pool).await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let ids = ids.into_iter().map(|(id,)| id);
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                if class == DataClass::Sensors {
                    let mut roll = QueryBuilder::<$db>::new(
                        "INSERT INTO activity_hourly (resident_id, hour, count) \
                         SELECT resident_id, (ts / 3600000) * 3600000, COUNT(*) FROM readings WHERE ",
                    );
                    roll.push(ACTIVITY).push(" AND id ");
                    push_id_list(&mut roll, ids.clone());
                    roll.push(
                        " GROUP BY resident_id, ts / 3600000 \
                         ON CONFLICT (resident_id, hour) DO UPDATE SET count = activity_hourly.count + excluded.count",
                    );
                    roll.build().execute(&mut *tx).await?;
                }
                // The condition again: a row picked before the turn may have changed since
                // (an alert reopened), and only rows still past the cutoff go.
                let mut del = QueryBuilder::<$db>::new(format!("DELETE FROM {table} WHERE {only} AND {age} < "));
                del.push_bind(ms(cutoff)).push(" AND id ");
                push_id_list(&mut del, ids);
                let removed = del.build().execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                Ok(removed)
            }

            async fn readings_page(&self, resident_id: i64, after: i64, limit: i64) -> StoreResult<Vec<StoredReading>> {
                let rows: Vec<ReadingRow> = sqlx::query_as(
                    "SELECT id, device_id, kind, ts, received_at, lat, lon, accuracy_m, battery, data FROM readings \
                     WHERE resident_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(resident_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(StoredReading::from).collect())
            }

            async fn alerts_of(&self, resident_id: i64) -> StoreResult<Vec<Alert>> {
                let q = format!("SELECT {ALERT_COLS} FROM alerts WHERE resident_id = $1 ORDER BY id");
                let rows: Vec<AlertRow> = sqlx::query_as(&q).bind(resident_id).fetch_all(&self.pool).await?;
                rows.into_iter().map(Alert::try_from).collect()
            }

            async fn dead_letters_of(&self, resident_id: i64) -> StoreResult<Vec<RejectedMessage>> {
                let rows: Vec<RejectedDbRow> = sqlx::query_as(
                    "SELECT id, received_at, device_id, topic, reason, detail, payload FROM rejected \
                     WHERE device_id IN (SELECT id FROM devices WHERE resident_id = $1) ORDER BY id",
                )
                .bind(resident_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(RejectedMessage::from).collect())
            }

            async fn audit_of(&self, resident_id: i64) -> StoreResult<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> =
                    sqlx::query_as("SELECT at, actor, action, target, details FROM audit_log WHERE target = $1 ORDER BY id")
                        .bind(format!("resident/{resident_id}"))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(AuditEntry::from).collect())
            }

            async fn activity_rolled_up(&self, resident_id: i64) -> StoreResult<Vec<(DateTime<Utc>, i64)>> {
                let rows: Vec<(i64, i64)> =
                    sqlx::query_as("SELECT hour, count FROM activity_hourly WHERE resident_id = $1 ORDER BY hour")
                        .bind(resident_id)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(h, n)| (from_ms(h), n)).collect())
            }

            async fn deliveries_of(&self, resident_id: i64) -> StoreResult<Vec<(Option<i64>, Delivery)>> {
                let rows: Vec<ResidentDeliveryRow> = sqlx::query_as(
                    "SELECT alert_id, id, event, channel, contact_id, contact_name, state, attempts, last_error, \
                     idempotency_key, created_at, delivered_at FROM deliveries WHERE resident_id = $1 ORDER BY id",
                )
                .bind(resident_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(|r| Ok((r.alert_id, Delivery::try_from(r.delivery)?))).collect()
            }

            async fn webhook_secrets(&self) -> StoreResult<Vec<(i64, String)>> {
                Ok(sqlx::query_as("SELECT id, secret FROM contacts WHERE secret IS NOT NULL ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn replace_secret(&self, contact_id: i64, old: &str, new: &str) -> StoreResult<bool> {
                let _w = self.write_guard().await;
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("UPDATE contacts SET secret = $1 WHERE id = $2 AND secret = $3")
                    .bind(new)
                    .bind(contact_id)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query("UPDATE deliveries SET secret = $1 WHERE contact_id = $2 AND secret = $3")
                    .bind(new)
                    .bind(contact_id)
                    .bind(old)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}

impl_privacy!(PgStore, sqlx::Postgres);
impl_privacy!(SqliteStore, sqlx::Sqlite);
