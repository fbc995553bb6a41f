//! `EventLog::parse` on arbitrary bytes (TCG PC Client PFP, section 10):
//! parsing never panics; a log that parses respects the parser's limits,
//! has a digest for every bank in every event, replays without panicking
//! to 24 PCRs of the bank's size per bank, and every event decodes or
//! fails, never panics. Cutting a parsed log before its last event gives
//! the log without it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_firmware::tpm::eventlog::{LogFormat, MAX_EVENT_DATA, MAX_EVENTS, PCR_COUNT};
use provenix_firmware::tpm::{Decoded, EventLog, HashAlg};
use provenix_verifier::tpm::replay;

fuzz_target!(|data: &[u8]| {
    let log = match EventLog::parse(data) {
        Ok(log) => log,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let events = log.events();
    assert!(!events.is_empty() && events.len() <= MAX_EVENTS);
    assert!(!log.banks().is_empty());
    match log.format() {
        LogFormat::Sha1 => assert_eq!(log.banks(), &[HashAlg::Sha1]),
        LogFormat::CryptoAgile => assert!(log.spec_id().is_some()),
    }
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.index, i);
        assert!(e.pcr < PCR_COUNT && e.data.len() <= MAX_EVENT_DATA);
        // The first event is in the SHA-1 format whatever the log's format.
        // Each bank once, in any order (the Azure log lists SHA-384 first).
        let mut banks: Vec<HashAlg> = e.digests.iter().map(|(a, _)| *a).collect();
        let mut expected = log.banks().to_vec();
        banks.sort();
        expected.sort();
        if i > 0 {
            assert_eq!(banks, expected, "event {i}");
        }
        for (alg, d) in &e.digests {
            assert_eq!(d.len(), alg.size());
        }
        let _ = e.event_type.to_string();
        match e.decode() {
            Ok(Decoded::Image(img)) => {
                let _ = img.device_path.to_string();
            }
            Ok(other) => {
                let _ = format!("{other:?}");
            }
            Err(err) => {
                let _ = err.to_string();
            }
        }
    }

    let pcrs = replay(&log);
    assert!(
        pcrs.banks().eq(log
            .banks()
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>())
    );
    for alg in log.banks() {
        for i in 0..PCR_COUNT {
            assert_eq!(pcrs.get(*alg, i).map(<[u8]>::len), Some(alg.size()));
        }
    }

    if let Some(last) = events.last().filter(|l| l.index > 0) {
        let shorter = match EventLog::parse(&data[..last.offset]) {
            Ok(shorter) => shorter,
            Err(e) => panic!("a parsed log cut before its last event: {e}"),
        };
        assert_eq!(shorter.events(), &events[..last.index]);
    }
});
