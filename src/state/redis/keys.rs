//! The names of one deployment's keys and channels in Redis.
//!
//! Every name carries the same hash tag (`{prefix}`), so Redis Cluster keeps them in one
//! slot and each Lua script may touch all of them. The layout itself is described in
//! the [`super`] module docs.

/// Key and channel names of one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    pub epoch: String,
    pub rev: String,
    pub tenants: String,
    pub log: String,
    pub leases: String,
    pub acks: String,
    pub changes: String,
    pub acked: String,
    /// `{p}:t:`; a tenant's hash is this plus its name.
    pub tenant_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            epoch: k("epoch"),
            rev: k("rev"),
            tenants: k("tenants"),
            log: k("log"),
            leases: k("leases"),
            acks: k("acks"),
            changes: k("changes"),
            acked: k("acked"),
            tenant_prefix: k("t:"),
        }
    }

    pub fn tenant(&self, name: &str) -> String {
        format!("{}{name}", self.tenant_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_shares_one_hash_tag() {
        let keys = Keys::new("authgate");
        assert_eq!(keys.epoch, "{authgate}:epoch");
        assert_eq!(keys.tenant("acme"), "{authgate}:t:acme");
        assert_eq!(keys.acked, "{authgate}:acked");
    }
}
