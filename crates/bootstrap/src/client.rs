//! Clients of other services: one lazily-connected channel per endpoint, trace context on every
//! call, and the member's token forwarded so the callee can check it itself.

use covibe_proto::tonic;
use covibe_proto::tonic::service::interceptor::InterceptedService;
use covibe_proto::tonic::transport::{Channel, Endpoint};
use covibe_telemetry::TraceInterceptor;

use crate::Error;

/// The channel type every generated client is built over.
pub type Client = InterceptedService<Channel, TraceInterceptor>;

/// A channel to `url` that connects on first use and reconnects after failures.
pub fn channel(url: &str) -> Result<Client, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|source| Error::Endpoint {
            url: url.to_owned(),
            source,
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_while_idle(true);
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        TraceInterceptor,
    ))
}

/// A request carrying `token` as its bearer credential.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
