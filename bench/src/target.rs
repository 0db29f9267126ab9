//! What differs between the two servers: how members get a token, how agents are started.
//! Viewers are the same Socket.io client against both.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// CoVibe's gateway (REST + Socket.io), agents over the AgentLink gRPC stream.
    Covibe,
    /// The seed's Node server (Express + Socket.io), agents over its /agent-ws WebSocket.
    Seed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Covibe => "covibe",
            Self::Seed => "seed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Team {
    pub index: u32,
    pub id: String,
    pub members: Vec<Member>,
}

/// Requests in flight at once while setting up.
const SETUP_CONCURRENCY: usize = 8;

#[derive(Clone)]
pub struct Api {
    pub kind: Kind,
    pub url: String,
    http: reqwest::Client,
    /// Distinguishes this run's e-mail addresses and seed ids from earlier runs'.
    tag: String,
}

impl Api {
    pub fn new(kind: Kind, url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(SETUP_CONCURRENCY * 2)
            .build()?;
        Ok(Self {
            kind,
            url: url.trim_end_matches('/').to_owned(),
            http,
            tag: format!("{:x}", crate::marker::now_us()),
        })
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status}: {body}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str, token: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }

    /// The raw body of a GET, for timing what the server sends.
    pub async fn get_bytes(&self, path: &str, token: &str) -> Result<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.bytes().await?.to_vec();
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }

    /// `teams` teams of `members` members each, every member with a token.
    pub async fn setup_teams(&self, teams: u32, members: u32) -> Result<Vec<Team>> {
        let members = members.max(1);
        let mut out: Vec<Team> = futures::stream::iter(0..teams)
            .map(|i| self.team(i, members))
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await?;
        out.sort_by_key(|t| t.index);
        Ok(out)
    }

    async fn team(&self, index: u32, members: u32) -> Result<Team> {
        match self.kind {
            Kind::Seed => {
                let id = format!("team-{}-{index}", self.tag);
                let mut list = Vec::new();
                for m in 0..members {
                    let user_id = format!("user-{index}-{m}");
                    let token = self.seed_token(&id, &user_id).await?;
                    list.push(Member { user_id, token });
                }
                Ok(Team {
                    index,
                    id,
                    members: list,
                })
            }
            Kind::Covibe => {
                let email = |m: u32| format!("bench-{}-{index}-{m}@example.com", self.tag);
                let created = self
                    .post(
                        "/api/team/create",
                        None,
                        &json!({"name": format!("bench {index}"), "email": email(0), "displayName": "Owner"}),
                    )
                    .await?;
                let id = str_at(&created, &["team", "id"])?;
                let code = str_at(&created, &["inviteCode"])?;
                let mut list = vec![member(&created)?];
                for m in 1..members {
                    let session = self
                        .post(
                            "/api/auth/login",
                            None,
                            &json!({"inviteCode": code, "email": email(m), "displayName": format!("Viewer {m}")}),
                        )
                        .await?;
                    list.push(member(&session)?);
                }
                Ok(Team {
                    index,
                    id,
                    members: list,
                })
            }
        }
    }

    /// A seed token for `user_id` in `team_id` (the seed hands them out without a check).
    pub async fn seed_token(&self, team_id: &str, user_id: &str) -> Result<String> {
        let body = self
            .post(
                "/api/auth/login",
                None,
                &json!({"teamId": team_id, "userId": user_id}),
            )
            .await?;
        str_at(&body, &["token"])
    }

    /// CoVibe: spawns an agent as `token`'s member; returns its id.
    pub async fn spawn(&self, token: &str, task: &str) -> Result<String> {
        let body = self
            .post("/api/agent/spawn", Some(token), &json!({"task": task}))
            .await?;
        str_at(&body, &["agent", "id"])
    }
}

fn member(session: &Value) -> Result<Member> {
    Ok(Member {
        user_id: str_at(session, &["user", "id"])?,
        token: str_at(session, &["accessToken"])?,
    })
}

fn str_at(value: &Value, path: &[&str]) -> Result<String> {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .map(str::to_owned)
        .with_context(|| format!("no {} in {value}", path.join(".")))
}
