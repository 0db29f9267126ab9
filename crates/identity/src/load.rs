//! Loading the signer and verifiers a process runs with, from the key files.

use crate::keys::{KeyFiles, generate_first, missing};
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
