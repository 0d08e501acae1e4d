//! Argyle's webhook signature: lowercase hex HMAC-SHA512 of the raw body, keyed with the
//! subscription secret. Only [`verify`] makes a [`Verified`] value, so nothing unsigned can reach
//! the core.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

type HmacSha512 = Hmac<Sha512>;

/// A webhook signing secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's value, for signing and verifying only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A body whose signature matched one of the configured secrets.
#[derive(Debug, Clone)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Why a signature was refused. Each variant is one distinct failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Argyle-Signature header is missing")]
    Missing,
    #[error("the X-Argyle-Signature header is not valid hex")]
    NotHex,
    #[error("the X-Argyle-Signature header has the wrong length for HMAC-SHA512")]
    WrongLength,
    #[error("the X-Argyle-Signature header does not match the body")]
    Mismatch,
    #[error("the X-Argyle-Signature header appears more than once")]
    Duplicated,
    #[error("no webhook secret is configured")]
    NoSecrets,
}

impl SignatureError {
    /// A short stable name, for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::NotHex => "not_hex",
            SignatureError::WrongLength => "wrong_length",
            SignatureError::Mismatch => "mismatch",
            SignatureError::Duplicated => "duplicated",
            SignatureError::NoSecrets => "no_secrets",
        }
    }
}

/// Hex HMAC-SHA512 of `body` keyed with `secret`, as Argyle sends it.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    hex::encode(mac(secret, body).finalize().into_bytes())
}

fn mac(secret: &Secret, body: &[u8]) -> HmacSha512 {
    let mut mac = HmacSha512::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

/// Checks `header` against every secret (several during rotation), in constant time per secret.
/// Hex is read case-insensitively and surrounding ASCII white space is ignored.
pub fn verify<T: AsRef<[u8]>>(
    secrets: &[Secret],
    header: Option<&[u8]>,
    body: T,
) -> Result<Verified<T>, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecrets);
    }
    let header = header.ok_or(SignatureError::Missing)?.trim_ascii();
    if header.is_empty() {
        return Err(SignatureError::Missing);
    }
    let signature = hex::decode(header).map_err(|error| match error {
        hex::FromHexError::OddLength => SignatureError::WrongLength,
        _ => SignatureError::NotHex,
    })?;
    if signature.len() != 64 {
        return Err(SignatureError::WrongLength);
    }
    let matched = secrets.iter().fold(false, |matched, secret| {
        mac(secret, body.as_ref()).verify_slice(&signature).is_ok() | matched
    });
    if matched {
        Ok(Verified(body))
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_signed_with_any_configured_secret_verifies() {
        let secrets = [Secret::new("old"), Secret::new("new")];
        for secret in &secrets {
            let signature = sign(secret, b"{}");
            assert!(verify(&secrets, Some(signature.as_bytes()), b"{}").is_ok());
        }
    }

    #[test]
    fn each_bad_signature_gets_its_own_reason() {
        let secrets = [Secret::new("s")];
        let good = sign(&secrets[0], b"{}");
        let other = sign(&Secret::new("other"), b"{}");
        let cases: [(Option<&[u8]>, SignatureError); 5] = [
            (None, SignatureError::Missing),
            (Some(b"zz"), SignatureError::NotHex),
            (Some(b"abc"), SignatureError::WrongLength),
            (Some(&good.as_bytes()[..64]), SignatureError::WrongLength),
            (Some(other.as_bytes()), SignatureError::Mismatch),
        ];
        for (header, expected) in cases {
            assert_eq!(verify(&secrets, header, b"{}").unwrap_err(), expected);
        }
        assert_eq!(
            verify(&secrets, Some(good.as_bytes()), b"{} ").unwrap_err(),
            SignatureError::Mismatch
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }
}
