//! Delivery inside a case: the Khala sync server and the client lanes of
//! every (surface, user), driven step by step and observed after each step.
//!
//! Nothing runs until a case's first delivery step (flags, rollout,
//! retention, reconnects, restarts), or its first step when it starts with
//! a flag on, so other cases pay nothing; a lane started then replays the
//! whole journal, exactly what a lane connected since the first step would
//! have received, since no retention can have run before.
//!
//! The web and mobile lanes are the `khala-clients` models (the web store in
//! memory, mobile's persisted to a file). Their legacy read path, the
//! runtime API the screens poll, is the hydration list of the read model
//! (`HydrationReadPath`). The desktop has no Khala subscription at the
//! modelled commit (spec §9.1): its flag only chooses the provider its
//! connectivity probe targets, which is all it shows.
//!
//! Determinism: the server gets wake-ups from the harness, after each step
//! has committed, rather than from the runtime (whose legacy B11 wake
//! inside the transaction makes delivery timing-dependent; B11 is not
//! played here). Settling a lane awaits the journal head, which every
//! subscribed lane reaches, so nothing waits on time.

use crate::model::case::ClientUser;
use crate::model::case::{Start, Step, Surface};
use crate::model::observation::{Observation, document_seq};
use crate::model::trace::{
    CachedDocument, ClientsObservation, DeliveryRun, JournalStamp, LaneObservation, LaneSource,
    RetentionRun, SubscribeAttempt, TopicTruth,
};
use crate::oracle::Oracle;
use crate::play::error::DriverError;
use chrono::{NaiveDateTime, TimeDelta};
use khala_clients::lane::WORKER_TOPIC;
use khala_clients::{
    ClientError, ClientLane, ClientSwitches, HydrationReadPath, LaneConfig, LegacyReadPath,
    MemoryWatermarkStore, PersistedWatermarkStore, TokenSource, WatermarkStore,
};
use khala_runtime::Profile;
use khala_runtime::clock::{Clock, ManualClock};
use khala_runtime::notifier::{Notifier, StreamWake};
use khala_runtime::sync::jwt::{DEFAULT_KEY_ID, IssuerConfig, TokenIssuer};
use khala_runtime::sync::server::WEBSOCKET_PATH;
use khala_runtime::sync::{SyncConfig, SyncServer, SyncServerHandle};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// How long a lane waits for one frame before the case's result is
/// unknown: a bound on failure, never a delay.
const LANE_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The surfaces with a document view (the desktop has none, spec §9.1).
const VIEW_SURFACES: [Surface; 2] = [Surface::Web, Surface::Mobile];

/// The sync server and clients of one case.
#[derive(Debug)]
pub struct Delivery {
    profile: Profile,
    /// Start at the first step: the case starts with some flag on.
    eager: bool,
    pool: PgPool,
    clock: Arc<ManualClock>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    config: SyncConfig,
    server: Option<SyncServerHandle>,
    notifier: Notifier,
    issuer: Arc<TokenIssuer>,
    /// One HTTP client for every lane of the case.
    http: reqwest::Client,
    lanes: Vec<Lane>,
    offline: BTreeSet<Surface>,
    truth: BTreeMap<String, TopicTruth>,
    /// The worker topic's allocated head the server was last woken for.
    woken_head: i64,
    retention: Option<RetentionRun>,
    /// Holds the mobile lanes' watermark files.
    _stores: tempfile::TempDir,
    _live: Live,
}

/// The sync servers (each with its case's client lanes) started in this
/// process and not yet stopped and dropped.
static LIVE_SYNC_SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many cases' sync servers and client lanes are still up in this
/// process: 0 between cases, or one of them outlived its case.
pub fn live_sync_servers() -> usize {
    LIVE_SYNC_SERVERS.load(std::sync::atomic::Ordering::SeqCst)
}

/// Counts one `Running` in `LIVE_SYNC_SERVERS` for as long as it exists.
#[derive(Debug)]
struct Live;

impl Live {
    fn new() -> Self {
        LIVE_SYNC_SERVERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_SYNC_SERVERS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Lane {
    surface: Surface,
    user: ClientUser,
    lane: ClientLane,
    store: Arc<dyn WatermarkStore>,
    /// Reconnect (Khala) or poll (legacy) at the next settle.
    resume: bool,
    /// The worker topic's allocated head at the lane's last poll.
    polled_head: Option<i64>,
    deliveries: Vec<DeliveryRun>,
    subscribes: Vec<SubscribeAttempt>,
}

/// Something a lane is told to do.
#[derive(Clone, Copy, Debug)]
enum Op {
    Start,
    SetFlag(bool),
    Reconnect,
    Disconnect,
    AwaitWatermark(i64),
    Poll,
    Tick,
}

impl Lane {
    /// Runs `op` and records the subscribes and deliveries it caused.
    async fn run(&mut self, op: Op, truth: TopicTruth) -> Result<(), ClientError> {
        let stored = self.store.load(WORKER_TOPIC).map_err(|error| ClientError {
            surface: self.lane.surface(),
            step: "load the stored watermark".to_owned(),
            kind: error.into(),
        })?;
        let before = self.lane.stats().clone();
        match op {
            Op::Start => self.lane.start().await?,
            Op::SetFlag(on) => self.lane.set_flag(on).await?,
            Op::Reconnect => self.lane.reconnect().await?,
            Op::Disconnect => self.lane.disconnect().await,
            Op::AwaitWatermark(target) => {
                if self.lane.watermark(WORKER_TOPIC).unwrap_or(0) < target {
                    self.lane.await_watermark(WORKER_TOPIC, target).await?;
                }
            }
            Op::Poll => {
                self.lane.poll().await?;
            }
            Op::Tick => self.lane.tick().await?,
        }
        let after = self.lane.stats();
        if after.joins > before.joins {
            self.subscribes.push(SubscribeAttempt {
                cursor: stored,
                stale: after.stale_cursors > before.stale_cursors,
                floor: truth.pruned_through,
                head: truth.allocated_head,
            });
        }
        let watermarks: Vec<i64> = after.delivered
            [before.delivered.len().min(after.delivered.len())..]
            .iter()
            .filter(|(topic, _)| topic == WORKER_TOPIC)
            .map(|(_, watermark)| *watermark)
            .collect();
        if !watermarks.is_empty() {
            self.deliveries.push(DeliveryRun {
                from: stored,
                // A snapshot batch (hardened B10) resets the watermark to
                // the retention floor as an HTTP reload does.
                rehydrated: after.http_reloads > before.http_reloads
                    || after.snapshots > before.snapshots,
                watermarks,
            });
        }
        Ok(())
    }

    fn observe(&mut self, online: bool, read_model: &Observation) -> LaneObservation {
        let rows = self.lane.rows();
        let view = rows
            .iter()
            .map(|(doc_key, row)| {
                let seq = document_seq(&row.payload).unwrap_or(row.doc_version);
                (doc_key.clone(), seq)
            })
            .collect();
        let keys: BTreeSet<&String> = rows
            .keys()
            .chain(read_model.khala.keys().filter(|key| is_worker_doc(key)))
            .collect();
        let cache = keys
            .into_iter()
            .filter_map(|key| {
                self.lane.cached(key).map(|doc| {
                    let cached = CachedDocument {
                        doc_version: doc.doc_version,
                        payload: doc.payload.clone(),
                    };
                    (key.clone(), cached)
                })
            })
            .collect();
        LaneObservation {
            surface: self.surface,
            user: self.user,
            source: if self.lane.flag() {
                LaneSource::Khala
            } else {
                LaneSource::Polling
            },
            online,
            watermark: self.lane.watermark(WORKER_TOPIC),
            view,
            documents: self.lane.view(),
            cache,
            deliveries: std::mem::take(&mut self.deliveries),
            subscribes: std::mem::take(&mut self.subscribes),
        }
    }
}

fn is_worker_doc(doc_key: &str) -> bool {
    doc_key.starts_with("runtime/codex_worker_summary:")
}

/// The user id each client user's tokens carry.
fn user_id(user: ClientUser) -> i64 {
    match user {
        ClientUser::Internal => 1,
        ClientUser::Early => 2,
        ClientUser::Broad => 3,
        ClientUser::Rest => 4,
    }
}

fn failed(step: usize, error: impl std::error::Error + Send + Sync + 'static) -> DriverError {
    DriverError::Delivery {
        step,
        source: Box::new(error),
    }
}

fn sql_failed(step: usize) -> impl FnOnce(sqlx::Error) -> DriverError {
    move |error| DriverError::Postgres {
        step,
        source: Box::new(error),
    }
}

impl Delivery {
    pub fn new(profile: Profile, start: &Start, pool: PgPool, clock: Arc<ManualClock>) -> Self {
        Delivery {
            profile,
            eager: !start.flags.all_off() || start.rollout_stage.is_some(),
            pool,
            clock,
            running: None,
        }
    }

    /// Plays one delivery step (starting the server and lanes first if this
    /// is the case's first). `oracle` is the state before the step. Flag
    /// changes are made by `settle`, which follows the oracle.
    pub async fn apply(
        &mut self,
        step: &Step,
        index: usize,
        oracle: &Oracle,
    ) -> Result<(), DriverError> {
        self.start(index, oracle).await?;
        let pool = self.pool.clone();
        let clock = self.clock.clone();
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        running.truth = read_truth(&pool, &running.truth, index).await?;
        match step {
            Step::RunRetention => running.retain(&pool, &clock, index).await?,
            Step::DisconnectClient { surface } => {
                running.offline.insert(*surface);
                let truth = running.worker_truth();
                for lane in running
                    .lanes
                    .iter_mut()
                    .filter(|lane| lane.surface == *surface)
                {
                    lane.run(Op::Disconnect, truth)
                        .await
                        .map_err(|error| failed(index, error))?;
                    lane.resume = false;
                }
            }
            Step::ReconnectClient { surface } => {
                running.offline.remove(surface);
                for lane in running
                    .lanes
                    .iter_mut()
                    .filter(|lane| lane.surface == *surface)
                {
                    lane.resume = true;
                }
            }
            Step::RestartSyncServer => running.restart(&pool, &clock, index).await?,
            _ => {}
        }
        Ok(())
    }

    async fn start(&mut self, index: usize, oracle: &Oracle) -> Result<(), DriverError> {
        if self.running.is_some() {
            return Ok(());
        }
        let config = SyncConfig::new(self.profile);
        let notifier = Notifier::new();
        let clock: Arc<dyn Clock> = self.clock.clone();
        let server = SyncServer::start(config.clone(), self.pool.clone(), notifier.clone(), clock)
            .await
            .map_err(|error| failed(index, error))?;
        // Restarts bind the same address, so the lanes' URLs stay valid.
        let config = SyncConfig {
            listen: server.addr(),
            ..config
        };
        let issuer = Arc::new(TokenIssuer::new(IssuerConfig::matching(
            &config.auth,
            DEFAULT_KEY_ID,
        )));
        let stores = tempfile::tempdir().map_err(|error| failed(index, error))?;
        let truth = read_truth(&self.pool, &BTreeMap::new(), index).await?;
        let mut running = Running {
            config,
            server: Some(server),
            notifier,
            issuer,
            http: reqwest::Client::new(),
            lanes: Vec::new(),
            offline: BTreeSet::new(),
            truth,
            woken_head: 0,
            retention: None,
            _stores: stores,
            _live: Live::new(),
        };
        running.woken_head = running.worker_truth().allocated_head;
        for surface in VIEW_SURFACES {
            for user in ClientUser::ALL {
                let mut lane = running.new_lane(
                    surface,
                    user,
                    oracle.flag(surface, user),
                    self.profile,
                    &self.clock,
                    index,
                )?;
                lane.polled_head =
                    (!lane.lane.flag()).then_some(running.worker_truth().allocated_head);
                running.lanes.push(lane);
            }
        }
        let truth = running.worker_truth();
        let starting = running
            .lanes
            .iter_mut()
            .map(|lane| lane.run(Op::Start, truth));
        futures::future::try_join_all(starting)
            .await
            .map_err(|error| failed(index, error))?;
        self.running = Some(running);
        Ok(())
    }

    /// Brings every lane up to date after a step (after the oracle applied
    /// it): heals reconnect offline surfaces, flags follow the oracle, the
    /// server is woken for what the step committed, Khala lanes await the
    /// journal head, polling lanes poll when the read model moved. Returns
    /// the clients' observation, or `None` before the first delivery step.
    pub async fn settle(
        &mut self,
        step: &Step,
        index: usize,
        oracle: &Oracle,
        current: &Observation,
    ) -> Result<Option<ClientsObservation>, DriverError> {
        if self.eager {
            self.start(index, oracle).await?;
        }
        let pool = self.pool.clone();
        let Some(running) = self.running.as_mut() else {
            return Ok(None);
        };
        running.truth = read_truth(&pool, &running.truth, index).await?;
        let healed = matches!(step, Step::Heal | Step::Quiesce);
        if healed {
            for surface in std::mem::take(&mut running.offline) {
                for lane in running
                    .lanes
                    .iter_mut()
                    .filter(|lane| lane.surface == surface)
                {
                    lane.resume = true;
                }
            }
        }
        let truth = running.worker_truth();
        if truth.allocated_head != running.woken_head {
            running.woken_head = truth.allocated_head;
            running.notifier.wake(StreamWake {
                topic: WORKER_TOPIC.to_owned(),
                watermark: truth.allocated_head,
            });
        }
        // Quiescence lets time pass: mobile's 12 s runtime-API refresh runs
        // even with its flag on.
        let refresh = matches!(step, Step::Quiesce);
        // Lanes are independent: they settle concurrently, each to a state
        // that does not depend on the interleaving.
        let offline = &running.offline;
        let settling = running
            .lanes
            .iter_mut()
            .filter(|lane| !offline.contains(&lane.surface))
            .map(|lane| {
                let flag = oracle.flag(lane.surface, lane.user);
                settle_lane(lane, flag, truth, refresh)
            });
        futures::future::try_join_all(settling)
            .await
            .map_err(|error| failed(index, error))?;
        Ok(Some(running.observe(oracle, current)))
    }

    /// Stops the server and drops every lane.
    pub async fn finish(&mut self) {
        if let Some(mut running) = self.running.take() {
            for lane in &mut running.lanes {
                lane.lane.disconnect().await;
            }
            if let Some(server) = running.server.take() {
                let _stopped_with_the_case = server.shutdown().await;
            }
        }
    }
}

async fn settle_lane(
    lane: &mut Lane,
    flag: bool,
    truth: TopicTruth,
    refresh: bool,
) -> Result<(), ClientError> {
    let resume = std::mem::take(&mut lane.resume);
    if lane.lane.flag() != flag {
        lane.run(Op::SetFlag(flag), truth).await?;
        if !flag {
            lane.polled_head = Some(truth.allocated_head);
        }
    } else if resume && flag {
        lane.run(Op::Reconnect, truth).await?;
    }
    if lane.lane.flag() {
        lane.run(Op::AwaitWatermark(truth.journal_head), truth)
            .await?;
        if refresh && lane.surface == Surface::Mobile {
            lane.run(Op::Poll, truth).await?;
        }
    } else if resume || refresh || lane.polled_head != Some(truth.allocated_head) {
        lane.run(Op::Poll, truth).await?;
        lane.polled_head = Some(truth.allocated_head);
    }
    Ok(())
}

impl Running {
    fn worker_truth(&self) -> TopicTruth {
        self.truth.get(WORKER_TOPIC).copied().unwrap_or_default()
    }

    fn new_lane(
        &self,
        surface: Surface,
        user: ClientUser,
        flag: bool,
        profile: Profile,
        clock: &Arc<ManualClock>,
        index: usize,
    ) -> Result<Lane, DriverError> {
        let server = self.server.as_ref().ok_or_else(|| {
            failed(
                index,
                std::io::Error::other("the sync server is not running"),
            )
        })?;
        let websocket_url = server.http_url(WEBSOCKET_PATH).replace("http://", "ws://");
        let http_base = server.http_url("");
        let issuer = self.issuer.clone();
        let token_clock = clock.clone();
        let id = user_id(user);
        let tokens: Arc<dyn TokenSource> = Arc::new(move || {
            issuer
                .issue(id, &[WORKER_TOPIC.to_owned()], token_clock.now())
                .map(|issued| issued.token)
                .map_err(|error| error.to_string())
        });
        let legacy: Arc<dyn LegacyReadPath> = Arc::new(HydrationReadPath::with_http_client(
            &http_base,
            WORKER_TOPIC,
            tokens.clone(),
            self.http.clone(),
        ));
        let store: Arc<dyn WatermarkStore> = match surface {
            Surface::Mobile | Surface::Desktop => {
                let directory =
                    self._stores
                        .path()
                        .join(format!("{}-{}", surface.as_str(), user.as_str()));
                std::fs::create_dir_all(&directory).map_err(|error| failed(index, error))?;
                Arc::new(PersistedWatermarkStore::new(&directory))
            }
            Surface::Web => Arc::new(MemoryWatermarkStore::new()),
        };
        let mut config = LaneConfig::new(
            surface,
            ClientSwitches::new(profile),
            &websocket_url,
            &http_base,
        );
        config.frame_timeout = LANE_FRAME_TIMEOUT;
        Ok(Lane {
            surface,
            user,
            lane: ClientLane::with_http_client(
                config,
                flag,
                tokens,
                store.clone(),
                legacy,
                self.http.clone(),
            ),
            store,
            resume: false,
            polled_head: None,
            deliveries: Vec::new(),
            subscribes: Vec::new(),
        })
    }

    /// `RunRetention`: the clock jumps a horizon (and a second) ahead, so
    /// every row inserted so far is older than the cutoff, and the job runs
    /// at once; then the surfaces' timers that ran meanwhile fire (hardened
    /// lanes heartbeat, polling lanes and mobile's refresh poll).
    async fn retain(
        &mut self,
        pool: &PgPool,
        clock: &Arc<ManualClock>,
        index: usize,
    ) -> Result<(), DriverError> {
        let before = read_stamps(pool, index).await?;
        let horizon = TimeDelta::seconds(self.config.retention_horizon_seconds);
        clock.advance(horizon + TimeDelta::seconds(1));
        let server = self.server.as_ref().ok_or_else(|| {
            failed(
                index,
                std::io::Error::other("the sync server is not running"),
            )
        })?;
        let result = server
            .run_retention_once()
            .await
            .map_err(|error| failed(index, error))?;
        let after = read_stamps(pool, index).await?;
        let kept: BTreeSet<(&str, i64)> = after
            .iter()
            .map(|stamp| (stamp.topic.as_str(), stamp.watermark))
            .collect();
        for stamp in &before {
            if !kept.contains(&(stamp.topic.as_str(), stamp.watermark)) {
                let truth = self.truth.entry(stamp.topic.clone()).or_default();
                truth.pruned_through = truth.pruned_through.max(stamp.watermark);
            }
        }
        self.retention = Some(RetentionRun {
            cutoff: result.cutoff,
            deleted: result.deleted,
            oldest_retained: result.oldest_retained,
            before,
            after,
        });
        self.truth = read_truth(pool, &self.truth, index).await?;
        let truth = self.worker_truth();
        let offline = &self.offline;
        let timers = self
            .lanes
            .iter_mut()
            .filter(|lane| !offline.contains(&lane.surface))
            .map(|lane| async move {
                if lane.lane.flag() {
                    lane.run(Op::Tick, truth).await?;
                }
                if !lane.lane.flag() || lane.surface == Surface::Mobile {
                    lane.run(Op::Poll, truth).await?;
                    lane.polled_head = Some(truth.allocated_head);
                }
                Ok::<(), ClientError>(())
            });
        futures::future::try_join_all(timers)
            .await
            .map_err(|error| failed(index, error))?;
        Ok(())
    }

    /// `RestartSyncServer`: every socket drops; a new server comes up on the
    /// same address; lanes reconnect from their stored watermarks (the web's
    /// in-memory store lives as long as the page, which does not reload).
    async fn restart(
        &mut self,
        pool: &PgPool,
        clock: &Arc<ManualClock>,
        index: usize,
    ) -> Result<(), DriverError> {
        if let Some(server) = self.server.take() {
            server
                .shutdown()
                .await
                .map_err(|error| failed(index, error))?;
        }
        let clock: Arc<dyn Clock> = clock.clone();
        let server = SyncServer::start(
            self.config.clone(),
            pool.clone(),
            self.notifier.clone(),
            clock,
        )
        .await
        .map_err(|error| failed(index, error))?;
        self.server = Some(server);
        for lane in &mut self.lanes {
            if lane.lane.flag() {
                lane.resume = true;
            }
        }
        Ok(())
    }

    fn observe(&mut self, oracle: &Oracle, current: &Observation) -> ClientsObservation {
        let offline = self.offline.clone();
        let lanes = self
            .lanes
            .iter_mut()
            .map(|lane| {
                let online = !offline.contains(&lane.surface);
                lane.observe(online, current)
            })
            .collect();
        let desktop = ClientUser::ALL
            .into_iter()
            .map(|user| {
                let provider = if oracle.flag(Surface::Desktop, user) {
                    "khala"
                } else {
                    "convex"
                };
                (user, provider)
            })
            .collect();
        ClientsObservation {
            lanes,
            desktop,
            topics: self.truth.clone(),
            retention: self.retention.take(),
        }
    }
}

/// Every topic's allocated and journal heads, keeping the pruned-through
/// watermarks tracked so far.
async fn read_truth(
    pool: &PgPool,
    previous: &BTreeMap<String, TopicTruth>,
    index: usize,
) -> Result<BTreeMap<String, TopicTruth>, DriverError> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT s.topic, s.next_watermark, \
                COALESCE((SELECT MAX(e.watermark) FROM runtime.sync_stream_events e WHERE e.topic = s.topic), 0)::bigint \
         FROM runtime.sync_topic_sequences s ORDER BY s.topic",
    )
    .fetch_all(pool)
    .await
    .map_err(sql_failed(index))?;
    Ok(rows
        .into_iter()
        .map(|(topic, allocated_head, journal_head)| {
            let pruned_through = previous.get(&topic).map_or(0, |truth| truth.pruned_through);
            let truth = TopicTruth {
                allocated_head,
                journal_head,
                pruned_through,
            };
            (topic, truth)
        })
        .collect())
}

async fn read_stamps(pool: &PgPool, index: usize) -> Result<Vec<JournalStamp>, DriverError> {
    let rows: Vec<(String, i64, NaiveDateTime)> = sqlx::query_as(
        "SELECT topic, watermark, inserted_at FROM runtime.sync_stream_events ORDER BY topic, watermark",
    )
    .fetch_all(pool)
    .await
    .map_err(sql_failed(index))?;
    Ok(rows
        .into_iter()
        .map(|(topic, watermark, inserted_at)| JournalStamp {
            topic,
            watermark,
            inserted_at,
        })
        .collect())
}
