use covibe_proto::tonic;
use covibe_types::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("preview storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::Api(api) => api,
            Error::Storage(e) => ApiError::internal(e),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        ApiError::from(err).into()
    }
}
