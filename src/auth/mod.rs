//! Everything the token check needs: Bearer parsing, path normalisation, token digests,
//! and the decision itself.
//!
//! Flow for each proxied request: [`decide::decide`] normalises the path ([`path`]),
//! matches it against the protected routes, finds the tenant, and — when the tenant
//! requires authentication — parses the credentials ([`bearer`]) and compares their
//! digest ([`token`]) with the tenant's current one in the immutable state snapshot.
//! The proxy then forwards (with the normalised path) or answers the rejection.

pub mod bearer;
pub mod decide;
pub mod path;
pub mod token;
