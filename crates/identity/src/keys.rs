//! Key files. The signing file holds the one Ed25519 key tokens are signed with (PKCS#8 PEM,
//! auth only); the verifying file holds every public key tokens may be verified with (SPKI PEM
//! blocks, one after another), so that during a rotation the old and the new key both verify.
//!
//! A block may be preceded by the RFC 7468 explanatory line `service: NAME`: that key is a
//! service's own (`add_service_key`), and verifies nothing but that service's service tokens.
//! Any other text outside the blocks is refused: a mistyped label must not leave a service's
//! key unlabelled, able to sign anything.
//!
//! `rotate` adds a key: its public half joins the verifying file first, then it replaces the
//! signing key, so a token it signs always verifies. `retire` takes old public keys out.
//! Both replace files atomically (write, then rename); running processes pick the change up.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};

use crate::Error;

#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub signing: PathBuf,
    pub verifying: PathBuf,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

const PUBLIC_END: &str = "-----END PUBLIC KEY-----";

/// The id a key is known by in a token's `kid`: the start of a hash of its public half.
pub(crate) fn key_id(key: &VerifyingKey) -> Result<String, Error> {
    use sha2::Digest;
    let pem = public_pem(key)?;
    let digest = sha2::Sha256::digest(pem.as_bytes());
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn public_pem(key: &VerifyingKey) -> Result<String, Error> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))
}

/// One public key of a verifying file.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    pub(crate) kid: String,
    pub(crate) key: VerifyingKey,
    /// The service whose key this is (its `service:` label); `None` for a token signing key.
    pub(crate) service: Option<String>,
}

impl PublicKey {
    /// The block as written in a verifying file, its label first.
    fn pem(&self) -> Result<String, Error> {
        let pem = public_pem(&self.key)?;
        Ok(match &self.service {
            Some(name) => format!("{SERVICE_LABEL} {name}\n{pem}"),
            None => pem,
        })
    }
}

const PUBLIC_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const SERVICE_LABEL: &str = "service:";

/// Whether `name` may name a service in a label: lower-case letters, digits and dashes.
pub(crate) fn valid_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn bad_service_name(name: &str) -> Error {
    Error::Key(format!(
        "{name:?} is not a service name (lower-case letters, digits and dashes)"
    ))
}

/// Every public key of a verifying file, with its id and label.
pub(crate) fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let bad = |what: String| Error::Key(format!("{}: {what}", path.display()));
    let mut keys: Vec<PublicKey> = Vec::new();
    let mut rest = text.as_str();
    loop {
        let (before, block) = match rest.find(PUBLIC_BEGIN) {
            Some(at) => (&rest[..at], Some(&rest[at..])),
            None => (rest, None),
        };
        let mut service = None;
        for line in before.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let name = line
                .strip_prefix(SERVICE_LABEL)
                .map(str::trim)
                .ok_or_else(|| bad(format!("unexpected text outside a key: {line:?}")))?;
            if !valid_service_name(name) {
                return Err(bad(format!("{line:?} does not name a service")));
            }
            if service.replace(name.to_owned()).is_some() {
                return Err(bad(format!("two service labels before one key ({line:?})")));
            }
        }
        let Some(block) = block else {
            if service.is_some() {
                return Err(bad("a service label with no key after it".to_owned()));
            }
            break;
        };
        let end = block
            .find(PUBLIC_END)
            .ok_or_else(|| bad("a public key has no END line".to_owned()))?
            + PUBLIC_END.len();
        let key = VerifyingKey::from_public_key_pem(&block[..end])
            .map_err(|e| bad(format!("a public key is not valid: {e}")))?;
        let kid = key_id(&key)?;
        // One key, two meanings (labelled and not, or two labels) would be ambiguous.
        if let Some(seen) = keys.iter().find(|k| k.kid == kid)
            && seen.service != service
        {
            return Err(bad(format!(
                "key {kid} appears twice with different labels"
            )));
        }
        keys.push(PublicKey { kid, key, service });
        rest = &block[end..];
    }
    if keys.is_empty() {
        return Err(Error::Key(format!(
            "{} holds no public key",
            path.display()
        )));
    }
    Ok(keys)
}

/// The text of a verifying file holding `keys`.
fn public_file(keys: &[PublicKey]) -> Result<String, Error> {
    keys.iter().map(PublicKey::pem).collect()
}

/// The signing key of a signing file, with its id.
pub(crate) fn read_signing_key(path: &Path) -> Result<(String, SigningKey), Error> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let key = SigningKey::from_pkcs8_pem(text.trim()).map_err(|e| {
        Error::Key(format!(
            "{} is not a valid signing key: {e}",
            path.display()
        ))
    })?;
    Ok((key_id(&key.verifying_key())?, key))
}

pub(crate) fn missing(path: &Path, what: &str) -> Error {
    Error::Missing {
        path: path.display().to_string(),
        what: what.to_owned(),
        hint: "create the keys with `covibe admin rotate-signing-key` (standalone creates them itself)"
            .to_owned(),
    }
}

pub(crate) fn missing_service_key(path: &Path, name: &str) -> Error {
    Error::Missing {
        path: path.display().to_string(),
        what: format!("service key of {name}"),
        hint: format!("create it with `covibe admin add-service-key {name}`"),
    }
}

/// Adds a new signing key and returns its id: from now on tokens are signed with it, and those
/// of the keys before it verify until they are retired. Creates the first key on a new set-up.
pub fn rotate(files: &KeyFiles) -> Result<String, Error> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let kid = key_id(&key.verifying_key())?;
    let mut public = match files.verifying.exists() {
        true => std::fs::read_to_string(&files.verifying).map_err(io_err(&files.verifying))?,
        false => String::new(),
    };
    if !public.is_empty() && !public.ends_with('\n') {
        public.push('\n');
    }
    public.push_str(&public_pem(&key.verifying_key())?);
    // The public half first: a token signed with the new key always finds it.
    replace(&files.verifying, public.as_bytes(), false)?;
    replace(&files.signing, private_pem(&key)?.as_bytes(), true)?;
    tracing::info!(kid = %kid, "added a token signing key");
    Ok(kid)
}

/// Takes token signing keys out of the verifying file: the one named, or every one but the
/// current signing key's. Tokens they signed are refused from then on. Services' own keys stay
/// (`retire_service_key` takes those out). Returns the ids retired.
pub fn retire(files: &KeyFiles, kid: Option<&str>) -> Result<Vec<String>, Error> {
    let (current, _) = read_signing_key(&files.signing)?;
    if kid == Some(current.as_str()) {
        return Err(Error::Key(format!(
            "{current} is the current signing key: rotate first, then retire it"
        )));
    }
    let keys = read_public_keys(&files.verifying)?;
    if let Some(kid) = kid
        && let Some(PublicKey {
            service: Some(name),
            ..
        }) = keys.iter().find(|k| k.kid == kid)
    {
        return Err(Error::Key(format!(
            "{kid} is the service key of {name}: retire it with `covibe admin retire-service-key {name}`"
        )));
    }
    let (retired, kept): (Vec<_>, Vec<_>) = keys.into_iter().partition(|k| {
        k.service.is_none()
            && match kid {
                Some(kid) => k.kid == kid,
                None => k.kid != current,
            }
    });
    if let Some(kid) = kid
        && retired.is_empty()
    {
        return Err(Error::Key(format!("no verifying key has the id {kid}")));
    }
    replace(&files.verifying, public_file(&kept)?.as_bytes(), false)?;
    Ok(retired.into_iter().map(|k| k.kid).collect())
}

/// Gives the service `name` a key of its own: its private half is written to `private` (which
/// must not exist, unless `overwrite`), its public half appended to the verifying file under
/// the label `service: NAME`. Tokens it signs verify only as that service's service tokens.
/// Adding a second key for one service keeps the first verifying until it is retired, so a
/// service key rotates like the signing key. Returns the new key's id.
pub fn add_service_key(
    verifying: &Path,
    private: &Path,
    name: &str,
    overwrite: bool,
) -> Result<String, Error> {
    if !valid_service_name(name) {
        return Err(bad_service_name(name));
    }
    if private.exists() && !overwrite {
        return Err(Error::Key(format!(
            "{} exists: not replacing a service key unless asked to",
            private.display()
        )));
    }
    // The verifying file is the signing key's: a service key joins an existing set-up.
    if !verifying.exists() {
        return Err(missing(verifying, "token verifying keys"));
    }
    let mut keys = read_public_keys(verifying)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = PublicKey {
        kid: key_id(&key.verifying_key())?,
        key: key.verifying_key(),
        service: Some(name.to_owned()),
    };
    let kid = public.kid.clone();
    keys.push(public);
    // The public half first: a token signed with the new key always finds it.
    replace(verifying, public_file(&keys)?.as_bytes(), false)?;
    replace(private, private_pem(&key)?.as_bytes(), true)?;
    tracing::info!(kid = %kid, service = name, "added a service key");
    Ok(kid)
}

/// Takes the service `name`'s keys out of the verifying file: the one named by `kid`, or all
/// of them. Its tokens are refused from then on. Returns the ids retired.
pub fn retire_service_key(
    verifying: &Path,
    name: &str,
    kid: Option<&str>,
) -> Result<Vec<String>, Error> {
    if !valid_service_name(name) {
        return Err(bad_service_name(name));
    }
    let keys = read_public_keys(verifying)?;
    let (retired, kept): (Vec<_>, Vec<_>) = keys
        .into_iter()
        .partition(|k| k.service.as_deref() == Some(name) && kid.is_none_or(|kid| k.kid == kid));
    if retired.is_empty() {
        return Err(Error::Key(match kid {
            Some(kid) => format!("{name} has no key with the id {kid}"),
            None => format!("{name} has no service key"),
        }));
    }
    if kept.is_empty() {
        return Err(Error::Key(format!(
            "{} would hold no key at all",
            verifying.display()
        )));
    }
    replace(verifying, public_file(&kept)?.as_bytes(), false)?;
    Ok(retired.into_iter().map(|k| k.kid).collect())
}

fn private_pem(key: &SigningKey) -> Result<String, Error> {
    Ok(key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))?
        .to_string())
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place.
pub(crate) fn replace(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = tmp_path(path);
    write_new(&tmp, bytes, private)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    path.with_extension(format!("tmp-{suffix}"))
}

/// The first key pair, linked into place so that, of processes racing, exactly one wins.
pub(crate) fn generate_first(files: &KeyFiles) -> Result<(), Error> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    for dir in [files.signing.parent(), files.verifying.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let (tmp_private, tmp_public) = (tmp_path(&files.signing), tmp_path(&files.verifying));
    write_new(&tmp_private, private_pem(&key)?.as_bytes(), true)?;
    write_new(
        &tmp_public,
        public_pem(&key.verifying_key())?.as_bytes(),
        false,
    )?;
    // The public key goes first: a reader that sees the private key always finds its partner.
    let linked_public = std::fs::hard_link(&tmp_public, &files.verifying).is_ok();
    let linked_private = linked_public && std::fs::hard_link(&tmp_private, &files.signing).is_ok();
    let _ = std::fs::remove_file(&tmp_private);
    let _ = std::fs::remove_file(&tmp_public);
    if linked_private {
        tracing::info!(path = %files.signing.display(), "generated a new token signing key");
        return Ok(());
    }
    // Someone else won: wait briefly for both of their files to be in place.
    for _ in 0..100 {
        if files.signing.exists() && files.verifying.exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(Error::Key("signing key files are incomplete".to_owned()))
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// When a file last changed, to notice a rotation.
pub(crate) fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
