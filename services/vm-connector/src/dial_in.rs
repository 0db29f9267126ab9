//! The `dial_in` strategy: a VM that cannot be reached dials in with `vm-agent daemon`, holds a
//! `Dial` stream open and waits for spawn commands.
//!
//! Any vm-connector replica may hold a VM's daemon stream, and any replica may handle the
//! `StartAgent` for it. So a spawn is published on the hot store's control channel as a
//! `ControlMessage::Vm`; the replica holding the VM's stream sends it down, and when the daemon
//! answers with its `SpawnResult`, that replica publishes it back as a
//! `ControlMessage::VmSpawnResult`, which the replica waiting in `StartAgent` picks up (by agent
//! id). With one replica the message simply comes back to itself. Jobs (preview deploys) travel
//! the same way as `VmCommand.job` and `ControlMessage::VmJobResult`. Answers are matched by VM
//! and id, so one VM's daemon can never answer for another's spawn or job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use covibe_proto::events::v1::control_message::Message as Control;
use covibe_proto::events::v1::{ControlMessage, VmCommand, VmJobResult, VmSpawnResult};
use covibe_proto::prost::Message;
use covibe_proto::tonic::{Status, Streaming};
use covibe_proto::vmconnector::v1::connector_frame::Frame as Out;
use covibe_proto::vmconnector::v1::daemon_frame::Frame as In;
use covibe_proto::vmconnector::v1::{
    ConnectorFrame, DaemonFrame, DaemonHeartbeat, DaemonWelcome, Job, JobResult, Spawn, SpawnResult,
};
use covibe_storage::{FanoutEvent, HotStore, Subscription};
use covibe_types::{ApiError, VmId, now_ms};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::model::Strategy;
use crate::store::VmStore;

pub(crate) type FrameTx = mpsc::Sender<Result<ConnectorFrame, Status>>;
pub(crate) type DialStream = ReceiverStream<Result<ConnectorFrame, Status>>;

/// How long `StartAgent` waits for the VM's daemon to answer a spawn.
pub const DEFAULT_SPAWN_TIMEOUT: Duration = Duration::from_secs(5);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Hex SHA-256 of a VM token: only this is stored.
pub(crate) use covibe_identity::code::hash_token;
/// A fresh VM token: 256 random bits, URL-safe base64.
pub(crate) use covibe_identity::code::new_token;
use covibe_identity::code::same_hash as same;

/// The daemon streams this replica holds, and the spawns this replica is waiting on.
pub struct Daemons {
    hot: Arc<dyn HotStore>,
    held: Mutex<HashMap<VmId, FrameTx>>,
    waiting: Mutex<HashMap<(VmId, String), oneshot::Sender<SpawnResult>>>,
    /// Jobs this replica waits on: told when one is accepted, then its result.
    jobs: Mutex<HashMap<(VmId, String), mpsc::Sender<JobNews>>>,
    /// Jobs this replica passed down a daemon stream and not yet answered, by VM.
    in_flight: Mutex<HashMap<VmId, Vec<String>>>,
    spawn_timeout: Duration,
}

enum JobNews {
    Accepted,
    Done(JobResult),
}

/// How much longer than its own limits a job is waited for (the trip there and back).
const JOB_MARGIN: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn control(message: Control) -> Bytes {
    Bytes::from(
        ControlMessage {
            message: Some(message),
        }
        .encode_to_vec(),
    )
}

impl Daemons {
    /// Starts listening on the control channel.
    pub async fn start(
        hot: Arc<dyn HotStore>,
        spawn_timeout: Duration,
    ) -> Result<Arc<Self>, covibe_storage::Error> {
        let daemons = Arc::new(Self {
            hot: hot.clone(),
            held: Mutex::default(),
            waiting: Mutex::default(),
            jobs: Mutex::default(),
            in_flight: Mutex::default(),
            spawn_timeout,
        });
        daemons.listen(hot.subscribe_control().await?);
        Ok(daemons)
    }

    /// Whether this replica holds the VM's daemon stream.
    pub fn is_attached(&self, vm: VmId) -> bool {
        lock(&self.held).contains_key(&vm)
    }

    /// A newer stream for the same VM replaces an older one.
    fn attach(&self, vm: VmId, tx: FrameTx) {
        lock(&self.held).insert(vm, tx);
    }

    /// Whether `tx` was still the VM's stream (not replaced by a newer one).
    fn detach(&self, vm: VmId, tx: &FrameTx) -> bool {
        let mut held = lock(&self.held);
        if held
            .get(&vm)
            .is_some_and(|current| current.same_channel(tx))
        {
            held.remove(&vm);
            return true;
        }
        false
    }

    fn listen(self: &Arc<Self>, mut messages: Subscription) {
        let daemons = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(event) = messages.recv().await {
                let Some(daemons) = daemons.upgrade() else {
                    return;
                };
                let FanoutEvent::Message(bytes) = event else {
                    tracing::warn!("control channel gap: spawns sent meanwhile may be lost");
                    continue;
                };
                // Agent commands for the orchestrator share the channel: ignore them.
                match ControlMessage::decode(bytes).ok().and_then(|m| m.message) {
                    Some(Control::Vm(VmCommand {
                        vm_id, spawn, job, ..
                    })) => {
                        let frame = match (spawn, job) {
                            (Some(spawn), _) => Out::Spawn(spawn),
                            (None, Some(job)) => Out::Job(job),
                            (None, None) => continue,
                        };
                        daemons.deliver(&vm_id, frame).await;
                    }
                    Some(Control::VmSpawnResult(VmSpawnResult {
                        vm_id,
                        result: Some(result),
                    })) => {
                        if let Ok(vm) = vm_id.parse::<VmId>()
                            && let Some(waiter) =
                                lock(&daemons.waiting).remove(&(vm, result.agent_id.clone()))
                        {
                            let _ = waiter.send(result);
                        }
                    }
                    Some(Control::VmJobResult(VmJobResult {
                        vm_id,
                        result,
                        accepted,
                        job_id,
                    })) => {
                        let Ok(vm) = vm_id.parse::<VmId>() else {
                            continue;
                        };
                        let (id, news) = match result {
                            Some(result) => (result.job_id.clone(), JobNews::Done(result)),
                            None if accepted => (job_id, JobNews::Accepted),
                            None => continue,
                        };
                        let waiter = lock(&daemons.jobs).get(&(vm, id)).cloned();
                        if let Some(waiter) = waiter {
                            let _ = waiter.try_send(news);
                        }
                    }
                    _ => {}
                }
            }
        });
    }

    /// Sends the frame down the VM's stream if this replica holds it.
    async fn deliver(&self, vm_id: &str, frame: Out) {
        let Ok(vm) = vm_id.parse::<VmId>() else {
            return;
        };
        let tx = lock(&self.held).get(&vm).cloned();
        if let Some(tx) = tx {
            let what = match &frame {
                Out::Spawn(spawn) => format!("spawn of {}", spawn.agent_id),
                Out::Job(job) => format!("job {}", job.job_id),
                _ => String::new(),
            };
            let job = match &frame {
                Out::Job(job) => Some(job.job_id.clone()),
                _ => None,
            };
            if tx
                .send(Ok(ConnectorFrame { frame: Some(frame) }))
                .await
                .is_ok()
            {
                tracing::info!(%vm, what, "passed to the vm-agent daemon");
                if let Some(job_id) = job {
                    lock(&self.in_flight)
                        .entry(vm)
                        .or_default()
                        .push(job_id.clone());
                    self.publish_job(VmJobResult {
                        vm_id: vm.to_string(),
                        result: None,
                        accepted: true,
                        job_id,
                    })
                    .await;
                }
            }
        }
    }

    /// Asks whichever replica holds the VM's daemon stream to spawn, and waits for the daemon's
    /// answer.
    pub async fn spawn(&self, vm: VmId, spawn: Spawn) -> Result<SpawnResult, ApiError> {
        let key = (vm, spawn.agent_id.clone());
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(key.clone(), tx);
        let message = control(Control::Vm(VmCommand {
            vm_id: vm.to_string(),
            spawn: Some(spawn),
            job: None,
        }));
        if let Err(err) = self.hot.publish_control(message).await {
            lock(&self.waiting).remove(&key);
            return Err(ApiError::internal(err));
        }
        match tokio::time::timeout(self.spawn_timeout, rx).await {
            Ok(Ok(result)) => Ok(result),
            _ => {
                lock(&self.waiting).remove(&key);
                Err(ApiError::unavailable(
                    "the VM's vm-agent daemon is not connected",
                ))
            }
        }
    }

    /// Asks whichever replica holds the VM's daemon stream to run the job, and waits for its
    /// result: as long as the job and its health check may take, and a margin. When no replica
    /// holds the stream, nobody accepts the job and it fails as a spawn would.
    pub async fn run_job(&self, vm: VmId, mut job: Job) -> Result<JobResult, ApiError> {
        job.job_id = new_token();
        let key = (vm, job.job_id.clone());
        let health = job.health.as_ref().map_or(0, |h| u64::from(h.timeout_secs));
        let within = Duration::from_secs(u64::from(job.timeout_secs) + health) + JOB_MARGIN;
        let (tx, mut rx) = mpsc::channel(2);
        lock(&self.jobs).insert(key.clone(), tx);
        let message = control(Control::Vm(VmCommand {
            vm_id: vm.to_string(),
            spawn: None,
            job: Some(job),
        }));
        let result = match self.hot.publish_control(message).await {
            Err(err) => Err(ApiError::internal(err)),
            Ok(()) => match tokio::time::timeout(self.spawn_timeout, rx.recv()).await {
                Ok(Some(JobNews::Done(result))) => Ok(result),
                Ok(Some(JobNews::Accepted)) => {
                    match tokio::time::timeout(within, rx.recv()).await {
                        Ok(Some(JobNews::Done(result))) => Ok(result),
                        _ => Err(ApiError::unavailable(
                            "the VM's vm-agent daemon did not answer the job in time",
                        )),
                    }
                }
                _ => Err(ApiError::unavailable(
                    "the VM's vm-agent daemon is not connected",
                )),
            },
        };
        lock(&self.jobs).remove(&key);
        result
    }

    async fn publish_job(&self, news: VmJobResult) {
        let vm = news.vm_id.clone();
        if let Err(err) = self
            .hot
            .publish_control(control(Control::VmJobResult(news)))
            .await
        {
            tracing::warn!(vm, error = %err, "could not pass on a job's news");
        }
    }

    async fn report_job(&self, vm: VmId, result: JobResult) {
        if let Some(ids) = lock(&self.in_flight).get_mut(&vm) {
            ids.retain(|id| *id != result.job_id);
        }
        self.publish_job(VmJobResult {
            vm_id: vm.to_string(),
            result: Some(result),
            accepted: false,
            job_id: String::new(),
        })
        .await;
    }

    /// The VM's stream ended: the jobs it was running will not be answered on it.
    async fn abandon_jobs(&self, vm: VmId) {
        let ids = lock(&self.in_flight).remove(&vm).unwrap_or_default();
        for job_id in ids {
            let result = JobResult {
                job_id,
                exit_code: -1,
                output_tail: "the VM's vm-agent daemon disconnected during the job".to_owned(),
                healthy: false,
            };
            self.report_job(vm, result).await;
        }
    }

    async fn report(&self, vm: VmId, result: SpawnResult) {
        let message = control(Control::VmSpawnResult(VmSpawnResult {
            vm_id: vm.to_string(),
            result: Some(result),
        }));
        if let Err(err) = self.hot.publish_control(message).await {
            tracing::warn!(%vm, error = %err, "could not pass on a spawn result");
        }
    }
}

fn out(frame: Out) -> Result<ConnectorFrame, Status> {
    Ok(ConnectorFrame { frame: Some(frame) })
}

/// One `Dial` stream: checks the hello, then holds the stream for spawns until it ends.
pub(crate) async fn dial(
    store: Arc<dyn VmStore>,
    daemons: Arc<Daemons>,
    revocations: covibe_identity::Revocations,
    mut inbound: Streaming<DaemonFrame>,
) -> Result<DialStream, Status> {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(DaemonFrame {
            frame: Some(In::Hello(hello)),
        }))) => hello,
        Ok(Err(status)) => return Err(status),
        _ => return Err(ApiError::invalid("the first frame must be hello").into()),
    };
    let refused = || Status::from(ApiError::unauthenticated("unknown vm or wrong vm token"));
    let vm: VmId = hello.vm_id.trim().parse().map_err(|_| refused())?;
    let internal = |e: sea_orm::DbErr| Status::from(ApiError::internal(e));
    let record = store
        .get(vm)
        .await
        .map_err(internal)?
        .filter(|v| matches!(v.strategy, Strategy::DialIn | Strategy::SshProxy));
    // A member removed from their team: their VMs can no longer be used.
    let owner = record.as_ref().map(|v| v.user_id);
    let known = owner.is_some_and(|owner| !revocations.is_removed(owner));
    let expected = store.token_hash(vm).await.map_err(internal)?;
    let good = expected.is_some_and(|hash| same(&hash, &hash_token(&hello.vm_token)));
    if !(known && good) {
        tracing::warn!(%vm, "vm-agent daemon refused: unknown vm or bad vm token");
        return Err(refused());
    }
    tracing::info!(%vm, version = %hello.version, hostname = %hello.hostname, "vm-agent daemon attached");
    store.touch(vm).await.map_err(internal)?;

    let (tx, rx) = mpsc::channel(32);
    tx.send(out(Out::Welcome(DaemonWelcome {
        vm_id: vm.to_string(),
    })))
    .await
    .map_err(|_| Status::cancelled("stream closed"))?;
    daemons.attach(vm, tx.clone());
    tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(DaemonFrame { frame: Some(frame) })) => match frame {
                    In::Heartbeat(_) => {
                        if owner.is_some_and(|owner| revocations.is_removed(owner)) {
                            tracing::info!(%vm, "closing the daemon stream of a removed member's vm");
                            break;
                        }
                        if let Err(err) = store.touch(vm).await {
                            tracing::warn!(%vm, error = %err, "could not record a heartbeat");
                        }
                        let beat = out(Out::Heartbeat(DaemonHeartbeat {
                            sent_at_ms: now_ms(),
                        }));
                        if tx.send(beat).await.is_err() {
                            break;
                        }
                    }
                    In::SpawnResult(result) => {
                        tracing::info!(%vm, agent_id = result.agent_id, ok = result.ok, message = result.message, "spawn result");
                        daemons.report(vm, result).await;
                    }
                    In::JobResult(result) => {
                        tracing::info!(%vm, job_id = result.job_id, exit_code = result.exit_code, healthy = result.healthy, "job result");
                        daemons.report_job(vm, result).await;
                    }
                    In::Hello(_) => {}
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(err) => {
                    tracing::info!(%vm, error = %err, "vm-agent daemon stream broke");
                    break;
                }
            }
        }
        // A newer stream from the daemon may still answer the jobs this one carried.
        if daemons.detach(vm, &tx) {
            daemons.abandon_jobs(vm).await;
        }
        tracing::info!(%vm, "vm-agent daemon detached");
    });
    Ok(ReceiverStream::new(rx))
}
