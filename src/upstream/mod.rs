//! Everything on the upstream side of the gateway: the connection pool, the client's
//! request body on its way there (size limit, stall timeout), the upstream's response
//! body on its way back (returning its connection when it ends), and how a failed
//! exchange is sorted into the upstream's fault or the client's.
//!
//! Flow: the proxy wraps the client's body in a [`RequestBody`] and hands the request to
//! [`Pool::send`]; the response comes back with a [`PooledBody`]; a failure is a
//! [`PoolError`], which [`PoolError::classify`] turns into a [`Failure`].

mod error;
mod pool;
mod request_body;
mod response_body;

pub use error::{chain, describe, rustls_error, BoxError, Failure, PoolError};
pub use pool::Pool;
pub use request_body::RequestBody;
pub use response_body::PooledBody;
