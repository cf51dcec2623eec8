//! Delivery: each destination drains its own entries of the [`Spool`], oldest first, a few
//! at a time, and removes an entry only when the destination acknowledged it (HTTP 2xx;
//! for syslog, the bytes written and flushed on a live connection). A failure leaves the
//! entry where it is and backs the destination off, exponentially with full jitter (so
//! many gateways do not retry in step against a SOC that comes back). Delivery runs on its
//! own tasks: it never blocks detection or the data path.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::Notify};
use zone_agent_common::Severity;

use super::{
    SIGNATURE_HEADER, sign,
    spool::{Entry, Spool},
};

/// Entries of one destination in flight at once.
pub const CONCURRENCY: usize = 4;
/// Backoff after a failure: from `BACKOFF_MIN`, doubling, up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// One attempt (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How an alert is written for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Native,
    Ocsf,
}

/// Where alerts go and what the destination needs to verify them.
#[derive(Clone, Debug)]
pub struct DestinationSpec {
    /// A short bounded name for metrics and logs (never a secret; the URL without its
    /// credentials or query).
    pub name: String,
    pub url: String,
    pub format: Format,
    pub min_severity: Severity,
    /// HMAC key for `X-Zone-Agent-Signature` (webhooks).
    pub secret: Option<Vec<u8>>,
    /// Trust only this CA (PEM) instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Send(String),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
}

/// The result label of `zone_agent_webhook_deliveries_total{destination,result}`.
pub fn result_label(r: &Result<(), DeliveryError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(DeliveryError::Status(s)) if *s >= 500 => "server_error",
        Err(DeliveryError::Status(_)) => "rejected",
        Err(_) => "error",
    }
}

enum Transport {
    Webhook(reqwest::Client),
    Syslog(Syslog),
}

/// A destination ready to send.
pub struct Destination {
    pub spec: DestinationSpec,
    pub id: String,
    transport: Transport,
}

impl Destination {
    pub fn new(spec: DestinationSpec) -> Result<Destination, DeliveryError> {
        let id = super::spool::destination_id(&spec.url);
        let transport = if let Some(rest) = spec.url.strip_prefix("syslog+tls://") {
            Transport::Syslog(Syslog::new(rest, Some(tls_config(&spec)?))?)
        } else if let Some(rest) = spec.url.strip_prefix("tcp://") {
            Transport::Syslog(Syslog::new(rest, None)?)
        } else {
            Transport::Webhook(http_client(&spec)?)
        };
        Ok(Destination {
            spec,
            id,
            transport,
        })
    }

    /// One attempt to hand `body` to the destination.
    pub async fn send(&self, body: &[u8], severity: Severity) -> Result<(), DeliveryError> {
        match &self.transport {
            Transport::Webhook(client) => {
                let mut req = client
                    .post(&self.spec.url)
                    .header("content-type", "application/json")
                    .body(body.to_vec());
                if let Some(secret) = &self.spec.secret {
                    req = req.header(SIGNATURE_HEADER, sign(secret, body));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| DeliveryError::Send(error_chain(&e)))?;
                match resp.status().as_u16() {
                    200..=299 => Ok(()),
                    s => Err(DeliveryError::Status(s)),
                }
            }
            Transport::Syslog(s) => s.send(body, severity).await,
        }
    }
}

/// An error with its causes (reqwest's own message hides why a connection failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read_pem(path: &PathBuf, what: &str) -> Result<Vec<u8>, DeliveryError> {
    std::fs::read(path).map_err(|e| {
        DeliveryError::Setup(format!("cannot read the {what} {}: {e}", path.display()))
    })
}

fn http_client(spec: &DestinationSpec) -> Result<reqwest::Client, DeliveryError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(ATTEMPT_TIMEOUT)
        // An alert is never sent to where a redirect points: the SOC's URL is configured.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("zone-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &spec.ca_file {
        let pem = read_pem(ca, "CA file")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| DeliveryError::Setup(format!("CA file {}: {e}", ca.display())))?;
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&spec.client_cert, &spec.client_key) {
        let mut pem = read_pem(cert, "client certificate")?;
        pem.extend(read_pem(key, "client key")?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            DeliveryError::Setup(format!(
                "client certificate {} / key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
        b = b.identity(id);
    }
    b.build().map_err(|e| DeliveryError::Setup(error_chain(&e)))
}

/// TLS settings for syslog: the configured CA or the system roots, and the client
/// certificate if one is configured.
fn tls_config(
    spec: &DestinationSpec,
) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, DeliveryError> {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let mut roots = RootCertStore::empty();
    match &spec.ca_file {
        Some(ca) => {
            let pem = read_pem(ca, "CA file")?;
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                let c =
                    c.map_err(|e| DeliveryError::Setup(format!("CA file {}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| DeliveryError::Setup(format!("CA file {}: {e}", ca.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| DeliveryError::Setup(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert), Some(key)) => {
            let certs: Result<Vec<_>, _> =
                rustls_pemfile::certs(&mut read_pem(cert, "client certificate")?.as_slice())
                    .collect();
            let certs =
                certs.map_err(|e| DeliveryError::Setup(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut read_pem(key, "client key")?.as_slice())
                .map_err(|e| DeliveryError::Setup(format!("{}: {e}", key.display())))?
                .ok_or_else(|| {
                    DeliveryError::Setup(format!("no private key in {}", key.display()))
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| DeliveryError::Setup(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// RFC 5424 over TCP (RFC 6587 octet counting), optionally in TLS (RFC 5425). One
/// connection, reopened after an error.
struct Syslog {
    host: String,
    port: u16,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    conn: tokio::sync::Mutex<Option<Box<dyn Stream>>>,
    hostname: String,
}

trait Stream: tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// Syslog facility 4 (security/authorization messages, RFC 5424 §6.2.1).
const FACILITY_SECURITY: u8 = 4;

impl Syslog {
    fn new(
        hostport: &str,
        tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    ) -> Result<Syslog, DeliveryError> {
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
            .ok_or_else(|| {
                DeliveryError::Setup(format!(
                    "syslog destination {hostport:?}: expected HOST:PORT"
                ))
            })?;
        Ok(Syslog {
            host: host.into(),
            port,
            tls,
            conn: tokio::sync::Mutex::new(None),
            hostname: hostname(),
        })
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, DeliveryError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                DeliveryError::Send(format!("connecting to {}:{}: {e}", self.host, self.port))
            })?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| DeliveryError::Setup(format!("syslog host {}: {e}", self.host)))?;
        let s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| DeliveryError::Send(format!("TLS to {}:{}: {e}", self.host, self.port)))?;
        Ok(Box::new(s))
    }

    async fn send(&self, body: &[u8], severity: Severity) -> Result<(), DeliveryError> {
        let msg = rfc5424(&self.hostname, severity, body);
        let mut guard = self.conn.lock().await;
        let attempt = async {
            if guard.is_none() {
                *guard = Some(self.connect().await?);
            }
            let conn = guard.as_mut().expect("connected above");
            let framed = [format!("{} ", msg.len()).as_bytes(), &msg].concat();
            conn.write_all(&framed)
                .await
                .map_err(|e| DeliveryError::Send(format!("writing to syslog: {e}")))?;
            conn.flush()
                .await
                .map_err(|e| DeliveryError::Send(format!("writing to syslog: {e}")))
        };
        let r = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::Send("syslog write timed out".into())),
        };
        if r.is_err() {
            *guard = None;
        }
        r
    }
}

fn hostname() -> String {
    nix_hostname().unwrap_or_else(|| "-".into())
}

fn nix_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// `<PRI>1 TIMESTAMP HOST zone-agent - ALERT - BODY`: the syslog severity follows the
/// alert's (critical → crit, high → err, medium → warning, low → notice).
pub fn rfc5424(host: &str, severity: Severity, body: &[u8]) -> Vec<u8> {
    let sev: u8 = match severity {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
    };
    let pri = FACILITY_SECURITY * 8 + sev;
    let ts = super::rfc3339(std::time::SystemTime::now());
    let mut m = format!("<{pri}>1 {ts} {host} zone-agent - ALERT - ").into_bytes();
    m.extend_from_slice(body);
    m
}

/// What the delivery tasks share: the spool and a wakeup for new entries.
pub struct Outbox {
    pub spool: Mutex<Spool>,
    pub wake: Notify,
}

impl Outbox {
    pub fn new(spool: Spool) -> Arc<Outbox> {
        Arc::new(Outbox {
            spool: Mutex::new(spool),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Called after every attempt: (destination name, result label).
pub type OnResult = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

/// Drains `dest`'s entries for ever (spawn one per destination).
pub async fn run(outbox: Arc<Outbox>, dest: Arc<Destination>, on_result: OnResult) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let batch: Vec<(Entry, Vec<u8>)> = {
            let spool = outbox.lock();
            spool
                .oldest(&dest.id, CONCURRENCY)
                .into_iter()
                .filter_map(|e| spool.read(&e).ok().map(|b| (e, b)))
                .collect()
        };
        if batch.is_empty() {
            // Entries pushed between the check and the wait are caught by the timeout.
            let _ = tokio::time::timeout(Duration::from_secs(1), outbox.wake.notified()).await;
            continue;
        }
        let results =
            futures_util::future::join_all(batch.iter().map(|(e, b)| dest.send(b, e.severity)))
                .await;
        let mut failed = None;
        for ((e, _), r) in batch.iter().zip(results) {
            on_result(&dest.spec.name, result_label(&r));
            match r {
                Ok(()) => {
                    let _ = outbox.lock().remove(e.seq);
                }
                Err(err) => failed = Some(err),
            }
        }
        match failed {
            None => backoff = BACKOFF_MIN,
            Some(err) => {
                tracing::warn!(destination = %dest.spec.name, "alert delivery failed, retrying: {err}");
                // Full jitter: anywhere between 0 and the current backoff.
                let wait = rand::thread_rng().gen_range(Duration::ZERO..=backoff);
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_header() {
        let m = String::from_utf8(rfc5424("gw1", Severity::Critical, b"{\"a\":1}")).unwrap();
        assert!(m.starts_with("<34>1 "), "{m}");
        assert!(m.ends_with(" gw1 zone-agent - ALERT - {\"a\":1}"), "{m}");
    }

    #[test]
    fn syslog_destination_needs_a_port() {
        let spec = |url: &str| DestinationSpec {
            name: "s".into(),
            url: url.into(),
            format: Format::Native,
            min_severity: Severity::Low,
            secret: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
        };
        assert!(Destination::new(spec("tcp://127.0.0.1:6514")).is_ok());
        let e = Destination::new(spec("tcp://collector")).err().unwrap();
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn result_labels() {
        assert_eq!(result_label(&Ok(())), "ok");
        assert_eq!(
            result_label(&Err(DeliveryError::Status(503))),
            "server_error"
        );
        assert_eq!(result_label(&Err(DeliveryError::Status(401))), "rejected");
        assert_eq!(result_label(&Err(DeliveryError::Send("x".into()))), "error");
    }
}
