//! Trust anchors: the AMD roots compiled into the verifier, pinned by
//! fingerprint, and any further roots a policy names (the simulator's).
//!
//! The embedded PEM files are AMD's KDS `cert_chain` bundles (intermediate,
//! then ARK), byte-identical to the ones the `sev` crate ships in
//! `src/certs/snp/builtin/` and go-sev-guest in `verify/trust/`; see
//! `anchors/README.md`. They are embedded rather than taken from the `sev`
//! crate because that crate exposes them only with its `openssl` or
//! `crypto_nossl` features, which pull in OpenSSL or the `rsa` crate
//! (RUSTSEC-2023-0071), and it has no ASVKs.

use std::sync::OnceLock;

use provenix_firmware::snp::Product;

use crate::error::{CertRole, Error};
use crate::x509::{Cert, parse_pem_or_der};

/// SHA-256 fingerprints (DER) of AMD's certificates, from AMD's KDS as
/// recorded in `../shared/vectors/snp/amd-anchors/README.md`. A build whose
/// embedded files differ from these refuses to start.
const AMD_PINS: [(Product, CertRole, &str); 9] = [
    (
        Product::Milan,
        CertRole::Ark,
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    ),
    (
        Product::Milan,
        CertRole::Ask,
        "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    ),
    (
        Product::Milan,
        CertRole::Asvk,
        "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    ),
    (
        Product::Genoa,
        CertRole::Ark,
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    ),
    (
        Product::Genoa,
        CertRole::Ask,
        "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    ),
    (
        Product::Genoa,
        CertRole::Asvk,
        "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    ),
    (
        Product::Turin,
        CertRole::Ark,
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    ),
    (
        Product::Turin,
        CertRole::Ask,
        "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    ),
    (
        Product::Turin,
        CertRole::Asvk,
        "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    ),
];

const AMD_BUNDLES: [(Product, CertRole, &[u8]); 6] = [
    (
        Product::Milan,
        CertRole::Ask,
        include_bytes!("anchors/ask_ark_milan.pem"),
    ),
    (
        Product::Milan,
        CertRole::Asvk,
        include_bytes!("anchors/ask_ark_milan_vlek.pem"),
    ),
    (
        Product::Genoa,
        CertRole::Ask,
        include_bytes!("anchors/ask_ark_genoa.pem"),
    ),
    (
        Product::Genoa,
        CertRole::Asvk,
        include_bytes!("anchors/ask_ark_genoa_vlek.pem"),
    ),
    (
        Product::Turin,
        CertRole::Ask,
        include_bytes!("anchors/ask_ark_turin_vcek.pem"),
    ),
    (
        Product::Turin,
        CertRole::Asvk,
        include_bytes!("anchors/ask_ark_turin_vlek.pem"),
    ),
];

/// A root the verifier trusts for one product.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// The product whose chain it anchors.
    pub product: Product,
    /// SHA-256 of the ARK's DER.
    pub fingerprint: [u8; 32],
    /// Where the pin comes from, for messages: "AMD" or the policy's name.
    pub source: String,
}

/// The roots a verifier trusts, and certificates it knows already.
#[derive(Clone, Debug, Default)]
pub struct TrustAnchors {
    roots: Vec<Root>,
    /// Certificates usable as chain links without being given: the embedded
    /// ARKs and intermediates. Being here does not make a certificate
    /// trusted; only a pinned ARK does.
    known: Vec<(Product, Cert)>,
}

impl TrustAnchors {
    /// No roots at all: nothing authenticates until one is added.
    pub fn empty() -> Self {
        Self::default()
    }

    /// AMD's roots for Milan, Genoa and Turin, with their ASKs and ASVKs.
    pub fn amd() -> Result<Self, Error> {
        static AMD: OnceLock<Result<TrustAnchors, String>> = OnceLock::new();
        AMD.get_or_init(load_amd)
            .clone()
            .map_err(|reason| Error::Certificate {
                role: CertRole::Ark,
                reason: format!("embedded AMD anchors: {reason}"),
            })
    }

    /// Trust an ARK by fingerprint for `product`: the certificate itself comes
    /// with the evidence. This is how a policy admits the simulator's root.
    pub fn add_root(&mut self, product: Product, fingerprint: [u8; 32], source: &str) {
        self.roots.push(Root {
            product,
            fingerprint,
            source: source.to_owned(),
        });
    }

    /// The trusted roots.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The pinned root with this fingerprint for `product`.
    pub(crate) fn root(&self, product: Product, fingerprint: &[u8; 32]) -> Option<&Root> {
        self.roots
            .iter()
            .find(|r| r.product == product && r.fingerprint == *fingerprint)
    }

    /// Known certificates for `product`.
    pub(crate) fn known(&self, product: Product) -> impl Iterator<Item = &Cert> {
        self.known
            .iter()
            .filter(move |(p, _)| *p == product)
            .map(|(_, c)| c)
    }
}

fn load_amd() -> Result<TrustAnchors, String> {
    let mut anchors = TrustAnchors::empty();
    for (product, role, pem) in AMD_BUNDLES {
        let ders = parse_pem_or_der(pem)?;
        let [intermediate, ark] = ders.as_slice() else {
            return Err(format!(
                "{product} {role} bundle does not hold two certificates"
            ));
        };
        for (der, role) in [(intermediate, role), (ark, CertRole::Ark)] {
            let cert = Cert::from_der(der, role).map_err(|e| e.to_string())?;
            let pinned = AMD_PINS
                .iter()
                .find(|(p, r, _)| *p == product && *r == role)
                .map(|(_, _, hex)| *hex);
            if pinned != Some(hex::encode(cert.fingerprint()).as_str()) {
                return Err(format!(
                    "{product} {role} does not match its pinned fingerprint"
                ));
            }
            if role == CertRole::Ark {
                if anchors.root(product, &cert.fingerprint()).is_none() {
                    anchors.add_root(product, cert.fingerprint(), "AMD");
                    anchors.known.push((product, cert));
                }
            } else {
                anchors.known.push((product, cert));
            }
        }
    }
    Ok(anchors)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn amd_anchors_load_and_match_their_pins() {
        let anchors = TrustAnchors::amd().unwrap();
        assert_eq!(anchors.roots().len(), 3);
        for product in Product::ALL {
            // ARK, ASK and ASVK.
            assert_eq!(anchors.known(product).count(), 3, "{product}");
            // Each intermediate chains to its ARK.
            let ark = anchors
                .known(product)
                .find(|c| c.role == CertRole::Ark)
                .unwrap();
            ark.verify_signed_by(ark).unwrap();
            for c in anchors.known(product).filter(|c| c.role != CertRole::Ark) {
                c.verify_signed_by(ark).unwrap();
            }
        }
    }
}
