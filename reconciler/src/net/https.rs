//! The https client of every outbound call that is not the Kubernetes API: policy modules from
//! `module.url` ([`crate::policy::fetch`]) and alert deliveries ([`crate::notify::provider`]).
//!
//! Expected flow: the caller describes what the client trusts (the system's roots and/or CA
//! certificates it was given), an optional client certificate (mutual TLS), the connect timeout,
//! whether plain http is allowed, and an optional [`Proxy`]; [`build`] parses all of it once and
//! returns an [`HttpsClient`] that keeps connections for reuse.
//!
//! Guarantees:
//! - a configuration error names the input at fault with the caller's name for it ("the CA
//!   file", "key 'tls.key'") and never repeats a private key or a proxy's credentials;
//! - through a proxy, an https destination is reached through an HTTP CONNECT tunnel (the proxy
//!   sees the host and port; TLS runs end to end with the destination), an http destination is
//!   forwarded (the request goes to the proxy in absolute form, with `Proxy-Authorization` when
//!   the proxy has credentials);
//! - opening a TCP connection, to the destination or to the proxy, is bounded by
//!   [`ClientOptions::connect_timeout`]; the caller bounds the whole request.
//!
//! Caveats: only `http://` proxies (the tunnel is opened over plain TCP); the environment's
//! `HTTPS_PROXY` / `NO_PROXY` are not read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper::body::Body;
use hyper::header::{HeaderValue, PROXY_AUTHORIZATION};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// PEM bytes and what the user knows them as (for error messages).
#[derive(Clone, Debug)]
pub struct PemInput {
    /// How errors name this input, e.g. "the CA file" or "key 'ca.crt'".
    pub name: String,
    /// The PEM text.
    pub pem: Vec<u8>,
}

/// A client certificate chain and its private key (mutual TLS).
#[derive(Clone, Debug)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub cert: PemInput,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PemInput,
}

/// How to build an [`HttpsClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Trust the system's CA certificates.
    pub system_roots: bool,
    /// CA certificates trusted besides (or, without `system_roots`, instead of) the system's.
    pub ca: Option<PemInput>,
    /// Present this certificate when the server asks for one.
    pub identity: Option<Identity>,
    /// Bound on opening one TCP connection.
    pub connect_timeout: Duration,
    /// Refuse plain http destinations; also refuse a client that trusts no CA at all.
    pub https_only: bool,
    /// Reach every destination through this proxy.
    pub proxy: Option<Proxy>,
}

impl ClientOptions {
    /// A digest of everything that makes two clients differ (trust, identity, proxy with its
    /// credentials, limits): equal fingerprints, interchangeable clients. Lets callers keep
    /// clients for reuse without keeping the secrets themselves as keys.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let mut part = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        part(&[u8::from(self.system_roots), u8::from(self.https_only)]);
        part(&self.connect_timeout.as_nanos().to_le_bytes());
        part(self.ca.as_ref().map_or(&[][..], |c| &c.pem));
        for pem in self.identity.iter().flat_map(|i| [&i.cert.pem, &i.key.pem]) {
            part(pem);
        }
        if let Some(proxy) = &self.proxy {
            part(proxy.uri.to_string().as_bytes());
            part(
                proxy
                    .authorization
                    .as_ref()
                    .map_or(&[][..], |a| a.as_bytes()),
            );
        }
        hasher.finalize().into()
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// A file or Secret key is not PEM.
    #[error("{name} is not PEM: {cause}")]
    NotPem {
        /// The file or Secret key.
        name: String,
        /// The parser's error.
        cause: String,
    },
    /// A CA bundle without a certificate.
    #[error("{name} holds no certificate")]
    NoCertificate {
        /// The file or Secret key.
        name: String,
    },
    /// A CA certificate rustls refused.
    #[error("a CA certificate in {name} was refused: {cause}")]
    CaRefused {
        /// The file or Secret key.
        name: String,
        /// rustls' error.
        cause: String,
    },
    /// Nothing to trust.
    #[error("no trusted CA certificates (none in the system store, no CA file)")]
    NoRoots,
    /// The key's own parse error is not shown: it may quote a line of the key.
    #[error("{name} holds no PEM private key")]
    NoKey {
        /// The file or Secret key.
        name: String,
    },
    /// A client certificate and key rustls refused.
    #[error("{cert} and {key} were refused: {cause}")]
    Identity {
        /// The certificate's file or Secret key.
        cert: String,
        /// The key's file or Secret key.
        key: String,
        /// rustls' error.
        cause: String,
    },
    /// The TLS configuration as a whole was refused.
    #[error("the TLS configuration could not be built: {0}")]
    Tls(String),
}

/// Why a proxy address is unusable. Messages never contain the address (it may carry
/// credentials): the caller shows it with [`Proxy::shown`] or its own redaction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// Not a URL with a host.
    #[error("not a URL with a host")]
    NotUrl,
    /// A scheme other than http.
    #[error("only http:// proxies are supported")]
    NotHttp,
    /// User or password that does not decode.
    #[error("the credentials are not valid percent-encoded UTF-8")]
    BadCredentials,
}

/// An HTTP proxy: where it listens and the `Proxy-Authorization` it wants.
#[derive(Clone)]
pub struct Proxy {
    /// `http://host:port`, no credentials.
    uri: Uri,
    authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("uri", &self.uri)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Proxy {
    /// `url` is `http://[user[:password]@]host[:port]` (port 80 by default, user information
    /// percent-encoded); `username` (with `password`) given separately replaces the URL's.
    pub fn parse(
        url: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self, ProxyError> {
        let uri: Uri = url.trim().parse().map_err(|_| ProxyError::NotUrl)?;
        let authority = uri.authority().ok_or(ProxyError::NotUrl)?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(ProxyError::NotHttp),
            None => return Err(ProxyError::NotUrl),
        }
        let host = authority.host();
        if host.is_empty() || host.starts_with('-') {
            return Err(ProxyError::NotUrl);
        }
        let port = authority.port_u16().unwrap_or(80);
        let address: Uri = format!("http://{host}:{port}")
            .parse()
            .map_err(|_| ProxyError::NotUrl)?;
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| ProxyError::BadCredentials)
        };
        let from_url = match authority.as_str().rsplit_once('@') {
            Some((info, _)) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                Some((decode(user)?, decode(pass)?))
            }
            None => None,
        };
        let credentials = match username {
            Some(user) => Some((user.to_owned(), password.unwrap_or_default().to_owned())),
            None => from_url,
        };
        let authorization = match credentials {
            Some((user, pass)) => {
                use base64::Engine as _;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                let mut value = HeaderValue::from_str(&format!("Basic {basic}"))
                    .map_err(|_| ProxyError::BadCredentials)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            uri: address,
            authorization,
        })
    }

    /// `http://host:port`: what may be shown of the proxy.
    pub fn shown(&self) -> String {
        self.uri.to_string().trim_end_matches('/').to_owned()
    }

    /// Whether requests through the proxy carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }
}

/// A pooled client built by [`build`]; cheap to clone (the pool is shared).
pub struct HttpsClient<B> {
    client: Client<HttpsConnector<Connector>, B>,
    /// Sent with requests to http destinations, which the proxy forwards; https ones carry it
    /// in the CONNECT request only, so the destination never sees it.
    proxy_authorization: Option<HeaderValue>,
}

impl<B> Clone for HttpsClient<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            proxy_authorization: self.proxy_authorization.clone(),
        }
    }
}

impl<B> std::fmt::Debug for HttpsClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").finish_non_exhaustive()
    }
}

impl<B> HttpsClient<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Sends `request` (an absolute URI) and returns the response head as it arrives.
    pub fn request(&self, mut request: hyper::Request<B>) -> ResponseFuture {
        if let Some(auth) = &self.proxy_authorization
            && request.uri().scheme_str() == Some("http")
        {
            request
                .headers_mut()
                .insert(PROXY_AUTHORIZATION, auth.clone());
        }
        self.client.request(request)
    }
}

/// Builds a client as `options` describe; reads the system's trust store when asked to.
pub fn build<B>(options: &ClientOptions) -> Result<HttpsClient<B>, ClientError>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = rustls::RootCertStore::empty();
    if options.system_roots {
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    if let Some(ca) = &options.ca {
        for cert in certificates(ca)? {
            roots.add(cert).map_err(|e| ClientError::CaRefused {
                name: ca.name.clone(),
                cause: e.to_string(),
            })?;
        }
    }
    if options.https_only && roots.is_empty() {
        return Err(ClientError::NoRoots);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    let tls = match &options.identity {
        None => tls.with_no_client_auth(),
        Some(identity) => {
            let chain = certificates(&identity.cert)?;
            let key = PrivateKeyDer::from_pem_slice(&identity.key.pem).map_err(|_| {
                ClientError::NoKey {
                    name: identity.key.name.clone(),
                }
            })?;
            tls.with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Identity {
                    cert: identity.cert.name.clone(),
                    key: identity.key.name.clone(),
                    cause: e.to_string(),
                })?
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(options.connect_timeout));
    let connector = Connector {
        tunnel: options.proxy.as_ref().map(|proxy| {
            let tunnel = Tunnel::new(proxy.uri.clone(), http.clone());
            match &proxy.authorization {
                Some(auth) => tunnel.with_auth(auth.clone()),
                None => tunnel,
            }
        }),
        proxy: options.proxy.as_ref().map(|p| p.uri.clone()),
        direct: http,
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let https = if options.https_only {
        builder.https_only()
    } else {
        builder.https_or_http()
    }
    .enable_http1()
    .wrap_connector(connector);
    Ok(HttpsClient {
        client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
        proxy_authorization: options.proxy.as_ref().and_then(|p| p.authorization.clone()),
    })
}

/// Every certificate in `input`; at least one.
fn certificates(input: &PemInput) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs = CertificateDer::pem_slice_iter(&input.pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::NotPem {
            name: input.name.clone(),
            cause: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ClientError::NoCertificate {
            name: input.name.clone(),
        });
    }
    Ok(certs)
}

/// Opens the TCP connection of a request: straight to the destination, through a CONNECT
/// tunnel (https destinations behind a proxy), or to the proxy itself (http destinations
/// behind a proxy, marked so that the client writes the request in absolute form).
#[derive(Clone)]
struct Connector {
    direct: HttpConnector,
    proxy: Option<Uri>,
    tunnel: Option<Tunnel<HttpConnector>>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // HttpConnector and Tunnel over it are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match (&mut self.tunnel, &self.proxy) {
            (Some(tunnel), Some(_)) if dst.scheme_str() == Some("https") => {
                let connecting = tunnel.call(dst);
                Box::pin(async move {
                    Ok(Stream {
                        io: connecting.await?,
                        proxied: false,
                    })
                })
            }
            (_, Some(proxy)) => {
                let connecting = self.direct.call(proxy.clone());
                Box::pin(async move {
                    Ok(Stream {
                        io: connecting.await?,
                        proxied: true,
                    })
                })
            }
            (_, None) => {
                let connecting = self.direct.call(dst);
                Box::pin(async move {
                    Ok(Stream {
                        io: connecting.await?,
                        proxied: false,
                    })
                })
            }
        }
    }
}

/// A TCP connection that knows whether it goes to a forwarding proxy.
struct Stream {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_with_credentials_from_the_url_or_given_apart() {
        let p = Proxy::parse("http://u%40corp:p%3Ass@proxy.local:3128", None, None).unwrap();
        assert_eq!(p.shown(), "http://proxy.local:3128");
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u@corp:p:ss")
        );
        assert_eq!(p.authorization.as_ref().unwrap(), expected.as_str());
        assert!(p.authorization.as_ref().unwrap().is_sensitive());
        assert!(
            !format!("{p:?}").contains("Basic"),
            "Debug hides the credentials"
        );

        let apart = Proxy::parse("http://u:old@proxy.local", Some("svc"), Some("pw")).unwrap();
        assert_eq!(apart.shown(), "http://proxy.local:80");
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("svc:pw")
        );
        assert_eq!(apart.authorization.as_ref().unwrap(), expected.as_str());

        let plain = Proxy::parse("http://10.0.0.1:8080/", None, None).unwrap();
        assert!(!plain.has_credentials());
        assert_eq!(
            Proxy::parse("https://proxy.local", None, None).unwrap_err(),
            ProxyError::NotHttp
        );
        for bad in [
            "proxy.local:3128",
            "not a url",
            "http://",
            "socks5://p:1080",
        ] {
            assert!(Proxy::parse(bad, None, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_pem_inputs_are_named_and_keys_never_quoted() {
        let options = |ca: Option<&[u8]>, identity: Option<(&[u8], &[u8])>| ClientOptions {
            system_roots: false,
            ca: ca.map(|pem| PemInput {
                name: "key 'ca.crt'".into(),
                pem: pem.to_vec(),
            }),
            identity: identity.map(|(cert, key)| Identity {
                cert: PemInput {
                    name: "key 'tls.crt'".into(),
                    pem: cert.to_vec(),
                },
                key: PemInput {
                    name: "key 'tls.key'".into(),
                    pem: key.to_vec(),
                },
            }),
            connect_timeout: Duration::from_secs(1),
            https_only: false,
            proxy: None,
        };
        let err =
            build::<http_body_util::Empty<bytes::Bytes>>(&options(Some(b"junk".as_slice()), None))
                .unwrap_err();
        assert_eq!(err.to_string(), "key 'ca.crt' holds no certificate");
        let secret_line = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n";
        let err = build::<http_body_util::Empty<bytes::Bytes>>(&options(
            None,
            Some((b"junk".as_slice(), secret_line.as_slice())),
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "key 'tls.crt' holds no certificate");
        // No trust at all is fine for a client that may speak plain http, not for https only.
        assert!(build::<http_body_util::Empty<bytes::Bytes>>(&options(None, None)).is_ok());
        let err = build::<http_body_util::Empty<bytes::Bytes>>(&ClientOptions {
            https_only: true,
            ..options(None, None)
        })
        .unwrap_err();
        assert_eq!(err, ClientError::NoRoots);
    }
}
