//! Authentication: is this report signed by a genuine AMD key whose chain
//! ends at a trusted root, for the TCB and chip it claims?
//!
//! Order of checks: the endorsement key (VCEK/VLEK) and its product, the
//! chain to a pinned ARK, validity at the given time, revocation, then the
//! report: signer kind, product, REPORTED_TCB against the key's extensions,
//! CHIP_ID against hwID, and last the signature over the bytes received.
//! A chain that authenticated once is cached by the endorsement key's
//! fingerprint, so later reports from the same chip cost one ECDSA
//! verification and a few comparisons.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use provenix_firmware::snp::{AttestationReport, Product, SigningKey, TcbVersion};
use ring::signature::{self, UnparsedPublicKey};

use crate::anchors::TrustAnchors;
use crate::crl::Crl;
use crate::error::{CertRole, Error};
use crate::x509::{Cert, PublicKey};

/// Most candidate intermediates tried for one endorsement key: a bound on
/// work when a caller passes a large bundle (webpki's budget, in spirit).
const MAX_CANDIDATES: usize = 16;
/// Most endorsement keys remembered; the cache is cleared when full.
const MAX_CACHED: usize = 4096;

/// Authenticates SEV-SNP reports against a set of trust anchors.
///
/// Cheap to share between threads; the chain cache is internal.
#[derive(Debug)]
pub struct Verifier {
    anchors: TrustAnchors,
    crls: Vec<Crl>,
    cache: Mutex<HashMap<[u8; 32], Arc<Endorsement>>>,
}

/// An endorsement key whose chain authenticated.
#[derive(Debug)]
struct Endorsement {
    vek: Cert,
    product: Product,
    root: [u8; 32],
    /// The validity window all three certificates share.
    not_before: i64,
    not_after: i64,
    /// The role of the certificate that bounds the window at each end, for
    /// the error message.
    first_expiring: CertRole,
    last_starting: CertRole,
}

/// A report whose signature and chain are authentic. Only
/// [`Verifier::authenticate`] makes one.
#[derive(Clone, Debug)]
pub struct AuthenticatedReport {
    report: AttestationReport,
    product: Product,
    signer: CertRole,
    root: [u8; 32],
    vek_fingerprint: [u8; 32],
    vek_key_id: [u8; 32],
    csp_id: Option<String>,
}

impl AuthenticatedReport {
    /// The report.
    pub fn report(&self) -> &AttestationReport {
        &self.report
    }
    /// The product, from the report (v3+) and the endorsement key, which
    /// agree.
    pub fn product(&self) -> Product {
        self.product
    }
    /// VCEK or VLEK.
    pub fn signer(&self) -> CertRole {
        self.signer
    }
    /// SHA-256 of the trusted ARK the chain ends at.
    pub fn root_fingerprint(&self) -> &[u8; 32] {
        &self.root
    }
    /// SHA-256 of the endorsement key certificate, for people: a
    /// certificate's bytes outside its signed part can vary, so nothing is
    /// counted or remembered by it (use [`Self::vek_key_id`]).
    pub fn vek_fingerprint(&self) -> &[u8; 32] {
        &self.vek_fingerprint
    }
    /// SHA-256 of the endorsement key's public key (the SEC 1 uncompressed
    /// P-384 point, the only form accepted): what a VLEK is counted by.
    pub fn vek_key_id(&self) -> &[u8; 32] {
        &self.vek_key_id
    }
    /// A VLEK's cloud provider (its cspId extension).
    pub fn csp_id(&self) -> Option<&str> {
        self.csp_id.as_deref()
    }
}

impl Verifier {
    /// A verifier trusting `anchors`.
    pub fn new(anchors: TrustAnchors) -> Self {
        Verifier {
            anchors,
            crls: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Honour a CRL from now on.
    pub fn add_crl(&mut self, crl: Crl) {
        self.crls.push(crl);
        self.cache_lock().clear();
    }

    /// The trust anchors.
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Endorsement>>> {
        // A poisoned lock only means another thread panicked mid-insert of an
        // immutable value; the map is still consistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Authenticate `report` with the endorsement key `vek` (DER) and any
    /// other certificates offered (`chain`: ASK/ASVK and ARK, in any order,
    /// DER). `at` is the verification time in unix seconds.
    pub fn authenticate(
        &self,
        report: &AttestationReport,
        vek: &[u8],
        chain: &[Vec<u8>],
        at: i64,
    ) -> Result<AuthenticatedReport, Error> {
        let signing_key = report.key_info().signing_key()?;
        if signing_key == SigningKey::None {
            return Err(Error::Unsigned);
        }
        let key = cache_key(vek, chain);
        let cached = self.cache_lock().get(&key).cloned();
        let endorsement = match cached {
            Some(e) => e,
            None => {
                let e = Arc::new(self.authenticate_chain(vek, chain, at)?);
                let mut cache = self.cache_lock();
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(key, Arc::clone(&e));
                e
            }
        };
        endorsement.check_time(at)?;
        let vek = &endorsement.vek;

        let expected_signer = match signing_key {
            SigningKey::Vlek => CertRole::Vlek,
            _ => CertRole::Vcek,
        };
        if vek.role != expected_signer {
            return Err(Error::SignerMismatch {
                report: signing_key,
                cert: vek.role,
            });
        }
        let product = endorsement.product;
        if let Some(reported) = report.product()
            && reported != product
        {
            return Err(Error::ProductMismatch {
                report: reported,
                cert: product,
                role: vek.role,
            });
        }
        check_tcb(report, vek, product)?;
        if vek.role == CertRole::Vcek && !report.key_info().mask_chip_key() {
            check_chip_id(report, vek, product)?;
        }
        verify_report_signature(report, vek)?;

        Ok(AuthenticatedReport {
            report: report.clone(),
            product,
            signer: vek.role,
            root: endorsement.root,
            vek_fingerprint: vek.fingerprint(),
            vek_key_id: vek.key_id(),
            csp_id: vek.amd.csp_id.clone(),
        })
    }

    /// Build and check the chain VEK <- intermediate <- ARK.
    fn authenticate_chain(
        &self,
        vek: &[u8],
        chain: &[Vec<u8>],
        at: i64,
    ) -> Result<Endorsement, Error> {
        let vek = parse_vek(vek)?;
        let name = vek
            .amd
            .product_name
            .as_deref()
            .ok_or_else(|| Error::Certificate {
                role: vek.role,
                reason: "no productName extension (1.3.6.1.4.1.3704.1.2)".into(),
            })?;
        let product = Product::from_kds_name(name)?;
        if vek.role == CertRole::Vcek
            && vek
                .amd
                .hw_id
                .as_ref()
                .is_some_and(|h| h.len() != product.hw_id_len())
        {
            return Err(Error::Certificate {
                role: vek.role,
                reason: format!("hwID is not {} bytes as on {product}", product.hw_id_len()),
            });
        }
        if chain.len() > MAX_CANDIDATES {
            return Err(Error::Certificate {
                role: CertRole::Unknown,
                reason: format!(
                    "{} certificates offered; at most {MAX_CANDIDATES} are considered",
                    chain.len()
                ),
            });
        }
        let offered: Vec<Cert> = chain
            .iter()
            .map(|der| Cert::from_der(der, CertRole::Unknown))
            .collect::<Result<_, _>>()?;
        let inter_role = if vek.role == CertRole::Vlek {
            CertRole::Asvk
        } else {
            CertRole::Ask
        };

        // Certificates the caller offered are the chain: when it holds an
        // intermediate (or an ARK), the embedded ones are not used in its
        // place, so a wrong chain is an error rather than silently replaced.
        let is_self_signed = |c: &Cert| c.subject == c.issuer;
        let pick = |want_root: bool| -> Vec<&Cert> {
            let offered: Vec<&Cert> = offered
                .iter()
                .filter(|c| is_self_signed(c) == want_root)
                .collect();
            if offered.is_empty() {
                self.anchors
                    .known(product)
                    .filter(|c| is_self_signed(c) == want_root)
                    .collect()
            } else {
                offered
            }
        };
        let (offered_intermediates, offered_arks) = (pick(false), pick(true));
        let intermediates: Vec<&Cert> = offered_intermediates
            .into_iter()
            .filter(|c| c.subject == vek.issuer)
            .collect();
        if chain.is_empty() && self.anchors.known(product).next().is_none() {
            return Err(Error::UntrustedRoot {
                product,
                detail: ": no chain was given and none is known for it".into(),
            });
        }
        if intermediates.is_empty() {
            return Err(Error::NoIssuer {
                role: inter_role,
                product,
                vek: vek.role,
            });
        }

        let mut last_err = None;
        for inter in intermediates {
            let inter = Cert {
                role: inter_role,
                ..inter.clone()
            };
            if let Err(e) = vek.verify_signed_by(&inter) {
                last_err = Some(e);
                continue;
            }
            let arks: Vec<&Cert> = offered_arks
                .iter()
                .copied()
                .filter(|c| c.subject == inter.issuer)
                .collect();
            let trusted = arks
                .iter()
                .find(|a| self.anchors.root(product, &a.fingerprint()).is_some());
            let Some(ark) = trusted else {
                let detail = match arks.first() {
                    Some(a) => format!(
                        ": the chain ends at an ARK with SHA-256 {}",
                        hex::encode(a.fingerprint())
                    ),
                    None => String::new(),
                };
                last_err = Some(Error::UntrustedRoot { product, detail });
                continue;
            };
            let ark = Cert {
                role: CertRole::Ark,
                ..(*ark).clone()
            };
            ark.verify_signed_by(&ark)?;
            inter.verify_signed_by(&ark)?;
            for cert in [&ark, &inter, &vek] {
                cert.check_validity(at)?;
            }
            for crl in &self.crls {
                if crl.is_for(&ark) {
                    crl.check(&inter, &ark, at)?;
                }
                if crl.is_for(&inter) {
                    crl.check(&vek, &inter, at)?;
                }
            }
            let certs = [&ark, &inter, &vek];
            let (first_expiring, not_after) = certs
                .iter()
                .map(|c| (c.role, c.not_after))
                .min_by_key(|(_, t)| *t)
                .unwrap_or((vek.role, vek.not_after));
            let (last_starting, not_before) = certs
                .iter()
                .map(|c| (c.role, c.not_before))
                .max_by_key(|(_, t)| *t)
                .unwrap_or((vek.role, vek.not_before));
            return Ok(Endorsement {
                root: ark.fingerprint(),
                vek,
                product,
                not_before,
                not_after,
                first_expiring,
                last_starting,
            });
        }
        Err(last_err.unwrap_or(Error::NoIssuer {
            role: inter_role,
            product,
            vek: vek.role,
        }))
    }
}

/// The cache key: the endorsement key and the chain offered with it, since
/// a different chain may not authenticate.
fn cache_key(vek: &[u8], chain: &[Vec<u8>]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for der in core::iter::once(vek).chain(chain.iter().map(Vec::as_slice)) {
        ctx.update(&u64::try_from(der.len()).unwrap_or(u64::MAX).to_le_bytes());
        ctx.update(der);
    }
    let mut key = [0; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

impl Endorsement {
    fn check_time(&self, at: i64) -> Result<(), Error> {
        if at > self.not_after || at < self.not_before {
            let role = if at > self.not_after {
                self.first_expiring
            } else {
                self.last_starting
            };
            return Err(Error::Expired {
                role,
                not_before: self.not_before,
                not_after: self.not_after,
                at,
            });
        }
        Ok(())
    }
}

/// Parse the endorsement key and decide whether it is a VCEK or a VLEK: a
/// VLEK carries a cspId and no hwID (VCEK spec, Table 8), and AMD names it
/// `SEV-VLEK`.
fn parse_vek(der: &[u8]) -> Result<Cert, Error> {
    let mut vek = Cert::from_der(der, CertRole::Vcek)?;
    let is_vlek = vek.amd.csp_id.is_some() || vek.subject_cn == "SEV-VLEK";
    vek.role = if is_vlek {
        CertRole::Vlek
    } else {
        CertRole::Vcek
    };
    if is_vlek && vek.amd.hw_id.is_some() {
        return Err(Error::Certificate {
            role: vek.role,
            reason: "a VLEK must not carry a hwID".into(),
        });
    }
    if !is_vlek && vek.amd.hw_id.is_none() {
        return Err(Error::Certificate {
            role: vek.role,
            reason: "no hwID extension (1.3.6.1.4.1.3704.1.4)".into(),
        });
    }
    if !matches!(vek.key, PublicKey::EcP384(_)) {
        return Err(Error::Certificate {
            role: vek.role,
            reason: "key is not ECDSA P-384".into(),
        });
    }
    Ok(vek)
}

/// REPORTED_TCB must be the TCB the key was derived for, component by
/// component in the product's layout.
fn check_tcb(report: &AttestationReport, vek: &Cert, product: Product) -> Result<(), Error> {
    let cert: TcbVersion = vek.amd.tcb(product, vek.role)?;
    // A v2 report names no product and was decoded in the Milan/Genoa
    // layout, the only one v2 firmware produces; Turin firmware starts at v3.
    if report.product().is_none() && product.has_fmc() {
        return Err(Error::VersionProductMismatch {
            version: report.version(),
            cert: product,
            role: vek.role,
        });
    }
    let reported = report.reported_tcb();
    let pairs = reported.components().zip(cert.components());
    for ((component, have), (_, want)) in pairs {
        if have != want {
            return Err(Error::TcbMismatch {
                role: vek.role,
                component,
                report: have,
                cert: want,
            });
        }
    }
    if reported.fmc.is_some() != cert.fmc.is_some() {
        return Err(Error::TcbMismatch {
            role: vek.role,
            component: "fmc",
            report: reported.fmc.unwrap_or(0),
            cert: cert.fmc.unwrap_or(0),
        });
    }
    Ok(())
}

/// CHIP_ID must be the VCEK's hwID: all 64 bytes before Turin; on Turin the
/// hwID is 8 bytes and is CHIP_ID's first 8.
fn check_chip_id(report: &AttestationReport, vek: &Cert, product: Product) -> Result<(), Error> {
    let hw_id = vek.amd.hw_id.as_deref().unwrap_or_default();
    let chip_id = report.chip_id();
    let compared = chip_id.get(..product.hw_id_len()).unwrap_or(chip_id);
    if compared != hw_id {
        return Err(Error::ChipIdMismatch {
            report: hex::encode(compared),
            cert: hex::encode(hw_id),
        });
    }
    Ok(())
}

/// ECDSA P-384 with SHA-384 over bytes 0x000..0x2A0 as received. R and S are
/// little-endian in the report (ABI spec Table 142); ring takes big-endian
/// `r || s`.
fn verify_report_signature(report: &AttestationReport, vek: &Cert) -> Result<(), Error> {
    let PublicKey::EcP384(point) = &vek.key else {
        return Err(Error::ReportSignature(vek.role));
    };
    let mut sig = [0u8; 96];
    let (r, s) = sig.split_at_mut(48);
    r.copy_from_slice(report.signature_r());
    s.copy_from_slice(report.signature_s());
    r.reverse();
    s.reverse();
    UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
        .verify(report.signed_bytes(), &sig)
        .map_err(|_| Error::ReportSignature(vek.role))
}
