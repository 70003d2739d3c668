//! Authentication maths: md5 and SCRAM-SHA-256, for both directions.
//!
//! No I/O here: the client and server modules drive these state machines
//! over their sockets. Hashing comes from the RustCrypto crates.

pub mod hba;
pub mod ldap;
pub mod scram;

use md5::{Digest, Md5};

/// Lowercase hex md5 of `data`.
pub fn md5_hex(parts: &[&[u8]]) -> String {
    String::from_utf8_lossy(&md5_hex_bytes(parts)).into_owned()
}

/// Lowercase hex md5 of `data`, on the stack.
fn md5_hex_bytes(parts: &[&[u8]]) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 32];
    for (i, b) in h.finalize().iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
    out
}

/// The stored md5 secret (without its `md5` prefix): md5hex(password ‖ user).
pub fn md5_secret(password: &str, user: &str) -> String {
    md5_hex(&[password.as_bytes(), user.as_bytes()])
}

/// The wire answer to AuthenticationMD5Password(salt), from the secret.
pub fn md5_response(secret_hex: &str, salt: &[u8]) -> String {
    format!("md5{}", md5_hex(&[secret_hex.as_bytes(), salt]))
}

/// Whether `got` is the right answer to AuthenticationMD5Password(salt)
/// for the secret, compared in constant time. Nothing is allocated: this
/// runs at every md5 login.
pub fn md5_response_matches(secret_hex: &[u8], salt: &[u8], got: &[u8]) -> bool {
    let mut want = [0u8; 35];
    want[..3].copy_from_slice(b"md5");
    want[3..].copy_from_slice(&md5_hex_bytes(&[secret_hex, salt]));
    ct_eq(&want, got)
}

/// Constant-time equality, for anything secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_reference_example() {
        // PostgreSQL's md5 secret of user admin, password 1234.
        assert_eq!(
            md5_secret("1234", "admin"),
            "45f2603610af569b6155c45067268c6b"
        );
    }

    #[test]
    fn md5_response_matches_only_the_right_answer() {
        let secret = md5_secret("secret", "alice");
        let salt = [1, 2, 3, 4];
        let right = md5_response(&secret, &salt);
        assert!(md5_response_matches(
            secret.as_bytes(),
            &salt,
            right.as_bytes()
        ));
        assert!(!md5_response_matches(
            secret.as_bytes(),
            &[1, 2, 3, 5],
            right.as_bytes()
        ));
        assert!(!md5_response_matches(
            secret.as_bytes(),
            &salt,
            &right.as_bytes()[..34]
        ));
        assert!(!md5_response_matches(secret.as_bytes(), &salt, b""));
    }

    #[test]
    fn md5_response_is_double_hashed() {
        let secret = md5_secret("secret", "alice");
        let salt = [1u8, 2, 3, 4];
        let expect = format!(
            "md5{}",
            md5_hex(&[md5_hex(&[b"secret", b"alice"]).as_bytes(), &salt])
        );
        assert_eq!(md5_response(&secret, &salt), expect);
        assert_ne!(md5_response(&secret, &[0, 0, 0, 0]), expect);
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
