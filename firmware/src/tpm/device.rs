//! A real TPM (or swtpm) through tss-esapi: attestation keys, quotes, PCR
//! reads, NV certificates and credential activation.
//!
//! Everything that leaves this module is marshalled TPM bytes (TPMT_PUBLIC,
//! TPMS_ATTEST, TPMT_SIGNATURE) or plain values, so the worker can hand it
//! to the pure-Rust parsers and the verifier without sharing tss-esapi
//! types. Commands and references are from TPM 2.0 Library Part 3
//! (commands) and the TCG EK Credential Profile 2.0 (EK templates, NV
//! indices).

use std::path::Path;
use std::str::FromStr;

use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::{CapabilityType, SessionType, Tss2ResponseCodeKind};
use tss_esapi::handles::{
    AuthHandle, KeyHandle, NvIndexTpmHandle, ObjectHandle, PcrHandle, PersistentTpmHandle,
    SessionHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    AttestInfo, CapabilityData, Data, Digest, DigestValues, EccPoint, EccScheme, EncryptedSecret,
    HashScheme, IdObject, KeyDerivationFunctionScheme, PcrSelectSize, PcrSelection,
    PcrSelectionList, PcrSlot, Public, PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa,
    PublicRsaParametersBuilder, RsaExponent, RsaScheme, SignatureScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPML_PCR_SELECTION;
use tss_esapi::{Context, abstraction};

use super::HashAlg;
use crate::Error;

/// The TCTI used when none is given: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Where Linux exposes the firmware's TCG event log (securityfs).
pub const EVENT_LOG_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// NV index of the RSA 2048 EK certificate (EK Credential Profile 2.0,
/// section 2.2.1.4, low range).
pub const EK_CERT_RSA_NV: u32 = 0x01c0_0002;
/// NV index of the ECC P-256 EK certificate (same section).
pub const EK_CERT_ECC_NV: u32 = 0x01c0_000a;
/// NV index of a GCP Shielded VM's RSA AK certificate.
pub const GCP_AK_CERT_RSA_NV: u32 = 0x01c1_0000;
/// NV index of a GCP Shielded VM's ECC AK certificate.
pub const GCP_AK_CERT_ECC_NV: u32 = 0x01c1_0002;
/// NV index of an Azure vTPM's AK certificate.
pub const AZURE_AK_CERT_NV: u32 = 0x01c1_01d0;
/// NV index of the template (a marshalled TPMT_PUBLIC) of a GCP vTPM's RSA
/// AK: the key [`GCP_AK_CERT_RSA_NV`] certifies is TPM2_CreatePrimary of
/// it in the endorsement hierarchy (go-tpm-tools `client`,
/// `GceAKTemplateNVIndexRSA` and `EndorsementKeyFromNvIndex`).
pub const GCP_AK_TEMPLATE_RSA_NV: u32 = 0x01c1_0001;
/// NV index of the template of a GCP vTPM's ECC AK (same source).
pub const GCP_AK_TEMPLATE_ECC_NV: u32 = 0x01c1_0003;
/// Persistent handle of an Azure vTPM's AK, which the paravisor creates
/// and names in the HCL report's runtime data (`HCLAkPub`).
pub const AZURE_AK_HANDLE: u32 = 0x8100_0003;

/// The largest qualifying data a quote takes: TPM2B_DATA holds a TPMT_HA,
/// 64 bytes on a TPM with SHA-512 (Part 2, 10.4.3). A TPM without SHA-512
/// holds 48 and answers TPM_RC_SIZE, which [`Tpm::quote`] reports.
pub const MAX_QUALIFYING_DATA: usize = 64;

/// How often [`Tpm::quote`] reads the PCRs and quotes before it gives up on
/// PCRs that keep changing. Boot-time extends settle within a few reads.
pub const QUOTE_ATTEMPTS: u32 = 5;

/// The kind of attestation key: a restricted signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AkKind {
    /// ECC NIST P-256 with ECDSA-SHA256.
    EccP256,
    /// RSA 2048 with RSASSA-PKCS1-v1_5-SHA256.
    Rsa2048,
}

/// The kind of endorsement key, from the low-range default templates (EK
/// Credential Profile 2.0, B.3.3 template L-1 and B.3.4 template L-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EkKind {
    /// RSA 2048, template L-1; certificate at [`EK_CERT_RSA_NV`].
    Rsa2048,
    /// ECC NIST P-256, template L-2; certificate at [`EK_CERT_ECC_NV`].
    EccP256,
}

impl EkKind {
    /// The NV index of this EK's certificate.
    pub fn certificate_index(self) -> u32 {
        match self {
            EkKind::Rsa2048 => EK_CERT_RSA_NV,
            EkKind::EccP256 => EK_CERT_ECC_NV,
        }
    }
}

/// A loaded key: the TPM's handle and its public area.
#[derive(Debug)]
pub struct Key {
    handle: KeyHandle,
    public: Vec<u8>,
}

impl Key {
    /// The key's TPMT_PUBLIC, marshalled (its name is nameAlg || H(this)).
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The key's TPM2B_PUBLIC: a big-endian u16 size, then the TPMT_PUBLIC.
    pub fn public_2b(&self) -> Vec<u8> {
        // A TPMT_PUBLIC is far below 64 KiB (Part 2, 12.2.4).
        let size = u16::try_from(self.public.len()).unwrap_or(u16::MAX);
        let mut out = size.to_be_bytes().to_vec();
        out.extend_from_slice(&self.public);
        out
    }
}

/// A cloud provider's attestation key, made or loaded as the cloud
/// provisions it, with the certificate the cloud wrote for it into NV.
#[derive(Debug)]
pub struct CloudAk {
    /// The key, loaded.
    pub key: Key,
    /// Its certificate (DER), as read from NV.
    pub certificate: Vec<u8>,
    /// The NV index the certificate was read from.
    pub certificate_index: u32,
}

/// One PCR value as read from the TPM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrValue {
    /// The bank.
    pub bank: HashAlg,
    /// The PCR index.
    pub index: u8,
    /// Its value.
    pub value: Vec<u8>,
}

/// A quote and the PCR values it covers.
#[derive(Clone, Debug)]
pub struct Quote {
    /// TPMS_ATTEST, marshalled: what the signature covers.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE, marshalled.
    pub signature: Vec<u8>,
    /// The PCR values read before quoting, in the quote's selection order
    /// (banks as selected, PCRs ascending); their hash is the quote's
    /// pcrDigest.
    pub pcrs: Vec<PcrValue>,
    /// How many read-and-quote rounds it took (1 when no PCR changed).
    pub attempts: u32,
}

/// An open TPM. Transient objects it creates are flushed when it is
/// dropped, so a short-lived process leaves no objects in a TPM that has
/// no resource manager (swtpm has three transient slots).
pub struct Tpm {
    context: Context,
    transient: Vec<ObjectHandle>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("transient", &self.transient.len())
            .finish_non_exhaustive()
    }
}

impl Tpm {
    /// Open the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:host=H,port=P`,
    /// `mssim:...`, `tabrmd:...`), by default [`DEFAULT_TCTI`].
    pub fn open(tcti: Option<&str>) -> Result<Tpm, Error> {
        let tcti = tcti.unwrap_or(DEFAULT_TCTI);
        let conf = TctiNameConf::from_str(tcti).map_err(|e| Error::TpmDevice {
            op: "parse TCTI",
            reason: format!("{tcti:?}: {e} (expected device:PATH, swtpm:host=H,port=P, ...)"),
        })?;
        let context = Context::new(conf).map_err(|e| Error::TpmDevice {
            op: "open",
            reason: format!("{tcti}: {e}"),
        })?;
        Ok(Tpm {
            context,
            transient: Vec::new(),
        })
    }

    /// The active PCR banks this module quotes: SHA-256, and SHA-384 when
    /// the TPM allocates it (TPM2_GetCapability, TPM_CAP_PCRS).
    pub fn pcr_banks(&mut self) -> Result<Vec<HashAlg>, Error> {
        let (data, _) = self
            .context
            .execute_without_session(|ctx| ctx.get_capability(CapabilityType::AssignedPcr, 0, 1))
            .map_err(tss("TPM2_GetCapability(TPM_CAP_PCRS)"))?;
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(Error::TpmDevice {
                op: "TPM2_GetCapability(TPM_CAP_PCRS)",
                reason: "the TPM answered with another capability".into(),
            });
        };
        let active = |alg: HashingAlgorithm| {
            list.get_selections()
                .iter()
                .any(|s| s.hashing_algorithm() == alg && !s.is_empty())
        };
        if !active(HashingAlgorithm::Sha256) {
            return Err(Error::TpmUnsupported(
                "the SHA-256 PCR bank is not active".into(),
            ));
        }
        let mut banks = vec![HashAlg::Sha256];
        if active(HashingAlgorithm::Sha384) {
            banks.push(HashAlg::Sha384);
        }
        Ok(banks)
    }

    /// The attestation key of `kind`: a restricted signing primary key in
    /// the endorsement hierarchy, so that it lives beside the EK and
    /// credential activation can bind the two. A primary key is derived
    /// from the hierarchy's seed and the template, so the same TPM gives
    /// the same key in every process. With `persist`, the key is kept at
    /// that persistent handle (0x81000000..0x817FFFFF, owner's range): loaded
    /// from there when present, made persistent otherwise.
    pub fn attestation_key(&mut self, kind: AkKind, persist: Option<u32>) -> Result<Key, Error> {
        let template = ak_template(kind)?;
        let template_bytes = marshall(&template, "AK template")?;
        if let Some(index) = persist {
            let handle = PersistentTpmHandle::new(index).map_err(|e| Error::TpmDevice {
                op: "persistent handle",
                reason: format!("{index:#010x}: {e}"),
            })?;
            if self.handle_defined(index)? {
                let object = self
                    .context
                    .execute_without_session(|ctx| {
                        ctx.tr_from_tpm_public(TpmHandle::Persistent(handle))
                    })
                    .map_err(tss("ESYS_TR_FromTPMPublic(AK)"))?;
                let key = KeyHandle::from(object);
                let public = self.read_public(key)?;
                if !same_key_shape(kind, &public, &template_bytes) {
                    return Err(Error::TpmUnsupported(format!(
                        "persistent handle {index:#010x} holds a key that is not a {kind:?} attestation key"
                    )));
                }
                return Ok(Key {
                    handle: key,
                    public,
                });
            }
            let key = self.create_primary(template, "TPM2_CreatePrimary(AK)")?;
            let persistent = self
                .context
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.evict_control(
                        Provision::Owner,
                        key.handle.into(),
                        Persistent::Persistent(handle),
                    )
                })
                .map_err(tss("TPM2_EvictControl(AK)"))?;
            return Ok(Key {
                handle: KeyHandle::from(persistent),
                public: key.public,
            });
        }
        self.create_primary(template, "TPM2_CreatePrimary(AK)")
    }

    /// Flush a transient key now rather than when this [`Tpm`] is dropped
    /// (a TPM has few transient slots: swtpm three). A persistent key stays.
    pub fn flush(&mut self, key: Key) -> Result<(), Error> {
        let handle = ObjectHandle::from(key.handle);
        if let Some(i) = self.transient.iter().position(|&h| h == handle) {
            self.transient.swap_remove(i);
            self.context
                .flush_context(handle)
                .map_err(tss("TPM2_FlushContext"))?;
        }
        Ok(())
    }

    /// The endorsement key of `kind`, created from the default template
    /// (TPM2_CreatePrimary in the endorsement hierarchy gives the key the
    /// EK certificate names).
    pub fn endorsement_key(&mut self, kind: EkKind) -> Result<Key, Error> {
        let selection = match kind {
            EkKind::Rsa2048 => abstraction::AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            EkKind::EccP256 => abstraction::AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        };
        let template = abstraction::ek::create_ek_public_from_default_template_2(selection, None)
            .map_err(tss("EK template"))?;
        self.create_primary(template, "TPM2_CreatePrimary(EK)")
    }

    /// The EK certificate of `kind` from NV, DER, or `None` when the index
    /// is not defined. Trailing padding after the DER is cut off (some TPMs
    /// store the certificate in a larger, zero-filled index).
    pub fn ek_certificate(&mut self, kind: EkKind) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.nv_read(kind.certificate_index())?.map(trim_der))
    }

    /// A cloud provider's AK certificate from NV (GCP RSA, GCP ECC, Azure,
    /// in that order): its index and DER, or `None` when none is present.
    pub fn cloud_ak_certificate(&mut self) -> Result<Option<(u32, Vec<u8>)>, Error> {
        for index in [GCP_AK_CERT_RSA_NV, GCP_AK_CERT_ECC_NV, AZURE_AK_CERT_NV] {
            if let Some(cert) = self.nv_read(index)? {
                return Ok(Some((index, trim_der(cert))));
            }
        }
        Ok(None)
    }

    /// The cloud's attestation key and its NV certificate, the first of:
    /// GCP RSA (certificate [`GCP_AK_CERT_RSA_NV`], key from the template
    /// at [`GCP_AK_TEMPLATE_RSA_NV`]), GCP ECC (0x01c10002, 0x01c10003),
    /// Azure (certificate [`AZURE_AK_CERT_NV`], key persistent at
    /// [`AZURE_AK_HANDLE`]). `None` when the TPM holds none of these
    /// certificates. A certificate whose key is missing is an error: the
    /// certificate alone attests nothing.
    pub fn cloud_attestation_key(&mut self) -> Result<Option<CloudAk>, Error> {
        for (cert_index, template_index) in [
            (GCP_AK_CERT_RSA_NV, GCP_AK_TEMPLATE_RSA_NV),
            (GCP_AK_CERT_ECC_NV, GCP_AK_TEMPLATE_ECC_NV),
        ] {
            if let Some(cert) = self.nv_read(cert_index)? {
                let key = self.attestation_key_from_template(template_index)?;
                return Ok(Some(CloudAk {
                    key,
                    certificate: trim_der(cert),
                    certificate_index: cert_index,
                }));
            }
        }
        if let Some(cert) = self.nv_read(AZURE_AK_CERT_NV)? {
            let key = self.persistent_key(AZURE_AK_HANDLE)?;
            return Ok(Some(CloudAk {
                key,
                certificate: trim_der(cert),
                certificate_index: AZURE_AK_CERT_NV,
            }));
        }
        Ok(None)
    }

    /// The key TPM2_CreatePrimary makes in the endorsement hierarchy from
    /// the template in NV index `index`, as a cloud provisions its AK
    /// (GCP: [`GCP_AK_TEMPLATE_RSA_NV`], [`GCP_AK_TEMPLATE_ECC_NV`]). The
    /// template is a marshalled TPMT_PUBLIC (go-tpm's `DecodePublic`);
    /// one with a TPM2B size prefix is taken too. Whether the key is a
    /// restricted signing key is the verifier's to check.
    pub fn attestation_key_from_template(&mut self, index: u32) -> Result<Key, Error> {
        let bytes = self.nv_read(index)?.ok_or_else(|| {
            Error::TpmUnsupported(format!(
                "no AK template: NV index {index:#010x} is not defined"
            ))
        })?;
        let template = Public::unmarshall(template_body(&bytes)).map_err(|e| Error::TpmDevice {
            op: "AK template",
            reason: format!("NV index {index:#010x} is not a TPMT_PUBLIC: {e}"),
        })?;
        self.create_primary(template, "TPM2_CreatePrimary(AK from NV template)")
    }

    /// The key at persistent handle `handle` (Azure's AK:
    /// [`AZURE_AK_HANDLE`]), or an error naming the handle when there is
    /// none.
    pub fn persistent_key(&mut self, handle: u32) -> Result<Key, Error> {
        let persistent = PersistentTpmHandle::new(handle).map_err(|e| Error::TpmDevice {
            op: "persistent handle",
            reason: format!("{handle:#010x}: {e}"),
        })?;
        if !self.handle_defined(handle)? {
            return Err(Error::TpmUnsupported(format!(
                "no key at persistent handle {handle:#010x}"
            )));
        }
        let object = self
            .context
            .execute_without_session(|ctx| {
                ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
            })
            .map_err(tss("ESYS_TR_FromTPMPublic(persistent key)"))?;
        let key = KeyHandle::from(object);
        let public = self.read_public(key)?;
        Ok(Key {
            handle: key,
            public,
        })
    }

    /// The whole contents of NV index `index`, or `None` when it is not
    /// defined. Read with the index's own (empty) authorization when it
    /// allows that (TPMA_NV_AUTHREAD), else with the owner's (empty)
    /// authorization (TPMA_NV_OWNERREAD), as clouds provision theirs.
    pub fn nv_read(&mut self, index: u32) -> Result<Option<Vec<u8>>, Error> {
        if !self.handle_defined(index)? {
            return Ok(None);
        }
        let nv = NvIndexTpmHandle::new(index).map_err(|e| Error::TpmDevice {
            op: "NV index",
            reason: format!("{index:#010x}: {e}"),
        })?;
        let object = self
            .context
            .execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(nv)))
            .map_err(tss("ESYS_TR_FromTPMPublic(NV)"))?;
        let (public, _) = self
            .context
            .execute_without_session(|ctx| ctx.nv_read_public(object.into()))
            .map_err(tss("TPM2_NV_ReadPublic"))?;
        let attributes = public.attributes();
        let auth = if attributes.auth_read() {
            NvAuth::NvIndex(object.into())
        } else if attributes.owner_read() {
            NvAuth::Owner
        } else {
            return Err(Error::TpmUnsupported(format!(
                "NV index {index:#010x} is readable neither with its own nor the owner's authorization"
            )));
        };
        let data = self
            .context
            .execute_with_nullauth_session(|ctx| abstraction::nv::read_full(ctx, auth, nv))
            .map_err(|e| Error::TpmDevice {
                op: "TPM2_NV_Read",
                reason: format!("index {index:#010x}: {e}"),
            })?;
        Ok(Some(data))
    }

    /// Quote `pcrs` of every bank [`Tpm::pcr_banks`] reports with `ak`, with
    /// `qualifying_data` (at most [`MAX_QUALIFYING_DATA`] bytes) as
    /// extraData. The PCRs are read first and the quote's pcrDigest is
    /// checked against them; when a PCR changed in between, both are done
    /// again, at most [`QUOTE_ATTEMPTS`] times.
    pub fn quote(&mut self, ak: &Key, qualifying_data: &[u8], pcrs: &[u8]) -> Result<Quote, Error> {
        self.quote_with_hook(ak, qualifying_data, pcrs, &mut |_, _| Ok(()))
    }

    /// [`Tpm::quote`], calling `between(tpm, attempt)` after each PCR read
    /// and before its quote. Tests use it to change a PCR at exactly that
    /// point; with swtpm, which serves one connection at a time, it must go
    /// through this same connection.
    pub fn quote_with_hook(
        &mut self,
        ak: &Key,
        qualifying_data: &[u8],
        pcrs: &[u8],
        between: &mut dyn FnMut(&mut Tpm, u32) -> Result<(), Error>,
    ) -> Result<Quote, Error> {
        if qualifying_data.len() > MAX_QUALIFYING_DATA {
            return Err(Error::QualifyingDataSize {
                found: qualifying_data.len(),
                max: MAX_QUALIFYING_DATA,
            });
        }
        let slots = pcrs
            .iter()
            .map(|&i| pcr_slot(i))
            .collect::<Result<Vec<_>, _>>()?;
        let selection = pcr_selection(&self.pcr_banks()?, &slots)?;
        let data = Data::try_from(qualifying_data.to_vec()).map_err(tss("qualifying data"))?;
        for attempt in 1..=QUOTE_ATTEMPTS {
            let values = self.read_pcrs(&selection)?;
            between(self, attempt)?;
            let (attest, signature) = self
                .context
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.quote(
                        ak.handle,
                        data.clone(),
                        SignatureScheme::Null,
                        selection.clone(),
                    )
                })
                .map_err(|e| quote_error(e, qualifying_data.len()))?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(Error::TpmDevice {
                    op: "TPM2_Quote",
                    reason: "the TPM returned an attestation that is not a quote".into(),
                });
            };
            // The quote's pcrDigest is hashed with the AK's scheme hash,
            // SHA-256 for both kinds here (Part 3, 18.4.1).
            let ordered = order_like(&values, info.pcr_selection())?;
            let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
            for pcr in &ordered {
                hash.update(&pcr.value);
            }
            if hash.finish().as_ref() == info.pcr_digest().value() {
                return Ok(Quote {
                    attest: marshall(&attest, "TPMS_ATTEST")?,
                    signature: marshall(&signature, "TPMT_SIGNATURE")?,
                    pcrs: ordered,
                    attempts: attempt,
                });
            }
        }
        Err(Error::PcrsUnstable {
            attempts: QUOTE_ATTEMPTS,
        })
    }

    /// Extend PCR `index` of `bank` with `digest` (TPM2_PCR_Extend).
    pub fn pcr_extend(&mut self, index: u8, bank: HashAlg, digest: &[u8]) -> Result<(), Error> {
        let pcr = PcrHandle::try_from(u32::from(index)).map_err(|e| Error::TpmDevice {
            op: "PCR handle",
            reason: format!("PCR {index}: {e}"),
        })?;
        let mut values = DigestValues::new();
        values.set(
            hashing(bank),
            Digest::try_from(digest.to_vec()).map_err(tss("PCR digest"))?,
        );
        self.context
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.pcr_extend(pcr, values)
            })
            .map_err(tss("TPM2_PCR_Extend"))
    }

    /// TPM2_ActivateCredential: recover the secret a verifier wrapped for
    /// `ak` under `ek` with MakeCredential. `credential_blob` and `secret`
    /// are the contents (without size) of the TPM2B_ID_OBJECT and
    /// TPM2B_ENCRYPTED_SECRET. The EK is authorised by its policy,
    /// PolicySecret(TPM_RH_ENDORSEMENT), and the AK by its empty password.
    pub fn activate_credential(
        &mut self,
        ak: &Key,
        ek: &Key,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let blob = IdObject::try_from(credential_blob.to_vec()).map_err(tss("credential blob"))?;
        let secret = EncryptedSecret::try_from(secret.to_vec()).map_err(tss("encrypted secret"))?;
        let session = self
            .context
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tss("TPM2_StartAuthSession(policy)"))?
            .ok_or_else(|| Error::TpmDevice {
                op: "TPM2_StartAuthSession(policy)",
                reason: "no session handle returned".into(),
            })?;
        let result = self.activate_in(session, ak, ek, blob, secret);
        // A policy session that failed is still loaded; flush it either way.
        let _ = self
            .context
            .flush_context(SessionHandle::from(session).into());
        result
    }

    fn activate_in(
        &mut self,
        session: AuthSession,
        ak: &Key,
        ek: &Key,
        blob: IdObject,
        secret: EncryptedSecret,
    ) -> Result<Vec<u8>, Error> {
        let (attributes, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .build();
        self.context
            .tr_sess_set_attributes(session, attributes, mask)
            .map_err(tss("session attributes"))?;
        let policy = PolicySession::try_from(session).map_err(tss("policy session"))?;
        self.context
            .execute_with_nullauth_session(|ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(tss("TPM2_PolicySecret(TPM_RH_ENDORSEMENT)"))?;
        let digest = self
            .context
            .execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
                ctx.activate_credential(ak.handle, ek.handle, blob, secret)
            })
            .map_err(tss("TPM2_ActivateCredential"))?;
        Ok(digest.value().to_vec())
    }

    /// Create a primary key in the endorsement hierarchy from `template`,
    /// to be flushed when this [`Tpm`] is dropped.
    fn create_primary(&mut self, template: Public, op: &'static str) -> Result<Key, Error> {
        let created = self
            .context
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map_err(tss(op))?;
        self.transient.push(created.key_handle.into());
        let public = marshall(&created.out_public, "TPMT_PUBLIC")?;
        Ok(Key {
            handle: created.key_handle,
            public,
        })
    }

    fn read_public(&mut self, key: KeyHandle) -> Result<Vec<u8>, Error> {
        let (public, _, _) = self
            .context
            .execute_without_session(|ctx| ctx.read_public(key))
            .map_err(tss("TPM2_ReadPublic"))?;
        marshall(&public, "TPMT_PUBLIC")
    }

    /// Whether the TPM has a persistent object or NV index at `handle`
    /// (TPM2_GetCapability, TPM_CAP_HANDLES from `handle`).
    fn handle_defined(&mut self, handle: u32) -> Result<bool, Error> {
        let (data, _) = self
            .context
            .execute_without_session(|ctx| ctx.get_capability(CapabilityType::Handles, handle, 1))
            .map_err(tss("TPM2_GetCapability(TPM_CAP_HANDLES)"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list.first().is_some_and(|&h| u32::from(h) == handle),
            _ => false,
        })
    }

    /// Every PCR in `selection`, one TPM2_PCR_Read per at most 8 values.
    fn read_pcrs(&mut self, selection: &PcrSelectionList) -> Result<Vec<PcrValue>, Error> {
        let data = self
            .context
            .execute_without_session(|ctx| abstraction::pcr::read_all(ctx, selection.clone()))
            .map_err(tss("TPM2_PCR_Read"))?;
        let mut out = Vec::new();
        for sel in selection.get_selections() {
            let bank = hash_alg(sel.hashing_algorithm())?;
            let values =
                data.pcr_bank(sel.hashing_algorithm())
                    .ok_or_else(|| Error::TpmDevice {
                        op: "TPM2_PCR_Read",
                        reason: format!("no values for the {bank} bank"),
                    })?;
            for slot in sel.selected() {
                let index = slot_index(slot)?;
                let value = values.get_digest(slot).ok_or_else(|| Error::TpmDevice {
                    op: "TPM2_PCR_Read",
                    reason: format!("no value for {bank} PCR {index}"),
                })?;
                out.push(PcrValue {
                    bank,
                    index,
                    value: value.value().to_vec(),
                });
            }
        }
        Ok(out)
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        for handle in self.transient.drain(..) {
            let _ = self.context.flush_context(handle);
        }
    }
}

/// Read the firmware's TCG event log, from [`EVENT_LOG_PATH`] unless `path`
/// says otherwise.
pub fn read_event_log(path: Option<&Path>) -> Result<Vec<u8>, Error> {
    let path = path.unwrap_or(Path::new(EVENT_LOG_PATH));
    std::fs::read(path).map_err(|source| Error::Io {
        op: "read the TPM event log",
        path: path.display().to_string(),
        source,
    })
}

/// The AK template: fixedTPM, fixedParent, sensitiveDataOrigin,
/// userWithAuth, restricted, sign (Part 2, 8.3.3.1), the scheme fixed to
/// SHA-256 so quotes need no scheme argument, nameAlg SHA-256.
fn ak_template(kind: AkKind) -> Result<Public, Error> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .with_decrypt(false)
        .build()
        .map_err(tss("AK attributes"))?;
    let builder = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes);
    let builder = match kind {
        AkKind::EccP256 => builder
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new()
                    .with_symmetric(SymmetricDefinitionObject::Null)
                    .with_ecc_scheme(EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)))
                    .with_curve(EccCurve::NistP256)
                    .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                    .with_is_signing_key(true)
                    .with_is_decryption_key(false)
                    .with_restricted(true)
                    .build()
                    .map_err(tss("AK ECC parameters"))?,
            )
            .with_ecc_unique_identifier(EccPoint::default()),
        AkKind::Rsa2048 => builder
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_rsa_parameters(
                PublicRsaParametersBuilder::new()
                    .with_symmetric(SymmetricDefinitionObject::Null)
                    .with_scheme(RsaScheme::RsaSsa(HashScheme::new(HashingAlgorithm::Sha256)))
                    .with_key_bits(RsaKeyBits::Rsa2048)
                    .with_exponent(RsaExponent::default())
                    .with_is_signing_key(true)
                    .with_is_decryption_key(false)
                    .with_restricted(true)
                    .build()
                    .map_err(tss("AK RSA parameters"))?,
            )
            .with_rsa_unique_identifier(PublicKeyRsa::default()),
    };
    builder.build().map_err(tss("AK template"))
}

/// Whether a persisted key's TPMT_PUBLIC agrees with the AK template in
/// everything but the key itself: type, nameAlg, attributes, authPolicy
/// and parameters all come before `unique`, the last field, which the
/// template leaves empty (a zero u16 size; two of them for an ECC point).
fn same_key_shape(kind: AkKind, public: &[u8], template: &[u8]) -> bool {
    let unique_len = match kind {
        AkKind::EccP256 => 4,
        AkKind::Rsa2048 => 2,
    };
    let head = template.len().saturating_sub(unique_len);
    public.get(..head).is_some() && public.get(..head) == template.get(..head)
}

/// A template's TPMT_PUBLIC: without the size of a TPM2B_PUBLIC when the
/// first two bytes are exactly the rest's length (a TPMT_PUBLIC starts
/// with its type, TPM_ALG_RSA 0x0001 or TPM_ALG_ECC 0x0023, which no
/// template's length equals).
fn template_body(bytes: &[u8]) -> &[u8] {
    match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => rest,
        _ => bytes,
    }
}

/// The marshalled bytes of a tss-esapi structure.
fn marshall<T: Marshall>(value: &T, what: &'static str) -> Result<Vec<u8>, Error> {
    value.marshall().map_err(tss(what))
}

/// A DER certificate without the padding some TPMs leave after it in NV:
/// the outer SEQUENCE's length says where it ends. Anything that does not
/// look like a SEQUENCE with a long-form length is returned as it is.
fn trim_der(mut bytes: Vec<u8>) -> Vec<u8> {
    let len = match bytes.get(..4) {
        Some(&[0x30, 0x82, hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])).checked_add(4),
        Some(&[0x30, 0x81, n, _]) => usize::from(n).checked_add(3),
        _ => None,
    };
    if let Some(len) = len.filter(|&l| l <= bytes.len()) {
        bytes.truncate(len);
    }
    bytes
}

/// `slots` of each of `banks`, in that bank order. (tss-esapi's builder
/// orders banks through a HashMap, so differently in every process.)
fn pcr_selection(banks: &[HashAlg], slots: &[PcrSlot]) -> Result<PcrSelectionList, Error> {
    let mut list = TPML_PCR_SELECTION::default();
    let mut count = 0u32;
    for (entry, &bank) in list.pcrSelections.iter_mut().zip(banks) {
        *entry = PcrSelection::create(hashing(bank), PcrSelectSize::ThreeOctets, slots)
            .map_err(tss("PCR selection"))?
            .into();
        count = count.saturating_add(1);
    }
    list.count = count;
    PcrSelectionList::try_from(list).map_err(tss("PCR selection"))
}

/// `values` in the order of the quote's PCR selection.
fn order_like(values: &[PcrValue], selection: &PcrSelectionList) -> Result<Vec<PcrValue>, Error> {
    let mut out = Vec::with_capacity(values.len());
    for sel in selection.get_selections() {
        let bank = hash_alg(sel.hashing_algorithm())?;
        for slot in sel.selected() {
            let index = slot_index(slot)?;
            let value = values
                .iter()
                .find(|v| v.bank == bank && v.index == index)
                .ok_or_else(|| Error::TpmDevice {
                    op: "TPM2_Quote",
                    reason: format!("the quote selects {bank} PCR {index}, which was not read"),
                })?;
            out.push(value.clone());
        }
    }
    Ok(out)
}

fn pcr_slot(index: u8) -> Result<PcrSlot, Error> {
    1u32.checked_shl(u32::from(index))
        .filter(|_| index < 24)
        .and_then(|bit| PcrSlot::try_from(bit).ok())
        .ok_or_else(|| Error::TpmUnsupported(format!("PCR {index} (a PC Client TPM has 0 to 23)")))
}

fn slot_index(slot: PcrSlot) -> Result<u8, Error> {
    let bit = u32::from(slot);
    u8::try_from(bit.trailing_zeros())
        .ok()
        .filter(|_| bit.is_power_of_two())
        .ok_or_else(|| Error::TpmDevice {
            op: "PCR selection",
            reason: format!("slot mask {bit:#x} is not one PCR"),
        })
}

fn hashing(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn hash_alg(alg: HashingAlgorithm) -> Result<HashAlg, Error> {
    match alg {
        HashingAlgorithm::Sha1 => Ok(HashAlg::Sha1),
        HashingAlgorithm::Sha256 => Ok(HashAlg::Sha256),
        HashingAlgorithm::Sha384 => Ok(HashAlg::Sha384),
        HashingAlgorithm::Sha512 => Ok(HashAlg::Sha512),
        other => Err(Error::TpmUnsupported(format!("hash algorithm {other:?}"))),
    }
}

/// Map a TSS error of `op` into this crate's error.
fn tss(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> Error {
    move |e| Error::TpmDevice {
        op,
        reason: e.to_string(),
    }
}

/// A quote's error, saying when the TPM refused the qualifying data's size.
fn quote_error(e: tss_esapi::Error, qualifying_data: usize) -> Error {
    let size = matches!(&e, tss_esapi::Error::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::Size));
    Error::TpmDevice {
        op: "TPM2_Quote",
        reason: if size {
            format!(
                "{e}: the TPM refused {qualifying_data} bytes of qualifying data (a TPM without SHA-512 takes at most 48)"
            )
        } else {
            e.to_string()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_padding_after_der_only() {
        let mut cert = vec![0x30, 0x82, 0x00, 0x02, 0xAA, 0xBB];
        cert.extend_from_slice(&[0xFF; 10]);
        assert_eq!(trim_der(cert), vec![0x30, 0x82, 0x00, 0x02, 0xAA, 0xBB]);
        // Claims more than there is: left alone, for the parser to refuse.
        let short = vec![0x30, 0x82, 0x01, 0x00, 0xAA];
        assert_eq!(trim_der(short.clone()), short);
    }

    #[test]
    fn template_body_strips_only_an_exact_tpm2b_size() {
        let tpmt = [0x00, 0x23, 0x00, 0x0b, 0xAA];
        assert_eq!(template_body(&tpmt), &tpmt);
        let tpm2b = [0x00, 0x03, 0x00, 0x01, 0xBB];
        assert_eq!(template_body(&tpm2b), &tpm2b[2..]);
        assert_eq!(template_body(&[0x00]), &[0x00]);
    }

    #[test]
    fn pcr_slots_round_trip_and_refuse_24() {
        for i in 0..24u8 {
            assert_eq!(slot_index(pcr_slot(i).unwrap()).unwrap(), i);
        }
        assert!(matches!(pcr_slot(24), Err(Error::TpmUnsupported(_))));
    }
}
