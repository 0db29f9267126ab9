//! gRPC-web for browsers.

use serde_json::json;

use crate::support::*;

/// Typed clients in browsers use gRPC-web: a call succeeds with a member's token and is refused
/// as unauthenticated without one; internal RPCs are not reachable; CORS is configurable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_for_browsers() {
    use covibe_proto::orchestrator::v1::ListAgentsResponse;
    use covibe_proto::prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let origins = [("COVIBE_CORS_ALLOWED_ORIGINS", r#"["http://app.example"]"#)];
    let (_proc, gw) = start_standalone_with(dir.path(), &origins).await;
    let http = reqwest::Client::new();
    let (_, me) = create_team(&http, &gw, "W", "w@example.com", "W").await;
    let token = me["accessToken"].as_str().unwrap().to_owned();
    let (_, spawned) = post(
        &http,
        &format!("{gw}/api/agent/spawn"),
        Some(&token),
        json!({"task": "lines=1 hello"}),
    )
    .await;
    let agent = spawned["agent"]["id"].as_str().unwrap().to_owned();

    let list = format!("{gw}/covibe.orchestrator.v1.OrchestratorService/ListAgents");
    let (data, status) = grpc_web_call(&http, &list, Some(&token), &[]).await;
    assert_eq!(status, "0");
    let agents = ListAgentsResponse::decode(&data[..]).unwrap().agents;
    assert_eq!(
        agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec![agent.as_str()]
    );

    let (_, status) = grpc_web_call(&http, &list, None, &[]).await;
    assert_eq!(status, "16", "unauthenticated");
    let internal = format!("{gw}/covibe.team.v1.TeamService/CreateTeam");
    let (_, status) = grpc_web_call(&http, &internal, Some(&token), &[]).await;
    assert_eq!(status, "12", "internal RPCs are not exposed");

    let preflight = http
        .request(reqwest::Method::OPTIONS, &list)
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "http://app.example"
    );
    let other = http
        .request(reqwest::Method::OPTIONS, &list)
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The agent ends and its vm-agent with it, before the mesh stops: no process outlives the
    // test.
    wait_for_status(&http, &gw, &token, &agent, "completed").await;
}
