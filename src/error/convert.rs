//! Every conversion into [`GatewayError`]: the auth decision's refusals, a failed
//! upstream exchange, and a state store's failure to change the state.

use super::GatewayError;
use crate::auth::decide::Rejection;
use crate::state::StoreError;
use crate::upstream::Failure;

impl From<Rejection> for GatewayError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::BadPath(_) | Rejection::AmbiguousPath => GatewayError::BadPath,
            Rejection::BadTenant => GatewayError::BadTenant,
            Rejection::MethodOverride => GatewayError::MethodOverride,
            Rejection::Connect => GatewayError::MethodNotAllowed,
            Rejection::Missing => GatewayError::MissingToken,
            Rejection::Malformed => GatewayError::MalformedCredentials,
            Rejection::Invalid => GatewayError::InvalidToken,
            Rejection::Expired => GatewayError::ExpiredToken,
        }
    }
}

impl From<Failure> for GatewayError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Tls(e, _) | Failure::Connect(e) => GatewayError::UpstreamConnect(Box::new(e)),
            Failure::BodyTooLarge => GatewayError::PayloadTooLarge,
            Failure::BodyTimeout => GatewayError::ClientTimeout,
            Failure::ClientBody(e) => GatewayError::ClientBody(Box::new(e)),
            Failure::Other(e) => GatewayError::UpstreamFailed(Box::new(e)),
        }
    }
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { current } => GatewayError::Conflict { current },
            StoreError::NotInitialised => GatewayError::StateNotInitialised,
            StoreError::HandingOver => GatewayError::HandingOver,
            StoreError::Uncertain(_) => GatewayError::StateUncertain,
            StoreError::NotReplicated {
                revision,
                wanted,
                confirmed,
            } => GatewayError::StateNotReplicated {
                revision,
                wanted,
                confirmed,
            },
            StoreError::Unavailable(_) | StoreError::Corrupt { .. } | StoreError::Io { .. } => {
                GatewayError::StateUnavailable
            }
        }
    }
}
