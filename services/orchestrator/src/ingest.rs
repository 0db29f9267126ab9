//! Group commit of vm-agent output. Every link hands its batch to one writer task, which stores
//! whatever has arrived from all agents in one transaction, then keeps it hot and publishes it
//! (one round trip each), then answers each link, which acknowledges to its vm-agent. Under
//! load one transaction carries many agents' lines; when quiet, a line goes alone at once.
//! Waiting links are the backpressure: a slow database slows the vm-agents, never grows memory.

use std::sync::Arc;
use std::time::Duration;

use covibe_storage::HotChunk;
use covibe_types::{AgentId, ApiError, TeamId, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::agents::Agents;
use crate::events;
use crate::store::{OutputBatch, StoredChunk};
use crate::stream_json;

/// Chunks (and bytes) one transaction takes at most; a single larger batch still goes alone.
const MAX_CHUNKS: usize = 2_048;
const MAX_BYTES: usize = 8 * 1024 * 1024;
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
    while let Some(first) = jobs.recv().await {
        let mut chunks = first.chunks.len();
        let mut bytes: usize = first.chunks.iter().map(|c| c.data.len()).sum();
        let mut group = vec![first];
        while chunks < MAX_CHUNKS && bytes < MAX_BYTES {
            let Ok(job) = jobs.try_recv() else { break };
            chunks += job.chunks.len();
            bytes += job.chunks.iter().map(|c| c.data.len()).sum::<usize>();
            group.push(job);
        }
        commit(&agents, group).await;
    }
}

/// Stores one group in one transaction, then announces what it stored for the first time.
async fn commit(agents: &Agents, group: Vec<Job>) {
    let batches: Vec<OutputBatch<'_>> = group
        .iter()
        .map(|job| OutputBatch {
            agent: job.source.id,
            chunks: &job.chunks,
        })
        .collect();
    let mut attempt = 0;
    let appended = loop {
        attempt += 1;
        match agents.store().append_output(&batches).await {
            Ok(appended) => break appended,
            Err(err) if attempt < ATTEMPTS => {
                tracing::warn!(error = %err, attempt, agents = batches.len(), "output write failed; retrying");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(err) => {
                tracing::error!(error = %err, agents = batches.len(), "could not store output; the vm-agents will resend it");
                drop(batches);
                for job in group {
                    let _ = job.done.send(Err(not_stored()));
                }
                return;
            }
        }
    };
    drop(batches);

    // Announce only what this transaction stored: a chunk stored before was announced then.
    let mut hot: Vec<(AgentId, Vec<HotChunk>)> = Vec::new();
    let mut published = Vec::new();
    for (job, appended) in group.iter().zip(&appended) {
        let fresh: Vec<&StoredChunk> = job
            .chunks
            .iter()
            .filter(|c| appended.inserted.binary_search(&c.seq).is_ok())
            .collect();
        if fresh.is_empty() {
            continue;
        }
        hot.push((
            job.source.id,
            fresh
                .iter()
                .map(|c| HotChunk {
                    seq: c.seq,
                    stream: c.stream,
                    data: c.data.clone(),
                })
                .collect(),
        ));
        for chunk in fresh {
            let parsed = stream_json::parse(&chunk.data);
            if let Some(outcome) = parsed.outcome
                && let Err(err) = agents.store().record_outcome(job.source.id, outcome).await
            {
                tracing::error!(agent_id = %job.source.id, error = %err, "could not store the agent's final cost and turns");
            }
            let event = events::output(job.source, chunk, parsed.event.to_string());
            published.push((job.source.team_id, event));
        }
    }
    let (kept, told) = tokio::join!(
        agents.hot().append_many(&hot),
        agents.hot().publish_many(&published)
    );
    if let Err(err) = kept {
        tracing::warn!(error = %err, "hot buffer append failed; history falls back to the database");
    }
    if let Err(err) = told {
        // Durable already; viewers that miss it catch up from history when they resync.
        tracing::warn!(error = %err, "could not publish output");
    }
    for (job, appended) in group.into_iter().zip(appended) {
        let _ = job.done.send(Ok(appended.next));
    }
}
