use covibe_proto::tonic;
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

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Api(api) => api,
            other => ApiError::internal(other),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        ApiError::from(err).into()
    }
}
