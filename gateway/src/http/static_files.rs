//! Everything the API does not route: the web client's files from `static_dir` (a single-page
//! app, so a path that is not a file gets `index.html`), or, with no directory configured, a
//! tiny JSON pointer to the API description. Paths under `/api`, `/socket.io` and the health
//! probes never fall through to files: they answer the API's 404.

use std::path::Path;

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use covibe_types::ApiError;
use http::Method;
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::http::error::HttpError;

/// The web client's files, when configured.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    dir: Option<SiteDir>,
}

#[derive(Debug, Clone)]
struct SiteDir {
    /// Files only: a missing `/app.js` is a 404, not the app's page.
    files: ServeDir,
    /// Files, and `index.html` for the app's own routes (`/team/42`).
    app: ServeDir<ServeFile>,
}

impl Site {
    pub(crate) fn new(dir: Option<&Path>) -> Self {
        Self {
            dir: dir.map(|dir| SiteDir {
                files: ServeDir::new(dir),
                app: ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html"))),
            }),
        }
    }
}

fn reserved(path: &str) -> bool {
    ["/api", "/socket.io", "/healthz", "/readyz"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

impl Site {
    /// The answer to a request the API does not route.
    pub(crate) async fn respond(&self, request: Request) -> Response {
        respond(self, request).await
    }
}

async fn respond(site: &Site, request: Request) -> Response {
    let path = request.uri().path();
    if reserved(path) {
        return HttpError(ApiError::not_found("no such route")).into_response();
    }
    let Some(dir) = &site.dir else {
        if path == "/" && matches!(*request.method(), Method::GET | Method::HEAD) {
            return Json(json!({"name": "covibe", "api": "/api/openapi.json"})).into_response();
        }
        return HttpError(ApiError::not_found("no such route")).into_response();
    };
    let looks_like_file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    let Ok(response) = if looks_like_file {
        dir.files
            .clone()
            .oneshot(request)
            .await
            .map(IntoResponse::into_response)
    } else {
        dir.app
            .clone()
            .oneshot(request)
            .await
            .map(IntoResponse::into_response)
    };
    response
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
}
