//! Administration from the command line, on the hub's own database: `hub admin …`.
//!
//! These commands work with or without a running hub (SQLite in WAL mode and PostgreSQL
//! both take a second writer), and every one of them leaves an entry in the audit trail
//! with the actor `command line`.

use std::io::BufRead;
use std::str::FromStr;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnectOptions;

use crate::security;
use crate::store::{self, AuditEntry};

/// Where the new password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewPassword {
    /// A random one, printed once.
    Generated,
    /// Exactly this one (read from standard input by the command line).
    Given(String),
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    pub username: String,
    /// The new password when it was generated (to print), `None` when it was given.
    pub generated: Option<String>,
    /// Sessions of the user that were ended.
    pub sessions_ended: u64,
}

/// Reads a password from the first line of `input` (without its line break).
pub fn read_password(input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let mut input = input;
    input
        .read_line(&mut line)
        .context("cannot read the new password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Sets a new password for `username` and ends every session the user had, so that
/// whoever held the old password is logged out too.
pub async fn reset_password(
    database_url: &str,
    username: &str,
    new: NewPassword,
    now: DateTime<Utc>,
) -> anyhow::Result<Reset> {
    let (password, generated) = match new {
        NewPassword::Generated => {
            let p = security::random_secret()[..20].to_string();
            (p.clone(), Some(p))
        }
        NewPassword::Given(p) => (p, None),
    };
    if let Err(why) = security::check_password_policy(username, &password) {
        bail!("{why}");
    }
    if !is_postgres(database_url) {
        let opts = SqliteConnectOptions::from_str(database_url)
            .context("DATABASE_URL is neither postgres:// nor a valid sqlite: URL")?;
        let file = opts.get_filename();
        if file != std::path::Path::new(":memory:") && !file.exists() {
            bail!(
                "there is no database at {} (give the hub's own with --database-url)",
                file.display()
            );
        }
    }
    // Opening the store applies pending migrations, so the tables below exist.
    let store = store::connect(database_url).await?;
    let Some(user) = store.user_by_name(username).await? else {
        bail!("there is no user named {username:?} in this database");
    };
    let hash = tokio::task::spawn_blocking(move || security::hash_password(&password))
        .await
        .context("hashing the password stopped")??;
    let user_id = user.user.id;
    let sessions_ended = store
        .set_password(user_id, &hash)
        .await
        .context("cannot store the new password")?;
    store
        .audit(&AuditEntry {
            at: now,
            actor: "command line".into(),
            action: "user.password_reset".into(),
            target: format!("user:{user_id}"),
            details: Some(serde_json::json!({ "sessions_ended": sessions_ended })),
        })
        .await?;
    Ok(Reset {
        username: username.to_string(),
        generated,
        sessions_ended,
    })
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_the_first_line_without_its_break() -> anyhow::Result<()> {
        assert_eq!(
            read_password(&b"correct horse\r\nrest"[..])?,
            "correct horse"
        );
        assert_eq!(read_password(&b"no newline"[..])?, "no newline");
        Ok(())
    }
}
