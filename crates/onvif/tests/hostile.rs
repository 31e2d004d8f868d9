//! The client against answers no well-behaved camera sends (a raw TCP server on loopback
//! answering every request with one canned HTTP response): each is a clear error, never a
//! panic, and a huge answer is cut at the bound.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vigie_onvif::{Device, OnvifError, Options};

/// Serves `answer(request_number)` to every connection; returns the device URL.
async fn canned(answer: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            n += 1;
            let a = answer.clone();
            tokio::spawn(async move {
                // Read the request head and body (a SOAP request is small: one read loop).
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                loop {
                    let Ok(k) = s.read(&mut buf[got..]).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    got += k;
                    if buf[..got].windows(13).any(|w| w == b"</s:Envelope>") {
                        break;
                    }
                }
                let _ = s.write_all(&a(n)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}/onvif/device_service")
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/soap+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const ENV: &str =
    r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">"#;

fn quick() -> Options {
    Options {
        timeout: Duration::from_secs(3),
    }
}

#[tokio::test]
async fn hostile_answers_are_clear_errors() {
    // SOAP 1.1-style fault naming an authentication failure, behind HTTP 500.
    let url = canned(|_| {
        http(
            "500 Internal Server Error",
            &format!(
                "{ENV}<s:Body><s:Fault><faultcode>wsse:FailedAuthentication</faultcode><faultstring>bad token</faultstring></s:Fault></s:Body></s:Envelope>"
            ),
        )
    })
    .await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(e.is_auth(), "{e:?}");

    // HTTP 401 with an HTML page.
    let url = canned(|_| http("401 Unauthorized", "<html><body>no</body></html>")).await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(e.is_auth(), "{e:?}");

    // HTTP 404 with no body.
    let url = canned(|_| http("404 Not Found", "")).await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(matches!(e, OnvifError::Status { status: 404, .. }), "{e:?}");

    // Valid XML, but not SOAP.
    let url = canned(|_| http("200 OK", "<html><p>router login</p></html>")).await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("not a SOAP 1.2 Envelope"), "{e}");

    // A SOAP envelope missing what the operation returns.
    let url = canned(|_| {
        http(
            "200 OK",
            &format!("{ENV}<s:Body><x/></s:Body></s:Envelope>"),
        )
    })
    .await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("no Capabilities"), "{e}");

    // An endless answer is cut at the bound (not buffered without limit).
    let url = canned(|_| {
        let mut v =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nConnection: close\r\n\r\n"
                .to_vec();
        v.extend(std::iter::repeat_n(
            b'x',
            vigie_onvif::soap::MAX_ANSWER_BYTES + 1024,
        ));
        v
    })
    .await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(matches!(e, OnvifError::TooLarge { .. }), "{e:?}");

    // Deeply nested XML (a parser bomb) is refused by the parser, not a stack overflow.
    let url = canned(|_| {
        let deep = "<a>".repeat(100_000);
        http(
            "200 OK",
            &format!("{ENV}<s:Body>{deep}</s:Body></s:Envelope>"),
        )
    })
    .await;
    let e = Device::connect(&url, None, quick()).await.unwrap_err();
    assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");

    // Profiles without tokens, stream URIs that are not rtsp://, a media address that is
    // not a URL.
    let me = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let me2 = me.clone();
    let url = canned(move |n| {
        let media = if n == 2 { me2.get().cloned().unwrap_or_default() } else { "MEDIA".into() };
        match n {
            // GetSystemDateAndTime (malformed: tolerated), then GetCapabilities.
            1 | 5 => http("200 OK", &format!("{ENV}<s:Body/></s:Envelope>")),
            2 | 6 => http(
                "200 OK",
                &format!(
                    "{ENV}<s:Body><GetCapabilitiesResponse><Capabilities><Media><XAddr>{media}</XAddr></Media></Capabilities></GetCapabilitiesResponse></s:Body></s:Envelope>"
                ),
            ),
            _ => http(
                "200 OK",
                &format!(
                    "{ENV}<s:Body><GetProfilesResponse><Profiles><Name>x</Name></Profiles></GetProfilesResponse><GetStreamUriResponse><MediaUri><Uri>file:///etc/passwd</Uri></MediaUri></GetStreamUriResponse></s:Body></s:Envelope>"
                ),
            ),
        }
    })
    .await;
    me.set(url.clone()).unwrap();
    let dev = Device::connect(&url, None, quick()).await.unwrap();
    let e = dev.profiles().await.unwrap_err();
    assert!(e.to_string().contains("a profile has no token"), "{e}");
    let e = dev.stream_uri("x").await.unwrap_err();
    assert!(matches!(e, OnvifError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("is not rtsp://"), "{e}");
    // Requests 5, 6: the camera names a media address that is not a URL.
    let dev = Device::connect(&url, None, quick()).await.unwrap();
    let e = dev.profiles().await.unwrap_err();
    assert!(matches!(e, OnvifError::Http { .. }), "{e:?}");
}
