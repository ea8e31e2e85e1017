//! Cluster mode: three real hub processes on their own NATS JetStream server and a fresh
//! PostgreSQL database. A hub killed mid-run loses nothing a device was told is safe; a
//! hub cut off from NATS hands its partitions over and its old lease is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mimamori_protocol::api::DeviceCreated;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::helpers::*;

/// A `nats-server -js` of the test's own, on a port the OS chose, with its own store.
pub struct NatsServer {
    pub port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub async fn start() -> Result<NatsServer> {
        let dir = tempfile::tempdir()?;
        let store = dir.path().display().to_string();
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", &store])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("nats-server not found (Debian package nats-server)")?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            let mut port = None;
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    port = rest
                        .trim()
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok());
                }
                if line.contains("Server is ready") {
                    return port.ok_or_else(|| anyhow!("no client port in the log"));
                }
            }
            bail!("nats-server exited before it was ready")
        })
        .await
        .map_err(|_| anyhow!("nats-server not ready in 20 s"))??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(NatsServer {
            port,
            _child: child,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// A TCP relay that can cut every connection through it and refuse new ones, standing
/// in for a network partition between one hub and NATS.
pub struct Cuttable {
    pub port: u16,
    cut: watch::Sender<bool>,
}

impl Cuttable {
    pub async fn start(target: u16) -> Result<Cuttable> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, watching) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut watching = watching.clone();
                if *watching.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Cuttable { port, cut })
    }

    pub fn cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

fn cluster_args<'a>(nats_url: &'a str, node: &'a str, partitions: &'a str) -> [&'a str; 6] {
    [
        "--nats-url",
        nats_url,
        "--node-id",
        node,
        "--partitions",
        partitions,
    ]
}

async fn view(hub: &TestHub) -> Result<Value> {
    hub.expect(Method::GET, "/cluster", None, 200).await
}

/// Partition → owner, as one hub sees the leases.
async fn owners(hub: &TestHub) -> Result<BTreeMap<i64, Option<String>>> {
    let v = view(hub).await?;
    Ok(v["leases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            (
                l["partition"].as_i64().unwrap_or(-1),
                l["owner"].as_str().map(str::to_string),
            )
        })
        .collect())
}

/// Waits until every partition is owned by one of `nodes`, each of them owning some.
async fn wait_spread(hub: &TestHub, nodes: &[&str], within: Duration) -> Result<Duration> {
    let started = Instant::now();
    eventually(
        &format!("partitions spread over {nodes:?}"),
        within,
        || async {
            let owners = owners(hub).await.ok()?;
            let all_owned = owners
                .values()
                .all(|o| o.as_deref().is_some_and(|o| nodes.contains(&o)));
            let used: BTreeSet<&str> = owners.values().filter_map(|o| o.as_deref()).collect();
            (all_owned && used.len() == nodes.len()).then_some(())
        },
    )
    .await?;
    Ok(started.elapsed())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The alive hubs' MQTT ports, which the devices' balancer picks from.
type Ports = Arc<Mutex<Vec<u16>>>;
/// (device id, ts) of every message a hub acknowledged.
type Acked = Arc<Mutex<Vec<(String, i64)>>>;

fn alive(ports: &Ports) -> Vec<u16> {
    ports.lock().map(|p| p.clone()).unwrap_or_default()
}

/// Connects a device to the `n`-th alive hub, moving on while a hub refuses or is gone.
async fn connect_somewhere(creds: &DeviceCreated, ports: &Ports, n: usize) -> Result<MqttClient> {
    for attempt in 0..50 {
        let list = alive(ports);
        let port = list[(n + attempt) % list.len()];
        let u = &creds.mqtt.username;
        if let Ok(c) = mqtt_connect(port, u, u, &creds.mqtt.password).await {
            return Ok(c);
        }
        // Back-off between attempts, as a device's own reconnect does: what it waits for
        // (a hub to accept) is the attempt itself.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("device {} found no hub to connect to", creds.id)
}

/// Publishes a reading every `period` until `until`, each with its own `ts`; records the
/// ones acknowledged. A message whose PUBACK never came is not resent (its copy may be
/// stored or not); the next one goes to another hub.
async fn publish_for(
    creds: DeviceCreated,
    kind: &'static str,
    ports: Ports,
    first: usize,
    period: Duration,
    until: Instant,
    acked: Acked,
) -> Result<()> {
    let mut n = first;
    let mut mqtt = connect_somewhere(&creds, &ports, n).await?;
    let mut last_ts = 0;
    while Instant::now() < until {
        let ts = now_ms().max(last_ts + 1);
        last_ts = ts;
        let payload = match kind {
            "gps" => json!({"ts": ts, "lat": 35.7074, "lon": 139.6638, "accuracy_m": 10.0}),
            _ => json!({"ts": ts, "motion": true}),
        };
        match mqtt
            .publish_acked(&topic(&creds, kind), payload.to_string())
            .await
        {
            Ok(()) => acked
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .push((creds.id.clone(), ts)),
            Err(_) => {
                n += 1;
                mqtt = connect_somewhere(&creds, &ports, n).await?;
            }
        }
        // The device's reporting rate: load, not a wait for a condition.
        tokio::time::sleep(period).await;
    }
    Ok(())
}

/// Presses every button once, each on a hub of its own; returns each resident's new alert.
async fn press_all(
    buttons: &[(i64, DeviceCreated)],
    ports: &Ports,
    hub: &TestHub,
    not: &BTreeMap<i64, i64>,
) -> Result<BTreeMap<i64, i64>> {
    for (i, (_, button)) in buttons.iter().enumerate() {
        let mut mqtt = connect_somewhere(button, ports, i).await?;
        mqtt.publish_acked(&topic(button, "sos"), json!({"ts": now_ms()}).to_string())
            .await?;
    }
    let mut opened = BTreeMap::new();
    for (rid, _) in buttons {
        let alert = eventually(
            &format!("a new SOS alert of resident {rid}"),
            Duration::from_secs(15),
            || async {
                hub.alerts(*rid).await.ok()?.into_iter().find(|a| {
                    a["kind"] == "sos"
                        && a["state"] == "open"
                        && a["id"].as_i64() != not.get(rid).copied()
                })
            },
        )
        .await?;
        opened.insert(*rid, alert["id"].as_i64().unwrap_or(0));
    }
    Ok(opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hub_killed_under_load_loses_nothing_and_its_partitions_move_within_ten_seconds(
) -> Result<()> {
    if skip_postgres("cluster kill test") {
        return Ok(());
    }
    let nats = NatsServer::start().await?;
    let db = PgDatabase::create("mimamori_cluster").await?;
    let url = nats.url();
    let mut hubs = Vec::new();
    for node in ["hub-1", "hub-2", "hub-3"] {
        hubs.push(TestHub::start_sharing(&db.url, &cluster_args(&url, node, "8")).await?);
    }
    wait_spread(
        &hubs[0],
        &["hub-1", "hub-2", "hub-3"],
        Duration::from_secs(20),
    )
    .await?;
    let ports: Ports = Arc::new(Mutex::new(hubs.iter().map(|h| h.mqtt_port).collect()));

    // A resident whose inactivity deadline falls just after the kill.
    let quiet = hubs[0]
        .resident(json!({"name": "Sato Kiyo", "rules": {"inactivity": {
            "day_threshold_s": 30, "night_threshold_s": 30, "morning_deadline": null}}}))
        .await?;
    let quiet_pir = hubs[0].device(quiet, "motion").await?;
    let mut residents = Vec::new();
    for i in 0..10 {
        let rid = hubs[i % 3]
            .resident(json!({"name": format!("Resident {i}")}))
            .await?;
        let motion = hubs[0].device(rid, "motion").await?;
        let gps = hubs[1].device(rid, "gps").await?;
        let button = hubs[2].device(rid, "button").await?;
        residents.push((rid, motion, gps, button));
    }
    let mut pir = connect_device(&hubs[1], &quiet_pir).await?;
    let last_motion = now_ms();
    pir.publish_acked(
        &topic(&quiet_pir, "motion"),
        json!({"ts": last_motion, "motion": true}).to_string(),
    )
    .await?;
    let deadline_ms = last_motion + 30_000;

    let acked: Acked = Arc::default();
    let until = Instant::now() + Duration::from_secs(60);
    let mut load = Vec::new();
    for (i, (_, motion, gps, _)) in residents.iter().enumerate() {
        for (creds, kind, period) in [(motion, "motion", 250), (gps, "gps", 500)] {
            load.push(tokio::spawn(publish_for(
                creds.clone(),
                kind,
                ports.clone(),
                i,
                Duration::from_millis(period),
                until,
                acked.clone(),
            )));
        }
    }

    let buttons: Vec<(i64, DeviceCreated)> = residents.iter().map(|r| (r.0, r.3.clone())).collect();
    let before = press_all(&buttons, &ports, &hubs[0], &BTreeMap::new()).await?;
    for (i, (rid, alert)) in before.iter().enumerate() {
        // Resolved on any hub: the command finds the owner of the resident's partition.
        hubs[i % 3]
            .expect(
                Method::POST,
                &format!("/alerts/{alert}/resolve"),
                Some(json!({"note": "test press"})),
                200,
            )
            .await
            .with_context(|| format!("resolving resident {rid}'s alert"))?;
    }

    // Kill the owner of the quiet resident's partition five seconds before its deadline.
    let quiet_part = quiet.rem_euclid(8);
    let victim_name = owners(&hubs[0]).await?[&quiet_part]
        .clone()
        .ok_or_else(|| anyhow!("partition {quiet_part} has no owner"))?;
    let victim = ["hub-1", "hub-2", "hub-3"]
        .iter()
        .position(|n| *n == victim_name)
        .ok_or_else(|| anyhow!("unknown owner {victim_name}"))?;
    let kill_at = deadline_ms - 5_000;
    // The hubs are processes on the real clock, so the kill is scheduled on it: what the
    // test checks is the timer's lateness after a takeover, measured from its deadline.
    if let Ok(wait) = u64::try_from(kill_at - now_ms()) {
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let victim_port = hubs[victim].mqtt_port;
    ports
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .retain(|p| *p != victim_port);
    hubs[victim].kill().await?;
    let survivors: Vec<&str> = ["hub-1", "hub-2", "hub-3"]
        .into_iter()
        .filter(|n| *n != victim_name)
        .collect();
    let witness = &hubs[(victim + 1) % 3];
    let moved = wait_spread(witness, &survivors, Duration::from_secs(10)).await?;
    eprintln!("partitions of {victim_name} owned by {survivors:?} {moved:?} after the kill");

    let inactivity = witness
        .wait_alert(quiet, "inactivity", "open", Duration::from_secs(20))
        .await?;
    let late_ms = now_ms() - deadline_ms;
    assert!(
        late_ms <= 10_000,
        "inactivity alert {late_ms} ms after its deadline: {inactivity}"
    );

    let after = press_all(&buttons, &ports, witness, &before).await?;
    for (rid, load_task) in residents.iter().map(|r| r.0).zip(load) {
        load_task.await??;
        assert_ne!(before.get(&rid), after.get(&rid));
    }

    let acked = acked.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    assert!(
        acked.len() > 1000,
        "only {} messages acknowledged",
        acked.len()
    );
    let stored = eventually(
        "every acknowledged message stored",
        Duration::from_secs(30),
        || async {
            let rows = pg_rows(
                &db.url,
                "SELECT device_id, ts, COUNT(*) FROM readings GROUP BY device_id, ts",
            )
            .await
            .ok()?;
            let counts: BTreeMap<(String, i64), i64> = rows
                .iter()
                .filter_map(|r| {
                    let mut f = r.split('|');
                    Some((
                        (f.next()?.to_string(), f.next()?.parse().ok()?),
                        f.next()?.parse().ok()?,
                    ))
                })
                .collect();
            acked
                .iter()
                .all(|k| counts.contains_key(k))
                .then_some(counts)
        },
    )
    .await?;
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");

    let sos_per_resident = pg_rows(
        &db.url,
        "SELECT resident_id, COUNT(*) FROM alerts WHERE kind = 'sos' GROUP BY resident_id",
    )
    .await?;
    assert_eq!(sos_per_resident.len(), 10, "{sos_per_resident:?}");
    assert!(
        sos_per_resident.iter().all(|r| r.ends_with("|2")),
        "two presses, two alerts: {sos_per_resident:?}"
    );
    let twice = pg_rows(
        &db.url,
        "SELECT resident_id, kind, subject FROM alerts WHERE state <> 'resolved' GROUP BY 1, 2, 3 HAVING COUNT(*) > 1",
    )
    .await?;
    assert!(twice.is_empty(), "opened twice: {twice:?}");
    drop(hubs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cut_off_from_nats_hands_over_and_comes_back() -> Result<()> {
    if skip_postgres("cluster cut-off test") {
        return Ok(());
    }
    let nats = NatsServer::start().await?;
    let relay = Cuttable::start(nats.port).await?;
    let db = PgDatabase::create("mimamori_cluster").await?;
    let direct = nats.url();
    let relayed = format!("nats://127.0.0.1:{}", relay.port);
    let one = TestHub::start_sharing(&db.url, &cluster_args(&direct, "hub-1", "6")).await?;
    let two = TestHub::start_sharing(&db.url, &cluster_args(&direct, "hub-2", "6")).await?;
    let cut = TestHub::start_sharing(&db.url, &cluster_args(&relayed, "hub-3", "6")).await?;
    wait_spread(&one, &["hub-1", "hub-2", "hub-3"], Duration::from_secs(20)).await?;

    let before = view(&one).await?;
    let theirs: Vec<i64> = before["leases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|l| l["owner"] == "hub-3")
        .filter_map(|l| l["partition"].as_i64())
        .collect();
    // A resident in one of the partitions of the hub about to be cut off.
    let mut rid = one.resident(json!({"name": "Kato Fumi"})).await?;
    while !theirs.contains(&rid.rem_euclid(6)) {
        rid = one.resident(json!({"name": "Kato Fumi"})).await?;
    }
    let token_before = before["leases"][usize::try_from(rid.rem_euclid(6))?]["token"].as_i64();

    relay.cut(true);
    wait_spread(&one, &["hub-1", "hub-2"], Duration::from_secs(10)).await?;
    let after = view(&one).await?;
    let token_after = after["leases"][usize::try_from(rid.rem_euclid(6))?]["token"].as_i64();
    assert!(
        token_after > token_before,
        "a takeover raises the token: {token_before:?} → {token_after:?}"
    );
    let status = cut.http.get(cut.url("/healthz")).send().await?.status();
    assert_eq!(
        status.as_u16(),
        503,
        "a hub without NATS says so to its balancer"
    );
    eventually(
        "the cut-off hub owning nothing",
        Duration::from_secs(5),
        || async {
            (cut.metric("mimamori_cluster_partitions_owned").await.ok()? == 0.0).then_some(())
        },
    )
    .await?;

    let button = one.device(rid, "button").await?;
    let mut mqtt = connect_device(&two, &button).await?;
    mqtt.publish_acked(&topic(&button, "sos"), json!({"ts": now_ms()}).to_string())
        .await?;
    one.wait_alert(rid, "sos", "open", Duration::from_secs(10))
        .await?;

    relay.cut(false);
    wait_spread(&one, &["hub-1", "hub-2", "hub-3"], Duration::from_secs(20)).await?;
    let status = cut.http.get(cut.url("/healthz")).send().await?.status();
    assert_eq!(status.as_u16(), 200);
    Ok(())
}

/// The fence itself: once a partition changed hands, a commit under the old token is
/// refused whole, and one under the new token goes through.
#[tokio::test]
async fn a_commit_under_a_superseded_lease_is_refused() -> Result<()> {
    use hub::store::cluster::LeaseStore;
    use hub::store::{Batch, Fence, RejectedRow, StoreError};
    if skip_postgres("fence test") {
        return Ok(());
    }
    let db = PgDatabase::create("mimamori_fence").await?;
    let store = hub::store::connect(&db.url).await?;
    let leases = LeaseStore::connect(&db.url).await?;
    leases.ensure_partitions(4).await?;
    let old = leases
        .claim(2, "hub-a", Duration::ZERO)
        .await?
        .ok_or_else(|| anyhow!("a free partition is granted"))?;
    let batch = |owner: &str, token: i64, seq: u64| Batch {
        rejected: vec![RejectedRow {
            received_at: chrono::Utc::now(),
            device_id: None,
            topic: format!("fence/{token}"),
            reason: mimamori_protocol::native::RejectReason::NotJson,
            detail: "fence test".into(),
            payload: String::new(),
        }],
        at: chrono::Utc::now(),
        fence: Some(Fence {
            partition: 2,
            owner: owner.into(),
            token,
            applied_seq: seq,
        }),
        ..Batch::default()
    };
    store.commit_batch(&batch("hub-a", old.token, 10)).await?;
    // The lease ran out (a zero-length lease), so another hub takes the partition over.
    let new = eventually(
        "the expired lease taken over",
        Duration::from_secs(5),
        || async {
            leases
                .claim(2, "hub-b", Duration::from_secs(30))
                .await
                .ok()
                .flatten()
        },
    )
    .await?;
    assert!(new.token > old.token);
    assert_eq!(
        new.applied_seq, 10,
        "the new owner reads on from the old one's last commit"
    );
    let late = store.commit_batch(&batch("hub-a", old.token, 11)).await;
    assert!(matches!(late, Err(StoreError::Fenced(2))), "{late:?}");
    store.commit_batch(&batch("hub-b", new.token, 12)).await?;
    let kept = pg_rows(&db.url, "SELECT topic FROM rejected ORDER BY id").await?;
    assert_eq!(
        kept,
        vec![
            format!("fence/{}", old.token),
            format!("fence/{}", new.token)
        ]
    );
    assert!(
        leases.claim(2, "hub-a", Duration::ZERO).await?.is_none(),
        "a live lease is not taken"
    );
    Ok(())
}

/// Two cluster hubs on a NATS server and a fresh database of their own; the hubs stop
/// before the database and the server do (fields drop in order).
struct TwoHubs {
    one: TestHub,
    two: TestHub,
    db: PgDatabase,
    nats: NatsServer,
}

async fn two_hubs() -> Result<TwoHubs> {
    let nats = NatsServer::start().await?;
    let db = PgDatabase::create("mimamori_cluster").await?;
    let url = nats.url();
    let one = TestHub::start_sharing(&db.url, &cluster_args(&url, "hub-1", "4")).await?;
    let two = TestHub::start_sharing(&db.url, &cluster_args(&url, "hub-2", "4")).await?;
    wait_spread(&one, &["hub-1", "hub-2"], Duration::from_secs(20)).await?;
    Ok(TwoHubs { one, two, db, nats })
}

async fn start_node(db: &PgDatabase, flags: &[String]) -> Result<TestHub> {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestHub::start_sharing(&db.url, &args).await
}

fn seq(frame: &Value) -> u64 {
    frame["seq"].as_u64().unwrap_or(0)
}

fn is_fix_at(frame: &Value, lat: f64) -> bool {
    frame["type"] == "position" && frame["lat"].as_f64() == Some(lat)
}

/// `since` numbers frames by the live stream, the same on every hub: a client that
/// watched hub 1 and lost its connection resumes on hub 2, or on hub 3 started after it
/// left, and gets exactly the frames it missed (none twice, none lost), then live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_hub_with_exactly_the_frames_it_missed() -> Result<()> {
    use crate::ws::WsClient;
    if skip_postgres("cluster since test") {
        return Ok(());
    }
    let hubs = two_hubs().await?;
    let (one, two) = (&hubs.one, &hubs.two);
    let rid = one.resident(json!({"name": "Ito Kiyo"})).await?;
    let tracker = one.device(rid, "gps").await?;
    let button = one.device(rid, "button").await?;
    let mut gps_dev = connect_device(two, &tracker).await?;
    let mut button_dev = connect_device(one, &button).await?;
    let fix = |lat: f64| json!({"lat": lat, "lon": 139.6638, "accuracy_m": 10.0}).to_string();

    let mut steady = WsClient::connect(two, &two.admin_token, None).await?;
    let mut leaving = WsClient::connect(one, &one.admin_token, None).await?;
    assert_eq!(steady.next().await?["type"], "snapshot");
    assert_eq!(leaving.next().await?["type"], "snapshot");
    gps_dev
        .publish_acked(&topic(&tracker, "gps"), fix(35.1))
        .await?;
    let seen = leaving
        .until("the first fix", |f| is_fix_at(f, 35.1))
        .await?;
    let since = seq(&seen);
    leaving.close().await?;

    button_dev
        .publish_acked(&topic(&button, "sos"), "{}")
        .await?;
    for lat in [35.2, 35.3] {
        gps_dev
            .publish_acked(&topic(&tracker, "gps"), fix(lat))
            .await?;
    }
    // What the client on the other hub received after `since`, up to the last fix: what
    // the leaving client missed.
    let mut missed = Vec::new();
    loop {
        let f = steady.next().await?;
        if seq(&f) <= since {
            continue;
        }
        let last = is_fix_at(&f, 35.3);
        missed.push(f);
        if last {
            break;
        }
    }
    assert!(
        missed.iter().any(|f| f["type"] == "alert"),
        "the SOS alert is among the missed frames: {missed:?}"
    );
    let seqs: Vec<u64> = missed.iter().map(seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs.first() == Some(&(since + 1)),
        "the stream's numbers have no gaps: {seqs:?}"
    );

    let mut back = WsClient::connect(two, &two.admin_token, Some(since)).await?;
    let mut replayed = Vec::new();
    for _ in 0..missed.len() {
        replayed.push(back.next().await?);
    }
    assert_eq!(replayed, missed, "resumed on hub-2: replay differs");
    gps_dev
        .publish_acked(&topic(&tracker, "gps"), fix(35.4))
        .await?;
    let live = steady.until("the next fix", |f| is_fix_at(f, 35.4)).await?;
    let after = back.until("the next fix", |f| is_fix_at(f, 35.4)).await?;
    assert_eq!(after, live, "after the replay the stream goes on live");

    // A hub that started after the client left has none of it in memory: it reads the
    // missed frames from the stream.
    let url = hubs.nats.url();
    let three = TestHub::start_sharing(&hubs.db.url, &cluster_args(&url, "hub-3", "4")).await?;
    let mut late = WsClient::connect(&three, &three.admin_token, Some(since)).await?;
    let mut replayed = Vec::new();
    for _ in 0..missed.len() {
        replayed.push(late.next().await?);
    }
    assert_eq!(
        replayed, missed,
        "resumed on a hub started later: replay differs"
    );
    let first_after = late.next().await?;
    assert_eq!(
        seq(&first_after),
        seq(missed.last().unwrap_or(&Value::Null)) + 1,
        "then the frames after them, none twice: {first_after}"
    );
    Ok(())
}

/// A Zigbee2MQTT mapping registered through hub 1 is in force on hub 2's edge, where
/// the gateway was already connected; deleting the device there unmaps it on hub 2 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_mapping_made_through_one_hub_maps_messages_on_another() -> Result<()> {
    use crate::gateways::{doc_example, WAIT};
    if skip_postgres("cluster gateway map test") {
        return Ok(());
    }
    let hubs = two_hubs().await?;
    let (one, two) = (&hubs.one, &hubs.two);
    let rid = one.resident(json!({"name": "Suzuki Hana"})).await?;
    let gw = one.device(rid, "gateway").await?;
    let motion = one.device(rid, "motion").await?;
    let z2m = tokio::sync::Mutex::new(connect_device(two, &gw).await?);
    let occupancy = format!("zigbee2mqtt/{}/bedroom motion", gw.id);
    let publish = |payload: String| {
        let (z2m, occupancy) = (&z2m, &occupancy);
        async move { z2m.lock().await.publish_acked(occupancy, payload).await }
    };

    let map = doc_example("z2m-map")?.replace("MOTION_DEVICE_ID", &motion.id);
    one.expect(
        Method::POST,
        &format!("/devices/{}/zigbee", gw.id),
        Some(serde_json::from_str(&map)?),
        201,
    )
    .await?;
    // Hub 2 hears of the change a moment after hub 1 answered: the gateway publishes as
    // it would, each message a new one, until one is mapped.
    let mapped = eventually("a message through hub 2 mapped", WAIT, || async {
        publish(doc_example("z2m-occupancy").ok()?).await.ok()?;
        let readings = two.readings(rid).await.ok()?;
        readings
            .into_iter()
            .find(|r| r["device_id"] == motion.id.as_str())
    })
    .await?;
    // A repeated `occupancy: true` is a heartbeat of the sensor, not new movement.
    assert_eq!(mapped["battery"], 100, "{mapped}");

    one.expect(
        Method::DELETE,
        &format!("/devices/{}", motion.id),
        None,
        204,
    )
    .await?;
    let marked = doc_example("z2m-occupancy")?.replacen('{', r#"{"note":"after the deletion","#, 1);
    eventually("the deleted device unmapped on hub 2", WAIT, || async {
        publish(marked.clone()).await.ok()?;
        let dead = one.expect(Method::GET, "/rejected", None, 200).await.ok()?;
        dead.as_array()?
            .iter()
            .any(|r| {
                r["reason"] == "unknown_device"
                    && r["payload"]
                        .as_str()
                        .is_some_and(|p| p.contains("after the deletion"))
            })
            .then_some(())
    })
    .await?;
    Ok(())
}

/// Whether a hub runs a once-per-installation job now.
async fn runs(hub: &TestHub, job: &str) -> Result<bool> {
    Ok(hub
        .metric(&format!("mimamori_job_running{{job=\"{job}\"}}"))
        .await?
        == 1.0)
}

/// How many clients of the hubs connected to the stand-in The Things Stack so far.
fn tts_connections(server: &crate::lorawan::Mosquitto) -> usize {
    server
        .log()
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(" as mimamori-"))
        .count()
}

/// The client of The Things Stack and the retention job run on one hub of the cluster at
/// a time: with two hubs, one client connects and an uplink is stored once; when its hub
/// is killed, the other hub takes both jobs over and the next uplink comes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tts_client_and_retention_run_on_one_hub_and_move_when_it_dies() -> Result<()> {
    use crate::gateways::{doc_example, WAIT};
    use crate::lorawan::Mosquitto;
    use crate::tts::{pir_uplink, publish_uplink, resident_with_pir, tts_flags};
    if skip_postgres("cluster singleton test") {
        return Ok(());
    }
    let nats = NatsServer::start().await?;
    let db = PgDatabase::create("mimamori_cluster").await?;
    let server = Mosquitto::start("").await?;
    let url = nats.url();
    let flags = |node: &'static str| -> Result<Vec<String>> {
        let mut f: Vec<String> = cluster_args(&url, node, "4").map(String::from).to_vec();
        f.extend(tts_flags(server.port)?);
        Ok(f)
    };
    let mut one = start_node(&db, &flags("hub-1")?).await?;
    eventually("hub-1 running both jobs", WAIT, || async {
        (runs(&one, "tts").await.ok()? && runs(&one, "retention").await.ok()?).then_some(())
    })
    .await?;
    let two = start_node(&db, &flags("hub-2")?).await?;
    // Hub 2 has run lease rounds by the time it owns partitions: the jobs were not free.
    wait_spread(&one, &["hub-1", "hub-2"], Duration::from_secs(20)).await?;
    assert!(!runs(&two, "tts").await? && !runs(&two, "retention").await?);
    retention_pass_through(&two, "hub-1").await?;
    let jobs = view(&two).await?["jobs"].clone();
    assert_eq!(
        jobs.as_array()
            .map(|j| j.iter().filter(|j| j["owner"] == "hub-1").count()),
        Some(2),
        "{jobs}"
    );

    let (rid, pir) = resident_with_pir(&two).await?;
    let of_pir = |kind: &'static str| {
        let (two, pir) = (&two, &pir);
        async move {
            let all = two.readings(rid).await.ok()?;
            let n = all
                .iter()
                .filter(|r| r["device_id"] == pir.id.as_str() && r["kind"] == kind)
                .count();
            (n > 0).then_some(n)
        }
    };
    publish_uplink(&server, doc_example("tts-uplink")?).await?;
    let stored = eventually("the uplink stored", WAIT, || of_pir("heartbeat")).await?;
    assert_eq!(stored, 1, "one client, one copy of the uplink");
    assert_eq!(tts_connections(&server), 1, "{}", server.log());

    one.kill().await?;
    eventually("hub-2 running both jobs", WAIT, || async {
        (runs(&two, "tts").await.ok()? && runs(&two, "retention").await.ok()?).then_some(())
    })
    .await?;
    publish_uplink(&server, pir_uplink()?).await?;
    eventually("an uplink through hub-2", WAIT, || of_pir("motion")).await?;
    assert_eq!(tts_connections(&server), 2, "{}", server.log());
    retention_pass_through(&two, "hub-2").await?;
    Ok(())
}

/// `POST /retention/run` and `GET /retention` on `hub` reach the retention job on the hub
/// that holds its lease, `holder`: the pass asked for runs there and is seen done here.
async fn retention_pass_through(hub: &TestHub, holder: &str) -> Result<()> {
    let (asked, status) = crate::privacy::retention_pass(hub, crate::gateways::WAIT).await?;
    assert_eq!(asked["node"], holder, "{asked}");
    assert_eq!(status["node"], holder, "{status}");
    assert!(status["last"]["error"].is_null(), "{status}");
    Ok(())
}
