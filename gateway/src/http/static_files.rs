//! Everything the API does not route: the web client (a single-page app, so a path that is not a
//! file gets `index.html`), from `static_dir` when one is configured, else the copy built into
//! the binary; with neither, a tiny JSON pointer to the API description. Paths under `/api`,
//! `/socket.io` and the health probes never fall through to files: they answer the API's 404.
//!
//! Every page carries a strict Content-Security-Policy: scripts and styles from this origin only
//! (no inline script), no plugins, and the app may not be framed by other sites.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use covibe_types::ApiError;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    HeaderValue, REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::http::error::HttpError;

/// The policy of the app's pages. `connect-src 'self'` covers the same-origin WebSocket;
/// previews may live on other origins, so frames may come from any http(s) origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; worker-src 'self'; \
    manifest-src 'self'; frame-src 'self' https: http:; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// A web client compiled into the binary: `(path, bytes)` pairs, paths relative to the site root
/// (`index.html`, `assets/app-1a2b.js`). A `NAME.gz` entry is served for `NAME` to clients that
/// accept gzip.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedSite(pub &'static [(&'static str, &'static [u8])]);

/// The web client's files, when there are any.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    None,
    Dir(Box<SiteDir>),
    Embedded(Arc<HashMap<&'static str, &'static [u8]>>),
}

#[derive(Debug, Clone)]
struct SiteDir {
    /// Files only: a missing `/app.js` is a 404, not the app's page.
    files: ServeDir,
    /// Files, and `index.html` for the app's own routes (`/team/42`).
    app: ServeDir<ServeFile>,
}

impl Site {
    /// `dir` wins over `embedded`, so a developer can serve a client they are changing.
    pub(crate) fn new(dir: Option<&Path>, embedded: Option<EmbeddedSite>) -> Self {
        let source = match (dir, embedded) {
            (Some(dir), _) => Source::Dir(Box::new(SiteDir {
                files: ServeDir::new(dir).precompressed_gzip(),
                app: ServeDir::new(dir)
                    .precompressed_gzip()
                    .fallback(ServeFile::new(dir.join("index.html")).precompressed_gzip()),
            })),
            (None, Some(site)) if site.0.iter().any(|(name, _)| *name == "index.html") => {
                Source::Embedded(Arc::new(site.0.iter().copied().collect()))
            }
            (None, _) => Source::None,
        };
        Self { source }
    }

    /// The answer to a request the API does not route.
    pub(crate) async fn respond(&self, request: Request) -> Response {
        let path = request.uri().path();
        if reserved(path) {
            return not_found();
        }
        let looks_like_file = path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.'));
        let mut response = match &self.source {
            Source::None => {
                if path == "/" && matches!(*request.method(), Method::GET | Method::HEAD) {
                    return Json(json!({"name": "covibe", "api": "/api/openapi.json"}))
                        .into_response();
                }
                return not_found();
            }
            Source::Dir(dir) => {
                let service = if looks_like_file {
                    dir.files.clone().oneshot(request).await
                } else {
                    dir.app.clone().oneshot(request).await
                };
                let Ok(response) = service.map(IntoResponse::into_response);
                response
            }
            Source::Embedded(files) => embedded(files, &request, looks_like_file),
        };
        harden(response.headers_mut());
        response
    }
}

fn not_found() -> Response {
    HttpError(ApiError::not_found("no such route")).into_response()
}

fn reserved(path: &str) -> bool {
    ["/api", "/socket.io", "/healthz", "/readyz"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

fn embedded(
    files: &HashMap<&'static str, &'static [u8]>,
    request: &Request,
    looks_like_file: bool,
) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return not_found();
    }
    let wanted = request.uri().path().trim_start_matches('/');
    let name = match (
        files.get_key_value(wanted),
        wanted.is_empty(),
        looks_like_file,
    ) {
        (Some((name, _)), false, _) => *name,
        // A missing file is a 404; any other path is one of the app's own routes.
        (None, false, true) => return not_found(),
        _ => "index.html",
    };
    let accepts_gzip = request
        .headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let gzipped = accepts_gzip
        .then(|| files.get(format!("{name}.gz").as_str()))
        .flatten();
    let body: &'static [u8] = match gzipped {
        Some(gz) => gz,
        None => files.get(name).copied().unwrap_or_default(),
    };
    let mut response = if *request.method() == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(body))
    };
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
    // Vite names assets by their content: they never change. Everything else is revalidated so
    // a new release reaches phones at once.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped.is_some() {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit('.').next().unwrap_or_default();
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn harden(headers: &mut HeaderMap) {
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_are_reserved() {
        for path in [
            "/api",
            "/api/",
            "/api/x",
            "/socket.io/",
            "/healthz",
            "/readyz",
        ] {
            assert!(reserved(path), "{path}");
        }
        for path in ["/", "/apix", "/index.html", "/team/42", "/healthzz"] {
            assert!(!reserved(path), "{path}");
        }
    }

    static FILES: &[(&str, &[u8])] = &[
        ("index.html", b"<!doctype html><div id=app></div>"),
        ("index.html.gz", b"gzipped index"),
        ("assets/app-1a2b.js", b"console.log(1)"),
        ("sw.js", b"self.addEventListener('fetch', () => {})"),
    ];

    async fn get(site: &Site, path: &str, gzip: bool) -> Response {
        let mut request = Request::get(path);
        if gzip {
            request = request.header(ACCEPT_ENCODING, "br, gzip;q=0.8");
        }
        site.respond(request.body(Body::empty()).unwrap()).await
    }

    async fn text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_embedded_client_is_served_as_a_single_page_app() {
        let site = Site::new(None, Some(EmbeddedSite(FILES)));
        for path in ["/", "/agents/42", "/workshop"] {
            let response = get(&site, path, false).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let csp = response.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
            assert!(text(response).await.contains("id=app"), "{path}");
        }
        let response = get(&site, "/", true).await;
        assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(text(response).await, "gzipped index");

        let script = get(&site, "/assets/app-1a2b.js", true).await;
        assert_eq!(
            script.headers()[CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(
            script.headers()[CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let worker = get(&site, "/sw.js", false).await;
        assert_eq!(worker.headers()[CACHE_CONTROL], "no-cache");

        assert_eq!(
            get(&site, "/assets/gone.js", false).await.status(),
            StatusCode::NOT_FOUND
        );
        for path in ["/api/nothing", "/socket.io/x", "/healthz/x"] {
            let response = get(&site, path, false).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(text(response).await.contains("no such route"), "{path}");
        }
    }

    #[tokio::test]
    async fn without_a_client_the_root_points_at_the_api() {
        let site = Site::new(None, Some(EmbeddedSite(&[])));
        let response = get(&site, "/", false).await;
        assert!(text(response).await.contains("/api/openapi.json"));
        assert_eq!(
            get(&site, "/workshop", false).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
