//! The Ed25519 key pair: PKCS#8 PEM for the private half, SPKI PEM for the public half.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

use crate::{Error, Signer, Verifier};

#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub signing: PathBuf,
    pub verifying: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Loads the key pair, creating it (mode 0600) if neither file exists yet. Several processes
/// may race here: the pair is written under temporary names and linked into place atomically,
/// and whoever loses the race loads the winner's pair.
pub fn load_or_generate(files: &KeyFiles) -> Result<(Signer, Verifier), Error> {
    if !files.signing.exists() {
        generate(files)?;
    }
    let private = std::fs::read(&files.signing).map_err(io_err(&files.signing))?;
    let public = std::fs::read(&files.verifying).map_err(io_err(&files.verifying))?;
    Ok((
        Signer::from_pem(&private, &public)?,
        Verifier::from_pem(&public)?,
    ))
}

/// Loads only the public half, for services that verify tokens. Generates the pair when it is
/// missing and the signing file's directory is writable (one-machine set-ups); in a cluster only
/// the public key is mounted and must exist.
pub fn load_verifier(files: &KeyFiles) -> Result<Verifier, Error> {
    if !files.verifying.exists() {
        return load_or_generate(files).map(|(_, verifier)| verifier);
    }
    let public = std::fs::read(&files.verifying).map_err(io_err(&files.verifying))?;
    Verifier::from_pem(&public)
}

fn generate(files: &KeyFiles) -> Result<(), Error> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Key(e.to_string()))?;
    let dir = files.signing.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Some(pub_dir) = files.verifying.parent() {
        std::fs::create_dir_all(pub_dir).map_err(io_err(pub_dir))?;
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let tmp_private = files.signing.with_extension(format!("tmp-{suffix}"));
    let tmp_public = files.verifying.with_extension(format!("tmp-{suffix}"));
    write_private(&tmp_private, private.as_bytes())?;
    std::fs::write(&tmp_public, public.as_bytes()).map_err(io_err(&tmp_public))?;
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

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))
}
