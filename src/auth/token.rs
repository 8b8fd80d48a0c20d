//! Secrets: tokens and admin keys are 256-bit random values from the OS, URL-safe
//! base64 with a recognisable prefix (so secret scanners can find leaked ones). Only
//! their SHA-256 digests are stored or held in memory, and digests are compared in
//! constant time.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every tenant token.
pub const TOKEN_PREFIX: &str = "authgate_tk_";
/// Prefix of every admin key.
pub const ADMIN_KEY_PREFIX: &str = "authgate_ak_";

/// Whether a header value holds a gateway secret (a token or an admin key), in any
/// case, raw or inside `Basic` credentials: such a header never reaches the backend.
pub fn holds_secret(value: &[u8]) -> bool {
    let has_prefix = |bytes: &[u8]| {
        bytes.windows(TOKEN_PREFIX.len()).any(|w| {
            w.eq_ignore_ascii_case(TOKEN_PREFIX.as_bytes())
                || w.eq_ignore_ascii_case(ADMIN_KEY_PREFIX.as_bytes())
        })
    };
    if has_prefix(value) {
        return true;
    }
    let basic = value
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "));
    basic
        && base64::engine::general_purpose::STANDARD
            .decode(value[6..].trim_ascii())
            .is_ok_and(|decoded| has_prefix(&decoded))
}

/// The SHA-256 digest of a secret. Its `Debug` shows only the fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn of(secret: &str) -> Digest {
        Digest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &Digest) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// A short public handle for display and audit: the first 6 digest bytes in hex.
    pub fn id(&self) -> String {
        hex::encode(&self.0[..6])
    }

    /// [`Self::id`] without an allocation, for the access log.
    pub fn id_bytes(&self) -> [u8; 12] {
        let mut id = [0; 12];
        hex::encode_to_slice(&self.0[..6], &mut id).expect("12 hex digits for 6 bytes");
        id
    }

    /// A longer public handle: `sha256:` and the first 16 digest bytes in hex. Knowing it
    /// does not help to find the token (it is a hash of 256 random bits).
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(&self.0[..16]))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Digest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.fingerprint())
    }
}

/// A freshly generated secret, shown once.
pub struct Secret {
    pub value: String,
    pub digest: Digest,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// Generates a secret with `prefix` from the OS's CSPRNG.
pub fn generate(prefix: &str) -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let value = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let digest = Digest::of(&value);
    Ok(Secret { value, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_url_safe_and_distinct() {
        let a = generate(TOKEN_PREFIX).unwrap();
        assert!(holds_secret(format!("Bearer {}", a.value).as_bytes()));
        let b = generate(TOKEN_PREFIX).unwrap();
        assert_ne!(a.value, b.value);
        assert!(a.value.starts_with(TOKEN_PREFIX));
        assert_eq!(
            a.value.len(),
            TOKEN_PREFIX.len() + 43,
            "256 bits in unpadded base64"
        );
        let body = &a.value[TOKEN_PREFIX.len()..];
        assert!(body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.digest, Digest::of(&a.value));
    }

    #[test]
    fn digests_compare_and_print_without_the_secret() {
        let s = generate(ADMIN_KEY_PREFIX).unwrap();
        assert!(s.digest.matches(&Digest::of(&s.value)));
        assert!(!s.digest.matches(&Digest::of("other")));
        assert!(!format!("{s:?}").contains(&s.value));
        assert_eq!(Digest::from_hex(&s.digest.to_hex()), Some(s.digest));
        assert_eq!(s.digest.id().len(), 12);
        assert!(s.digest.fingerprint().starts_with("sha256:"));
    }
}
