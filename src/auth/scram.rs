//! SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL uses it: the server side
//! for clients, the client side for logging into servers.
//!
//! The server side hands back the client's `ClientKey` (recovered from its
//! proof) so that a pooler storing only a SCRAM secret can still log into a
//! server that holds the same secret: see [`ClientCreds::Keys`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ct_eq;

type HmacSha256 = Hmac<Sha256>;

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// With channel binding (`tls-server-end-point`), offered on TLS only.
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// A message did not parse; the name says which.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding we cannot give.
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// The client says the server offers binding (`y`) though we do.
    #[error("channel binding downgrade: the client says the server cannot bind, but it offered SCRAM-SHA-256-PLUS")]
    Downgrade,
    /// The channel binding data does not match this TLS connection.
    #[error("channel binding data does not match")]
    BindingMismatch,
    /// The nonce does not extend the one sent.
    #[error("SCRAM nonce mismatch")]
    Nonce,
    /// The client proof is wrong: a wrong password.
    #[error("SCRAM proof does not match")]
    BadProof,
    /// The server's signature is wrong: it does not know the password.
    #[error("server signature does not match")]
    BadServerSignature,
}

/// A stored secret: `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt, decoded.
    pub salt: Vec<u8>,
    /// StoredKey: H(ClientKey).
    pub stored_key: [u8; 32],
    /// ServerKey.
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramSecret(iterations={})", self.iterations)
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn key32(v: Vec<u8>) -> Option<[u8; 32]> {
    v.try_into().ok()
}

/// SaltedPassword = PBKDF2-HMAC-SHA256(password, salt, iterations).
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations.max(1), &mut out);
    out
}

/// (ClientKey, ServerKey) from a salted password.
pub fn keys_from_salted(salted: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    (hmac(salted, b"Client Key"), hmac(salted, b"Server Key"))
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<ScramSecret> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramSecret {
            iterations: iter.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: key32(B64.decode(stored).ok()?)?,
            server_key: key32(B64.decode(server).ok()?)?,
        })
    }

    /// Derives a secret from a password, as PostgreSQL does.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let (client_key, server_key) = keys_from_salted(&salted);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key,
        }
    }

    /// A secret for a plaintext password with a fresh random salt.
    pub fn generate(password: &str, iterations: u32) -> ScramSecret {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        Self::from_password(password, &salt, iterations)
    }
}

impl std::fmt::Display for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

fn nonce() -> String {
    let mut b = [0u8; 18];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// Split `a=1,b=2` attributes; values may contain `=` but not `,`.
fn attr<'a>(parts: &[&'a str], name: char) -> Option<&'a str> {
    parts.iter().find_map(|p| {
        let mut c = p.chars();
        (c.next() == Some(name) && c.next() == Some('=')).then(|| &p[2..])
    })
}

/// The server side of one exchange with a client.
pub struct ScramServer {
    secret: ScramSecret,
    /// SCRAM-SHA-256-PLUS was offered (the client is on TLS).
    plus_offered: bool,
    /// The client chose PLUS: the `tls-server-end-point` data to expect.
    binding: Option<Vec<u8>>,
    nonce: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
}

/// What a successful client exchange yields.
pub struct ScramSuccess {
    /// The `server-final-message` to send in AuthenticationSASLFinal.
    pub server_final: Vec<u8>,
    /// The client's ClientKey, for logging into servers with the same secret.
    pub client_key: [u8; 32],
}

impl ScramServer {
    /// The server side of an exchange against `secret`.
    pub fn new(secret: ScramSecret) -> Self {
        ScramServer {
            secret,
            plus_offered: false,
            binding: None,
            nonce: String::new(),
            gs2_header: String::new(),
            client_first_bare: String::new(),
            server_first: String::new(),
        }
    }

    /// Say what was offered and chosen: `plus_offered` when both mechanisms
    /// were advertised; `binding` (the hash of our certificate) when the
    /// client chose SCRAM-SHA-256-PLUS.
    pub fn with_channel_binding(mut self, plus_offered: bool, binding: Option<Vec<u8>>) -> Self {
        self.plus_offered = plus_offered;
        self.binding = binding;
        self
    }

    /// Take the `client-first-message`; return the `server-first-message`.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let s = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let mut it = s.splitn(3, ',');
        let flag = it.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let authzid = it.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = it
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        match flag {
            "n" if self.binding.is_none() => {}
            // `y`: the client could bind but thinks we cannot. If we offered
            // PLUS, someone in between removed it from the list.
            "y" if self.plus_offered => return Err(ScramError::Downgrade),
            "y" if self.binding.is_none() => {}
            "p=tls-server-end-point" if self.binding.is_some() => {}
            _ if flag.starts_with("p=") || self.binding.is_some() => {
                return Err(ScramError::ChannelBinding)
            }
            _ => return Err(ScramError::Malformed("bad gs2 flag")),
        }
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let parts: Vec<&str> = bare.split(',').collect();
        if parts.first().is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let cnonce = attr(&parts, 'r').ok_or(ScramError::Malformed("no client nonce"))?;
        if cnonce.is_empty()
            || cnonce
                .bytes()
                .any(|b| !(0x21..=0x7e).contains(&b) || b == b',')
        {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        // The user name (`n=`) is ignored: PostgreSQL uses the startup user.
        self.gs2_header = format!("{flag},{authzid},");
        self.client_first_bare = bare.to_string();
        self.nonce = format!("{cnonce}{}", nonce());
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        Ok(self.server_first.clone().into_bytes())
    }

    /// Take the `client-final-message`; verify the proof.
    pub fn client_final(&mut self, data: &[u8]) -> Result<ScramSuccess, ScramError> {
        let s = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = s
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let parts: Vec<&str> = without_proof.split(',').collect();
        let cbind = attr(&parts, 'c').ok_or(ScramError::Malformed("no channel binding"))?;
        let mut expect = self.gs2_header.as_bytes().to_vec();
        if let Some(b) = &self.binding {
            expect.extend_from_slice(b);
        }
        if !ct_eq(cbind.as_bytes(), B64.encode(&expect).as_bytes()) {
            return Err(ScramError::BindingMismatch);
        }
        let n = attr(&parts, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if self.nonce.is_empty() || !ct_eq(n.as_bytes(), self.nonce.as_bytes()) {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .ok()
            .and_then(key32)
            .ok_or(ScramError::Malformed("bad proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        if !ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok(ScramSuccess {
            server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
            client_key,
        })
    }
}

/// What we log into a server with.
#[derive(Clone)]
pub enum ClientCreds {
    /// The password itself.
    Password(String),
    /// ClientKey recovered from a client's proof, and the ServerKey of the
    /// stored secret: works when the server's secret is the same one.
    Keys {
        /// ClientKey, learnt from a client's proof (pass-through).
        client_key: [u8; 32],
        /// ServerKey.
        server_key: [u8; 32],
    },
}

/// The client side of one exchange with a server.
pub struct ScramClient {
    creds: ClientCreds,
    nonce: String,
    auth_message: String,
    server_key: [u8; 32],
}

impl ScramClient {
    /// The client side of an exchange with `creds`.
    pub fn new(creds: ClientCreds) -> Self {
        ScramClient {
            creds,
            nonce: nonce(),
            auth_message: String::new(),
            server_key: [0; 32],
        }
    }

    /// The `client-first-message` (no channel binding, empty user name as
    /// libpq sends: the server uses the startup user).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,n=,r={}", self.nonce).into_bytes()
    }

    /// Take the `server-first-message`; return the `client-final-message`.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let s = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let parts: Vec<&str> = s.split(',').collect();
        let r = attr(&parts, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if !r.starts_with(&self.nonce) || r.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = attr(&parts, 's')
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("bad salt"))?;
        let iterations: u32 = attr(&parts, 'i')
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or(ScramError::Malformed("bad iteration count"))?;
        let (client_key, server_key) = match &self.creds {
            ClientCreds::Password(p) => {
                keys_from_salted(&salted_password(p.as_bytes(), &salt, iterations))
            }
            ClientCreds::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };
        let without_proof = format!("c=biws,r={r}");
        self.auth_message = format!("n=,r={},{s},{without_proof}", self.nonce);
        let stored_key = sha256(&client_key);
        let signature = hmac(&stored_key, self.auth_message.as_bytes());
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = client_key[i] ^ signature[i];
        }
        self.server_key = server_key;
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Check the `server-final-message`.
    pub fn server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let s = std::str::from_utf8(data).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = s
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or(v)).ok())
            .ok_or(ScramError::Malformed("no verifier"))?;
        let expect = hmac(&self.server_key, self.auth_message.as_bytes());
        if ct_eq(&v, &expect) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's test vector: user "user", password "pencil".
    #[test]
    fn rfc7677_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secret = ScramSecret::from_password("pencil", &salt, 4096);
        let mut srv = ScramServer::new(secret);
        srv.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        // Force the RFC's combined nonce so the proof matches.
        srv.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        srv.server_first =
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                .into();
        let ok = srv
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            String::from_utf8(ok.server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn client_and_server_agree_and_keys_pass_through() {
        let secret = ScramSecret::generate("s3cret", 4096);
        let parsed = ScramSecret::parse(&secret.to_string()).unwrap();
        assert!(parsed == secret);

        let run = |creds: ClientCreds, secret: &ScramSecret| -> Result<[u8; 32], ScramError> {
            let mut c = ScramClient::new(creds);
            let mut s = ScramServer::new(secret.clone());
            let sf = s.client_first(&c.client_first())?;
            let cf = c.server_first(&sf)?;
            let ok = s.client_final(&cf)?;
            c.server_final(&ok.server_final)?;
            Ok(ok.client_key)
        };
        let client_key = run(ClientCreds::Password("s3cret".into()), &secret).unwrap();
        // The recovered ClientKey logs in again, without the password.
        let again = run(
            ClientCreds::Keys {
                client_key,
                server_key: secret.server_key,
            },
            &secret,
        )
        .unwrap();
        assert_eq!(again, client_key);
        assert_eq!(
            run(ClientCreds::Password("wrong".into()), &secret).err(),
            Some(ScramError::BadProof)
        );
    }

    #[test]
    fn rejects_channel_binding_and_garbage() {
        let mut s = ScramServer::new(ScramSecret::generate("x", 4096));
        assert_eq!(
            s.client_first(b"p=tls-server-end-point,,n=,r=abc").err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(s.client_first(b"garbage").is_err());
        assert!(s.client_first(&[0xff, 0xfe]).is_err());
        assert!(s.client_final(b"c=biws,r=x,p=AAAA").is_err());
        let mut s = ScramServer::new(ScramSecret::generate("x", 4096));
        s.client_first(b"n,,n=,r=abc").unwrap();
        assert_eq!(
            s.client_final(b"c=biws,r=abcWRONG,p=AAAA").err(),
            Some(ScramError::Nonce)
        );
    }

    #[test]
    fn channel_binding_plus_and_downgrade() {
        let secret = ScramSecret::generate("pw", 4096);
        let hash = vec![7u8; 32];
        // A client choosing PLUS must bind to our certificate's hash.
        let client_first = b"p=tls-server-end-point,,n=,r=abc";
        let mut s = ScramServer::new(secret.clone()).with_channel_binding(true, Some(hash.clone()));
        s.client_first(client_first).unwrap();
        let mut cb = b"p=tls-server-end-point,,".to_vec();
        cb.extend_from_slice(&[9u8; 32]);
        let wrong = format!("c={},r={},p=AAAA", B64.encode(&cb), s.nonce);
        assert_eq!(
            s.client_final(wrong.as_bytes()).err(),
            Some(ScramError::BindingMismatch)
        );
        // `y` while PLUS was offered: refused as a downgrade.
        let mut s = ScramServer::new(secret.clone()).with_channel_binding(true, None);
        assert_eq!(
            s.client_first(b"y,,n=,r=abc").err(),
            Some(ScramError::Downgrade)
        );
        // `n` without TLS is fine; PLUS flag without PLUS chosen is not.
        let mut s = ScramServer::new(secret.clone()).with_channel_binding(true, None);
        assert!(s.client_first(b"n,,n=,r=abc").is_ok());
        let mut s = ScramServer::new(secret).with_channel_binding(true, None);
        assert_eq!(
            s.client_first(client_first).err(),
            Some(ScramError::ChannelBinding)
        );
    }

    #[test]
    fn secret_parse_rejects_bad_forms() {
        assert!(ScramSecret::parse("SCRAM-SHA-256$0:AAAA$AAAA:AAAA").is_none());
        assert!(ScramSecret::parse("SCRAM-SHA-256$4096:AAAA$AAAA:AAAA").is_none());
        assert!(ScramSecret::parse("md5abc").is_none());
    }
}
