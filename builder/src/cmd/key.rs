//! The signing key a command uses, and the passphrases that unlock keys: shared by `keygen`,
//! `build` and `cloud-init`, which must find keys and ask for passphrases the same way.

use crate::sign::{is_encrypted, keygen, load_secret_key, Passphrase, Protection, SecretKey};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The key to sign with: `key`, or the example key (see [`default_key`]), unlocked with the
/// passphrase in `passphrase_file` or one asked for on the terminal if it is encrypted.
pub(super) fn signing_key(
    key: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
) -> Result<SecretKey> {
    let key_path = match key {
        Some(k) => k,
        None => default_key()?,
    };
    // No context on the two calls below: their errors (`KeyError`) start with the key's path.
    let passphrase = if is_encrypted(&key_path)? {
        match passphrase_file {
            Some(f) => Passphrase::Given(read_passphrase(&f)?),
            None => {
                require_terminal()?;
                Passphrase::Prompt
            }
        }
    } else {
        Passphrase::None
    };
    Ok(load_secret_key(&key_path, passphrase)?)
}

/// The example key under ./keys/, created unencrypted on first use so the shipped examples build
/// on a fresh clone. Loudly marked: such a key is for trying things out, not for a fleet.
fn default_key() -> Result<PathBuf> {
    let dir = Path::new("keys");
    let sk = dir.join("builder.key");
    if !sk.exists() {
        std::fs::create_dir_all(dir).context("creating ./keys")?;
        // KeyError names the file; see signing_key.
        let id = keygen(&sk, &dir.join("builder.pub"), Protection::Unencrypted)?;
        eprintln!(
            "builder: warning: no --key given; created an UNENCRYPTED example key {id} in keys/builder.key \
             (public half keys/builder.pub). Use `builder keygen` and --key for real fleets."
        );
    } else {
        eprintln!(
            "builder: warning: no --key given; signing with the example key keys/builder.key"
        );
    }
    Ok(sk)
}

/// A passphrase from the first line of `path`, so scripts and CI need no terminal.
pub(super) fn read_passphrase(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading passphrase file {}", path.display()))?;
    let p = text.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("passphrase file {} is empty", path.display());
    }
    Ok(p)
}

/// Fails with what to do instead when there is no terminal to ask on: minisign's prompt would
/// otherwise wait on a closed stdin or fail with a message that does not mention the options.
pub(super) fn require_terminal() -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for a passphrase: pass --passphrase-file FILE, or --unencrypted for a CI key");
    }
    Ok(())
}
