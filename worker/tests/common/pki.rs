//! A throwaway PKI for mTLS tests, made with the openssl CLI (Debian
//! package openssl): a CA and a rogue CA, a server certificate for
//! localhost and 127.0.0.1, a client certificate the CA signed and one the
//! rogue CA signed. ECDSA P-256, valid for two days.

#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The PKI's files in a directory: `NAME.pem` and `NAME.key` for `ca`,
/// `rogue-ca`, `server`, `client` and `rogue`.
pub struct Pki(PathBuf);

impl Pki {
    /// Make it in `dir`, which the caller removes.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki(dir.to_path_buf());
        pki.ca("ca");
        pki.ca("rogue-ca");
        pki.leaf(
            "server",
            "ca",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        );
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
        pki.leaf("rogue", "rogue-ca", "extendedKeyUsage=clientAuth");
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.0)
            .output()
            .expect("openssl (Debian package openssl) is needed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=provenix test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, extensions: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.0.join(&ext),
            format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}\n"),
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=provenix test {name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    /// A file of the PKI.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// A file's bytes.
    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }

    /// A client's TLS configuration: trusting the CA for `localhost`, with
    /// the certificate and key `identity` if any.
    pub fn client(&self, identity: Option<&str>) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.read("ca.pem")))
            .domain_name("localhost");
        if let Some(name) = identity {
            tls = tls.identity(Identity::from_pem(
                self.read(&format!("{name}.pem")),
                self.read(&format!("{name}.key")),
            ));
        }
        tls
    }
}
