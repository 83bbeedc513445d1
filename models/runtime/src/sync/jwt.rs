//! Sync tokens: HS256 verification exactly as the socket's `JwtVerifier`
//! (spec §7.2), with the original's error atoms, and the issuer the web app
//! ran (`SyncTokenIssuer`), for tests and the harness.

use crate::clock::Clock;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Base configuration of `:khala_sync_auth` (spec §7.2).
pub const DEFAULT_ISSUER: &str = "https://openagents.test";
pub const DEFAULT_AUDIENCE: &str = "openagents-sync";
pub const DEFAULT_CLAIMS_VERSION: &str = "oa_sync_claims_v1";
pub const DEFAULT_KEY_ID: &str = "sync-auth-v1";
/// The development key of the base keyring, the original's
/// (`apps/openagents-runtime/config/config.exs`), so that a client holding a
/// development token of the original stack is accepted here too. Production
/// must replace it (spec §15 B15).
pub const DEV_SIGNING_KEY: &str = "dev-sync-signing-key";
/// `iat` and `nbf` may lie this far in the future.
pub const CLOCK_SKEW_SECONDS: i64 = 30;
pub const HS256: &str = "HS256";

/// The verifier's configuration. Keys are secrets: `Debug` prints only the
/// key ids.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Expected `iss`; `None` or empty skips the check.
    pub issuer: Option<String>,
    /// Expected `aud` (membership when the token's `aud` is a list).
    pub audience: Option<String>,
    /// Expected `oa_claims_version`.
    pub claims_version: Option<String>,
    pub allowed_algs: Vec<String>,
    /// `kid` → signing key; two entries during a rotation.
    pub keyring: BTreeMap<String, Vec<u8>>,
}

impl AuthConfig {
    /// The base configuration, keyring holding only the development key.
    pub fn base() -> Self {
        AuthConfig {
            issuer: Some(DEFAULT_ISSUER.to_owned()),
            audience: Some(DEFAULT_AUDIENCE.to_owned()),
            claims_version: Some(DEFAULT_CLAIMS_VERSION.to_owned()),
            allowed_algs: vec![HS256.to_owned()],
            keyring: BTreeMap::from([(
                DEFAULT_KEY_ID.to_owned(),
                DEV_SIGNING_KEY.as_bytes().to_vec(),
            )]),
        }
    }

    /// The same configuration with `kid` → `key` added (or replaced).
    pub fn with_key(mut self, kid: &str, key: &[u8]) -> Self {
        self.keyring.insert(kid.to_owned(), key.to_vec());
        self
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig::base()
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("claims_version", &self.claims_version)
            .field("allowed_algs", &self.allowed_algs)
            .field("key_ids", &self.keyring.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An expected claim that did not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimKey {
    Iss,
    Aud,
    ClaimsVersion,
}

impl ClaimKey {
    /// The claim's name in the token, which is also the key of the original's
    /// `{:claim_mismatch, key}` term.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKey::Iss => "iss",
            ClaimKey::Aud => "aud",
            ClaimKey::ClaimsVersion => "oa_claims_version",
        }
    }
}

/// Why a token was refused, one variant per atom of the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Not three segments, a segment that is not base64url, or a header or
    /// claims segment that is not a JSON object.
    InvalidTokenEncoding,
    /// The original's rescue clause for exceptions raised while decoding.
    /// Decoding here cannot raise, so the verifier never returns it; it is
    /// kept so that the atom set is complete.
    InvalidTokenFormat,
    /// `alg` missing, empty or not a string.
    InvalidHeader,
    /// `alg` outside `allowed_algs`, or an allowed alg other than HS256.
    UnsupportedAlg {
        alg: String,
    },
    MissingKid,
    UnknownKid {
        kid: String,
    },
    InvalidSignature,
    /// A claim of the wrong type, an empty required claim, or `exp ≤ iat`.
    InvalidClaims {
        claim: &'static str,
    },
    TokenExpired,
    TokenNotYetValid,
    ClaimMismatch {
        key: ClaimKey,
    },
}

impl JwtError {
    /// The original's error atom.
    pub fn atom(&self) -> &'static str {
        match self {
            JwtError::InvalidTokenEncoding => "invalid_token_encoding",
            JwtError::InvalidTokenFormat => "invalid_token_format",
            JwtError::InvalidHeader => "invalid_header",
            JwtError::UnsupportedAlg { .. } => "unsupported_alg",
            JwtError::MissingKid => "missing_kid",
            JwtError::UnknownKid { .. } => "unknown_kid",
            JwtError::InvalidSignature => "invalid_signature",
            JwtError::InvalidClaims { .. } => "invalid_claims",
            JwtError::TokenExpired => "token_expired",
            JwtError::TokenNotYetValid => "token_not_yet_valid",
            JwtError::ClaimMismatch { .. } => "claim_mismatch",
        }
    }

    /// The atom, and for `claim_mismatch` the claim: `claim_mismatch:aud`.
    pub fn reason(&self) -> String {
        match self {
            JwtError::ClaimMismatch { key } => format!("claim_mismatch:{}", key.as_str()),
            other => other.atom().to_owned(),
        }
    }
}

impl fmt::Display for JwtError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "verify the sync token: {}", self.reason())?;
        match self {
            JwtError::UnsupportedAlg { alg } => write!(formatter, " (alg {alg:?})"),
            JwtError::UnknownKid { kid } => write!(formatter, " (kid {kid:?})"),
            JwtError::InvalidClaims { claim } => write!(formatter, " ({claim})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for JwtError {}

/// The claims of a verified token.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedClaims {
    pub kid: String,
    pub sub: String,
    pub jti: String,
    pub oa_org_id: String,
    /// `oa_sync_scopes`, normalised (trimmed, blanks removed).
    pub scopes: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Every claim as sent.
    pub raw: Map<String, Value>,
}

/// The verifier with its time source; `now` is the clock's, in whole seconds.
#[derive(Clone, Debug)]
pub struct Verifier {
    config: AuthConfig,
    clock: Arc<dyn Clock>,
}

impl Verifier {
    pub fn new(config: AuthConfig, clock: Arc<dyn Clock>) -> Self {
        Verifier { config, clock }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, JwtError> {
        verify(token, &self.config, self.clock.now().timestamp())
    }
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::InvalidTokenEncoding)
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<Value>(&decode_segment(segment)?) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(JwtError::InvalidTokenEncoding),
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac accepts every key length"));
    mac.update(message);
    mac
}

/// Verifies `token` at `now` (Unix seconds) in the original's order.
pub fn verify(token: &str, config: &AuthConfig, now: i64) -> Result<VerifiedClaims, JwtError> {
    let segments: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = segments[..] else {
        return Err(JwtError::InvalidTokenEncoding);
    };
    let header = decode_object(header_b64)?;
    let claims = decode_object(claims_b64)?;
    let signature = decode_segment(signature_b64)?;

    let alg = match header.get("alg") {
        Some(Value::String(alg)) if !alg.is_empty() => alg.clone(),
        _ => return Err(JwtError::InvalidHeader),
    };
    if !config.allowed_algs.contains(&alg) {
        return Err(JwtError::UnsupportedAlg { alg });
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
        _ if alg == HS256 => return Err(JwtError::MissingKid),
        _ => String::new(),
    };
    if alg != HS256 {
        return Err(JwtError::UnsupportedAlg { alg });
    }
    let key = config
        .keyring
        .get(&kid)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| JwtError::UnknownKid { kid: kid.clone() })?;
    let signing_input = format!("{header_b64}.{claims_b64}");
    // `verify_slice` compares in constant time.
    hmac_sha256(key, signing_input.as_bytes())
        .verify_slice(&signature)
        .map_err(|_| JwtError::InvalidSignature)?;

    check_claims(kid, claims, config, now)
}

fn integer_claim(claims: &Map<String, Value>, name: &'static str) -> Result<i64, JwtError> {
    claims
        .get(name)
        .and_then(Value::as_i64)
        .ok_or(JwtError::InvalidClaims { claim: name })
}

fn string_claim(claims: &Map<String, Value>, name: &'static str) -> Result<String, JwtError> {
    match claims.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(JwtError::InvalidClaims { claim: name }),
    }
}

/// `oa_sync_scopes`: a list (non-strings dropped, trimmed, blanks removed)
/// or a comma-separated string.
pub fn normalise_scopes(value: Option<&Value>) -> Option<Vec<String>> {
    let trimmed = |items: &mut dyn Iterator<Item = &str>| {
        items
            .map(str::trim)
            .filter(|scope| !scope.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    match value? {
        Value::Array(items) => Some(trimmed(&mut items.iter().filter_map(Value::as_str))),
        Value::String(text) => Some(trimmed(&mut text.split(','))),
        _ => None,
    }
}

fn check_claims(
    kid: String,
    claims: Map<String, Value>,
    config: &AuthConfig,
    now: i64,
) -> Result<VerifiedClaims, JwtError> {
    // Types first: any problem is `invalid_claims`.
    let iat = integer_claim(&claims, "iat")?;
    let exp = integer_claim(&claims, "exp")?;
    let nbf = match claims.get("nbf") {
        None => iat,
        Some(value) => value
            .as_i64()
            .ok_or(JwtError::InvalidClaims { claim: "nbf" })?,
    };
    let sub = string_claim(&claims, "sub")?;
    let jti = string_claim(&claims, "jti")?;
    let oa_org_id = string_claim(&claims, "oa_org_id")?;
    let scopes = normalise_scopes(claims.get("oa_sync_scopes")).ok_or(JwtError::InvalidClaims {
        claim: "oa_sync_scopes",
    })?;
    for (name, value) in [("sub", &sub), ("jti", &jti), ("oa_org_id", &oa_org_id)] {
        if value.is_empty() {
            return Err(JwtError::InvalidClaims { claim: name });
        }
    }
    if scopes.is_empty() {
        return Err(JwtError::InvalidClaims {
            claim: "oa_sync_scopes",
        });
    }
    if exp <= now {
        return Err(JwtError::TokenExpired);
    }
    let latest_valid_start = now.saturating_add(CLOCK_SKEW_SECONDS);
    if iat > latest_valid_start || nbf > latest_valid_start {
        return Err(JwtError::TokenNotYetValid);
    }
    if exp <= iat {
        return Err(JwtError::InvalidClaims { claim: "exp" });
    }
    check_expected(&claims, config)?;
    Ok(VerifiedClaims {
        kid,
        sub,
        jti,
        oa_org_id,
        scopes,
        iat,
        nbf,
        exp,
        raw: claims,
    })
}

fn expected(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

fn check_expected(claims: &Map<String, Value>, config: &AuthConfig) -> Result<(), JwtError> {
    if let Some(issuer) = expected(&config.issuer)
        && claims.get("iss").and_then(Value::as_str) != Some(issuer)
    {
        return Err(JwtError::ClaimMismatch { key: ClaimKey::Iss });
    }
    if let Some(audience) = expected(&config.audience) {
        let matches = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            _ => false,
        };
        if !matches {
            return Err(JwtError::ClaimMismatch { key: ClaimKey::Aud });
        }
    }
    if let Some(version) = expected(&config.claims_version)
        && claims.get("oa_claims_version").and_then(Value::as_str) != Some(version)
    {
        return Err(JwtError::ClaimMismatch {
            key: ClaimKey::ClaimsVersion,
        });
    }
    Ok(())
}

/// Signs `header.claims` with HS256, whatever the header says: tests use it
/// to build tokens the verifier must refuse.
pub fn encode_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
    let claims_b64 = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header_b64}.{claims_b64}");
    let signature = hmac_sha256(key, signing_input.as_bytes())
        .finalize()
        .into_bytes();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The web app's token issuer (`config/sync.php` defaults).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audience: String,
    pub claims_version: String,
    pub key_id: String,
    pub signing_key: Vec<u8>,
    pub ttl_seconds: i64,
    pub min_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
    pub subject_prefix: String,
    pub org_prefix: String,
    pub default_scopes: Vec<String>,
    pub allowed_scopes: Vec<String>,
}

impl IssuerConfig {
    /// An issuer whose tokens `auth` accepts, signing with `auth`'s key `kid`
    /// (an empty key when `auth` has none, so issuing fails as misconfigured).
    pub fn matching(auth: &AuthConfig, kid: &str) -> Self {
        IssuerConfig {
            issuer: auth.issuer.clone().unwrap_or_default(),
            audience: auth.audience.clone().unwrap_or_default(),
            claims_version: auth.claims_version.clone().unwrap_or_default(),
            key_id: kid.to_owned(),
            signing_key: auth.keyring.get(kid).cloned().unwrap_or_default(),
            ttl_seconds: 300,
            min_ttl_seconds: 60,
            max_ttl_seconds: 900,
            subject_prefix: "user".to_owned(),
            org_prefix: "user".to_owned(),
            default_scopes: vec!["runtime.codex_worker_summaries".to_owned()],
            allowed_scopes: crate::sync::topics::KNOWN_TOPICS
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

impl fmt::Debug for IssuerConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("IssuerConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("default_scopes", &self.default_scopes)
            .field("allowed_scopes", &self.allowed_scopes)
            .finish_non_exhaustive()
    }
}

/// Why the issuer refused (HTTP 422 `invalid_scope`, 503
/// `sync_token_unavailable` in the original).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IssueError {
    #[error("issue a sync token: invalid_scope {scope:?}")]
    InvalidScope { scope: String },
    #[error("issue a sync token: sync_token_unavailable ({reason})")]
    Unavailable { reason: &'static str },
}

/// The issuer's response body (`data`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IssuedToken {
    pub token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub issued_at: i64,
    pub expires_at: i64,
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    pub org_id: String,
    pub claims_version: String,
    pub scopes: Vec<String>,
    pub kid: String,
}

/// Issues tokens; `jti` values are unique per issuer.
#[derive(Debug)]
pub struct TokenIssuer {
    config: IssuerConfig,
    issued: AtomicU64,
}

impl TokenIssuer {
    pub fn new(config: IssuerConfig) -> Self {
        TokenIssuer {
            config,
            issued: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// A token for user `user_id` with `requested` scopes (the defaults when
    /// empty), issued at `now`.
    pub fn issue(
        &self,
        user_id: i64,
        requested: &[String],
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, IssueError> {
        let config = &self.config;
        if config.signing_key.is_empty() {
            return Err(IssueError::Unavailable {
                reason: "signing key missing",
            });
        }
        if config.key_id.is_empty() {
            return Err(IssueError::Unavailable {
                reason: "key id missing",
            });
        }
        let scopes = if requested.is_empty() {
            config.default_scopes.clone()
        } else {
            if let Some(scope) = requested
                .iter()
                .find(|scope| scope.chars().count() > 120 || !config.allowed_scopes.contains(scope))
            {
                return Err(IssueError::InvalidScope {
                    scope: scope.clone(),
                });
            }
            requested.to_vec()
        };
        let ttl = config
            .ttl_seconds
            .clamp(config.min_ttl_seconds, config.max_ttl_seconds);
        let issued_at = now.timestamp();
        let expires_at = issued_at + ttl;
        let subject = format!("{}:{user_id}", config.subject_prefix);
        let org_id = format!("{}:{user_id}", config.org_prefix);
        let claims = json!({
            "iss": config.issuer,
            "aud": config.audience,
            "sub": subject,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": self.next_jti(user_id, now),
            "oa_user_id": user_id,
            "oa_org_id": org_id,
            "oa_sync_scopes": scopes,
            "oa_claims_version": config.claims_version,
        });
        let header = json!({"alg": HS256, "typ": "JWT", "kid": config.key_id});
        Ok(IssuedToken {
            token: encode_hs256(&header, &claims, &config.signing_key),
            token_type: "Bearer".to_owned(),
            expires_in: ttl,
            issued_at,
            expires_at,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            subject,
            org_id,
            claims_version: config.claims_version.clone(),
            scopes,
            kid: config.key_id.clone(),
        })
    }

    /// 24 hex characters, unique per issuer and time.
    fn next_jti(&self, user_id: i64, now: DateTime<Utc>) -> String {
        let sequence = self.issued.fetch_add(1, Ordering::Relaxed);
        let digest = Sha256::new()
            .chain_update(sequence.to_be_bytes())
            .chain_update(user_id.to_be_bytes())
            .chain_update(now.timestamp_micros().to_be_bytes())
            .finalize();
        hex::encode(&digest[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_771_531_200; // 2026-02-19T20:00:00Z

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).expect("constant")
    }

    fn claims() -> Value {
        json!({
            "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "user:7", "iat": NOW,
            "nbf": NOW, "exp": NOW + 300, "jti": "0123456789abcdef01234567",
            "oa_user_id": 7, "oa_org_id": "user:7",
            "oa_sync_scopes": ["runtime.run_summaries"], "oa_claims_version": DEFAULT_CLAIMS_VERSION,
        })
    }

    fn header() -> Value {
        json!({"alg": "HS256", "typ": "JWT", "kid": DEFAULT_KEY_ID})
    }

    fn sign(header: &Value, claims: &Value) -> String {
        encode_hs256(header, claims, DEV_SIGNING_KEY.as_bytes())
    }

    fn check(token: &str) -> Result<VerifiedClaims, String> {
        verify(token, &AuthConfig::base(), NOW).map_err(|error| error.reason())
    }

    fn with(mut value: Value, key: &str, replacement: Value) -> Value {
        value[key] = replacement;
        value
    }

    fn without(mut value: Value, key: &str) -> Value {
        value.as_object_mut().expect("object").remove(key);
        value
    }

    #[test]
    fn a_well_formed_token_verifies_with_normalised_scopes() {
        let claims = with(claims(), "oa_sync_scopes", json!([" a ", 3, "", "b"]));
        let verified = check(&sign(&header(), &claims)).expect("valid");
        assert_eq!(verified.scopes, ["a", "b"]);
        assert_eq!(verified.nbf, NOW);
        let csv = with(claims, "oa_sync_scopes", json!("a, ,b"));
        assert_eq!(
            check(&sign(&header(), &csv)).expect("valid").scopes,
            ["a", "b"]
        );
        let no_nbf = without(self::claims(), "nbf");
        assert_eq!(check(&sign(&header(), &no_nbf)).expect("valid").nbf, NOW);
    }

    #[test]
    fn encoding_errors_come_before_everything_else() {
        let good = sign(&header(), &claims());
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        for bad in [
            String::new(),
            "a.b".to_owned(),
            format!("{good}.x"),
            format!("{}.{}.{}", "!!", parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("[1]"),
                parts[1],
                parts[2]
            ),
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode("not json"),
                parts[2]
            ),
            format!("{}.{}.{}", parts[0], parts[1], "*"),
        ] {
            assert_eq!(check(&bad).unwrap_err(), "invalid_token_encoding", "{bad}");
        }
        parts[2] = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert_eq!(check(&parts.join(".")).unwrap_err(), "invalid_signature");
    }

    #[test]
    fn header_errors_follow_the_original_order() {
        let cases = [
            (without(header(), "alg"), "invalid_header"),
            (with(header(), "alg", json!("")), "invalid_header"),
            (with(header(), "alg", json!(256)), "invalid_header"),
            (with(header(), "alg", json!("none")), "unsupported_alg"),
            (with(header(), "alg", json!("RS256")), "unsupported_alg"),
            (without(header(), "kid"), "missing_kid"),
            (with(header(), "kid", json!("")), "missing_kid"),
            (with(header(), "kid", json!("retired")), "unknown_kid"),
        ];
        for (header, atom) in cases {
            assert_eq!(
                check(&sign(&header, &claims())).unwrap_err(),
                atom,
                "{header}"
            );
        }
        // An allowed alg other than HS256 still fails at the signature step.
        let mut config = AuthConfig::base();
        config.allowed_algs.push("RS256".into());
        let token = sign(&with(header(), "alg", json!("RS256")), &claims());
        assert_eq!(
            verify(&token, &config, NOW).unwrap_err(),
            JwtError::UnsupportedAlg {
                alg: "RS256".into()
            }
        );
        // An empty key counts as unknown.
        let config = AuthConfig::base().with_key("empty", b"");
        let token = sign(&with(header(), "kid", json!("empty")), &claims());
        assert_eq!(
            verify(&token, &config, NOW).unwrap_err().atom(),
            "unknown_kid"
        );
    }

    #[test]
    fn the_base_keyring_is_the_originals_development_keyring() {
        // Spelled out rather than through the constants, so a change of
        // either constant fails here.
        let keyring = AuthConfig::base().keyring;
        assert_eq!(
            keyring,
            BTreeMap::from([("sync-auth-v1".to_owned(), b"dev-sync-signing-key".to_vec())])
        );
        let token = encode_hs256(&header(), &claims(), b"dev-sync-signing-key");
        assert_eq!(check(&token).expect("valid").sub, "user:7");
    }

    #[test]
    fn a_signature_by_another_key_is_invalid() {
        let token = encode_hs256(&header(), &claims(), b"some other key");
        assert_eq!(check(&token).unwrap_err(), "invalid_signature");
    }

    #[test]
    fn claim_types_emptiness_and_times() {
        let cases = [
            (with(claims(), "iat", json!("1")), "invalid_claims"),
            (with(claims(), "iat", json!(1.5)), "invalid_claims"),
            (without(claims(), "exp"), "invalid_claims"),
            (with(claims(), "nbf", Value::Null), "invalid_claims"),
            (with(claims(), "sub", json!(7)), "invalid_claims"),
            (without(claims(), "jti"), "invalid_claims"),
            (with(claims(), "oa_org_id", json!("")), "invalid_claims"),
            (
                with(claims(), "oa_sync_scopes", json!(["  "])),
                "invalid_claims",
            ),
            (
                with(claims(), "oa_sync_scopes", json!({"a": 1})),
                "invalid_claims",
            ),
            (with(claims(), "exp", json!(NOW)), "token_expired"),
            (
                with(claims(), "iat", json!(NOW + 31)),
                "token_not_yet_valid",
            ),
            (
                with(claims(), "nbf", json!(NOW + 31)),
                "token_not_yet_valid",
            ),
            (
                with(claims(), "iat", json!(NOW + 400)),
                "token_not_yet_valid",
            ),
            (
                with(
                    with(claims(), "iat", json!(NOW + 30)),
                    "exp",
                    json!(NOW + 30),
                ),
                "invalid_claims",
            ),
            (
                with(claims(), "iss", json!("https://elsewhere")),
                "claim_mismatch:iss",
            ),
            (without(claims(), "iss"), "claim_mismatch:iss"),
            (with(claims(), "aud", json!("other")), "claim_mismatch:aud"),
            (
                with(claims(), "aud", json!(["x", "y"])),
                "claim_mismatch:aud",
            ),
            (
                with(claims(), "oa_claims_version", json!("v0")),
                "claim_mismatch:oa_claims_version",
            ),
        ];
        for (claims, reason) in cases {
            assert_eq!(
                check(&sign(&header(), &claims)).unwrap_err(),
                reason,
                "{claims}"
            );
        }
        // Within the 30 s skew, and `aud` as a list containing the audience.
        let skewed = with(claims(), "iat", json!(NOW + 30));
        assert!(check(&sign(&header(), &skewed)).is_ok());
        let listed = with(claims(), "aud", json!(["x", DEFAULT_AUDIENCE]));
        assert!(check(&sign(&header(), &listed)).is_ok());
    }

    #[test]
    fn empty_expectations_are_skipped() {
        let config = AuthConfig {
            issuer: Some(String::new()),
            audience: None,
            claims_version: None,
            ..AuthConfig::base()
        };
        let claims = without(without(claims(), "iss"), "aud");
        assert!(verify(&sign(&header(), &claims), &config, NOW).is_ok());
    }

    #[test]
    fn rotation_accepts_both_keys_of_the_keyring() {
        let config = AuthConfig::base().with_key("sync-auth-v2", b"new key");
        let new_header = with(header(), "kid", json!("sync-auth-v2"));
        let new_token = encode_hs256(&new_header, &claims(), b"new key");
        assert!(verify(&new_token, &config, NOW).is_ok());
        assert!(verify(&sign(&header(), &claims()), &config, NOW).is_ok());
    }

    #[test]
    fn issued_tokens_verify_and_follow_the_issuer_rules() {
        let auth = AuthConfig::base();
        let issuer = TokenIssuer::new(IssuerConfig::matching(&auth, DEFAULT_KEY_ID));
        let issued = issuer.issue(7, &[], now()).expect("issued");
        assert_eq!(issued.scopes, ["runtime.codex_worker_summaries"]);
        assert_eq!(
            (issued.expires_in, issued.subject.as_str()),
            (300, "user:7")
        );
        let verified = verify(&issued.token, &auth, NOW).expect("valid");
        assert_eq!(verified.jti.len(), 24);
        assert_eq!(verified.raw["oa_user_id"], json!(7));
        let second = issuer.issue(7, &[], now()).expect("issued");
        assert_ne!(
            verify(&second.token, &auth, NOW).expect("valid").jti,
            verified.jti
        );
        assert_eq!(
            issuer.issue(7, &["admin".to_owned()], now()).unwrap_err(),
            IssueError::InvalidScope {
                scope: "admin".into()
            }
        );
        let mut config = IssuerConfig::matching(&auth, DEFAULT_KEY_ID);
        config.ttl_seconds = 5;
        let clamped = TokenIssuer::new(config)
            .issue(7, &[], now())
            .expect("issued");
        assert_eq!(clamped.expires_in, 60);
        let broken = TokenIssuer::new(IssuerConfig::matching(&auth, "missing"));
        assert!(matches!(
            broken.issue(7, &[], now()),
            Err(IssueError::Unavailable { .. })
        ));
    }
}
