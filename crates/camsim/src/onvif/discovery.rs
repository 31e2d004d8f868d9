//! WS-Discovery (2005/04, as ONVIF uses it): answers `Probe` messages on UDP with a
//! `ProbeMatches` naming the device service. Binds the given address; when its IP is
//! unspecified it also joins the multicast group 239.255.255.250 (port 3702 on a real network;
//! tests probe a loopback port by unicast). Owns no HTTP.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::soap::{child, esc, find, text};

/// The WS-Discovery multicast group.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);

/// Binds and serves until `shutdown` turns true. Returns the bound address.
pub async fn start(
    bind: SocketAddr,
    device_url: String,
    endpoint_uuid: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let sock = UdpSocket::bind(bind).await?;
    if bind.ip().is_unspecified()
        && let Err(e) = sock.join_multicast_v4(MULTICAST_V4, Ipv4Addr::UNSPECIFIED)
    {
        warn!(error = %e, "WS-Discovery: cannot join the multicast group; unicast probes only");
    }
    let addr = sock.local_addr()?;
    let sock = Arc::new(sock);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                r = sock.recv_from(&mut buf) => {
                    let Ok((n, peer)) = r else { continue };
                    let Some(answer) = answer(&buf[..n], &device_url, &endpoint_uuid) else {
                        debug!(%peer, "WS-Discovery: not a Probe, ignored");
                        continue;
                    };
                    if let Err(e) = sock.send_to(answer.as_bytes(), peer).await {
                        debug!(%peer, error = %e, "WS-Discovery: answer not sent");
                    }
                }
            }
        }
    });
    Ok(addr)
}

/// The `ProbeMatches` answering `probe`, or `None` when it is not a Probe we match (types other
/// than `NetworkVideoTransmitter` / `Device`, or not XML).
pub fn answer(probe: &[u8], device_url: &str, endpoint_uuid: &str) -> Option<String> {
    let text_in = std::str::from_utf8(probe).ok()?;
    let doc = roxmltree::Document::parse(text_in).ok()?;
    let root = doc.root_element();
    let body = child(root, "Body")?;
    let probe_el = child(body, "Probe")?;
    let types = text(child(probe_el, "Types"));
    // An empty Types matches every device; otherwise one of ours must be asked for.
    if !types.is_empty()
        && !types
            .split_whitespace()
            .any(|t| t.ends_with(":NetworkVideoTransmitter") || t.ends_with(":Device"))
    {
        return None;
    }
    let relates = text(child(root, "Header").and_then(|h| find(h, "MessageID")));
    let msg_id = format!("uuid:{:032x}", rand::random::<u128>());
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><s:Header><a:MessageID>{msg_id}</a:MessageID><a:RelatesTo>{}</a:RelatesTo><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action></s:Header><s:Body><d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>urn:uuid:{endpoint_uuid}</a:Address></a:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types><d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/type/ptz onvif://www.onvif.org/hardware/camsim onvif://www.onvif.org/name/camsim onvif://www.onvif.org/Profile/Streaming</d:Scopes><d:XAddrs>{}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"#,
        esc(&relates),
        esc(device_url)
    ))
}
