//! The web client, built from `web/` by `build.rs` and served by the gateway at `/`.

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
