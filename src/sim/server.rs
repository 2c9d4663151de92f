//! Serving a [`Simulator`] over HTTP/1.1 on loopback, with hyper and hyper-util.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::simulator::Simulator;

/// How long a shutdown waits for open connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(5);

impl Simulator {
    /// Serves the simulator over HTTP/1.1 at `addr` — a loopback address only (`127.0.0.1:0`
    /// picks a free port) — and returns the address bound and a handle that shuts the server
    /// down when dropped or when [`ServerHandle::shutdown`] is awaited.
    ///
    /// Must be called within a tokio runtime (it spawns the accept loop). Fails with
    /// [`io::ErrorKind::InvalidInput`] for an address that is not loopback.
    pub async fn serve(
        &self,
        addr: impl Into<SocketAddr>,
    ) -> io::Result<(SocketAddr, ServerHandle)> {
        let addr = addr.into();
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the simulator serves on loopback only, not {addr}"),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(self.clone(), listener, rx));
        Ok((
            local,
            ServerHandle {
                addr: local,
                shutdown: Some(tx),
                task: Some(task),
            },
        ))
    }
}

async fn accept_loop(sim: Simulator, listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors, a reset before accept: wait, go on.
                        tracing::debug!(error = %e, "simulator accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let sim = sim.clone();
                let service = hyper::service::service_fn(move |req| {
                    let mut sim = sim.clone();
                    async move {
                        let response = tower_service::Service::call(&mut sim, req).await;
                        Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                    }
                });
                // No hyper timer: its header-read timeout would fire early under paused time.
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "simulator connection ended with an error");
                    }
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

/// Keeps a [`Simulator`] served by [`Simulator::serve`] running; dropping it starts a
/// graceful shutdown in the background.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, lets open ones finish their requests (up to 5 s), and
    /// returns once the server is gone.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
