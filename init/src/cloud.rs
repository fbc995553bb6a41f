//! Deployment settings from a cloud's metadata service, for VMs that have
//! no QEMU fw_cfg: the cloud is told by the VM's SMBIOS vendor, and the
//! settings are what the operator attached to the instance.
//!
//! - GCP: the instance attribute `provenix-settings`
//!   (`--metadata-from-file=provenix-settings=settings.toml`);
//! - AWS: the user data (`--user-data file://settings.toml`), through
//!   IMDSv2's session token;
//! - Azure: the user data (`--user-data settings.toml`), which the
//!   instance metadata service serves in base64.
//!
//! What the service returns is untrusted, like anything the host hands
//! over: the worker binds its hash into the evidence (docs/image.md).

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;

/// The link-local address every one of these clouds serves metadata on.
pub(crate) const METADATA: &str = "http://169.254.169.254";

/// The clouds whose metadata service the init reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cloud {
    Gcp,
    Aws,
    Azure,
}

impl Cloud {
    /// The cloud named by the SMBIOS system vendor
    /// (/sys/class/dmi/id/sys_vendor), if it is one of these.
    pub(crate) fn from_vendor(vendor: &str) -> Option<Cloud> {
        match vendor.trim() {
            "Google" => Some(Cloud::Gcp),
            "Amazon EC2" => Some(Cloud::Aws),
            "Microsoft Corporation" => Some(Cloud::Azure),
            _ => None,
        }
    }

    /// Where the operator puts the settings, for error messages.
    pub(crate) fn how(self) -> &'static str {
        match self {
            Cloud::Gcp => "the instance metadata attribute provenix-settings",
            Cloud::Aws => "the instance's user data",
            Cloud::Azure => "the VM's user data",
        }
    }
}

/// Fetch the settings from `cloud`'s metadata service at `base`
/// ([`METADATA`]), at most `max` bytes.
pub(crate) fn settings(cloud: Cloud, base: &str, max: u64) -> Result<Vec<u8>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let get = |path: &str, header: (&str, &str)| -> Result<Vec<u8>> {
        let url = format!("{base}{path}");
        let response = agent
            .get(&url)
            .header(header.0, header.1)
            .call()
            .with_context(|| format!("asking {url}"))?;
        let status = response.status().as_u16();
        if status == 404 {
            bail!("no deployment settings in {} ({url}: 404)", cloud.how());
        }
        if status != 200 {
            bail!("{url} answered {status}");
        }
        let mut body = Vec::new();
        response
            .into_body()
            .into_reader()
            .take(max + 1)
            .read_to_end(&mut body)
            .with_context(|| format!("reading {url}"))?;
        if body.len() as u64 > max {
            bail!(
                "the settings in {} are larger than {max} bytes",
                cloud.how()
            );
        }
        Ok(body)
    };
    match cloud {
        Cloud::Gcp => get(
            "/computeMetadata/v1/instance/attributes/provenix-settings",
            ("Metadata-Flavor", "Google"),
        ),
        Cloud::Aws => {
            let url = format!("{base}/latest/api/token");
            let mut response = agent
                .put(&url)
                .header("X-aws-ec2-metadata-token-ttl-seconds", "300")
                .send_empty()
                .with_context(|| format!("asking {url} for an IMDSv2 token"))?;
            if response.status() != 200 {
                bail!("{url} answered {}", response.status().as_u16());
            }
            let token = response
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .with_context(|| format!("reading {url}"))?;
            get(
                "/latest/user-data",
                ("X-aws-ec2-metadata-token", token.trim()),
            )
        }
        Cloud::Azure => {
            let text = get(
                "/metadata/instance/compute/userData?api-version=2021-01-01&format=text",
                ("Metadata", "true"),
            )?;
            let settings = base64::engine::general_purpose::STANDARD
                .decode(text.trim_ascii())
                .context("Azure's user data is not base64")?;
            if settings.is_empty() {
                bail!("no deployment settings in {}", cloud.how());
            }
            Ok(settings)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::{Cloud, settings};

    /// How the test service answers a request: (method, path, headers
    /// lower-cased) to (status, body).
    type Answer = fn(&str, &str, &[String]) -> (u16, Vec<u8>);

    /// A metadata service on the loopback that answers each request with
    /// `answer`; its base URL.
    fn service(answer: Answer) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap().to_owned(),
                    parts.next().unwrap().to_owned(),
                );
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    headers.push(h.trim().to_ascii_lowercase());
                }
                let (status, body) = answer(&method, &path, &headers);
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        base
    }

    #[test]
    fn gcp_attribute_with_its_header() {
        let base = service(|method, path, headers| {
            match (
                method,
                path,
                headers.iter().any(|h| h == "metadata-flavor: google"),
            ) {
                ("GET", "/computeMetadata/v1/instance/attributes/provenix-settings", true) => {
                    (200, b"grpc_port = 7443\n".to_vec())
                }
                _ => (403, vec![]),
            }
        });
        assert_eq!(
            settings(Cloud::Gcp, &base, 1024).unwrap(),
            b"grpc_port = 7443\n"
        );
        let e = format!("{:#}", settings(Cloud::Gcp, &base, 4).unwrap_err());
        assert!(e.contains("larger than 4 bytes"), "{e}");
    }

    #[test]
    fn aws_user_data_through_an_imdsv2_token() {
        let base = service(|method, path, headers| match (method, path) {
            ("PUT", "/latest/api/token")
                if headers
                    .iter()
                    .any(|h| h == "x-aws-ec2-metadata-token-ttl-seconds: 300") =>
            {
                (200, b"TOKEN".to_vec())
            }
            ("GET", "/latest/user-data")
                if headers
                    .iter()
                    .any(|h| h == "x-aws-ec2-metadata-token: token") =>
            {
                (200, b"platform = \"snp\"\n".to_vec())
            }
            _ => (401, vec![]),
        });
        assert_eq!(
            settings(Cloud::Aws, &base, 1024).unwrap(),
            b"platform = \"snp\"\n"
        );
    }

    #[test]
    fn azure_user_data_in_base64() {
        let base = service(|method, path, headers| {
            match (method, path, headers.iter().any(|h| h == "metadata: true")) {
                ("GET", p, true) if p.starts_with("/metadata/instance/compute/userData?") => {
                    (200, b"Z3JwY19wb3J0ID0gNzQ0Mwo=".to_vec())
                }
                _ => (400, vec![]),
            }
        });
        assert_eq!(
            settings(Cloud::Azure, &base, 1024).unwrap(),
            b"grpc_port = 7443\n"
        );
    }

    #[test]
    fn absent_settings_say_where_they_belong() {
        let base = service(|_, _, _| (404, vec![]));
        for cloud in [Cloud::Gcp, Cloud::Azure] {
            let e = format!("{:#}", settings(cloud, &base, 1024).unwrap_err());
            assert!(e.contains(cloud.how()), "{e}");
        }
        let e = format!("{:#}", settings(Cloud::Aws, &base, 1024).unwrap_err());
        assert!(e.contains("404"), "{e}");
    }

    #[test]
    fn vendors() {
        assert_eq!(Cloud::from_vendor("Google\n"), Some(Cloud::Gcp));
        assert_eq!(Cloud::from_vendor("Amazon EC2\n"), Some(Cloud::Aws));
        assert_eq!(
            Cloud::from_vendor("Microsoft Corporation\n"),
            Some(Cloud::Azure)
        );
        assert_eq!(Cloud::from_vendor("QEMU\n"), None);
    }
}
