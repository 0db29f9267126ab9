//! Group commit of vm-agent output. Every link hands its batch to one gathering task, which
//! takes whatever has arrived from all agents as one group and, at once, stores it in one
//! transaction, keeps it hot and publishes it (one round trip each); then it answers each link,
//! which acknowledges to its vm-agent what is now durable. Under
//! load one transaction carries many agents' lines; when quiet, a line goes alone at once.
//! Waiting links are the backpressure: a slow database slows the vm-agents, never grows memory.

use std::sync::Arc;
use std::time::Duration;

use covibe_storage::HotChunk;
use covibe_types::{AgentId, ApiError, TeamId, UserId};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::Error;
use crate::agents::Agents;
use crate::events;
use crate::store::{Appended, OutputBatch, StoredChunk};
use crate::stream_json;

/// Chunks (and bytes) one transaction takes at most; a single larger batch still goes alone.
const MAX_CHUNKS: usize = 2_048;
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Groups being written at once. A link has one batch in flight at a time, so two groups never
/// hold consecutive batches of one link: each agent's output is still stored and published in
/// order. Two keep the database busy while the previous group is published.
const IN_FLIGHT: usize = 2;
/// How long a group waits for more output after its first batch.
const LINGER: Duration = Duration::from_millis(3);
/// A group this big goes without lingering.
const LINGER_UNTIL: usize = 32;
/// Links waiting for the writer at once before `write` waits to queue.
const QUEUE: usize = 1_024;
/// Tries of one transaction before its links are told to resend (a deadlock with another
/// replica's writer, a database fail-over).
const ATTEMPTS: u32 = 3;

/// Whose output a batch is, as the fan-out needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    pub id: AgentId,
    pub team_id: TeamId,
    pub owner_id: UserId,
}

struct Job {
    source: Source,
    chunks: Vec<StoredChunk>,
    done: oneshot::Sender<Result<u64, Error>>,
}

#[derive(Clone)]
pub(crate) struct Ingest {
    jobs: mpsc::Sender<Job>,
}

fn not_stored() -> Error {
    ApiError::unavailable("output could not be stored").into()
}

impl Ingest {
    /// Starts the writer; it runs as long as some `Ingest` handle is alive.
    pub(crate) fn start(agents: Arc<Agents>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(agents, rx));
        Self { jobs }
    }

    /// Stores `chunks` (ascending, gap-free, starting at the agent's `output_seq` as this link
    /// knows it) durably, then keeps them hot and tells the team. Returns the agent's new
    /// `output_seq`: every chunk below it is durable.
    pub(crate) async fn write(
        &self,
        source: Source,
        chunks: Vec<StoredChunk>,
    ) -> Result<u64, Error> {
        let (done, answer) = oneshot::channel();
        let job = Job {
            source,
            chunks,
            done,
        };
        self.jobs.send(job).await.map_err(|_| not_stored())?;
        answer.await.map_err(|_| not_stored())?
    }
}

async fn run(agents: Arc<Agents>, mut jobs: mpsc::Receiver<Job>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Gather only once a writer is free: while all are busy, jobs pile up into a bigger group.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut chunks = first.chunks.len();
        let mut bytes: usize = first.chunks.iter().map(|c| c.data.len()).sum();
        let mut group = vec![first];
        // When little is waiting, wait a moment for other agents' output so one transaction
        // carries several lines: a few milliseconds of latency for a fraction of the database
        // work per line. Under load the group is big already and goes at once.
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while chunks < MAX_CHUNKS && bytes < MAX_BYTES {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if chunks >= LINGER_UNTIL => break,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    job = jobs.recv() => match job {
                        Some(job) => job,
                        None => break,
                    },
                    () = &mut linger => break,
                },
            };
            chunks += job.chunks.len();
            bytes += job.chunks.iter().map(|c| c.data.len()).sum::<usize>();
            group.push(job);
        }
        let agents = agents.clone();
        tokio::spawn(async move {
            commit(&agents, group).await;
            drop(permit);
        });
    }
}

/// Stores one group in one transaction and, at the same time, keeps it hot and publishes it;
/// then answers each link.
///
/// Viewers get a line without waiting for its commit. That never shows a line twice: a line
/// published but not stored (the commit failed, the orchestrator died) is not acknowledged, so
/// the vm-agent resends the same seq with the same bytes, and every socket is sent a given
/// (agent, seq) at most once (the gateway's per-socket delivery record). The hot ring dedupes by
/// seq too, and history reads stop at the agent's durable `output_seq`.
async fn commit(agents: &Agents, group: Vec<Job>) {
    let started = std::time::Instant::now();
    let mut hot: Vec<(AgentId, Vec<HotChunk>)> = Vec::with_capacity(group.len());
    let mut published = Vec::new();
    let mut outcomes = Vec::new();
    for job in &group {
        hot.push((
            job.source.id,
            job.chunks
                .iter()
                .map(|c| HotChunk {
                    seq: c.seq,
                    stream: c.stream,
                    data: c.data.clone(),
                })
                .collect(),
        ));
        for chunk in &job.chunks {
            let parsed = stream_json::parse(&chunk.data);
            if let Some(outcome) = parsed.outcome {
                outcomes.push((job.source.id, outcome));
            }
            let event = events::output(job.source, chunk, parsed.event.to_string());
            published.push((job.source.team_id, event));
        }
    }
    let batches: Vec<OutputBatch<'_>> = group
        .iter()
        .map(|job| OutputBatch {
            agent: job.source.id,
            chunks: &job.chunks,
        })
        .collect();
    let (stored, kept, told) = tokio::join!(
        store(agents, &batches),
        agents.hot().append_many(&hot),
        agents.hot().publish_many(&published)
    );
    if let Err(err) = kept {
        tracing::warn!(error = %err, "hot buffer append failed; history falls back to the database");
    }
    if let Err(err) = told {
        // Viewers that miss it catch up from history when they resync.
        tracing::warn!(error = %err, "could not publish output");
    }
    let agents_in_group = batches.len();
    drop(batches);
    let Some(appended) = stored else {
        for job in group {
            let _ = job.done.send(Err(not_stored()));
        }
        return;
    };
    for (agent, outcome) in outcomes {
        if let Err(err) = agents.store().record_outcome(agent, outcome).await {
            tracing::error!(agent_id = %agent, error = %err, "could not store the agent's final cost and turns");
        }
    }
    tracing::debug!(
        agents = agents_in_group,
        chunks = published.len(),
        total_us = started.elapsed().as_micros(),
        "output group committed"
    );
    for (job, appended) in group.into_iter().zip(appended) {
        let _ = job.done.send(Ok(appended.next));
    }
}

/// One transaction, retried a few times; `None` when it could not be stored.
async fn store(agents: &Agents, batches: &[OutputBatch<'_>]) -> Option<Vec<Appended>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match agents.store().append_output(batches).await {
            Ok(appended) => return Some(appended),
            Err(err) if attempt < ATTEMPTS => {
                tracing::warn!(error = %err, attempt, agents = batches.len(), "output write failed; retrying");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(err) => {
                tracing::error!(error = %err, agents = batches.len(), "could not store output; the vm-agents will resend it");
                return None;
            }
        }
    }
}
