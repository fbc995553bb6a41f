//! Recursive verification through the library (`decide_graph`): simulated
//! workers' direct-mode bundles whose statements carry build traces, and
//! one mutation per way an input can fail to be trusted.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/logged.rs"]
mod logged;

use std::collections::HashMap;

use logged::{TempDir, Worker, now, policy_file, sha256};
use provenix_verifier::storepath::{ContentAddress, HashAlgo, Method};
use provenix_verifier::{
    BundleLookup, Content, Found, GraphRoot, Policy, Problem, Trace, TraceInput, Verifier, Why,
    decide_graph, verify_bundle,
};

fn path(name: &str) -> String {
    let hash = provenix_verifier::nixsig::nix32(&sha256(name.as_bytes())[..20]);
    format!("/nix/store/{hash}-{name}")
}

fn input(name: &str, content: &[u8]) -> TraceInput {
    TraceInput {
        path: path(name),
        nar_sha256: sha256(content),
        content: None,
    }
}

/// A text source, as `builtins.toFile` makes it, holding `text`.
fn source(name: &str, text: &[u8]) -> TraceInput {
    let address = ContentAddress {
        method: Method::Text,
        algo: HashAlgo::Sha256,
        digest: sha256(text).to_vec(),
    };
    TraceInput {
        path: address.store_path(name, &[], false).unwrap(),
        nar_sha256: [1; 32],
        content: Some(Content {
            address,
            references: Vec::new(),
        }),
    }
}

fn trace(mut inputs: Vec<TraceInput>) -> Option<Trace> {
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    Some(Trace {
        derivation_sha256: [2; 32],
        inputs,
    })
}

/// Bundles by path, verified when asked for; counts the lookups.
struct Lookup {
    policy: Policy,
    bundles: HashMap<String, Vec<Vec<u8>>>,
    asked: Vec<String>,
}

impl Lookup {
    fn new(extra: &str) -> Lookup {
        let dir = TempDir::new("graph");
        Lookup {
            policy: Policy::load(&policy_file(dir.path(), extra)).unwrap(),
            bundles: HashMap::new(),
            asked: Vec::new(),
        }
    }

    /// `w` attests `name` with NAR `content`, built from `inputs`.
    fn attest(&mut self, w: &Worker, name: &str, content: &[u8], t: Option<Trace>) {
        let signed = w.traced(&path(name), None, content, None, t);
        self.bundles
            .entry(path(name))
            .or_default()
            .push(w.direct(&signed));
    }
}

impl BundleLookup for Lookup {
    fn bundles(&mut self, p: &str) -> Found {
        self.asked.push(p.to_owned());
        let verifier = Verifier::new(self.policy.anchors().unwrap());
        self.bundles
            .get(p)
            .into_iter()
            .flatten()
            .map(|b| {
                (
                    "test".to_owned(),
                    verify_bundle(b, &verifier, &self.policy, now()),
                )
            })
            .collect()
    }
}

fn decide(lookup: &mut Lookup, name: &str) -> provenix_verifier::GraphDecision {
    let policy = lookup.policy.clone();
    decide_graph(&policy, &path(name), None, lookup)
}

/// The untrusted inputs every excluded builder of the target was refused
/// for.
fn untrusted(g: &provenix_verifier::GraphDecision) -> Vec<provenix_verifier::UntrustedInput> {
    g.decision()
        .excluded()
        .iter()
        .flat_map(|e| &e.reasons)
        .filter_map(|w| match w {
            Why::UntrustedInputs(u) => Some(u.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn an_honest_graph_is_accepted_and_each_path_looked_up_once() {
    let w = Worker::new(1);
    let mut l = Lookup::new("");
    let src = source("src", b"hello\n");
    l.attest(&w, "a", b"a", trace(vec![src.clone()]));
    l.attest(&w, "b", b"b", trace(vec![src.clone(), input("a", b"a")]));
    l.attest(
        &w,
        "c",
        b"c",
        trace(vec![src, input("a", b"a"), input("b", b"b")]),
    );
    let g = decide(&mut l, "c");
    assert!(g.accepted(), "{:?}", g.decision());
    assert_eq!(g.decisions().len(), 3);
    assert_eq!(g.content_addressed(), 1);
    // a is named by b's and c's traces, and looked up once.
    let mut asked = l.asked.clone();
    asked.sort();
    asked.dedup();
    assert_eq!(asked.len(), l.asked.len(), "{:?}", l.asked);
}

#[test]
fn an_input_accepted_with_another_hash_is_named_with_both() {
    let (w1, w2) = (Worker::new(1), Worker::new(2));
    let mut l = Lookup::new("");
    l.attest(&w1, "b", b"b", trace(vec![]));
    // w2's store held other bytes under b's path.
    l.attest(&w2, "c", b"c", trace(vec![input("b", b"doctored b")]));
    let g = decide(&mut l, "c");
    assert!(!g.accepted());
    let u = untrusted(&g);
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0].path, path("b"));
    assert_eq!(u[0].recorded, sha256(b"doctored b"));
    match &u[0].problem {
        Problem::OtherHash { accepted, builders } => {
            assert_eq!(accepted.sha256, sha256(b"b"));
            assert_eq!(builders.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_input_no_one_attests_is_not_trusted_unless_the_policy_names_it() {
    let w = Worker::new(1);
    let mut l = Lookup::new("");
    l.attest(&w, "c", b"c", trace(vec![input("bootstrap", b"tools")]));
    let g = decide(&mut l, "c");
    assert!(
        matches!(&untrusted(&g)[..], [u] if matches!(&u.problem, Problem::NotAccepted { claims, .. } if claims.is_empty()))
    );
    // The same input as a named root of the graph.
    let mut l = Lookup::new(&format!(
        "[graph]\ntrusted_paths = [\"{}\"]\n",
        path("bootstrap")
    ));
    l.attest(&w, "c", b"c", trace(vec![input("bootstrap", b"tools")]));
    let g = decide(&mut l, "c");
    assert!(g.accepted(), "{:?}", g.decision());
    assert_eq!(g.roots(), &[(path("bootstrap"), GraphRoot::Named)]);
    assert!(!l.asked.contains(&path("bootstrap")));
}

#[test]
fn a_content_addressed_input_whose_hash_does_not_make_its_path_is_refused() {
    let w = Worker::new(1);
    let mut l = Lookup::new("");
    let mut doctored = source("src", b"hello\n");
    if let Some(c) = &mut doctored.content {
        c.address.digest = sha256(b"other\n").to_vec();
    }
    l.attest(&w, "c", b"c", trace(vec![doctored]));
    let g = decide(&mut l, "c");
    assert!(
        matches!(&untrusted(&g)[..], [u] if matches!(&u.problem, Problem::Content(m) if m.contains("not this path")))
    );
    // Nothing was looked up for it: content-addressed inputs check
    // themselves or fail.
    assert_eq!(l.asked, [path("c")]);
}

#[test]
fn a_statement_without_a_trace_does_not_count() {
    let w = Worker::new(1);
    let mut l = Lookup::new("");
    l.attest(&w, "c", b"c", None);
    let g = decide(&mut l, "c");
    assert!(!g.accepted());
    assert!(
        g.decision()
            .excluded()
            .iter()
            .any(|e| e.reasons.contains(&Why::NoTrace))
    );
}

#[test]
fn a_cycle_is_refused_not_followed() {
    let w = Worker::new(1);
    let mut l = Lookup::new("");
    l.attest(&w, "a", b"a", trace(vec![input("b", b"b")]));
    l.attest(&w, "b", b"b", trace(vec![input("a", b"a")]));
    let g = decide(&mut l, "a");
    assert!(!g.accepted());
    let b = g
        .decisions()
        .into_iter()
        .find(|d| d.subject().name() == path("b"))
        .unwrap();
    assert!(!b.accepted());
    let cycle = b.excluded().iter().flat_map(|e| &e.reasons).any(
        |w| matches!(w, Why::UntrustedInputs(u) if u.iter().any(|u| u.problem == Problem::Cycle)),
    );
    assert!(cycle, "{b:?}");
}
