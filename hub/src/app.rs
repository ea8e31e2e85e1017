//! Wiring: [`Hub::build`] opens the store, starts the embedded broker, binds every
//! listener (reading back the real ports, so tests can ask for port 0) and restores
//! the rules engine; [`Hub::run_until_stopped`] serves until the given future ends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mimamori_protocol::api::Role;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::api::{self, AppState};
use crate::clock::{Clock, SystemClock};
use crate::cluster::singleton::{self, Job};
use crate::cluster::{self, owner::Owner, Cluster};
use crate::config::Config;
use crate::edge::{self, router, EdgeCtx};
use crate::events::Bus;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::security;
use crate::store::{self, Store};

/// Items that may wait for the pipeline before publishers are slowed down.
const INGEST_QUEUE: usize = 65_536;
/// SOS presses that may wait for the pipeline at once.
const URGENT_QUEUE: usize = 4_096;

pub struct Hub {
    http: TcpListener,
    mqtt: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    state: AppState,
    engine: Engine,
    notifier: crate::notify::Notifier,
    dashboard_dir: std::path::PathBuf,
    tiles_dir: Option<std::path::PathBuf>,
    http_header_timeout: std::time::Duration,
}

/// Where the hub's rules and alerts run: one pipeline for every resident, or in cluster
/// mode the event appender and the lease loop that runs the partitions this hub owns
/// (and the once-per-installation jobs whose leases it holds).
enum Engine {
    Single {
        pipeline: Pipeline,
        jobs: Vec<Job>,
    },
    Cluster {
        cluster: Cluster,
        owner: Owner,
        appender: Task,
        follower: Task,
        maps: std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
    },
}

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Hub {
    /// Builds a hub on the real clock.
    pub async fn build(cfg: Config) -> anyhow::Result<Hub> {
        Self::build_with_clock(cfg, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(cfg: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Hub> {
        let http = TcpListener::bind(cfg.http_addr).await.with_context(|| {
            format!(
                "cannot listen for HTTP on {} (port {} in use?)",
                cfg.http_addr,
                cfg.http_addr.port()
            )
        })?;
        let mqtt = edge::bind(cfg.mqtt_addr).await?;
        let tls = match &cfg.mqtt_tls {
            Some(t) => Some((
                edge::bind(t.addr).await?,
                edge::tls_acceptor(&t.cert, &t.key)?,
            )),
            None => None,
        };
        info!(addr = %http.local_addr()?, "HTTP listener bound");
        info!(addr = %mqtt.local_addr()?, "MQTT listener bound");

        let store = store::connect(&cfg.database_url).await?;
        info!(backend = store.backend(), "store open, migrations applied");
        let secrets = cfg.privacy.secrets.clone().unwrap_or_default();
        let resealed = crate::privacy::seal::reseal(store.as_ref(), &secrets)
            .await
            .context("cannot seal the stored webhook secrets with the current key")?;
        if resealed > 0 {
            info!(
                contacts = resealed,
                key = secrets.current().unwrap_or_default(),
                "webhook secrets sealed with the current key"
            );
        }
        ensure_admin(
            store.as_ref(),
            cfg.admin_password.as_deref(),
            clock.as_ref(),
        )
        .await?;

        let router = router::start(cfg.max_connections, edge::MAX_PACKET).await?;
        let publisher = router::HubPublisher::connect(&router).await?;
        let metrics = Arc::new(Metrics::new());
        let (items_tx, items_rx) = mpsc::channel(INGEST_QUEUE);
        let (urgent_tx, urgent_rx) = mpsc::channel(URGENT_QUEUE);
        let mut ingest = Ingest::new(items_tx, urgent_tx, clock.clone());
        ingest.set_max_age(chrono::Duration::seconds(i64::from(cfg.max_age_s)));
        let edge = Arc::new(EdgeCtx::new(
            store.clone(),
            ingest,
            metrics.clone(),
            router,
            publisher.clone(),
            cfg.max_connections,
            &cfg.limits,
        ));
        edge::maps::reload(&edge, &edge::maps::MapChange::All)
            .await
            .context(
                "cannot load the gateways' device maps (Zigbee2MQTT, LoRaWAN, BLE, ECHONET Lite)",
            )?;
        let (retention, retention_runner) = crate::privacy::retention::job(
            cfg.privacy.retention.clone(),
            cfg.privacy.retention_every,
        );
        // Made in the arm that knows whether the retention job answers other hubs.
        let jobs_for = |answers| {
            once_jobs(
                &cfg,
                retention_runner,
                &store,
                &clock,
                &metrics,
                &edge,
                answers,
            )
        };
        let (engine, handle, bus) = match &cfg.cluster {
            None => {
                let first_seq = u64::try_from(clock.now().timestamp_millis())
                    .unwrap_or(1)
                    .saturating_mul(1000);
                let bus = Bus::new(first_seq);
                let (mut pipeline, handle) = Pipeline::new(
                    store.clone(),
                    cfg.notify.ladder.clone(),
                    clock.clone(),
                    metrics.clone(),
                    bus.clone(),
                    publisher.clone(),
                    items_rx,
                    urgent_rx,
                );
                pipeline
                    .set_restart_grace(chrono::Duration::seconds(i64::from(cfg.restart_grace_s)));
                let watched = pipeline
                    .restore()
                    .await
                    .context("cannot restore the rules engine")?;
                info!(
                    residents = watched,
                    "rules engine restored, timers re-armed"
                );
                // The restore rewrote every resident's rules state; copying that back into
                // the database now keeps it out of the first burst of timers after ready.
                if let Err(e) = store.checkpoint().await {
                    warn!(error = %e, "checkpoint after restore failed; the background one will retry");
                }
                (
                    Engine::Single {
                        pipeline,
                        jobs: jobs_for(None),
                    },
                    handle,
                    bus,
                )
            }
            Some(cc) => {
                let cluster = Cluster::connect(cc.clone(), &cfg.database_url).await?;
                let answers = (
                    cluster.client.clone(),
                    cc.node_id.clone(),
                    retention.clone(),
                );
                let jobs = jobs_for(Some(answers));
                let bus = Bus::new(cluster::live::next_sequence(&cluster.js).await?);
                let handle = cluster::rpc::dispatcher(cluster.clone(), store.clone());
                let parts = cluster::owner::PipelineParts {
                    store: store.clone(),
                    ladder: cfg.notify.ladder.clone(),
                    clock: clock.clone(),
                    metrics: metrics.clone(),
                    bus: bus.clone(),
                    publisher: publisher.clone(),
                };
                let owner = Owner::new(
                    cluster.clone(),
                    parts,
                    http.local_addr()?.to_string(),
                    mqtt.local_addr()?.to_string(),
                    jobs,
                );
                let appender = Box::pin(cluster::log::append(
                    cluster.js.clone(),
                    cc.partitions,
                    items_rx,
                    urgent_rx,
                    metrics.clone(),
                ));
                let follower = Box::pin(cluster::live::follow(
                    cluster.js.clone(),
                    bus.clone(),
                    publisher.clone(),
                ));
                info!(node = %cc.node_id, partitions = cc.partitions, "cluster mode: partitions are taken as leases allow");
                let maps = Box::pin(cluster::maps::follow(cluster.clone(), edge.clone()));
                let engine = Engine::Cluster {
                    cluster,
                    owner,
                    appender,
                    follower,
                    maps,
                };
                (engine, handle, bus)
            }
        };

        let vapid = crate::notify::push::Vapid::load(store.as_ref(), clock.now())
            .await
            .context("cannot load or make the Web Push (VAPID) key")?;
        let notifier = crate::notify::Notifier::new(
            store.clone(),
            clock.clone(),
            bus.clone(),
            cfg.notify.clone(),
            metrics.clone(),
            vapid.clone(),
        )
        .context("cannot start the notification worker")?;
        let notifier = match &engine {
            Engine::Cluster { .. } => notifier.shared(),
            Engine::Single { .. } => notifier,
        };
        let cluster = match &engine {
            Engine::Cluster { cluster, .. } => Some(cluster.clone()),
            Engine::Single { .. } => None,
        };
        let privacy = crate::privacy::Privacy {
            retention,
            secrets,
            devices_before_consent: cfg.privacy.devices_before_consent,
            access: if cfg.privacy.read_audit {
                crate::privacy::access::AccessLog::start(
                    store.clone(),
                    clock.clone(),
                    metrics.clone(),
                )
            } else {
                crate::privacy::access::AccessLog::unlogged(clock.clone(), metrics.clone())
            },
        };
        let state = AppState {
            privacy,
            cluster,
            store,
            clock,
            metrics,
            pipeline: handle,
            edge: edge.clone(),
            bus,
            publisher,
            session_hours: cfg.session_hours,
            ready: Arc::new(AtomicBool::new(false)),
            revocations: crate::revocation::Revocations::new(edge.clone()),
            http_gate: crate::limits::Gate::new(
                cfg.limits.http_max_connections,
                cfg.limits.http_per_source,
            ),
            line_secret: cfg
                .notify
                .line
                .as_ref()
                .and_then(|l| l.channel_secret.clone())
                .map(Arc::new),
            push: Arc::new(api::push::PushState {
                public_key: vapid.public_key(),
                cfg: cfg.notify.push.clone(),
            }),
            contact_hosts: cfg.notify.hosts.clone(),
            require_admin_totp: cfg.require_admin_totp,
        };
        Ok(Hub {
            http,
            mqtt,
            tls,
            state,
            engine,
            notifier,
            dashboard_dir: cfg.dashboard_dir,
            tiles_dir: cfg.tiles_dir,
            http_header_timeout: cfg.limits.http_header_timeout,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn mqtt_tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes or a part of the hub stops.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Hub {
            http,
            mqtt,
            tls,
            state,
            engine,
            notifier,
            dashboard_dir,
            tiles_dir,
            http_header_timeout,
        } = self;
        let edge = state.edge.clone();
        let (http_gate, metrics) = (state.http_gate.clone(), state.metrics.clone());
        let ready = state.ready.clone();
        let app = api::app(state, &dashboard_dir, tiles_dir.as_deref());
        let mqtt_task = tokio::spawn(edge::serve(mqtt, None, edge.clone()));
        let tls_task = tokio::spawn(async move {
            match tls {
                Some((listener, acceptor)) => edge::serve(listener, Some(acceptor), edge).await,
                None => std::future::pending().await,
            }
        });
        let stop_owner = Arc::new(tokio::sync::Notify::new());
        let (pipeline_task, owner_task) = spawn_engine(engine, stop_owner.clone(), &metrics);
        let notify_task = tokio::spawn(notifier.run());
        let http_task = tokio::spawn(async move {
            api::serve::serve(http, app, http_gate, http_header_timeout, metrics, shutdown).await
        });
        ready.store(true, Ordering::Relaxed);
        info!("hub ready");
        let outcome = tokio::select! {
            r = http_task => report_exit("HTTP server", r.map(|r| r.map_err(anyhow::Error::from))),
            r = mqtt_task => report_exit("MQTT edge", r.map(|()| Ok(()))),
            r = tls_task => report_exit("MQTT TLS edge", r.map(|()| Ok(()))),
            r = pipeline_task => report_exit("pipeline", r),
            r = notify_task => report_exit("notification worker", r.map(|()| Ok(()))),
        };
        // Cluster mode: hand every partition over at once rather than after the leases
        // run out, so a node stopped for an upgrade costs its residents no seconds.
        if let Some(owner) = owner_task {
            stop_owner.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), owner).await;
        }
        outcome
    }
}

type EngineTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Where the retention job answers the API of every hub in cluster mode: NATS, this
/// hub's node id, and the job's handle.
type RetentionAnswers = (
    async_nats::Client,
    String,
    crate::privacy::retention::RetentionJob,
);

/// The jobs an installation runs once: retention, and the client of The Things Stack when
/// one is configured. Each runs for as long as its task is not aborted; a failed pass or a
/// lost connection is retried inside it. In cluster mode the retention job also answers
/// every hub's `GET /retention` and `POST /retention/run` while it runs here.
#[allow(clippy::too_many_arguments)]
fn once_jobs(
    cfg: &Config,
    retention: crate::privacy::retention::Runner,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    edge: &Arc<EdgeCtx>,
    answers: Option<RetentionAnswers>,
) -> Vec<Job> {
    let (store, clock, metrics) = (store.clone(), clock.clone(), metrics.clone());
    let mut jobs = vec![Job::new(singleton::RETENTION, move || {
        let passes = retention
            .clone()
            .run(store.clone(), clock.clone(), metrics.clone());
        let answers = answers.clone();
        async move {
            match answers {
                Some((client, node, job)) => {
                    tokio::join!(passes, cluster::jobs::serve(client, node, job));
                }
                None => passes.await,
            }
        }
    })];
    if let Some(tts) = cfg.tts.clone() {
        let ingest = edge.ingest.clone();
        jobs.push(Job::new(singleton::TTS, move || {
            crate::tts::run(tts.clone(), ingest.clone())
        }));
    }
    jobs
}

/// Starts the single pipeline, or the cluster's appender, request server, live follower
/// and lease loop; the first task ends the hub if it stops, the second is the lease loop.
fn spawn_engine(
    engine: Engine,
    stop_owner: Arc<tokio::sync::Notify>,
    metrics: &Metrics,
) -> (EngineTask, Option<tokio::task::JoinHandle<()>>) {
    match engine {
        Engine::Single { pipeline, jobs } => {
            singleton::run_all_here(&jobs, metrics);
            (
                tokio::spawn(async move {
                    pipeline.run().await;
                    Ok(())
                }),
                None,
            )
        }
        Engine::Cluster {
            cluster,
            owner,
            appender,
            follower,
            maps,
        } => {
            let owner = tokio::spawn(owner.run(stop_owner));
            let serve = cluster::rpc::serve(cluster);
            let task = tokio::spawn(async move {
                tokio::select! {
                    () = appender => Ok(()),
                    r = serve => r.context("cluster request server"),
                    () = follower => Ok(()),
                    r = maps => r.context("gateway map follower"),
                }
            });
            (task, Some(owner))
        }
    }
}

fn report_exit(
    part: &str,
    outcome: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match outcome {
        Ok(Ok(())) => {
            info!("{part} stopped");
            Ok(())
        }
        Ok(Err(e)) => {
            error!(error.cause_chain = ?e, "{part} failed");
            Err(e.context(format!("{part} failed")))
        }
        Err(e) => {
            error!(error = %e, "{part} panicked");
            Err(anyhow::anyhow!("{part} panicked: {e}"))
        }
    }
}

/// Creates the `admin` user on first start, with the configured password or a
/// generated one that is printed once.
async fn ensure_admin(
    store: &dyn Store,
    password: Option<&str>,
    clock: &dyn Clock,
) -> anyhow::Result<()> {
    if store.user_by_name("admin").await?.is_some() {
        return Ok(());
    }
    let (password, generated) = match password {
        Some(p) => {
            if let Err(why) = security::check_password_policy("admin", p) {
                anyhow::bail!("MIMAMORI_ADMIN_PASSWORD is refused: {why}");
            }
            (p.to_string(), false)
        }
        None => (security::random_secret()[..20].to_string(), true),
    };
    let hash = security::hash_password(&password)?;
    store
        .create_user("admin", &hash, Role::Admin, &[], clock.now())
        .await?;
    if generated {
        // Printed once, on the console of whoever started the hub; it is never stored in clear.
        println!("Created user 'admin' with password: {password}");
        println!("Keep it safe: it is not shown again. Set MIMAMORI_ADMIN_PASSWORD to choose it yourself.");
    }
    info!("admin user created");
    Ok(())
}
