//! Secrets at rest (members' SSH credentials): XChaCha20-Poly1305 under a per-member key
//! derived with HKDF-SHA256 from a versioned master key.
//!
//! A sealed secret is `version (4 bytes, big-endian) || nonce (24) || ciphertext and tag`. The
//! associated data binds it to its row (team, member, VM, what it is) and to the key version,
//! so a ciphertext copied to another row, or relabelled with another version, does not open.
//!
//! The master key file holds one `VERSION BASE64` line per key and a `min VERSION` line: keys
//! below it are retired, and what they sealed fails as such. The file is reread on every use,
//! so a running service picks up a rotation without a restart; it is never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::keys::{io_err, replace};

const NONCE: usize = 24;
const HEADER: usize = 4 + NONCE;
const SALT: &[u8] = b"covibe/credential/v1";

/// Why a secret could not be sealed or opened. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("the sealed secret is malformed (too short to hold a version and a nonce)")]
    Malformed,
    #[error("the sealed secret names master key version {0}, which this server does not have")]
    UnknownVersion(u32),
    #[error("the sealed secret uses master key version {0}, which was retired")]
    Retired(u32),
    #[error("the sealed secret does not open: it was altered, or belongs to another row")]
    Tampered,
    #[error("master key file: {0}")]
    KeyFile(String),
}

/// What a secret is bound to: opening it under any other binding fails.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub team: &'a str,
    pub user: &'a str,
    pub vm: &'a str,
    /// What the secret is (`ssh_private_key`, `ssh_password`, ...).
    pub purpose: &'a str,
}

impl Binding<'_> {
    fn associated_data(&self, version: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(96);
        for part in [
            b"covibe-secret".as_slice(),
            &version.to_be_bytes(),
            self.team.as_bytes(),
            self.user.as_bytes(),
            self.vm.as_bytes(),
            self.purpose.as_bytes(),
        ] {
            // Length-prefixed, so no two bindings encode alike.
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }
}

/// The master keys, by version.
pub struct MasterKeys {
    keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
    min_version: u32,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("versions", &self.keys.keys().collect::<Vec<_>>())
            .field("min_version", &self.min_version)
            .finish()
    }
}

/// The version a sealed secret names, without opening it.
pub fn version_of(sealed: &[u8]) -> Result<u32, VaultError> {
    if sealed.len() < HEADER {
        return Err(VaultError::Malformed);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&sealed[..4]);
    Ok(u32::from_be_bytes(version))
}

impl MasterKeys {
    /// Reads the key file. A missing file is an error naming how to make one.
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            VaultError::KeyFile(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "{} does not exist: create it with `covibe admin rotate-master-key` (standalone creates it itself)",
                    path.display()
                ),
                _ => format!("{}: {e}", path.display()),
            })
        })?);
        Self::parse(&text).map_err(|why| VaultError::KeyFile(format!("{}: {why}", path.display())))
    }

    /// Reads the key file, making it with a first key when there is none (standalone).
    pub fn load_or_generate(path: &Path) -> Result<Self, VaultError> {
        if !path.exists() {
            rotate(path)?;
        }
        Self::load(path)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        let mut min_version = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                format!(
                    "line {} is not `VERSION BASE64KEY` nor `min VERSION`",
                    n + 1
                )
            };
            let (head, tail) = line.split_once(' ').ok_or_else(bad)?;
            if head == "min" {
                min_version = tail.trim().parse().map_err(|_| bad())?;
                continue;
            }
            let version: u32 = head.parse().map_err(|_| bad())?;
            let bytes = Zeroizing::new(B64.decode(tail.trim()).map_err(|_| bad())?);
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| format!("line {}: a key is 32 bytes", n + 1))?;
            if keys.insert(version, Zeroizing::new(key)).is_some() {
                return Err(format!("version {version} appears twice"));
            }
        }
        if !keys.keys().any(|v| *v >= min_version) {
            return Err("no usable key: add one with `covibe admin rotate-master-key`".to_owned());
        }
        Ok(Self { keys, min_version })
    }

    /// The version new secrets are sealed with: the newest.
    pub fn current(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or_default()
    }

    /// Versions below this are retired.
    pub fn min_version(&self) -> u32 {
        self.min_version
    }

    /// A key for `purpose` (signing short-lived capabilities, say), derived from the current
    /// master key: it changes when the master key rotates.
    pub fn derive(&self, purpose: &str) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        let version = self.current();
        let master = self
            .keys
            .get(&version)
            .ok_or(VaultError::UnknownVersion(version))?;
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(Some(b"covibe/derived/v1"), master.as_slice())
            .expand(purpose.as_bytes(), key.as_mut_slice())
            .map_err(|_| VaultError::KeyFile("key derivation failed".to_owned()))?;
        Ok(key)
    }

    fn cipher(&self, version: u32, binding: &Binding<'_>) -> Result<XChaCha20Poly1305, VaultError> {
        if version < self.min_version {
            return Err(VaultError::Retired(version));
        }
        let master = self
            .keys
            .get(&version)
            .ok_or(VaultError::UnknownVersion(version))?;
        let mut info = Vec::with_capacity(80);
        for part in [binding.team, binding.user] {
            info.extend_from_slice(&(part.len() as u32).to_be_bytes());
            info.extend_from_slice(part.as_bytes());
        }
        let mut member_key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(Some(SALT), master.as_slice())
            .expand(&info, member_key.as_mut_slice())
            .map_err(|_| VaultError::KeyFile("key derivation failed".to_owned()))?;
        XChaCha20Poly1305::new_from_slice(member_key.as_slice())
            .map_err(|_| VaultError::KeyFile("key derivation failed".to_owned()))
    }

    /// Seals `plaintext` under the current version with a fresh random nonce.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.sealer(binding)?.seal(plaintext)
    }

    /// A sealer for many secrets of one binding: the member key is derived once.
    pub fn sealer(&self, binding: &Binding<'_>) -> Result<Sealer, VaultError> {
        let version = self.current();
        Ok(Sealer {
            version,
            cipher: self.cipher(version, binding)?,
            aad: binding.associated_data(version),
        })
    }

    /// Opens a sealed secret bound to `binding`. The plaintext is wiped when dropped.
    pub fn open(
        &self,
        binding: &Binding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let version = version_of(sealed)?;
        let cipher = self.cipher(version, binding)?;
        let nonce: [u8; NONCE] = sealed[4..HEADER]
            .try_into()
            .map_err(|_| VaultError::Malformed)?;
        let nonce = XNonce::from(nonce);
        let aad = binding.associated_data(version);
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed[HEADER..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::Tampered)
    }
}

/// Seals secrets of one binding under one key version.
pub struct Sealer {
    version: u32,
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
}

impl Sealer {
    /// Seals `plaintext` with a fresh random 24-byte nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut rand::rngs::OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &self.aad,
                },
            )
            .map_err(|_| VaultError::Tampered)?;
        let mut out = Vec::with_capacity(HEADER + sealed.len());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

/// Where the master keys live, reread on every use so that a rotation needs no restart.
#[derive(Debug, Clone)]
pub struct Vault {
    path: PathBuf,
}

impl Vault {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file must exist (a service), or is made with a first key (standalone).
    pub fn open_file(path: impl Into<PathBuf>, generate: bool) -> Result<Self, VaultError> {
        let path = path.into();
        if generate {
            MasterKeys::load_or_generate(&path)?;
        } else {
            MasterKeys::load(&path)?;
        }
        Ok(Self { path })
    }

    pub fn keys(&self) -> Result<MasterKeys, VaultError> {
        MasterKeys::load(&self.path)
    }
}

fn write_keys(
    path: &Path,
    keys: &BTreeMap<u32, Zeroizing<[u8; 32]>>,
    min: u32,
) -> Result<(), VaultError> {
    let mut text = Zeroizing::new(String::from(
        "# covibe master keys: `VERSION BASE64KEY` per line; versions below `min` are retired.\n",
    ));
    text.push_str(&format!("min {min}\n"));
    for (version, key) in keys {
        text.push_str(&format!("{version} {}\n", B64.encode(key.as_slice())));
    }
    replace(path, text.as_bytes(), true).map_err(|e| VaultError::KeyFile(e.to_string()))
}

fn read_keys(path: &Path) -> Result<MasterKeys, VaultError> {
    match std::fs::metadata(path) {
        Ok(_) => MasterKeys::load(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MasterKeys {
            keys: BTreeMap::new(),
            min_version: 0,
        }),
        Err(e) => Err(VaultError::KeyFile(io_err(path)(e).to_string())),
    }
}

/// Adds a master key version (the first one on a new set-up) and returns it: new secrets are
/// sealed with it; re-encrypt the old ones with `covibe admin rotate-master-key`.
pub fn rotate(path: &Path) -> Result<u32, VaultError> {
    let mut keys = read_keys(path)?;
    let version = keys.current() + 1;
    let mut key = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, key.as_mut_slice());
    keys.keys.insert(version, key);
    let min = keys.min_version.max(1);
    write_keys(path, &keys.keys, min)?;
    tracing::info!(version, "added a master key version");
    Ok(version)
}

/// Retires every version below `min` (never the current one): what they sealed fails to open
/// from then on, with `Retired`.
pub fn retire(path: &Path, min: u32) -> Result<Vec<u32>, VaultError> {
    let mut keys = read_keys(path)?;
    if min > keys.current() {
        return Err(VaultError::KeyFile(format!(
            "version {} is the newest: retiring below {min} would leave no key",
            keys.current()
        )));
    }
    let retired: Vec<u32> = keys.keys.range(..min).map(|(v, _)| *v).collect();
    keys.keys.retain(|v, _| *v >= min);
    write_keys(path, &keys.keys, min.max(keys.min_version))?;
    Ok(retired)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn binding<'a>(vm: &'a str) -> Binding<'a> {
        Binding {
            team: "team-1",
            user: "user-1",
            vm,
            purpose: "ssh_private_key",
        }
    }

    #[test]
    fn a_secret_opens_only_under_its_own_binding_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let keys = MasterKeys::load_or_generate(&path).unwrap();
        let secret = b"-----BEGIN OPENSSH PRIVATE KEY-----";
        let sealed = keys.seal(&binding("vm-1"), secret).unwrap();
        assert_eq!(
            keys.open(&binding("vm-1"), &sealed).unwrap().as_slice(),
            secret
        );

        // Copied to another VM's row, or another member's, or relabelled as something else.
        assert_eq!(
            keys.open(&binding("vm-2"), &sealed),
            Err(VaultError::Tampered)
        );
        let other_user = Binding {
            user: "user-2",
            ..binding("vm-1")
        };
        assert_eq!(keys.open(&other_user, &sealed), Err(VaultError::Tampered));
        let other_purpose = Binding {
            purpose: "ssh_password",
            ..binding("vm-1")
        };
        assert_eq!(
            keys.open(&other_purpose, &sealed),
            Err(VaultError::Tampered)
        );
        // Every flipped bit, header included, is refused and never panics.
        for i in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            let err = keys.open(&binding("vm-1"), &flipped).unwrap_err();
            assert!(
                matches!(
                    err,
                    VaultError::Tampered | VaultError::UnknownVersion(_) | VaultError::Retired(_)
                ),
                "{err:?}"
            );
        }
        // Truncated: in the nonce, and in the tag.
        for len in [0, 3, 4, 20, HEADER - 1] {
            assert_eq!(
                keys.open(&binding("vm-1"), &sealed[..len]),
                Err(VaultError::Malformed)
            );
        }
        assert_eq!(
            keys.open(&binding("vm-1"), &sealed[..sealed.len() - 1]),
            Err(VaultError::Tampered)
        );
        // A version this server never had.
        let mut unknown = sealed.clone();
        unknown[..4].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(
            keys.open(&binding("vm-1"), &unknown),
            Err(VaultError::UnknownVersion(9))
        );
        // No error message carries the secret.
        assert!(!format!("{:?}", keys).contains("BEGIN"));
    }

    #[test]
    fn a_million_seals_of_one_plaintext_never_repeat_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::load_or_generate(&dir.path().join("master.key")).unwrap();
        let sealer = keys.sealer(&binding("vm-1")).unwrap();
        let mut nonces = std::collections::HashSet::with_capacity(1_000_000);
        let mut ciphertexts = std::collections::HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let sealed = sealer.seal(b"hunter2").unwrap();
            let nonce: [u8; NONCE] = sealed[4..HEADER].try_into().unwrap();
            assert!(nonces.insert(nonce), "a nonce repeated");
            assert!(
                ciphertexts.insert(sealed[HEADER..].to_vec()),
                "a ciphertext repeated"
            );
        }
    }

    #[test]
    fn rotation_adds_versions_and_retiring_refuses_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        assert_eq!(rotate(&path).unwrap(), 1);
        let old = MasterKeys::load(&path)
            .unwrap()
            .seal(&binding("vm"), b"s")
            .unwrap();
        assert_eq!(rotate(&path).unwrap(), 2);
        let keys = MasterKeys::load(&path).unwrap();
        assert_eq!(keys.current(), 2);
        // The old version still opens until retired; new seals use the new one.
        assert_eq!(keys.open(&binding("vm"), &old).unwrap().as_slice(), b"s");
        assert_eq!(
            version_of(&keys.seal(&binding("vm"), b"s").unwrap()).unwrap(),
            2
        );
        assert!(
            retire(&path, 3).is_err(),
            "the newest version is never retired"
        );
        assert_eq!(retire(&path, 2).unwrap(), vec![1]);
        let keys = MasterKeys::load(&path).unwrap();
        assert_eq!(keys.open(&binding("vm"), &old), Err(VaultError::Retired(1)));
        // The file is the owner's alone, and a bad file is a clear error.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "1 not-base64\n").unwrap();
        let err = MasterKeys::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let missing = MasterKeys::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("covibe admin rotate-master-key"),
            "{missing}"
        );
    }
}
