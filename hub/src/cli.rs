//! The command line of the `hub` binary, kept in the library so that test and
//! tool binaries can start exactly the same program.

use clap::Parser;

use crate::admin::{self, NewPassword};
use crate::config::{AdminCommand, Cli, Command, Config, DEFAULT_CONFIG};

/// Parses the command line and runs the hub until SIGINT or SIGTERM, or runs the
/// subcommand given.
pub fn main() -> std::process::ExitCode {
    main_adjusted(|_| {})
}

/// [`main`], with the resolved configuration passed through `adjust` before the hub is
/// built: for programs that embed the hub with settings its command line does not
/// offer (the benchmark's baseline without the read audit).
pub fn main_adjusted(adjust: fn(&mut Config)) -> std::process::ExitCode {
    let mut cli = Cli::parse();
    let admin_command = match cli.command.take() {
        Some(Command::DefaultConfig) => {
            print!(
                "{DEFAULT_CONFIG}{}",
                crate::notify::config::DEFAULT_NOTIFY_CONFIG
            );
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Admin { command }) => Some(command),
        Some(Command::Replay {
            resident,
            events,
            database,
            resident_id,
            from,
            until,
            rules,
        }) => {
            let source = match (database, resident_id, resident, events) {
                (Some(url), Some(id), _, _) => ReplaySource::Database {
                    url,
                    resident_id: id,
                    from,
                    until,
                },
                (_, _, Some(resident), Some(events)) => ReplaySource::Files { resident, events },
                // clap requires one whole set of arguments or the other.
                _ => return std::process::ExitCode::FAILURE,
            };
            return replay(source, rules.as_deref());
        }
        None => None,
    };
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match admin_command {
        Some(command) => runtime.block_on(run_admin(cli, command)),
        None => runtime.block_on(run(cli, adjust)),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Where `hub replay` reads a home's history.
enum ReplaySource {
    Files {
        resident: std::path::PathBuf,
        events: std::path::PathBuf,
    },
    Database {
        url: String,
        resident_id: i64,
        from: Option<String>,
        until: Option<String>,
    },
}

fn replay(source: ReplaySource, rules: Option<&str>) -> std::process::ExitCode {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let done = match source {
        ReplaySource::Files { resident, events } => {
            crate::replay::run_files(&resident, &events, rules, &mut out).map(|_| ())
        }
        ReplaySource::Database {
            url,
            resident_id,
            from,
            until,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(crate::replay::run_database(
                    &url,
                    resident_id,
                    from,
                    until,
                    rules,
                    &mut out,
                ))
            }),
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, adjust: fn(&mut Config)) -> anyhow::Result<()> {
    let mut config = cli.settings.resolve()?;
    adjust(&mut config);
    let hub = crate::Hub::build(config).await?;
    // One line on stdout that people and tests can read the bound ports from.
    let tls = hub
        .mqtt_tls_addr()
        .map(|a| format!(" mqtts={a}"))
        .unwrap_or_default();
    println!(
        "mimamori hub ready: http=http://{} mqtt={}{tls}",
        hub.http_addr(),
        hub.mqtt_addr()
    );
    hub.run_until_stopped(shutdown_signal()).await
}

async fn run_admin(cli: Cli, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::ResetPassword {
            user,
            password_stdin,
            database,
        } => {
            let url = match database {
                Some(url) => url,
                None => cli.settings.resolve()?.database_url,
            };
            let new = if password_stdin {
                NewPassword::Given(admin::read_password(std::io::stdin().lock())?)
            } else {
                NewPassword::Generated
            };
            let reset = admin::reset_password(&url, &user, new, chrono::Utc::now()).await?;
            match &reset.generated {
                Some(p) => println!("New password for user '{}': {p}", reset.username),
                None => println!("Password of user '{}' changed.", reset.username),
            }
            if reset.sessions_ended > 0 {
                println!(
                    "Ended {} session(s) of '{}': log in again with the new password.",
                    reset.sessions_ended, reset.username
                );
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
