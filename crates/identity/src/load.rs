//! Loading the signer and verifiers a process runs with, from the key files.

use std::path::Path;

use crate::keys::{KeyFiles, generate_first, missing, missing_service_key, read_public_keys};
use crate::{Error, Signer, Verifier};

/// Loads the signer and a verifier, creating the first key if there is none yet: for
/// `covibe standalone`, where one process is the whole mesh. Several processes may race here:
/// whoever loses loads the winner's key.
pub fn load_or_generate(files: &KeyFiles) -> Result<(Signer, Verifier), Error> {
    if !files.signing.exists() && !files.verifying.exists() {
        generate_first(files)?;
    }
    Ok((load_signer(files)?, load_verifier(files)?))
}

/// The auth service's signer. A missing file is an error naming it: a service never makes up
/// a key of its own (`covibe admin rotate-signing-key` creates the first one).
pub fn load_signer(files: &KeyFiles) -> Result<Signer, Error> {
    if !files.signing.exists() {
        return Err(missing(&files.signing, "token signing key"));
    }
    Signer::load(&files.signing)
}

/// Every service's verifier. A missing file is an error naming it.
pub fn load_verifier(files: &KeyFiles) -> Result<Verifier, Error> {
    if !files.verifying.exists() {
        return Err(missing(&files.verifying, "token verifying keys"));
    }
    Verifier::load(&files.verifying)
}

/// A service's signer of its own key (`covibe admin add-service-key`): it signs that service's
/// service tokens only. A missing file is an error naming it. A key whose public half is not in
/// `verifying` under the service's label is only warned of: the file may catch up (a Secret
/// updated after this one), and until then its tokens are refused, not trusted.
pub fn load_service_signer(path: &Path, name: &str, verifying: &Path) -> Result<Signer, Error> {
    if !path.exists() {
        return Err(missing_service_key(path, name));
    }
    let signer = Signer::load_service(path, name)?;
    let kid = signer.kid();
    let listed = read_public_keys(verifying).map(|keys| {
        keys.iter()
            .any(|k| k.kid == kid && k.service.as_deref() == Some(name))
    });
    match listed {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            kid = %kid,
            key = %path.display(),
            verifying = %verifying.display(),
            "the service key's public half is not in the verifying keys as `service: {name}`: its tokens are refused until it is"
        ),
        Err(err) => {
            tracing::warn!(error = %err, "could not check the service key against the verifying keys")
        }
    }
    Ok(signer)
}
