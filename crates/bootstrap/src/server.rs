//! A gRPC server with health, reflection and per-request trace spans.

use std::future::Future;
use std::net::SocketAddr;

use covibe_proto::tonic::server::NamedService;
use covibe_proto::tonic::service::{Routes, RoutesBuilder};
use covibe_proto::tonic::transport::Server;
use covibe_proto::{FILE_DESCRIPTOR_SET, tonic};
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Error;

/// A gRPC server under construction: the listener is bound before anything else happens, so
/// the real address (for `127.0.0.1:0`) is known and printed before serving starts.
pub struct GrpcServer {
    listener: TcpListener,
    routes: RoutesBuilder,
    health: HealthReporter,
    names: Vec<&'static str>,
}

/// Lets the owner mark services as not serving while draining.
#[derive(Clone)]
pub struct ServingHandle {
    health: HealthReporter,
    names: Vec<&'static str>,
}

impl ServingHandle {
    pub async fn set_not_serving(&self) {
        for name in &self.names {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

impl GrpcServer {
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service).add_service(reflection);
        Ok(Self {
            listener,
            routes,
            health,
            names: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// `http://HOST:PORT` of the bound listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr())
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    pub fn serving_handle(&self) -> ServingHandle {
        ServingHandle {
            health: self.health.clone(),
            names: self.names.clone(),
        }
    }

    /// Marks every service serving and serves until `shutdown` resolves, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        for name in &self.names {
            self.health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        let routes: Routes = self.routes.routes();
        let trace = tower_http::trace::TraceLayer::new_for_grpc().make_span_with(
            |request: &http::Request<tonic::body::Body>| {
                let span = tracing::info_span!("grpc", rpc = %request.uri().path());
                covibe_telemetry::set_parent_from_headers(&span, request.headers());
                span
            },
        );
        Server::builder()
            .tcp_nodelay(true)
            .layer(trace)
            .add_routes(routes)
            // The builder's `tcp_nodelay` covers only listeners it binds itself: without it
            // here, small frames wait for the peer's delayed ACK (tens of milliseconds).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await?;
        Ok(())
    }
}
