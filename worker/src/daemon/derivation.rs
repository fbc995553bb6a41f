//! What a store derivation names, read from its ATerm text (Nix 2.8
//! `src/libstore/derivations.cc`, `parseDerivation`): the file starts
//! `Derive([outputs],[input derivations],[input sources],` and only those
//! three lists are read. Each output is `(name, path, hash algorithm,
//! hash)`; a fixed-output derivation's output has a hash algorithm, a
//! floating content-addressed one an empty path. Each input derivation is
//! `(path, [output names])`, each input source a path.

// Parses files from the store: no panics from input.
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

/// One output of a derivation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DrvOutput {
    /// Its name (`out`, `dev`, ...).
    pub(crate) name: String,
    /// Its store path; empty for a floating content-addressed output.
    pub(crate) path: String,
    /// Whether the derivation fixes its hash (a fixed-output derivation:
    /// a fetcher, whose output is content-addressed).
    pub(crate) fixed: bool,
}

/// The lists of a derivation the worker reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Derivation {
    /// Its outputs.
    pub(crate) outputs: Vec<DrvOutput>,
    /// The derivations whose outputs it uses, each with the outputs' names.
    pub(crate) input_drvs: Vec<(String, Vec<String>)>,
    /// The store paths it uses directly.
    pub(crate) input_srcs: Vec<String>,
    /// SHA-256 of the text: its store path is made from it.
    pub(crate) sha256: [u8; 32],
}

/// Most outputs read: nixpkgs' derivations with the most outputs have a
/// few dozen.
const MAX_OUTPUTS: usize = 1024;
/// Most input derivations and sources read (each): nixpkgs' derivations
/// have tens, a few hundreds.
const MAX_INPUTS: usize = 65_536;

/// The outputs, input derivations and input sources `text`, a store
/// derivation's contents, names.
pub(crate) fn parse(text: &[u8]) -> Result<Derivation, String> {
    let mut p = Parser { rest: text };
    p.expect(b"Derive(")?;
    let outputs = outputs(&mut p)?;
    p.expect(b",")?;
    let input_drvs = p.list(MAX_INPUTS, |p| {
        p.expect(b"(")?;
        let path = p.string()?;
        p.expect(b",")?;
        let names = p.list(MAX_OUTPUTS, Parser::string)?;
        p.expect(b")")?;
        Ok((path, names))
    })?;
    p.expect(b",")?;
    let input_srcs = p.list(MAX_INPUTS, Parser::string)?;
    p.expect(b",")?;
    let mut sha256 = [0; 32];
    sha256.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, text).as_ref());
    Ok(Derivation {
        outputs,
        input_drvs,
        input_srcs,
        sha256,
    })
}

fn outputs(p: &mut Parser<'_>) -> Result<Vec<DrvOutput>, String> {
    p.expect(b"[")?;
    let mut outputs = Vec::new();
    if p.eat(b"]") {
        return Ok(outputs);
    }
    loop {
        p.expect(b"(")?;
        let name = p.string()?;
        p.expect(b",")?;
        let path = p.string()?;
        p.expect(b",")?;
        let algo = p.string()?;
        p.expect(b",")?;
        let _hash = p.string()?;
        p.expect(b")")?;
        outputs.push(DrvOutput {
            name,
            path,
            fixed: !algo.is_empty(),
        });
        if outputs.len() > MAX_OUTPUTS {
            return Err(format!("more than {MAX_OUTPUTS} outputs"));
        }
        if p.eat(b"]") {
            return Ok(outputs);
        }
        p.expect(b",")?;
    }
}

struct Parser<'a> {
    rest: &'a [u8],
}

impl Parser<'_> {
    /// `[item,item,...]`, at most `max` items.
    fn list<T>(
        &mut self,
        max: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.expect(b"[")?;
        let mut items = Vec::new();
        if self.eat(b"]") {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if items.len() > max {
                return Err(format!("not a derivation: a list of more than {max} items"));
            }
            if self.eat(b"]") {
                return Ok(items);
            }
            self.expect(b",")?;
        }
    }

    fn eat(&mut self, token: &[u8]) -> bool {
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &[u8]) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!(
                "not a derivation: expected {:?}",
                String::from_utf8_lossy(token)
            ))
        }
    }

    /// A quoted string with ATerm's escapes (`\"`, `\\`, `\n`, `\r`,
    /// `\t`; any other escaped byte stands for itself, as in Nix).
    fn string(&mut self) -> Result<String, String> {
        self.expect(b"\"")?;
        let mut out = Vec::new();
        let mut bytes = self.rest.iter();
        loop {
            match bytes.next() {
                None => return Err("not a derivation: an unterminated string".into()),
                Some(b'"') => break,
                Some(b'\\') => match bytes.next() {
                    None => return Err("not a derivation: an unterminated string".into()),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(&c) => out.push(c),
                },
                Some(&c) => out.push(c),
            }
        }
        self.rest = bytes.as_slice();
        String::from_utf8(out).map_err(|_| "not a derivation: a string is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(text: &[u8]) -> Result<Vec<DrvOutput>, String> {
        parse(text).map(|d| d.outputs)
    }

    #[test]
    fn outputs_are_read_as_nix_writes_them() {
        let drv = br#"Derive([("dev","/nix/store/aaaa-x-dev","",""),("out","/nix/store/bbbb-x","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo \"hi\" > $out"],[])"#;
        assert_eq!(
            outputs(drv).unwrap(),
            vec![
                DrvOutput {
                    name: "dev".into(),
                    path: "/nix/store/aaaa-x-dev".into(),
                    fixed: false
                },
                DrvOutput {
                    name: "out".into(),
                    path: "/nix/store/bbbb-x".into(),
                    fixed: false
                },
            ]
        );
        let fixed = br#"Derive([("out","/nix/store/cccc-src","r:sha256","0123")],[],[],"x")"#;
        assert!(outputs(fixed).unwrap()[0].fixed);
        assert_eq!(outputs(b"Derive([],[],[],").unwrap(), vec![]);
        let escaped = br#"Derive([("o\"ut","/nix/store/d\\d","","")],[],[],"#;
        assert_eq!(outputs(escaped).unwrap()[0].name, "o\"ut");
        for bad in [
            &b""[..],
            b"Derive(",
            b"Derive([(\"out\",\"/nix/store/x\",\"\")]",
            b"Derive([(\"out",
            b"derive([])",
            b"Derive([(\"out\",\"/nix/store/x\",\"\",\"\")",
            b"Derive([(\"\xff\",\"/nix/store/x\",\"\",\"\")]",
        ] {
            assert!(outputs(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inputs_are_read_as_nix_writes_them() {
        let drv = br#"Derive([("out","/nix/store/bbbb-x","","")],[("/nix/store/aaaa-a.drv",["dev","out"]),("/nix/store/cccc-c.drv",["out"])],["/nix/store/dddd-src"],"x86_64-linux","/bin/sh",[],[])"#;
        let d = parse(drv).unwrap();
        assert_eq!(
            d.input_drvs,
            vec![
                (
                    "/nix/store/aaaa-a.drv".into(),
                    vec!["dev".into(), "out".into()]
                ),
                ("/nix/store/cccc-c.drv".into(), vec!["out".into()]),
            ]
        );
        assert_eq!(d.input_srcs, vec!["/nix/store/dddd-src".to_owned()]);
        for bad in [
            &br#"Derive([],[("/nix/store/a.drv")],[],"#[..],
            br#"Derive([],[("/nix/store/a.drv",[out])],[],"#,
            br#"Derive([],[],["/nix/store/a"]"#,
            br#"Derive([],[],[/nix/store/a],"#,
            br#"Derive([],[]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
