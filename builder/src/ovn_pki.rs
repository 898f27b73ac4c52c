//! The fleet's OVN IPsec certificates (`[ovn] ipsec_pki`). OVN authenticates chassis to each
//! other with X.509 only: every chassis holds a key, a certificate whose subject CN (and DNS
//! subject alternative name) is its system-id, and the CA certificate that signed the others'.
//!
//! The PKI directory is kept like the signing key: `ca.key` (made by `builder ovn-ca`), and one
//! `chassis/<system-id>.key` per chassis, made by the first build that needs it (a join adds
//! one key and touches no other). Keys are RSA: ovs-monitor-ipsec's strongSwan backend names
//! every private key `: RSA file` in ipsec.secrets, where Ed25519 and ECDSA keys do not load.
//!
//! Certificates are never stored: each is a function of its keys, the system-id and the
//! configured expiry (fixed validity start, serial from a digest, PKCS#1 v1.5 signatures, which
//! are deterministic), so a build from the same profiles and PKI directory gives the same bytes,
//! and renewal (a new expiry) is a rebuild.
//!
//! Nothing here writes a key anywhere but the PKI directory (files 0600, created without
//! replacing anything), and no key text reaches an error message.

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, LineEnding};
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use x509_cert::der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate};

/// RSA modulus size: what OVS's own `ovs-pki` makes.
pub const KEY_BITS: usize = 2048;
/// The CA's key in the PKI directory.
pub const CA_KEY: &str = "ca.key";
/// Where chassis keys are kept, one `<system-id>.key` each.
pub const CHASSIS_DIR: &str = "chassis";
/// Validity starts here for every certificate (2000-01-01T00:00:00Z): a fixed time, not the
/// build's, so that certificates are reproducible; no chassis clock is that far behind.
const NOT_BEFORE: u64 = 946_684_800;
/// RFC 5280 4.1.2.5: "no well-defined expiration date" (9999-12-31T23:59:59Z).
pub const NO_EXPIRY: u64 = 253_402_300_799;
/// sha256WithRSAEncryption (RFC 4055).
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const CA_SUBJECT: &str = "CN=ovs-bundle OVN CA,O=ovs-bundle";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an RSA private key in PKCS#1 PEM ({reason})")]
    BadKey { path: String, reason: String },
    #[error("{path} can be read by others (mode {mode:o})")]
    Exposed { path: String, mode: u32 },
    #[error("{path} already exists: it is never replaced")]
    Exists { path: String },
    #[error("certificate for {what}: {reason}")]
    Encode { what: String, reason: String },
}

impl PkiError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            PkiError::Io { .. } => "check the path and its permissions; a PKI directory is made by `builder ovn-ca --pki DIR`, and ipsec_pki is relative to the profiles directory (where fleet.toml is)".into(),
            PkiError::BadKey { .. } => "a key of this directory was changed or cut short: restore it from the backup of the PKI directory (a chassis key may also be removed: the next build makes a new one, and that chassis' bundle changes)".into(),
            PkiError::Exposed { path, .. } => format!("chmod go= {path}: it holds (or will hold) private keys"),
            PkiError::Exists { .. } => "for `builder ovn-ca`, choose another directory; for a chassis key, another build made it at the same time: build again".into(),
            PkiError::Encode { .. } => "report this as a bug of ovs-bundle".into(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What a chassis' bundle carries: the CA certificate, its own certificate and key (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct ChassisCreds {
    pub ca_cert: String,
    pub certificate: String,
    pub private_key: String,
}

impl std::fmt::Debug for ChassisCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChassisCreds")
            .field("certificate", &self.certificate)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// An opened PKI directory: the CA's key and certificate, and the expiry of what it issues.
pub struct Pki {
    dir: PathBuf,
    ca_key: RsaPrivateKey,
    ca_cert: Certificate,
    ca_pem: String,
    not_after: u64,
}

/// Makes a new PKI directory: `dir` (created, 0700, or existing and empty of a CA) with
/// `ca.key` (0600). Returns the CA certificate's PEM (no expiry), for people to look at.
pub fn init(dir: &Path) -> Result<String, PkiError> {
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return Err(PkiError::Exists {
            path: key_path.display().to_string(),
        });
    }
    create_private_dir(dir)?;
    let key =
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).map_err(|e| PkiError::Encode {
            what: "the CA".into(),
            reason: e.to_string(),
        })?;
    write_key(&key_path, &key)?;
    let pki = Pki::open(dir, NO_EXPIRY)?;
    Ok(pki.ca_pem)
}

/// Makes `dir` (0700), or checks that an existing one is not open to others.
fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            let mode = std::fs::metadata(dir).map_err(io(dir))?.mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(PkiError::Exposed {
                    path: dir.display().to_string(),
                    mode,
                });
            }
            Ok(())
        }
        Err(e) => Err(io(dir)(e)),
    }
}

/// Writes a new key file: 0600, complete or not at all, never over an existing file (a hard
/// link of a fully written temporary file is the atomic no-replace step).
fn write_key(path: &Path, key: &RsaPrivateKey) -> Result<(), PkiError> {
    let pem = key
        .to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| PkiError::Encode {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(PkiError::Exists {
                path: path.display().to_string(),
            })
        }
        other => other.map_err(io(path))?,
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn read_key(path: &Path) -> Result<RsaPrivateKey, PkiError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.mode() & 0o077 != 0 {
        return Err(PkiError::Exposed {
            path: path.display().to_string(),
            mode: meta.mode() & 0o7777,
        });
    }
    let text = zeroize_string(std::fs::read_to_string(path).map_err(io(path))?);
    RsaPrivateKey::from_pkcs1_pem(&text).map_err(|e| PkiError::BadKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn zeroize_string(s: String) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(s)
}

impl Pki {
    /// Opens `dir`: reads `ca.key` (which must not be readable by others) and derives the CA
    /// certificate. `not_after` (Unix seconds) ends the validity of every certificate issued.
    pub fn open(dir: &Path, not_after: u64) -> Result<Pki, PkiError> {
        let ca_key = read_key(&dir.join(CA_KEY))?;
        let subject = Name::from_str(CA_SUBJECT).expect("a valid name");
        let spki = spki_of(&ca_key, "the CA")?;
        let ski = key_id(&spki);
        let exts = vec![
            ext(
                &BasicConstraints {
                    ca: true,
                    path_len_constraint: Some(0),
                },
                &subject,
                "the CA",
            )?,
            ext(
                &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
                &subject,
                "the CA",
            )?,
            ext(
                &SubjectKeyIdentifier(OctetString::new(ski.clone()).map_err(enc("the CA"))?),
                &subject,
                "the CA",
            )?,
        ];
        let ca_cert = sign(&ca_key, &subject, &subject, spki, not_after, exts, "the CA")?;
        let ca_pem = ca_cert.to_pem(LineEnding::LF).map_err(enc("the CA"))?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_key,
            ca_cert,
            ca_pem,
            not_after,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The key file of chassis `system_id`.
    pub fn key_path(&self, system_id: &str) -> PathBuf {
        self.dir.join(CHASSIS_DIR).join(format!("{system_id}.key"))
    }

    /// The credentials of chassis `system_id` (a valid OVN name: see
    /// [`bundle::ovn::name_problem`]), making its key if it has none yet. Returns them and
    /// whether a key was made.
    pub fn chassis(&self, system_id: &str) -> Result<(ChassisCreds, bool), PkiError> {
        let path = self.key_path(system_id);
        let (key, made) = if path.exists() {
            (read_key(&path)?, false)
        } else {
            create_private_dir(&self.dir.join(CHASSIS_DIR))?;
            let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS).map_err(|e| {
                PkiError::Encode {
                    what: system_id.into(),
                    reason: e.to_string(),
                }
            })?;
            write_key(&path, &key)?;
            (key, true)
        };
        let certificate = self.issue(system_id, &key)?;
        let private_key = key
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(enc(system_id))?
            .to_string();
        Ok((
            ChassisCreds {
                ca_cert: self.ca_pem.clone(),
                certificate,
                private_key,
            },
            made,
        ))
    }

    /// The certificate of `system_id` for `key`, signed by the CA. Subject `CN=<system-id>,
    /// O=ovs-bundle`: ovs-monitor-ipsec takes the local name from the CN of the subject printed
    /// in RFC 2253 order and needs an attribute after it; strongSwan matches the peer's
    /// identity (the bare system-id, an FQDN identity to it) against the DNS name.
    fn issue(&self, system_id: &str, key: &RsaPrivateKey) -> Result<String, PkiError> {
        let what = system_id;
        let subject = Name::from_str(&format!("CN={system_id},O=ovs-bundle")).map_err(|e| {
            PkiError::Encode {
                what: what.into(),
                reason: e.to_string(),
            }
        })?;
        let spki = spki_of(key, what)?;
        let ca_spki = &self.ca_cert.tbs_certificate.subject_public_key_info;
        let dns = Ia5String::new(system_id).map_err(enc(what))?;
        let exts = vec![
            ext(
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                &subject,
                what,
            )?,
            ext(
                &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
                &subject,
                what,
            )?,
            ext(
                &SubjectKeyIdentifier(OctetString::new(key_id(&spki)).map_err(enc(what))?),
                &subject,
                what,
            )?,
            ext(
                &AuthorityKeyIdentifier {
                    key_identifier: Some(OctetString::new(key_id(ca_spki)).map_err(enc(what))?),
                    authority_cert_issuer: None,
                    authority_cert_serial_number: None,
                },
                &subject,
                what,
            )?,
            ext(
                &SubjectAltName(vec![GeneralName::DnsName(dns)]),
                &subject,
                what,
            )?,
        ];
        let issuer = self.ca_cert.tbs_certificate.subject.clone();
        let cert = sign(
            &self.ca_key,
            &issuer,
            &subject,
            spki,
            self.not_after,
            exts,
            what,
        )?;
        cert.to_pem(LineEnding::LF).map_err(enc(what))
    }
}

fn enc<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> PkiError + '_ {
    move |e| PkiError::Encode {
        what: what.into(),
        reason: e.to_string(),
    }
}

fn spki_of(key: &RsaPrivateKey, what: &str) -> Result<SubjectPublicKeyInfoOwned, PkiError> {
    let der = key.to_public_key().to_public_key_der().map_err(enc(what))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(enc(what))
}

/// RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the public key bits.
fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha256::digest(spki.subject_public_key.raw_bytes())[..20].to_vec()
}

fn ext<E: AsExtension>(e: &E, subject: &Name, what: &str) -> Result<Extension, PkiError> {
    e.to_extension(subject, &[]).map_err(enc(what))
}

fn time(secs: u64) -> Result<Time, x509_cert::der::Error> {
    let d = Duration::from_secs(secs);
    // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
    if secs < 2_524_608_000 {
        Ok(Time::UtcTime(UtcTime::from_unix_duration(d)?))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_unix_duration(d)?))
    }
}

/// A version 3 certificate of `subject` for `spki`, signed with `key` (PKCS#1 v1.5, SHA-256):
/// the same inputs give the same bytes. The serial is a digest of issuer, subject, key and
/// expiry (positive, 16 bytes).
#[allow(clippy::too_many_arguments)]
fn sign(
    key: &RsaPrivateKey,
    issuer: &Name,
    subject: &Name,
    spki: SubjectPublicKeyInfoOwned,
    not_after: u64,
    extensions: Vec<Extension>,
    what: &str,
) -> Result<Certificate, PkiError> {
    let algorithm = AlgorithmIdentifierOwned {
        oid: SHA256_WITH_RSA,
        parameters: Some(x509_cert::der::asn1::Any::null()),
    };
    let mut h = Sha256::new();
    h.update(b"ovs-bundle ovn serial v1\0");
    h.update(issuer.to_der().map_err(enc(what))?);
    h.update(subject.to_der().map_err(enc(what))?);
    h.update(spki.to_der().map_err(enc(what))?);
    h.update(not_after.to_be_bytes());
    let mut serial = h.finalize()[..16].to_vec();
    serial[0] = (serial[0] & 0x3f) | 0x40;
    let tbs = TbsCertificate {
        version: x509_cert::Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(enc(what))?,
        signature: algorithm.clone(),
        issuer: issuer.clone(),
        validity: Validity {
            not_before: time(NOT_BEFORE).map_err(enc(what))?,
            not_after: time(not_after).map_err(enc(what))?,
        },
        subject: subject.clone(),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(enc(what))?;
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let signature = signer.sign(&tbs_der).to_vec();
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(enc(what))?,
    })
}

/// Unix seconds of the end of day `YYYY-MM-DD` (23:59:59 UTC), the expiry people write.
pub fn parse_expiry(date: &str) -> Option<u64> {
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (u16, u8, u8) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let dt = x509_cert::der::DateTime::new(y, m, d, 23, 59, 59).ok()?;
    let secs = dt.unix_duration().as_secs();
    (secs > NOT_BEFORE).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_dates() {
        assert_eq!(parse_expiry("9999-12-31"), Some(NO_EXPIRY));
        assert_eq!(parse_expiry("2030-01-01"), Some(1_893_542_399));
        for bad in [
            "2030-1-01",
            "2030-02-30",
            "1999-12-31",
            "tomorrow",
            "2030-01-01-01",
        ] {
            assert_eq!(parse_expiry(bad), None, "{bad}");
        }
    }
}
