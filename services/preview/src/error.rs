use covibe_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("preview storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
}

covibe_types::api_error!(Error);
