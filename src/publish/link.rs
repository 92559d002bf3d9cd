//! One MQTT connection, 3.1.1 or 5, behind one small interface, so the publisher does not care
//! which protocol the clinic's broker speaks. Also builds TLS and credentials from the config.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{Outgoing, QoS, TlsConfiguration, Transport};

use crate::config::{MqttConfig, MqttProtocol, TlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("{path} holds no usable {what}")]
    Pem { what: &'static str, path: std::path::PathBuf },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// What the publisher needs to know from the event loop, whatever the protocol.
#[derive(Debug)]
pub enum LinkEvent {
    Connected { session_present: bool },
    PubAck(u16),
    /// A PUBLISH went out with this packet id (0 for QoS 0).
    Sent(u16),
    /// An incoming message. `retained`: the broker delivered it from its retained store (at
    /// subscribe time), not as it was published.
    Message { topic: String, payload: Vec<u8>, retained: bool },
    /// An incoming message larger than [`MAX_MESSAGE_KEPT`]: not copied, only reported.
    Oversized { topic: String, len: usize },
    Disconnected,
    Other,
}

/// Why the connection failed, as text a person can act on.
#[derive(Debug)]
pub struct LinkFailure {
    pub text: String,
    /// The broker sent a packet over [`MAX_INCOMING_V311`]: the client had to drop the
    /// connection (MQTT 3.1.1 cannot skip a packet it will not read).
    pub oversized_incoming: bool,
}

/// Largest incoming packet over MQTT 3.1.1. The client must read a whole packet to go past
/// it, and a packet over this limit costs the connection; MQTT 3.1.1 has no way to tell the
/// broker a limit. rumqttc's default (10 KiB) let one retained 10 KiB message on a command
/// topic break every (re)connection; 16 MiB covers what a broker lets anyone publish by
/// default short of its 256 MiB maximum, and is held only while that one packet is read.
pub const MAX_INCOMING_V311: usize = 16 * 1024 * 1024;
/// Largest incoming packet over MQTT 5, sent to the broker in CONNECT (Maximum Packet Size):
/// the broker then discards anything larger for us instead of sending it, so the connection
/// never breaks on size. Commands are at most 4 KiB.
pub const MAX_INCOMING_V5: u32 = 64 * 1024;
/// An incoming message larger than this is reported as [`LinkEvent::Oversized`] without being
/// copied (commands are at most 4 KiB).
pub const MAX_MESSAGE_KEPT: usize = 64 * 1024;
/// rumqttc's default for what we send over MQTT 3.1.1, kept as it was.
const MAX_OUTGOING_V311: usize = 10 * 1024;

pub enum Link {
    V311 { client: rumqttc::AsyncClient, eventloop: rumqttc::EventLoop },
    V5 { client: rumqttc::v5::AsyncClient, eventloop: rumqttc::v5::EventLoop },
}

/// A request the client's channel could not take right now (it is full).
#[derive(Debug)]
pub struct Full;

/// How many requests rumqttc may buffer between us and the socket.
const CLIENT_CAPACITY: usize = 64;

impl Link {
    pub fn new(mqtt: &MqttConfig, client_id: &str, will_topic: &str, will_payload: &str) -> Result<Link, LinkError> {
        let transport = match &mqtt.tls {
            Some(tls) => Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls_client_config(tls)?))),
            None => Transport::tcp(),
        };
        let credentials = credentials(mqtt)?;
        let keep_alive = Duration::from_secs(mqtt.keep_alive_secs);
        Ok(match mqtt.protocol {
            MqttProtocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(client_id, mqtt.host.clone(), mqtt.port);
                o.set_keep_alive(keep_alive).set_clean_session(true).set_transport(transport);
                o.set_max_packet_size(MAX_INCOMING_V311, MAX_OUTGOING_V311);
                o.set_last_will(rumqttc::LastWill::new(will_topic, will_payload, QoS::AtLeastOnce, true));
                if let Some((u, p)) = credentials {
                    o.set_credentials(u, p);
                }
                let (client, mut eventloop) = rumqttc::AsyncClient::new(o, CLIENT_CAPACITY);
                eventloop.set_network_options(network_options());
                Link::V311 { client, eventloop }
            }
            MqttProtocol::V5 => {
                use rumqttc::v5::mqttbytes::{v5::LastWill, QoS as QoS5};
                let mut o = rumqttc::v5::MqttOptions::new(client_id, mqtt.host.clone(), mqtt.port);
                o.set_keep_alive(keep_alive).set_clean_start(true).set_transport(transport);
                o.set_max_packet_size(Some(MAX_INCOMING_V5));
                o.set_last_will(LastWill::new(will_topic, will_payload, QoS5::AtLeastOnce, true, None));
                if let Some((u, p)) = credentials {
                    o.set_credentials(u, p);
                }
                o.set_network_options(network_options());
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(o, CLIENT_CAPACITY);
                Link::V5 { client, eventloop }
            }
        })
    }

    /// The next event. Errors are connection failures.
    pub async fn poll(&mut self) -> Result<LinkEvent, LinkFailure> {
        match self {
            Link::V311 { eventloop, .. } => {
                use rumqttc::{Event, Packet};
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(LinkEvent::Connected { session_present: a.session_present }),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Ok(LinkEvent::PubAck(a.pkid)),
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(message(p.topic, &p.payload, p.retain)),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(LinkEvent::Disconnected),
                    Ok(_) => Ok(LinkEvent::Other),
                    Err(e) => Err(LinkFailure { oversized_incoming: is_oversized_v311(&e), text: describe_v311(&e) }),
                }
            }
            Link::V5 { eventloop, .. } => {
                use rumqttc::v5::mqttbytes::v5::Packet;
                use rumqttc::v5::Event;
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(LinkEvent::Connected { session_present: a.session_present }),
                    Ok(Event::Incoming(Packet::PubAck(a))) => Ok(LinkEvent::PubAck(a.pkid)),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Ok(message(String::from_utf8_lossy(&p.topic).into_owned(), &p.payload, p.retain))
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(LinkEvent::Sent(pkid)),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(LinkEvent::Disconnected),
                    Ok(_) => Ok(LinkEvent::Other),
                    Err(e) => Err(LinkFailure { oversized_incoming: false, text: describe_tls(e.to_string()) }),
                }
            }
        }
    }

    pub fn try_publish(&self, topic: &str, qos: QoS, retain: bool, payload: Vec<u8>) -> Result<(), Full> {
        match self {
            Link::V311 { client, .. } => client.try_publish(topic, qos, retain, payload).map_err(|_| Full),
            Link::V5 { client, .. } => client.try_publish(topic, qos5(qos), retain, payload).map_err(|_| Full),
        }
    }

    /// Subscribes to these exact topics at QoS 1. Over MQTT 5 the broker is asked not to send
    /// their retained messages at all (Retain Handling 2) and to keep the retain flag of live
    /// ones (Retain As Published); over 3.1.1 it sends them at subscribe, and the publisher
    /// ignores what arrives flagged as retained.
    pub fn try_subscribe(&self, topics: &[String]) -> Result<(), Full> {
        match self {
            Link::V311 { client, .. } => client
                .try_subscribe_many(topics.iter().map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)))
                .map_err(|_| Full),
            Link::V5 { client, .. } => {
                use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
                let filters = topics.iter().map(|t| {
                    let mut f = Filter::new(t.clone(), qos5(QoS::AtLeastOnce));
                    f.retain_forward_rule = RetainForwardRule::Never;
                    // Retain As Published: a live message keeps the retain flag it was sent
                    // with, so one published retained is ignored here too.
                    f.preserve_retain = true;
                    f
                });
                client.try_subscribe_many(filters).map_err(|_| Full)
            }
        }
    }

    pub fn try_disconnect(&self) -> Result<(), Full> {
        match self {
            Link::V311 { client, .. } => client.try_disconnect().map_err(|_| Full),
            Link::V5 { client, .. } => client.try_disconnect().map_err(|_| Full),
        }
    }
}

/// An incoming PUBLISH as an event: small ones copied, large ones only named.
fn message(topic: String, payload: &[u8], retained: bool) -> LinkEvent {
    if payload.len() > MAX_MESSAGE_KEPT {
        LinkEvent::Oversized { topic, len: payload.len() }
    } else {
        LinkEvent::Message { topic, payload: payload.to_vec(), retained }
    }
}

fn is_oversized_v311(e: &rumqttc::ConnectionError) -> bool {
    use rumqttc::{ConnectionError, StateError};
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)))
    )
}

/// TCP_NODELAY: every result is one small write, and Nagle's algorithm would hold it back while
/// the previous one is unacknowledged, adding a round trip to its delivery.
fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

fn qos5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q;
    match q {
        QoS::AtMostOnce => Q::AtMostOnce,
        QoS::AtLeastOnce => Q::AtLeastOnce,
        QoS::ExactlyOnce => Q::ExactlyOnce,
    }
}

fn describe_v311(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::{ConnectReturnCode, ConnectionError};
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "the broker refused the credentials: wrong username or password (check mqtt.username and the password)".into()
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "the broker refused the credentials: not authorized (check mqtt.username, the password and the broker's ACL)".into()
        }
        other => describe_tls(other.to_string()),
    }
}

/// Certificate failures deserve a sentence, not a rustls enum.
fn describe_tls(text: String) -> String {
    if text.contains("UnknownIssuer") {
        format!("{text}: the broker's certificate is not signed by the CA in mqtt.tls.ca_file")
    } else if text.contains("NotValidForName") {
        format!("{text}: the broker's certificate does not name mqtt.host (set mqtt.tls.server_name?)")
    } else if text.contains("Expired") {
        format!("{text}: the broker's certificate has expired (or this station's clock is wrong)")
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        format!("{text}: the broker requires a client certificate (mqtt.tls.client_cert/client_key)")
    } else if text.to_lowercase().contains("not authorized") || text.contains("BadUserNamePassword") {
        format!("{text}: the broker refused the credentials")
    } else {
        text
    }
}

fn credentials(mqtt: &MqttConfig) -> Result<Option<(String, String)>, LinkError> {
    if mqtt.username.is_empty() {
        return Ok(None);
    }
    let password = match (&mqtt.password_file, &mqtt.password) {
        (Some(path), _) => crate::fsread::read_to_string(path, "mqtt.password_file", crate::fsread::limit::SECRET)
            .map_err(|e| LinkError::Read { what: "password file", path: path.clone(), source: e.into() })?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, Some(secret)) => secret.0.clone(),
        (None, None) => String::new(),
    };
    Ok(Some((mqtt.username.clone(), password)))
}

/// A rustls client configuration trusting only the configured CA, with the optional client
/// certificate.
pub fn tls_client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, LinkError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read_certs = |what: &'static str, path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, LinkError> {
        let bytes = crate::fsread::read(path, what, crate::fsread::limit::PEM).map_err(|e| LinkError::Read { what, path: path.into(), source: e.into() })?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(LinkError::Pem { what, path: path.into() });
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs("CA certificate", &tls.ca_file)? {
        roots.add(cert).map_err(|e| LinkError::Tls(format!("{}: {e}", tls.ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs("client certificate", cert)?;
            let key_bytes =
                crate::fsread::read(key, "client key", crate::fsread::limit::PEM).map_err(|e| LinkError::Read { what: "client key", path: key.clone(), source: e.into() })?;
            let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| LinkError::Pem { what: "private key", path: key.clone() })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| LinkError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}
