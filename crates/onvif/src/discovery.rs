//! WS-Discovery (the 2005/04 version ONVIF uses): one `Probe` for network video transmitters
//! sent on UDP (to the multicast group 239.255.255.250:3702 by default, or any address), then
//! every `ProbeMatches` collected until the timeout. Answers that are not XML or name no
//! service address are skipped.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::debug;

use crate::error::{OnvifError, Result};
use crate::soap::{child, find, text};

/// Where ONVIF devices listen for probes.
pub const MULTICAST: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::new(239, 255, 255, 250)),
    3702,
);

/// A device that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// Its endpoint reference (`urn:uuid:…`), stable per device.
    pub endpoint: String,
    /// Device service URLs (`XAddrs`).
    pub xaddrs: Vec<String>,
    /// Announced types.
    pub types: Vec<String>,
    /// Scopes (`onvif://www.onvif.org/name/…` …).
    pub scopes: Vec<String>,
    /// Who answered.
    pub from: SocketAddr,
}

impl Discovered {
    /// The `onvif://www.onvif.org/name/…` scope, if any (URL-decoded `%20`).
    pub fn name(&self) -> Option<String> {
        self.scopes
            .iter()
            .find_map(|s| s.strip_prefix("onvif://www.onvif.org/name/"))
            .map(|n| n.replace("%20", " "))
    }
}

fn probe_message(id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header><a:MessageID>uuid:{id}</a:MessageID><a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action></s:Header><s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"#
    )
}

/// Parses one `ProbeMatches` datagram (`None` if it is not one, or names no service address).
pub fn parse_matches(datagram: &[u8], from: SocketAddr) -> Vec<Discovered> {
    let Ok(s) = std::str::from_utf8(datagram) else {
        return Vec::new();
    };
    let Ok(doc) = roxmltree::Document::parse(s) else {
        return Vec::new();
    };
    let Some(matches) = find(doc.root_element(), "ProbeMatches") else {
        return Vec::new();
    };
    matches
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "ProbeMatch")
        .filter_map(|m| {
            let words = |n: &str| -> Vec<String> {
                text(child(m, n))
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            };
            let xaddrs: Vec<String> = words("XAddrs")
                .into_iter()
                .filter(|x| x.starts_with("http://") || x.starts_with("https://"))
                .collect();
            if xaddrs.is_empty() {
                return None;
            }
            Some(Discovered {
                endpoint: text(child(m, "EndpointReference").and_then(|e| child(e, "Address"))),
                xaddrs,
                types: words("Types"),
                scopes: words("Scopes"),
                from,
            })
        })
        .collect()
}

/// Sends one probe to `target` and collects the answers for `timeout`, one entry per device
/// (by endpoint reference, else by first address), sorted by address.
pub async fn discover(target: SocketAddr, timeout: Duration) -> Result<Vec<Discovered>> {
    let bind: SocketAddr = if target.ip().is_loopback() {
        (Ipv4Addr::LOCALHOST, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(OnvifError::Discovery)?;
    if target.ip().is_multicast() {
        // Stay on the local segment.
        let _ = sock.set_multicast_ttl_v4(1);
    }
    let id = format!("{:032x}", rand::random::<u128>());
    sock.send_to(probe_message(&id).as_bytes(), target)
        .await
        .map_err(OnvifError::Discovery)?;
    let mut found: BTreeMap<String, Discovered> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                debug!(error = %e, "WS-Discovery receive error");
                continue;
            }
            Ok(Ok((n, from))) => {
                for d in parse_matches(&buf[..n], from) {
                    let key = if d.endpoint.is_empty() {
                        d.xaddrs[0].clone()
                    } else {
                        d.endpoint.clone()
                    };
                    found.entry(key).or_insert(d);
                }
            }
        }
    }
    let mut v: Vec<Discovered> = found.into_values().collect();
    v.sort_by(|a, b| a.xaddrs.cmp(&b.xaddrs));
    Ok(v)
}
