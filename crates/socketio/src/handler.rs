//! What the application implements.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::socket::{Event, Socket};

/// What the application does with its sockets.
pub trait Handler<S>: Send + Sync + 'static {
    /// A client connects to the namespace; an error refuses it with that message (the client's
    /// `connect_error`) and closes the connection.
    fn connect(&self, socket: &Arc<Socket<S>>) -> Result<(), String>;
    /// A client's event. Each runs on a task of its own.
    fn event(&self, socket: Arc<Socket<S>>, event: Event<S>) -> BoxFuture<'static, ()>;
    /// An event refused because the client has too many being handled already: answer it
    /// with an error the client understands (the default drops it).
    fn overloaded(&self, event: Event<S>) {
        drop(event);
    }
    /// A connected socket is gone, whichever side ended it.
    fn disconnect(&self, socket: Arc<Socket<S>>) -> BoxFuture<'static, ()>;
}
