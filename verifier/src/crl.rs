//! AMD certificate revocation lists.
//!
//! AMD's KDS publishes one CRL per product and key kind
//! (`/vcek/v1/{product}/crl`, `/vlek/v1/{product}/crl`), signed by the ARK
//! with RSASSA-PSS. It revokes intermediates (ASK, ASVK); endorsement keys are
//! retired by TCB instead. A CRL is honoured for every certificate its issuer
//! signed; its signature is checked with the issuer in the chain being
//! verified, so a CRL is never trusted on its own.

use x509_parser::prelude::{CertificateRevocationList, FromDer};

use crate::error::{Error, fmt_time};
use crate::x509::{Cert, SigAlg, parse_pem_or_der, sig_alg, verify_rsa_pss};

/// Largest CRL accepted. AMD's are a few KiB.
pub const MAX_CRL_SIZE: usize = 1 << 20;

/// A parsed CRL, not yet authenticated.
#[derive(Clone, Debug)]
pub struct Crl {
    tbs: Vec<u8>,
    issuer: Vec<u8>,
    signature: Vec<u8>,
    this_update: i64,
    next_update: Option<i64>,
    revoked: Vec<Vec<u8>>,
}

impl Crl {
    /// Parse a CRL from DER or PEM (`X509 CRL`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Crl, Error> {
        if bytes.len() > MAX_CRL_SIZE {
            return Err(Error::Crl(format!(
                "{} bytes exceeds the limit of {MAX_CRL_SIZE}",
                bytes.len()
            )));
        }
        let ders = parse_pem_or_der(bytes).map_err(Error::Crl)?;
        let [der] = ders.as_slice() else {
            return Err(Error::Crl(format!(
                "expected one CRL, found {}",
                ders.len()
            )));
        };
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| Error::Crl(format!("not a DER CRL: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::Crl(format!("{} trailing bytes", rest.len())));
        }
        let tbs = &crl.tbs_cert_list;
        if tbs.signature != crl.signature_algorithm {
            return Err(Error::Crl(
                "inner and outer signature algorithms differ".into(),
            ));
        }
        let SigAlg::RsaPssSha384 = sig_alg(&crl.signature_algorithm).map_err(Error::Crl)?;
        Ok(Crl {
            tbs: tbs.as_ref().to_vec(),
            issuer: tbs.issuer.as_raw().to_vec(),
            signature: crl.signature_value.data.to_vec(),
            this_update: tbs.this_update.timestamp(),
            next_update: tbs.next_update.map(|t| t.timestamp()),
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
        })
    }

    /// Whether this CRL speaks for certificates issued by `issuer`.
    pub(crate) fn is_for(&self, issuer: &Cert) -> bool {
        self.issuer == issuer.subject
    }

    /// Check `cert` (issued by `issuer`) against this CRL at time `at`: the
    /// CRL must be signed by the issuer and current.
    pub(crate) fn check(&self, cert: &Cert, issuer: &Cert, at: i64) -> Result<(), Error> {
        verify_rsa_pss(&issuer.key, &self.tbs, &self.signature).map_err(|()| {
            Error::Crl(format!(
                "signature does not verify with the {}'s key",
                issuer.role
            ))
        })?;
        if at < self.this_update {
            return Err(Error::Crl(format!(
                "issued {} is after the verification time {}",
                fmt_time(self.this_update),
                fmt_time(at)
            )));
        }
        if let Some(next) = self.next_update.filter(|next| at > *next) {
            return Err(Error::Crl(format!(
                "stale: next update was due {}, verification time is {}",
                fmt_time(next),
                fmt_time(at)
            )));
        }
        if self.revoked.contains(&cert.serial) {
            return Err(Error::Revoked {
                role: cert.role,
                serial: hex::encode(&cert.serial),
            });
        }
        Ok(())
    }
}
