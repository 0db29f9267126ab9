//! Key files. The signing file holds the one Ed25519 key tokens are signed with (PKCS#8 PEM,
//! auth only); the verifying file holds every public key tokens may be verified with (SPKI PEM
//! blocks, one after another), so that during a rotation the old and the new key both verify.
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

/// Every public key of a verifying file, with its id.
pub(crate) fn read_public_keys(path: &Path) -> Result<Vec<(String, VerifyingKey)>, Error> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut keys = Vec::new();
    for block in text.split_inclusive(PUBLIC_END) {
        if !block.contains("-----BEGIN PUBLIC KEY-----") {
            continue;
        }
        let key = VerifyingKey::from_public_key_pem(block.trim()).map_err(|e| {
            Error::Key(format!(
                "a public key in {} is not valid: {e}",
                path.display()
            ))
        })?;
        keys.push((key_id(&key)?, key));
    }
    if keys.is_empty() {
        return Err(Error::Key(format!(
            "{} holds no public key",
            path.display()
        )));
    }
    Ok(keys)
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

/// Takes public keys out of the verifying file: the one named, or every one but the current
/// signing key's. Tokens they signed are refused from then on. Returns the ids retired.
pub fn retire(files: &KeyFiles, kid: Option<&str>) -> Result<Vec<String>, Error> {
    let (current, _) = read_signing_key(&files.signing)?;
    if kid == Some(current.as_str()) {
        return Err(Error::Key(format!(
            "{current} is the current signing key: rotate first, then retire it"
        )));
    }
    let keys = read_public_keys(&files.verifying)?;
    let (retired, kept): (Vec<_>, Vec<_>) = keys.into_iter().partition(|(id, _)| match kid {
        Some(kid) => id == kid,
        None => *id != current,
    });
    if let Some(kid) = kid
        && retired.is_empty()
    {
        return Err(Error::Key(format!("no verifying key has the id {kid}")));
    }
    let mut text = String::new();
    for (_, key) in &kept {
        text.push_str(&public_pem(key)?);
    }
    replace(&files.verifying, text.as_bytes(), false)?;
    Ok(retired.into_iter().map(|(id, _)| id).collect())
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
