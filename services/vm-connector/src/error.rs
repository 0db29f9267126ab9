use covibe_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("vm storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("starting vm-agent: {0}")]
    Launch(#[from] std::io::Error),
}

covibe_types::api_error!(Error);
