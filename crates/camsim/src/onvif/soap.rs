//! SOAP 1.2 for the simulated device: reading a request envelope (the body's operation and the
//! WS-Security `UsernameToken`), checking the password digest, writing answers and faults.
//! Independent of Vigie's client on purpose (its own parsing, its own digest), so the tests
//! against it check two implementations against each other.

use std::collections::HashSet;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};

pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const NS_WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";

/// The namespace declarations every answer carries on its envelope.
pub const ENVELOPE_NS: &str = concat!(
    r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
    r#"xmlns:tt="http://www.onvif.org/ver10/schema" "#,
    r#"xmlns:tds="http://www.onvif.org/ver10/device/wsdl" "#,
    r#"xmlns:trt="http://www.onvif.org/ver10/media/wsdl" "#,
    r#"xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" "#,
    r#"xmlns:tev="http://www.onvif.org/ver10/events/wsdl" "#,
    r#"xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" "#,
    r#"xmlns:wsa="http://www.w3.org/2005/08/addressing" "#,
    r#"xmlns:wstop="http://docs.oasis-open.org/wsn/t-1" "#,
    r#"xmlns:tns1="http://www.onvif.org/ver10/topics" "#,
    r#"xmlns:ter="http://www.onvif.org/ver10/error""#
);

/// Escapes text for an XML element or attribute.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// An answer envelope around `body`.
pub fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope {ENVELOPE_NS}><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

/// A SOAP 1.2 fault: `code` is `Sender`/`Receiver`, `subcodes` ONVIF's (`ter:NotAuthorized`…).
pub fn fault(code: &str, subcodes: &[&str], reason: &str) -> String {
    let mut sub = String::new();
    for s in subcodes.iter().rev() {
        sub = format!("<s:Subcode><s:Value>{s}</s:Value>{sub}</s:Subcode>");
    }
    envelope(&format!(
        r#"<s:Fault><s:Code><s:Value>s:{code}</s:Value>{sub}</s:Code><s:Reason><s:Text xml:lang="en">{}</s:Text></s:Reason></s:Fault>"#,
        esc(reason)
    ))
}

/// The parts of a request the device acts on.
pub struct Request<'a> {
    /// The parsed document (kept for the body's parameters).
    pub doc: &'a roxmltree::Document<'a>,
    /// The body's first element: the operation.
    pub op: roxmltree::Node<'a, 'a>,
    /// `wsse:UsernameToken`, if any: (username, password digest, nonce (base64), created).
    pub token: Option<UsernameToken>,
}

/// A WS-Security `UsernameToken` (password digest form).
pub struct UsernameToken {
    pub username: String,
    pub digest: String,
    /// `PasswordDigest` or `PasswordText` (the latter is refused).
    pub password_type: String,
    pub nonce_b64: String,
    pub created: String,
}

/// Parses a request envelope; `Err` is a reason for a `Sender` fault.
pub fn parse<'a>(doc: &'a roxmltree::Document<'a>) -> Result<Request<'a>, String> {
    let root = doc.root_element();
    if root.tag_name().name() != "Envelope" || root.tag_name().namespace() != Some(NS_SOAP) {
        return Err("not a SOAP 1.2 envelope".into());
    }
    let body = child(root, "Body").ok_or("no Body")?;
    let op = body
        .children()
        .find(|n| n.is_element())
        .ok_or("empty Body")?;
    let token = child(root, "Header")
        .and_then(|h| h.children().find(|n| n.has_tag_name((NS_WSSE, "Security"))))
        .and_then(|s| child(s, "UsernameToken"))
        .map(|t| {
            let pw = child(t, "Password");
            UsernameToken {
                username: text(child(t, "Username")),
                digest: text(pw),
                password_type: pw
                    .and_then(|p| p.attribute("Type"))
                    .unwrap_or("")
                    .to_owned(),
                nonce_b64: text(child(t, "Nonce")),
                created: text(child(t, "Created")),
            }
        });
    Ok(Request { doc, op, token })
}

/// The first child element with this local name.
pub fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// The first descendant element with this local name.
pub fn find<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.descendants()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Trimmed text of an element ("" when absent).
pub fn text(n: Option<roxmltree::Node<'_, '_>>) -> String {
    n.and_then(|n| n.text()).unwrap_or("").trim().to_owned()
}

/// The WS-UsernameToken password digest: base64(SHA-1(nonce ‖ created ‖ password)).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    STANDARD.encode(h.finalize())
}

/// Checks tokens against one account, refusing replayed nonces.
pub struct Verifier {
    pub username: String,
    pub password: String,
    seen: Mutex<HashSet<String>>,
}

/// Nonces remembered for replay detection (then the set is cleared: bounded memory).
const MAX_SEEN_NONCES: usize = 100_000;

/// Why a token was refused (the fault's reason).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    PlainText,
    BadNonce,
    Wrong,
    Replayed,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "the operation requires a WS-Security UsernameToken",
            Refusal::PlainText => "only PasswordDigest is accepted",
            Refusal::BadNonce => "the UsernameToken nonce is not base64",
            Refusal::Wrong => "the sender is not authorized: wrong user name or password digest",
            Refusal::Replayed => "the UsernameToken nonce was already used",
        }
    }
}

impl Verifier {
    pub fn new(username: &str, password: &str) -> Verifier {
        Verifier {
            username: username.to_owned(),
            password: password.to_owned(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    pub fn check(&self, token: Option<&UsernameToken>) -> Result<(), Refusal> {
        let t = token.ok_or(Refusal::Missing)?;
        if !t.password_type.ends_with("#PasswordDigest") {
            return Err(Refusal::PlainText);
        }
        let nonce = STANDARD
            .decode(t.nonce_b64.as_bytes())
            .map_err(|_| Refusal::BadNonce)?;
        let expected = password_digest(&nonce, &t.created, &self.password);
        if t.username != self.username || t.digest != expected {
            return Err(Refusal::Wrong);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_SEEN_NONCES {
            seen.clear();
        }
        if !seen.insert(t.nonce_b64.clone()) {
            return Err(Refusal::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the ONVIF Application Programmer's Guide (§6.1.1.3).
    #[test]
    fn digest_matches_the_onvif_programmers_guide_example() {
        let nonce = STANDARD.decode("LKqI6G/AikKCQrN0zqZFlg==").unwrap();
        assert_eq!(
            password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword"),
            "tuOSpGlFlIXsozq4HFNeeGeFLEI="
        );
    }

    #[test]
    fn faults_nest_their_subcodes() {
        let f = fault("Sender", &["ter:NotAuthorized"], "no <way>");
        let doc = roxmltree::Document::parse(&f).unwrap();
        let sub = find(doc.root_element(), "Subcode").unwrap();
        assert_eq!(text(child(sub, "Value")), "ter:NotAuthorized");
        assert_eq!(text(find(doc.root_element(), "Text")), "no <way>");
    }
}
