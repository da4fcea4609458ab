//! kiln as the registry's token server (Docker Registry v2 token authentication, as CNCF
//! Distribution 2.8 verifies it): which scopes a caller is granted (pure), and the signed JWT.
//!
//! The registry checks the JWT's `iss`, `aud` (one string in 2.8), `exp`/`nbf` (60 s leeway), the
//! signature, and finds the signing key by the header's `kid`: the libtrust fingerprint of a public
//! key in its `auth.token.rootcertbundle` (kiln's `registry-token.pem`). Its `access` claim lists
//! what may be done: a scope kiln refuses is simply left out, and the registry answers 401/403.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::http::auth::{Caller, Role};

/// The actions a repository scope may ask for that kiln knows; others are left out.
const REPOSITORY_ACTIONS: &[&str] = &["pull", "push", "delete"];

/// One requested scope: `repository:acme/api:pull,push` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: ScopeKind,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Repository,
    Registry,
}

impl ScopeKind {
    fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Repository => "repository",
            ScopeKind::Registry => "registry",
        }
    }
}

/// What a JWT lets its bearer do with one resource (the `access` claim's entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub actions: Vec<String>,
}

/// Who asks for a registry token.
#[derive(Debug, Clone)]
pub enum Requester {
    /// kiln itself (its pushes, pulls, catalog reads and deletions): everything it asks for.
    Kiln,
    /// The holder of a kiln API token.
    Caller(Caller),
    /// No credentials.
    Anonymous,
}

/// The scopes of one `scope` query parameter: several may be separated by spaces (as in OAuth2).
/// A scope that is not `TYPE:NAME:ACTIONS` with a known type, a well-formed name and at least one
/// action is left out (the spec lets a token server grant less than asked).
pub fn parse_scopes(text: &str) -> Vec<Scope> {
    text.split_whitespace().filter_map(parse_scope).collect()
}

/// `TYPE[(CLASS)]:NAME:ACTION[,ACTION…]`; the name may hold `:` (a registry host with a port), so
/// the type is before the first `:` and the actions after the last.
pub fn parse_scope(text: &str) -> Option<Scope> {
    let (kind, rest) = text.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    // A resource class (`repository(plugin)`) narrows the type; kiln grants by name alone.
    let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
    let kind = match kind {
        "repository" => ScopeKind::Repository,
        "registry" => ScopeKind::Registry,
        _ => return None,
    };
    let valid_name = match kind {
        ScopeKind::Repository => repository_namespace(name).is_some(),
        ScopeKind::Registry => name == "catalog",
    };
    if !valid_name {
        return None;
    }
    let mut list: Vec<String> = Vec::new();
    for action in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if !list.iter().any(|a| a == action) {
            list.push(action.to_string());
        }
    }
    if list.is_empty() {
        return None;
    }
    Some(Scope {
        kind,
        name: name.to_string(),
        actions: list,
    })
}

/// The namespace of a registry repository name: its first path segment (`acme/a/b` → `acme`).
/// None for a name the registry would refuse (empty segments, upper case, other characters):
/// such a scope is never granted.
pub fn repository_namespace(name: &str) -> Option<&str> {
    if name.is_empty() || name.len() > 255 {
        return None;
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if !name.split('/').all(component_ok) {
        return None;
    }
    name.split('/').next()
}

/// What `requester` is granted of `scopes`: the access claim. Pure.
/// - kiln itself: every action asked for.
/// - a token: `read` pulls, `write` and `admin` pull, push and delete, within its namespace (a
///   kiln-wide token: everywhere); the catalog only for kiln-wide admins.
/// - anonymous: pulls anywhere when `anonymous_pull`, otherwise nothing.
///
/// Actions not granted are left out; a scope with nothing granted is left out.
pub fn grant(requester: &Requester, scopes: &[Scope], anonymous_pull: bool) -> Vec<Access> {
    let mut granted: Vec<Access> = Vec::new();
    for scope in scopes {
        let allowed: Vec<String> = scope
            .actions
            .iter()
            .filter(|action| allows(requester, scope, action, anonymous_pull))
            .cloned()
            .collect();
        if allowed.is_empty() {
            continue;
        }
        // The same resource asked for twice (two `scope` parameters): one entry.
        match granted
            .iter_mut()
            .find(|a| a.kind == scope.kind.as_str() && a.name == scope.name)
        {
            Some(entry) => {
                for action in allowed {
                    if !entry.actions.contains(&action) {
                        entry.actions.push(action);
                    }
                }
            }
            None => granted.push(Access {
                kind: scope.kind.as_str(),
                name: scope.name.clone(),
                actions: allowed,
            }),
        }
    }
    granted
}

fn allows(requester: &Requester, scope: &Scope, action: &str, anonymous_pull: bool) -> bool {
    let caller = match requester {
        Requester::Kiln => return true,
        Requester::Anonymous => {
            return anonymous_pull
                && scope.kind == ScopeKind::Repository
                && repository_namespace(&scope.name).is_some()
                && action == "pull";
        }
        Requester::Caller(caller) => caller,
    };
    match scope.kind {
        ScopeKind::Registry => {
            scope.name == "catalog"
                && action == "*"
                && caller.role == Role::Admin
                && caller.namespace.is_none()
        }
        ScopeKind::Repository => {
            let Some(namespace) = repository_namespace(&scope.name) else {
                return false;
            };
            if !caller.sees(namespace) || !REPOSITORY_ACTIONS.contains(&action) {
                return false;
            }
            match action {
                "pull" => true,
                _ => caller.role >= Role::Write,
            }
        }
    }
}

/// The JWT's claims, as Distribution 2.8's `ClaimSet` reads them (`aud` is one string).
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: &'a [Access],
}

/// A signed registry token and when it was made.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub issued_at: SystemTime,
    pub expires_in: Duration,
}

/// Signs registry tokens with kiln's key (ES256, P-256).
pub struct TokenIssuer {
    key: EncodingKey,
    key_id: String,
    pub issuer: String,
    pub service: String,
    pub lifetime: Duration,
    pub anonymous_pull: bool,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("key_id", &self.key_id)
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// How the issuer is set up (from the configuration).
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    pub issuer: String,
    pub service: String,
    pub lifetime: Duration,
    pub anonymous_pull: bool,
}

impl TokenIssuer {
    /// An issuer signing with the P-256 key in `pkcs8_der`, whose public key (SubjectPublicKeyInfo,
    /// DER) is `public_key_der`.
    pub fn new(pkcs8_der: &[u8], public_key_der: &[u8], settings: IssuerSettings) -> Self {
        TokenIssuer {
            key: EncodingKey::from_ec_der(pkcs8_der),
            key_id: libtrust_key_id(public_key_der),
            issuer: settings.issuer,
            service: settings.service,
            lifetime: settings.lifetime,
            anonymous_pull: settings.anonymous_pull,
        }
    }

    /// The `kid` of the tokens: the libtrust fingerprint of the public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A token for `subject` allowing `access`, valid from now for the configured lifetime.
    pub fn issue(&self, subject: &str, access: &[Access]) -> anyhow::Result<IssuedToken> {
        let issued_at = SystemTime::now();
        let now = issued_at
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let claims = Claims {
            iss: &self.issuer,
            sub: subject,
            aud: &self.service,
            exp: now + self.lifetime.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .context("cannot sign the registry token")?;
        Ok(IssuedToken {
            token,
            issued_at,
            expires_in: self.lifetime,
        })
    }
}

/// libtrust's key id, by which Distribution finds a `kid` among the keys of its root certificates:
/// the first 240 bits of the SHA-256 of the public key (SubjectPublicKeyInfo DER), base32 without
/// padding, in groups of four joined by `:`.
pub fn libtrust_key_id(public_key_der: &[u8]) -> String {
    let digest = Sha256::digest(public_key_der);
    let encoded = data_encoding::BASE32_NOPAD.encode(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("base32 is ASCII"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, namespace: Option<&str>) -> Requester {
        Requester::Caller(Caller {
            role,
            namespace: namespace.map(str::to_string),
            token_id: None,
            token_name: "test".into(),
        })
    }

    fn scopes(list: &[&str]) -> Vec<Scope> {
        list.iter().flat_map(|s| parse_scopes(s)).collect()
    }

    fn granted(requester: &Requester, asked: &[&str], anonymous_pull: bool) -> Vec<String> {
        grant(requester, &scopes(asked), anonymous_pull)
            .into_iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect()
    }

    #[test]
    fn scopes_are_parsed_and_bad_ones_left_out() {
        type Parsed<'a> = Option<(ScopeKind, &'a str, &'a [&'a str])>;
        let cases: &[(&str, Parsed)] = &[
            (
                "repository:red/app:pull,push",
                Some((ScopeKind::Repository, "red/app", &["pull", "push"])),
            ),
            (
                "repository:red/a/b:pull",
                Some((ScopeKind::Repository, "red/a/b", &["pull"])),
            ),
            (
                "repository(plugin):red/app:pull",
                Some((ScopeKind::Repository, "red/app", &["pull"])),
            ),
            (
                "registry:catalog:*",
                Some((ScopeKind::Registry, "catalog", &["*"])),
            ),
            (
                "repository:red/app:pull,pull,,push",
                Some((ScopeKind::Repository, "red/app", &["pull", "push"])),
            ),
            ("repository:red/app:", None),
            ("repository:red/app", None),
            ("repository::pull", None),
            ("repository:Red/app:pull", None),
            ("repository:red//app:pull", None),
            ("repository:/red:pull", None),
            ("repository:red/app/:pull", None),
            ("repository:-red/app:pull", None),
            ("repository:../x:pull", None),
            ("registry:other:*", None),
            ("unknown:red/app:pull", None),
            ("", None),
            (":::", None),
            ("repository", None),
            ("repository:réd/app:pull", None),
        ];
        for (text, want) in cases {
            let got = parse_scope(text);
            let want = want.map(|(kind, name, actions)| Scope {
                kind,
                name: name.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
            });
            assert_eq!(got, want, "{text:?}");
        }
        assert_eq!(
            parse_scopes("repository:a/b:pull  registry:catalog:* junk").len(),
            2
        );
        let long = format!("repository:{}:pull", "a".repeat(300));
        assert_eq!(parse_scope(&long), None);
    }

    #[test]
    fn grants_follow_the_token() {
        let asked = [
            "repository:red/app:pull,push,delete",
            "repository:red/a/b:pull",
            "repository:blue/app:pull,push",
            "registry:catalog:*",
        ];
        let cases: &[(Requester, &[&str])] = &[
            (
                caller(Role::Read, Some("red")),
                &["repository:red/app:pull", "repository:red/a/b:pull"],
            ),
            (
                caller(Role::Write, Some("red")),
                &[
                    "repository:red/app:pull,push,delete",
                    "repository:red/a/b:pull",
                ],
            ),
            (
                caller(Role::Admin, Some("red")),
                &[
                    "repository:red/app:pull,push,delete",
                    "repository:red/a/b:pull",
                ],
            ),
            (
                caller(Role::Read, None),
                &[
                    "repository:red/app:pull",
                    "repository:red/a/b:pull",
                    "repository:blue/app:pull",
                ],
            ),
            (
                caller(Role::Write, None),
                &[
                    "repository:red/app:pull,push,delete",
                    "repository:red/a/b:pull",
                    "repository:blue/app:pull,push",
                ],
            ),
            (
                caller(Role::Admin, None),
                &[
                    "repository:red/app:pull,push,delete",
                    "repository:red/a/b:pull",
                    "repository:blue/app:pull,push",
                    "registry:catalog:*",
                ],
            ),
            (
                Requester::Kiln,
                &[
                    "repository:red/app:pull,push,delete",
                    "repository:red/a/b:pull",
                    "repository:blue/app:pull,push",
                    "registry:catalog:*",
                ],
            ),
            (Requester::Anonymous, &[]),
        ];
        for (requester, want) in cases {
            assert_eq!(granted(requester, &asked, false), *want, "{requester:?}");
        }
        assert_eq!(
            granted(&Requester::Anonymous, &asked, true),
            [
                "repository:red/app:pull",
                "repository:red/a/b:pull",
                "repository:blue/app:pull"
            ]
        );
        // A scope made by hand with a name the registry refuses is granted to nobody but kiln.
        let bad = [Scope {
            kind: ScopeKind::Repository,
            name: "RED/x".into(),
            actions: vec!["pull".into()],
        }];
        assert!(grant(&Requester::Anonymous, &bad, true).is_empty());
        assert!(grant(&caller(Role::Admin, None), &bad, true).is_empty());
        // A namespace is a whole first segment: `red` does not cover `redder`.
        assert!(
            granted(
                &caller(Role::Admin, Some("red")),
                &["repository:redder/x:pull"],
                false
            )
            .is_empty()
        );
        // Unknown actions and `*` on a repository are left out; a repeated resource is one entry.
        assert_eq!(
            granted(
                &caller(Role::Write, Some("red")),
                &["repository:red/app:pull,*,tag", "repository:red/app:push"],
                false
            ),
            ["repository:red/app:pull,push"]
        );
    }

    #[test]
    fn the_key_id_is_libtrusts_fingerprint() {
        // libtrust's `keyIDEncode(sha256(der)[:30])`: 48 base32 characters, 12 groups of 4.
        let id = libtrust_key_id(b"some public key");
        assert_eq!(id.len(), 48 + 11);
        assert!(id.split(':').all(|g| g.len() == 4));
        let digest = Sha256::digest(b"some public key");
        assert_eq!(
            id.replace(':', ""),
            data_encoding::BASE32_NOPAD.encode(&digest[..30])
        );
    }

    #[test]
    fn tokens_carry_the_claims_the_registry_checks() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = TokenIssuer::new(
            &key.serialize_der(),
            &rcgen::PublicKeyData::subject_public_key_info(&key),
            IssuerSettings {
                issuer: "kiln-test".into(),
                service: "registry-test".into(),
                lifetime: Duration::from_secs(300),
                anonymous_pull: false,
            },
        );
        let access = grant(
            &caller(Role::Write, Some("red")),
            &scopes(&["repository:red/app:pull,push", "repository:blue/app:pull"]),
            false,
        );
        let issued = issuer.issue("someone", &access).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(issuer.key_id()));
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["registry-test"]);
        validation.set_issuer(&["kiln-test"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &issued.token,
            &jsonwebtoken::DecodingKey::from_ec_der(key.public_key_raw()),
            &validation,
        )
        .unwrap();
        let claims = data.claims;
        assert_eq!(claims["sub"], "someone");
        assert_eq!(claims["aud"], "registry-test");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
            300
        );
        assert_eq!(
            claims["access"],
            serde_json::json!([{"type": "repository", "name": "red/app", "actions": ["pull", "push"]}])
        );
        // No access at all is still a token (what an anonymous `docker pull` gets by default).
        let empty = issuer.issue("", &[]).unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &empty.token,
            &jsonwebtoken::DecodingKey::from_ec_der(key.public_key_raw()),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["access"], serde_json::json!([]));
    }
}
