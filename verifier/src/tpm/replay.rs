//! Replaying a TCG event log into the PCR values it implies.
//!
//! Every extended event folds its digest into its PCR, bank by bank:
//! `PCR = H(PCR || digest)` (TPM 2.0 Part 1, 17.4 "PCR Extend"). The
//! initial values follow the TCG PC Client Platform TPM Profile (PTP)
//! section 4.6.1 and the PC Client Platform Firmware Profile (PFP):
//!
//! - PCRs 0-16 and 23 reset to zero at TPM2_Startup;
//! - PCR 0 is instead `00..00 03` or `00..00 04` when the log's
//!   StartupLocality event says TPM2_Startup ran at locality 3, or that an
//!   H-CRTM sequence ran at locality 4 (PFP 10.4.5.3);
//! - PCRs 17-22, the DRTM PCRs, reset to all ones and become zero only on a
//!   dynamic launch, whose events are in a separate log. A firmware log
//!   replays them from all ones.
//!
//! EV_NO_ACTION events are logged but never extended.

use std::collections::{BTreeMap, BTreeSet};

use provenix_firmware::tpm::eventlog::PCR_COUNT;
use provenix_firmware::tpm::{EventLog, HashAlg};
use ring::digest;

/// Number of PCRs replayed per bank (0 to 23).
const PCRS: usize = 24;
const _: () = assert!(PCRS as u64 == PCR_COUNT as u64);

/// The PCRs a log replays to: for every bank the log has, PCRs 0 to 23.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcrs {
    banks: BTreeMap<HashAlg, Vec<Vec<u8>>>,
    extended: BTreeSet<u32>,
}

/// One PCR on which two sets of values disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrMismatch {
    /// The bank.
    pub alg: HashAlg,
    /// The PCR index.
    pub pcr: u32,
    /// This set's value.
    pub found: Vec<u8>,
    /// The value it was compared with.
    pub expected: Vec<u8>,
}

impl std::fmt::Display for PcrMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} is {}, expected {}",
            self.alg,
            self.pcr,
            hex::encode(&self.found),
            hex::encode(&self.expected)
        )
    }
}

/// A PCR's value after TPM2_Startup (see the module documentation).
fn initial(alg: HashAlg, pcr: usize, locality: Option<u8>) -> Vec<u8> {
    let mut value = vec![0; alg.size()];
    match (pcr, locality) {
        (0, Some(l @ (3 | 4))) => {
            if let Some(last) = value.last_mut() {
                *last = l;
            }
        }
        (17..=22, _) => value.fill(0xFF),
        _ => {}
    }
    value
}

/// Replay `log` into the PCRs of each of its banks.
///
/// The parser guarantees what this relies on: every event's PCR is below
/// 24 and, in a crypto-agile log, every event has a digest for every bank
/// of the Spec ID event. An event that lacks a bank's digest anyway leaves
/// that bank's PCR as it is, which then fails any comparison.
pub fn replay(log: &EventLog) -> Pcrs {
    let locality = log.startup_locality();
    let mut banks = BTreeMap::new();
    let mut extended = BTreeSet::new();
    for &alg in log.banks() {
        let mut pcrs: Vec<Vec<u8>> = (0..PCRS).map(|i| initial(alg, i, locality)).collect();
        for event in log.events().iter().filter(|e| e.is_extended()) {
            let (Some(digest), Some(pcr)) = (
                event.digest(alg),
                usize::try_from(event.pcr)
                    .ok()
                    .and_then(|i| pcrs.get_mut(i)),
            ) else {
                continue;
            };
            let mut ctx = digest::Context::new(crate::hash::tpm_algorithm(alg));
            ctx.update(pcr);
            ctx.update(digest);
            *pcr = ctx.finish().as_ref().to_vec();
            extended.insert(event.pcr);
        }
        banks.insert(alg, pcrs);
    }
    Pcrs { banks, extended }
}

impl Pcrs {
    /// The value of `pcr` in bank `alg`.
    pub fn get(&self, alg: HashAlg, pcr: u32) -> Option<&[u8]> {
        let pcr = usize::try_from(pcr).ok()?;
        self.banks.get(&alg)?.get(pcr).map(Vec::as_slice)
    }

    /// The banks replayed, in registry order.
    pub fn banks(&self) -> impl Iterator<Item = HashAlg> + '_ {
        self.banks.keys().copied()
    }

    /// The PCRs at least one event extended, in order. The others hold
    /// their initial values.
    pub fn extended(&self) -> impl Iterator<Item = u32> + '_ {
        self.extended.iter().copied()
    }

    /// Every PCR of `alg` whose value differs from `expected`'s, and every
    /// expected PCR this set does not have.
    pub fn compare<'a>(
        &self,
        alg: HashAlg,
        expected: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Vec<PcrMismatch> {
        expected
            .into_iter()
            .filter_map(|(pcr, want)| {
                let found = self.get(alg, pcr).unwrap_or_default();
                (found != want).then(|| PcrMismatch {
                    alg,
                    pcr,
                    found: found.to_vec(),
                    expected: want.to_vec(),
                })
            })
            .collect()
    }

    /// Every PCR where `other` disagrees with this set, over the banks both
    /// have ([`Pcrs::compare`] with `other` as the expected values).
    pub fn differences(&self, other: &Pcrs) -> Vec<PcrMismatch> {
        self.banks()
            .filter(|alg| other.banks.contains_key(alg))
            .flat_map(|alg| {
                let theirs = (0..PCR_COUNT).filter_map(move |i| Some((i, other.get(alg, i)?)));
                self.compare(alg, theirs)
            })
            .collect()
    }

    /// A stable, JSON-friendly view: bank name -> PCR index -> lower-case
    /// hex, with every PCR 0-23. Serialised, the indices are strings in
    /// numeric order, the shape of the vectors' `expected_pcrs.json`.
    pub fn view(&self) -> BTreeMap<&'static str, BTreeMap<u32, String>> {
        self.view_of(|_| true)
    }

    /// [`Pcrs::view`] restricted to the PCRs the log extended.
    pub fn extended_view(&self) -> BTreeMap<&'static str, BTreeMap<u32, String>> {
        self.view_of(|pcr| self.extended.contains(&pcr))
    }

    fn view_of(&self, keep: impl Fn(u32) -> bool) -> BTreeMap<&'static str, BTreeMap<u32, String>> {
        self.banks
            .iter()
            .map(|(alg, values)| {
                let values = (0..PCR_COUNT)
                    .zip(values)
                    .filter(|(i, _)| keep(*i))
                    .map(|(i, v)| (i, hex::encode(v)))
                    .collect();
                (alg.name(), values)
            })
            .collect()
    }
}

impl serde::Serialize for Pcrs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SHA-1 log: one event per (pcr, type, digest).
    fn sha1_log(events: &[(u32, u32, [u8; 20], &[u8])]) -> EventLog {
        let mut out = Vec::new();
        for (pcr, ty, digest, data) in events {
            out.extend_from_slice(&pcr.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(digest);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        EventLog::parse(&out).unwrap()
    }

    fn sha1(parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
        parts.iter().for_each(|p| ctx.update(p));
        ctx.finish().as_ref().to_vec()
    }

    #[test]
    fn extends_skips_no_action_and_sets_initial_values() {
        let locality = [b"StartupLocality\0".as_slice(), &[3]].concat();
        let log = sha1_log(&[
            (0, 8, [1; 20], b"v"),
            (0, 3, [9; 20], &locality),
            (7, 4, [2; 20], &[0; 4]),
            (7, 4, [3; 20], &[0; 4]),
        ]);
        let pcrs = replay(&log);
        let mut pcr0 = vec![0; 20];
        pcr0[19] = 3;
        assert_eq!(
            pcrs.get(HashAlg::Sha1, 0),
            Some(&sha1(&[&pcr0, &[1; 20]])[..])
        );
        let pcr7 = sha1(&[&sha1(&[&[0; 20], &[2; 20]]), &[3; 20]]);
        assert_eq!(pcrs.get(HashAlg::Sha1, 7), Some(&pcr7[..]));
        assert_eq!(pcrs.get(HashAlg::Sha1, 17), Some(&[0xFF; 20][..]));
        assert_eq!(pcrs.get(HashAlg::Sha1, 23), Some(&[0; 20][..]));
        assert_eq!(pcrs.get(HashAlg::Sha1, 24), None);
        assert_eq!(pcrs.get(HashAlg::Sha256, 0), None);
        assert_eq!(pcrs.extended().collect::<Vec<_>>(), [0, 7]);
        assert_eq!(pcrs.extended_view()["sha1"].len(), 2);
        assert_eq!(pcrs.view()["sha1"].len(), 24);

        // Without the locality event PCR 0 starts at zero.
        let plain = replay(&sha1_log(&[(0, 8, [1; 20], b"v")]));
        assert_eq!(
            plain.get(HashAlg::Sha1, 0),
            Some(&sha1(&[&[0; 20], &[1; 20]])[..])
        );
        let diff = plain.differences(&pcrs);
        assert_eq!(
            diff.iter().map(|d| d.pcr).collect::<Vec<_>>(),
            [0, 7],
            "{diff:?}"
        );
        assert!(diff[0].to_string().starts_with("sha1:0 is "));
        assert!(pcrs.differences(&pcrs).is_empty());
    }
}
