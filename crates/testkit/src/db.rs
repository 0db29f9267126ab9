use sea_orm::{ConnectionTrait, Database};

/// The machine's PostgreSQL, as every dev and CI machine runs it (override with `COVIBE_TEST_PG`).
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The machine's Redis (override with `COVIBE_TEST_REDIS`).
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

fn pg_admin_url() -> String {
    std::env::var("COVIBE_TEST_PG").unwrap_or_else(|_| PG_ADMIN_URL.to_owned())
}

pub fn redis_url() -> String {
    std::env::var("COVIBE_TEST_REDIS").unwrap_or_else(|_| REDIS_URL.to_owned())
}

/// A key prefix no other test run uses.
pub fn unique_prefix() -> String {
    format!("covibe-test-{}:", uuid::Uuid::new_v4().simple())
}

/// A database that exists for one test: a fresh PostgreSQL database (dropped on drop) or a
/// SQLite file in a temporary directory.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn postgres() -> Self {
        let name = format!("covibe_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(pg_admin_url())
            .await
            .expect("connect to the test postgres");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        admin.close().await.ok();
        let base = pg_admin_url();
        let url = match base.rfind('/') {
            Some(i) => format!("{}/{name}", &base[..i]),
            None => panic!("bad postgres url {base}"),
        };
        Self {
            url,
            pg_name: Some(name),
            _dir: None,
        }
    }

    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Self {
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg_name.is_some()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime we may use: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let admin = Database::connect(pg_admin_url()).await.ok()?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}
