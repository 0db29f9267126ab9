//! Group commit of vm-agent output, in two stages.
//!
//! 1. One gathering task takes whatever output has arrived from every link as one group
//!    (lingering a few milliseconds when little is waiting), appends it to the hot ring buffers
//!    and publishes it on the fan-out (one round trip each, at the same time). A link hands a
//!    batch over without waiting for any of that; what is handed over and not yet durable is
//!    bounded, in all and per link, so a flood cannot pile up in the publishers' and Redis's
//!    buffers.
//! 2. One storing task writes the published groups durably, in the order they were gathered:
//!    all the groups waiting for it in one statement, each agent's lines merged into one
//!    gap-free run. Then it notes on each link's [`Progress`] what is now durable, which the
//!    link acknowledges to its vm-agent: it looks when it acknowledges (a link is woken only
//!    when it waits for it), so a line costs its link one wake-up, to read it.
//!
//! Viewers so get a line without waiting for its commit, and the database still sees each
//! agent's lines in order. That never shows a line twice: a line published but not stored (the
//! commit failed, the orchestrator died) is not acknowledged, so the vm-agent resends the same
//! seq with the same bytes, and every socket is sent a given (agent, seq) at most once (the
//! gateway's per-socket delivery record). The hot ring dedupes by seq too, and history reads
//! stop at the agent's durable `output_seq`. Backpressure: a slow database fills the queue of
//! published groups, the gatherer waits, the budget of what may be in flight runs out, links
//! stop reading, vm-agents wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use covibe_storage::HotChunk;
use covibe_types::{AgentId, ApiError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use crate::Error;
use crate::domain::Agents;
use crate::events;
use crate::model::{OutputBatch, Source, StoredChunk};
use crate::stream_json::{self, Outcome};

/// How the gatherer makes a group: lingering up to 3 ms while fewer than 32 lines wait, at most
/// 2,048 lines or 2 MiB (a single larger batch still goes alone).
/// While it lingers it sleeps, rather than waking for each batch that arrives (a wake-up per
/// line: at 10 lines a second from each of 500 agents, 3 ms brings about 15 batches, each of
/// one line).
const GATHER: Take = Take {
    linger: Duration::from_millis(3),
    linger_until: 32,
    watch: false,
    max_lines: 2_048,
    max_bytes: 2 << 20,
};
/// How the storing task takes published groups: what waits, lingering up to 30 ms while fewer
/// than 256 lines wait (under a link's own bound on lines not yet durable, so one fast agent
/// never waits out the linger), at most 4,096 lines or 4 MiB in one statement (the database
/// driver keeps each connection's buffer at the largest statement it sent). Viewers have the
/// lines already and acknowledgements wait up to a second anyway: fewer, larger statements
/// cost the database less per line; a longer linger's bursts of work cost the latency of
/// everything else at the ceiling.
const STORE: Take = Take {
    linger: Duration::from_millis(30),
    linger_until: 256,
    watch: true,
    max_lines: 4_096,
    max_bytes: 4 << 20,
};
/// Published groups waiting to be stored before the gatherer waits.
const STORE_QUEUE: usize = 8;
/// Batches waiting for the gatherer at once before `write` waits to queue.
const QUEUE: usize = 1_024;
/// What may be handed over and not yet durable, in all: in units of a line or a KiB of output,
/// whichever is more (8 MiB of output: two statements' worth; each byte is held two or three
/// times on its way, as received, as published and as stored).
const IN_FLIGHT_UNITS: usize = 8 * 1024;
/// Tries of one statement before its links are told to resend (a deadlock with another
/// replica's writer, a database fail-over).
const ATTEMPTS: u32 = 3;

struct Job {
    source: Source,
    chunks: Vec<StoredChunk>,
    /// Its place in the in-flight budget, freed when the job is done with.
    _budget: Option<OwnedSemaphorePermit>,
    /// Told what is durable once the job is stored, or that it could not be (also when the job
    /// is dropped unstored: the ingest tasks ended).
    progress: Option<Arc<Progress>>,
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.fail();
        }
    }
}

impl Job {
    fn stored(mut self, next: u64) {
        if let Some(progress) = self.progress.take() {
            progress.advance(next);
        }
    }
}

/// What of one link's output is durable: the agent's `output_seq` as the store last reported
/// it, or that some of it could not be stored (the link must ask for a resend).
#[derive(Default)]
pub(crate) struct Progress {
    durable: AtomicU64,
    failed: AtomicBool,
    changed: Notify,
}

impl Progress {
    pub(crate) fn new(durable: u64) -> Self {
        Self {
            durable: AtomicU64::new(durable),
            ..Self::default()
        }
    }

    /// Everything below this seq is durable.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Some output handed over could not be stored.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Resolves at the next change (at once if one happened since the last call returned).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    fn advance(&self, next: u64) {
        self.durable.fetch_max(next, Ordering::AcqRel);
        self.changed.notify_one();
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.changed.notify_one();
    }
}

#[derive(Clone)]
pub(crate) struct Ingest {
    jobs: mpsc::Sender<Job>,
    budget: Arc<Semaphore>,
}

fn not_stored() -> Error {
    ApiError::unavailable("output could not be stored").into()
}

impl Ingest {
    /// Starts the gathering and storing tasks; they run as long as some `Ingest` handle is alive.
    pub(crate) fn start(agents: Arc<Agents>) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (groups, published) = mpsc::channel(STORE_QUEUE);
        tokio::spawn(gather(agents.clone(), rx, groups));
        tokio::spawn(store_in_order(agents, published));
        Self {
            jobs,
            budget: Arc::new(Semaphore::new(IN_FLIGHT_UNITS)),
        }
    }

    /// Hands over `chunks` (ascending, gap-free, following what this link handed over before)
    /// once the in-flight budget has room for them; `progress` learns when they are durable.
    pub(crate) async fn write(
        &self,
        source: Source,
        chunks: Vec<StoredChunk>,
        progress: &Arc<Progress>,
    ) -> Result<(), Error> {
        let units: usize = chunks.iter().map(|c| 1 + c.data.len() / 1024).sum();
        let units = u32::try_from(units.min(IN_FLIGHT_UNITS)).unwrap_or(u32::MAX);
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| not_stored())?;
        let job = Job {
            source,
            chunks,
            _budget: Some(budget),
            progress: Some(progress.clone()),
        };
        self.jobs.send(job).await.map_err(|_| not_stored())
    }
}

/// A gathered, published group on its way to the database.
struct Group {
    jobs: Vec<Job>,
    outcomes: Vec<(AgentId, Outcome)>,
}

async fn gather(agents: Arc<Agents>, mut jobs: mpsc::Receiver<Job>, groups: mpsc::Sender<Group>) {
    while let Some(first) = jobs.recv().await {
        // When little is waiting, wait a moment for other agents' output so one group carries
        // several lines: a few milliseconds of latency for a fraction of the work per line.
        // Under load the group is big already and goes at once.
        let group = take(&mut jobs, first, job_weight, GATHER).await;
        let group = publish(&agents, group).await;
        if groups.send(group).await.is_err() {
            return;
        }
    }
}

/// How much to take from a queue at once.
struct Take {
    linger: Duration,
    /// Lines held from which no lingering is done.
    linger_until: usize,
    /// Whether to take each item as it arrives while lingering, so the linger ends as soon as
    /// `linger_until` lines are held; else the linger is slept out and what came meanwhile
    /// taken then.
    watch: bool,
    max_lines: usize,
    max_bytes: usize,
}

fn job_weight(job: &Job) -> (usize, usize) {
    (
        job.chunks.len(),
        job.chunks.iter().map(|c| c.data.len()).sum(),
    )
}

fn group_weight(group: &Group) -> (usize, usize) {
    group
        .jobs
        .iter()
        .map(job_weight)
        .fold((0, 0), |(l, b), (jl, jb)| (l + jl, b + jb))
}

/// `first` and whatever else `rx` holds or brings: what is waiting already, then, while fewer
/// than `linger_until` lines are held, what arrives within `linger` (as it arrives, or at the
/// end of the linger: `watch`); never past the maxima. `weight` is an item's lines and bytes.
async fn take<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    weight: impl Fn(&T) -> (usize, usize),
    limits: Take,
) -> Vec<T> {
    let (mut lines, mut bytes) = weight(&first);
    let mut taken = vec![first];
    let linger = tokio::time::sleep(limits.linger);
    tokio::pin!(linger);
    let mut lingered = false;
    while lines < limits.max_lines && bytes < limits.max_bytes {
        let next = match rx.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) if lines >= limits.linger_until || lingered => {
                break;
            }
            Err(mpsc::error::TryRecvError::Empty) if !limits.watch => {
                (&mut linger).await;
                lingered = true;
                continue;
            }
            Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                next = rx.recv() => match next {
                    Some(next) => next,
                    None => break,
                },
                () = &mut linger => break,
            },
        };
        let (l, b) = weight(&next);
        lines += l;
        bytes += b;
        taken.push(next);
    }
    taken
}

/// Keeps a group hot and publishes it: one round trip each, at the same time.
async fn publish(agents: &Agents, mut jobs: Vec<Job>) -> Group {
    let mut hot: Vec<(AgentId, Vec<HotChunk>)> = Vec::with_capacity(jobs.len());
    let mut published = Vec::new();
    let mut outcomes = Vec::new();
    for job in &mut jobs {
        // Each line is understood once, here: the event travels with it to the fan-out, the
        // hot ring and the database, and history never parses it again.
        for chunk in &mut job.chunks {
            let parsed = stream_json::parse(&chunk.data);
            if let Some(outcome) = parsed.outcome {
                outcomes.push((job.source.id, outcome));
            }
            let event = parsed.event.to_string();
            chunk.event = bytes::Bytes::from(event.clone());
            published.push((job.source.team_id, events::output(job.source, chunk, event)));
        }
        hot.push((
            job.source.id,
            job.chunks
                .iter()
                .map(|c| HotChunk {
                    seq: c.seq,
                    stream: c.stream,
                    data: c.data.clone(),
                    event: c.event.clone(),
                })
                .collect(),
        ));
    }
    let (kept, told) = tokio::join!(
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
    Group { jobs, outcomes }
}

/// Stores the published groups in the order they were gathered: whatever is waiting, in one
/// statement.
async fn store_in_order(agents: Arc<Agents>, mut groups: mpsc::Receiver<Group>) {
    while let Some(first) = groups.recv().await {
        // Viewers already have these lines: waiting a little longer for more groups costs only
        // acknowledgement latency, and makes one statement carry more lines when it is quiet.
        let waiting = take(&mut groups, first, group_weight, STORE).await;
        let started = std::time::Instant::now();
        let runs = merge(&waiting);
        let batches: Vec<OutputBatch<'_>> = runs
            .iter()
            .map(|(agent, chunks)| OutputBatch {
                agent: *agent,
                chunks,
            })
            .collect();
        let stored = store(&agents, &batches).await;
        tracing::debug!(
            groups = waiting.len(),
            agents = batches.len(),
            chunks = batches.iter().map(|b| b.chunks.len()).sum::<usize>(),
            store_us = started.elapsed().as_micros(),
            "output stored"
        );
        let Some(positions_after) = stored else {
            // Dropping the jobs unstored tells their links.
            drop(waiting);
            continue;
        };
        // An agent's position is the lowest reported for any of its runs (a later run after a
        // gap does not move it).
        let mut positions: HashMap<AgentId, u64> = HashMap::new();
        for (batch, next) in batches.iter().zip(positions_after) {
            positions
                .entry(batch.agent)
                .and_modify(|p| *p = (*p).min(next))
                .or_insert(next);
        }
        for group in waiting {
            for (agent, outcome) in group.outcomes {
                if let Err(err) = agents.store().record_outcome(agent, outcome).await {
                    tracing::error!(agent_id = %agent, error = %err, "could not store the agent's final cost and turns");
                }
            }
            for job in group.jobs {
                let next = positions.get(&job.source.id).copied().unwrap_or(0);
                job.stored(next);
            }
        }
    }
}

/// Each agent's chunks across the groups, as gap-free runs in seq order (one run per agent,
/// unless two links of one agent raced and left a gap between their batches).
fn merge(groups: &[Group]) -> Vec<(AgentId, Vec<StoredChunk>)> {
    let mut order: Vec<AgentId> = Vec::new();
    let mut chunks: HashMap<AgentId, Vec<StoredChunk>> = HashMap::new();
    for job in groups.iter().flat_map(|g| &g.jobs) {
        let entry = chunks.entry(job.source.id).or_insert_with(|| {
            order.push(job.source.id);
            Vec::new()
        });
        entry.extend(job.chunks.iter().cloned());
    }
    let mut runs = Vec::with_capacity(order.len());
    for agent in order {
        let Some(mut all) = chunks.remove(&agent) else {
            continue;
        };
        all.sort_by_key(|c| c.seq);
        all.dedup_by_key(|c| c.seq);
        let mut run: Vec<StoredChunk> = Vec::with_capacity(all.len());
        for chunk in all {
            if run.last().is_some_and(|last| last.seq + 1 != chunk.seq) {
                runs.push((agent, std::mem::take(&mut run)));
            }
            run.push(chunk);
        }
        runs.push((agent, run));
    }
    runs
}

/// One statement, retried a few times; `None` when it could not be stored.
async fn store(agents: &Agents, batches: &[OutputBatch<'_>]) -> Option<Vec<u64>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match agents.store().append_output(batches).await {
            Ok(positions) => return Some(positions),
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use covibe_types::{TeamId, UserId};

    fn job(agent: AgentId, seqs: std::ops::Range<u64>) -> Job {
        Job {
            source: Source {
                id: agent,
                team_id: TeamId::new(),
                owner_id: UserId::new(),
            },
            chunks: seqs
                .map(|seq| StoredChunk {
                    seq,
                    stream: 1,
                    data: Bytes::from(format!("line {seq}")),
                    event: Bytes::new(),
                })
                .collect(),
            _budget: None,
            progress: None,
        }
    }

    fn seqs(chunks: &[StoredChunk]) -> Vec<u64> {
        chunks.iter().map(|c| c.seq).collect()
    }

    #[test]
    fn waiting_groups_merge_into_one_gap_free_run_per_agent() {
        let (a, b) = (AgentId::new(), AgentId::new());
        let groups = [
            Group {
                jobs: vec![job(a, 0..3), job(b, 10..12)],
                outcomes: Vec::new(),
            },
            // The same link's next batch, and a racing link resending part of it.
            Group {
                jobs: vec![job(a, 3..5), job(a, 2..4)],
                outcomes: Vec::new(),
            },
            // Another link of `b` after a gap: a run of its own, after the first.
            Group {
                jobs: vec![job(b, 14..15)],
                outcomes: Vec::new(),
            },
        ];
        let runs: Vec<(AgentId, Vec<u64>)> = merge(&groups)
            .iter()
            .map(|(agent, chunks)| (*agent, seqs(chunks)))
            .collect();
        assert_eq!(
            runs,
            vec![(a, vec![0, 1, 2, 3, 4]), (b, vec![10, 11]), (b, vec![14]),]
        );
    }
}
