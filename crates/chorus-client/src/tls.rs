//! Extra trusted CAs for `https://` and `wss://` servers whose certificate is not
//! signed by a public CA (a self-signed or private-CA deployment). Public servers need
//! nothing: both transports trust Mozilla's roots (`webpki-roots`) built in.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// CA certificates trusted besides the built-in roots. Cheap to clone.
#[derive(Clone)]
pub struct ExtraRoots {
    certs: Arc<[CertificateDer<'static>]>,
    /// The WebSocket's TLS settings: the built-in roots plus `certs`, made once.
    websocket: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraRoots")
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl ExtraRoots {
    /// Reads every certificate of a PEM file (e.g. `CHORUS_CA_FILE`).
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::Tls(format!("CA file {}: {why}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &certs {
            roots.add(cert.clone()).map_err(|e| bad(e.to_string()))?;
        }
        let websocket = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            certs: certs.into(),
            websocket: Arc::new(websocket),
        })
    }

    /// Adds the CAs to an HTTP client's roots.
    pub(crate) fn add_to(
        &self,
        mut http: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder> {
        for cert in self.certs.iter() {
            let cert = reqwest::Certificate::from_der(cert).map_err(Error::Http)?;
            http = http.add_root_certificate(cert);
        }
        Ok(http)
    }

    /// The connector for `wss://`.
    pub(crate) fn websocket(&self) -> tokio_tungstenite::Connector {
        tokio_tungstenite::Connector::Rustls(self.websocket.clone())
    }
}
