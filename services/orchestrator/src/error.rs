use covibe_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("agent storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("hot store: {0}")]
    Hot(#[from] covibe_storage::Error),
}

covibe_types::api_error!(Error);
