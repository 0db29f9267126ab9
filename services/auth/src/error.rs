use covibe_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("auth storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
    #[error("token signing: {0}")]
    Signing(#[from] covibe_identity::Error),
}

covibe_types::api_error!(Error);
