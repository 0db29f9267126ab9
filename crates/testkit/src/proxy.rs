//! A TCP proxy on a loopback port that injects faults on the connections it carries, told at
//! run time: latency, a reset of every connection, a cut after a number of bytes (mid-frame),
//! and refusing new connections for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections carried to the upstream.
    pub accepted: u64,
    /// Connections reset at once (refusing, or no upstream yet, or the upstream unreachable).
    pub refused: u64,
    /// Connections reset by [`FaultProxy::reset_all`].
    pub reset: u64,
    /// Connections cut by [`FaultProxy::cut_after`].
    pub cut: u64,
    /// Bytes carried toward the upstream.
    pub bytes_up: u64,
    /// Bytes carried back to the clients.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    latency_us: AtomicU64,
    refusing: AtomicBool,
    /// Bytes toward the upstream still carried before the connection carrying them is cut.
    cut_budget: Mutex<Option<u64>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    cut: AtomicU64,
    failed: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// How many of `n` bytes toward the upstream go through, and whether the connection is cut
    /// right after them.
    fn take_cut_budget(&self, n: usize) -> (usize, bool) {
        let mut budget = self.cut_budget.lock().unwrap();
        match *budget {
            Some(left) if (n as u64) >= left => {
                *budget = None;
                (left as usize, true)
            }
            Some(left) => {
                *budget = Some(left - n as u64);
                (n, false)
            }
            None => (n, false),
        }
    }
}

/// A fault-injecting TCP proxy to one upstream; every connection is torn down when it drops.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    kill: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port. Until [`FaultProxy::set_upstream`] names where to go,
    /// connections are reset at once.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let (kill, _) = watch::channel(0u64);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), kill.clone()));
        Self {
            addr,
            shared,
            kill,
            accept,
        }
    }

    /// A proxy to `upstream` (`HOST:PORT` or `http://HOST:PORT`).
    pub async fn to(upstream: &str) -> Self {
        let proxy = Self::start().await;
        proxy.set_upstream(upstream);
        proxy
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where new connections go (`HOST:PORT` or `http://HOST:PORT`).
    pub fn set_upstream(&self, upstream: &str) {
        let hostport = upstream
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let addr: SocketAddr = hostport
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream}: {e}"));
        *self.shared.upstream.lock().unwrap() = Some(addr);
    }

    /// Every chunk read from now on, either way, is passed on `latency` after it was read.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::Relaxed);
    }

    /// Resets (TCP RST, both sides) every connection open now.
    pub fn reset_all(&self) {
        self.kill.send_modify(|generation| *generation += 1);
    }

    /// After `bytes` more bytes toward the upstream (counted over all connections), the
    /// connection carrying them is cut: the bytes up to there are passed on, the rest of that
    /// read is dropped and both sides are reset. With `bytes` not on a message boundary, the
    /// upstream gets a frame cut in the middle. Cuts once.
    pub fn cut_after(&self, bytes: u64) {
        assert!(bytes > 0, "a cut after 0 bytes is a reset");
        *self.shared.cut_budget.lock().unwrap() = Some(bytes);
    }

    /// Whether a cut asked for with [`FaultProxy::cut_after`] is still to happen.
    pub fn cut_pending(&self) -> bool {
        self.shared.cut_budget.lock().unwrap().is_some()
    }

    /// While refusing, every new connection is accepted and reset at once (as an unreachable
    /// server looks to a client that redials).
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::Relaxed);
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            reset: s.reset.load(Ordering::Relaxed),
            cut: s.cut.load(Ordering::Relaxed),
            bytes_up: s.bytes_up.load(Ordering::Relaxed),
            bytes_down: s.bytes_down.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, kill: watch::Sender<u64>) {
    while let Ok((client, _)) = listener.accept().await {
        let _ = client.set_nodelay(true);
        let upstream = *shared.upstream.lock().unwrap();
        let upstream = match upstream {
            Some(addr) if !shared.refusing.load(Ordering::Relaxed) => addr,
            _ => {
                abort(&client, &shared.refused);
                continue;
            }
        };
        let killed = kill.subscribe();
        tokio::spawn(carry(client, upstream, shared.clone(), killed));
    }
}

/// Resets `stream` (SO_LINGER 0, then close: an RST) and counts it.
fn abort(stream: &TcpStream, counter: &AtomicU64) {
    let _ = stream.set_zero_linger();
    counter.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reading side closed; the end was passed on.
    Eof,
    /// A read or write failed: the connection is over.
    Failed,
    /// The cut asked for happened here.
    Cut,
}

async fn carry(
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut killed: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        abort(&client, &shared.refused);
        return;
    };
    let _ = server.set_nodelay(true);
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let reset = {
        let up = pump(&mut client_read, &mut server_write, &shared, true);
        let down = pump(&mut server_read, &mut client_write, &shared, false);
        let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                end = &mut up, if !up_done => { up_done = true; end }
                end = &mut down, if !down_done => { down_done = true; end }
                _ = killed.changed() => break Some(&shared.reset),
            };
            match end {
                End::Cut => break Some(&shared.cut),
                // Torn down like a reset, without counting as one.
                End::Failed => break Some(&shared.failed),
                End::Eof if up_done && down_done => break None,
                End::Eof => {}
            }
        }
    };
    // Both ends passed on normally: a plain close, so nothing still in flight is dropped.
    if let Some(counter) = reset {
        // Whole again, so that dropping does not first send a FIN (as a write half does).
        for (read, write) in [(client_read, client_write), (server_read, server_write)] {
            if let Ok(stream) = read.reunite(write) {
                let _ = stream.set_zero_linger();
            }
        }
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Carries one direction through a delay line: what is read is written `latency` later.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
    toward_upstream: bool,
) -> End {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>, bool)>(64);
    let read = async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (n, cut) = if toward_upstream {
                shared.take_cut_budget(n)
            } else {
                (n, false)
            };
            let due = Instant::now() + shared.latency();
            if tx.send((due, buf[..n].to_vec(), cut)).await.is_err() || cut {
                return;
            }
        }
    };
    let write = async {
        let counter = if toward_upstream {
            &shared.bytes_up
        } else {
            &shared.bytes_down
        };
        while let Some((due, bytes, cut)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return End::Failed;
            }
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if cut {
                return End::Cut;
            }
        }
        let _ = to.shutdown().await;
        End::Eof
    };
    let ((), end) = tokio::join!(read, write);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers `ok` to the first bytes of each connection and reports
    /// everything each connection sent once it ends.
    async fn recorder() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (mut got, mut buf, mut answered) = (Vec::new(), [0u8; 4096], false);
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if !answered {
                            answered = conn.write_all(b"ok").await.is_ok();
                        }
                    }
                    let _ = tx.send(got);
                });
            }
        });
        (addr, rx)
    }

    /// Reads until the connection ends: what arrived, and whether it ended with an error.
    async fn read_to_end(conn: &mut TcpStream) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) => return (got, false),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return (got, true),
            }
        }
    }

    #[tokio::test]
    async fn carries_cuts_resets_and_refuses() {
        let (upstream, mut received) = recorder().await;
        let proxy = FaultProxy::to(&upstream.to_string()).await;
        proxy.set_latency(Duration::from_millis(5));

        // Carried both ways, and closed normally.
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"hello").await.unwrap();
        let mut ok = [0u8; 2];
        conn.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"ok");
        conn.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut conn).await, (Vec::new(), false));
        assert_eq!(received.recv().await.unwrap(), b"hello");

        // Cut after 7 bytes: the upstream gets 7 of 10, the client a reset.
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        proxy.cut_after(7);
        conn.write_all(b"0123456789").await.unwrap();
        assert!(read_to_end(&mut conn).await.1, "the client sees a reset");
        assert_eq!(received.recv().await.unwrap(), b"0123456");
        assert!(!proxy.cut_pending());

        // Reset: an open connection is torn down.
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        conn.write_all(b"x").await.unwrap();
        conn.read_exact(&mut ok).await.unwrap();
        proxy.reset_all();
        assert!(read_to_end(&mut conn).await.1, "the client sees a reset");
        assert_eq!(received.recv().await.unwrap(), b"x");

        // Refusing: accepted and reset at once, never carried.
        proxy.set_refusing(true);
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = conn.write_all(b"y").await;
        assert!(read_to_end(&mut conn).await.0.is_empty());
        proxy.set_refusing(false);

        let stats = proxy.stats();
        assert_eq!(
            (stats.accepted, stats.cut, stats.reset, stats.refused),
            (3, 1, 1, 1)
        );
        assert_eq!(stats.bytes_up, 5 + 7 + 1);
    }
}
