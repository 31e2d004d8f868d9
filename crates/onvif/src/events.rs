//! Camera events over a PullPoint subscription (`CreatePullPointSubscription`, `PullMessages`,
//! `Unsubscribe`), the topics a camera announces (`GetEventProperties`), and the mapping of
//! topics to the kinds Vigie cares about (motion, tampering, video loss, digital input).

use std::time::Duration;

use crate::device::Device;
use crate::error::{OnvifError, Result};
use crate::soap::{child, children, find, text, with_body, xs_duration};

/// What an event is about, from its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `…/MotionAlarm`, `…/CellMotionDetector/Motion`, …
    Motion,
    /// `…/GlobalSceneChange/…`, `…/Tamper…`
    Tampering,
    /// `…/SignalLoss`, `…/VideoLoss`
    VideoLoss,
    /// `…/DigitalInput`
    DigitalInput,
    /// Anything else.
    Other,
}

impl EventKind {
    /// Classifies a topic (`tns1:VideoSource/MotionAlarm` …).
    pub fn of_topic(topic: &str) -> EventKind {
        let t = topic.to_ascii_lowercase();
        if t.contains("globalscenechange") || t.contains("tamper") {
            EventKind::Tampering
        } else if t.contains("signalloss") || t.contains("videoloss") {
            EventKind::VideoLoss
        } else if t.contains("digitalinput") {
            EventKind::DigitalInput
        } else if t.contains("motion") {
            EventKind::Motion
        } else {
            EventKind::Other
        }
    }

    /// Stable name (`motion`, `tampering`, `video-loss`, `digital-input`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Motion => "motion",
            EventKind::Tampering => "tampering",
            EventKind::VideoLoss => "video-loss",
            EventKind::DigitalInput => "digital-input",
            EventKind::Other => "other",
        }
    }

    /// Alarms are journaled (tampering, video loss).
    pub fn is_alarm(self) -> bool {
        matches!(self, EventKind::Tampering | EventKind::VideoLoss)
    }
}

/// One notification.
#[derive(Clone, Debug, PartialEq)]
pub struct CameraEvent {
    /// The topic as sent.
    pub topic: String,
    /// Its kind.
    pub kind: EventKind,
    /// The camera's time of the event, if given and parseable.
    pub utc: Option<jiff::Timestamp>,
    /// Whether the condition is active (from `State`, `LogicalState`, `IsMotion`, `IsTamper`).
    pub active: Option<bool>,
    /// Source items (name, value).
    pub source: Vec<(String, String)>,
    /// Data items (name, value).
    pub data: Vec<(String, String)>,
}

fn items(n: Option<roxmltree::Node<'_, '_>>) -> Vec<(String, String)> {
    n.map(|n| {
        children(n, "SimpleItem")
            .map(|i| {
                (
                    i.attribute("Name").unwrap_or("").to_owned(),
                    i.attribute("Value").unwrap_or("").to_owned(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn parse_notification(n: roxmltree::Node<'_, '_>) -> CameraEvent {
    let topic = text(child(n, "Topic"));
    let msg = find(n, "Message").and_then(|m| {
        // wsnt:Message wraps tt:Message.
        child(m, "Message").or(Some(m))
    });
    let utc = msg
        .and_then(|m| m.attribute("UtcTime"))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let source = items(msg.and_then(|m| child(m, "Source")));
    let data = items(msg.and_then(|m| child(m, "Data")));
    let active = data
        .iter()
        .find(|(k, _)| {
            matches!(
                k.as_str(),
                "State" | "LogicalState" | "IsMotion" | "IsTamper"
            )
        })
        .and_then(|(_, v)| match v.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        });
    CameraEvent {
        kind: EventKind::of_topic(&topic),
        topic,
        utc,
        active,
        source,
        data,
    }
}

/// An open PullPoint subscription. Unsubscribe when done (a dropped one expires on the camera).
#[derive(Debug)]
pub struct PullPoint<'d> {
    device: &'d Device,
    address: String,
    lifetime: Option<Duration>,
}

/// A subscription's life as the camera states it: `TerminationTime − CurrentTime` of an answer
/// (both in the camera's clock, so skew does not matter); `None` when either is missing or
/// unreadable.
fn stated_life(answer: roxmltree::Node<'_, '_>) -> Option<Duration> {
    let at = |name: &str| -> Option<jiff::Timestamp> {
        let t = text(child(answer, name));
        t.trim().parse().ok()
    };
    let d = at("TerminationTime")?.duration_since(at("CurrentTime")?);
    Duration::try_from(d).ok().filter(|d| !d.is_zero())
}

impl Device {
    fn events_url(&self, op: &'static str) -> Result<String> {
        self.services
            .events
            .clone()
            .ok_or_else(|| OnvifError::NotSupported {
                op,
                url: self.url.clone(),
                service: "events",
            })
    }

    /// The topics the camera announces (`GetEventProperties`), as `tns1:A/B/C` paths.
    pub async fn event_topics(&self) -> Result<Vec<String>> {
        const OP: &str = "GetEventProperties";
        let url = self.events_url(OP)?;
        let a = self.call(OP, &url, "<tev:GetEventProperties/>").await?;
        with_body(OP, &url, &a, |b| {
            let set = find(b, "TopicSet").ok_or("no TopicSet")?;
            let mut out = Vec::new();
            // Leaves marked wstop:topic="true" are topics; their path is their ancestors'.
            for n in set.descendants().filter(|n| n.is_element()) {
                if n.attributes()
                    .any(|a| a.name() == "topic" && a.value() == "true")
                {
                    let mut path: Vec<String> = n
                        .ancestors()
                        .take_while(|a| *a != set)
                        .filter(|a| a.is_element())
                        .map(|a| a.tag_name().name().to_owned())
                        .collect();
                    path.reverse();
                    out.push(format!("tns1:{}", path.join("/")));
                }
            }
            Ok(out)
        })
    }

    /// `CreatePullPointSubscription`.
    pub async fn pull_point(&self) -> Result<PullPoint<'_>> {
        const OP: &str = "CreatePullPointSubscription";
        let url = self.events_url(OP)?;
        let a = self
            .call(
                OP,
                &url,
                "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>PT60S</tev:InitialTerminationTime></tev:CreatePullPointSubscription>",
            )
            .await?;
        let (address, lifetime) = with_body(OP, &url, &a, |b| {
            let resp = child(b, "CreatePullPointSubscriptionResponse")
                .ok_or("no CreatePullPointSubscriptionResponse")?;
            let r = find(b, "SubscriptionReference").ok_or("no SubscriptionReference")?;
            let addr = text(child(r, "Address"));
            if addr.starts_with("http://") {
                Ok((addr, stated_life(resp)))
            } else {
                Err(format!("subscription address {addr:?} is not http://"))
            }
        })?;
        Ok(PullPoint {
            device: self,
            address,
            lifetime,
        })
    }
}

impl PullPoint<'_> {
    /// The subscription's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// How long the subscription lives without a renewal, as the camera said when it was
    /// created (`None`: the camera did not say).
    pub fn lifetime(&self) -> Option<Duration> {
        self.lifetime
    }

    /// `Renew`: asks the camera to keep the subscription `life` from now. Returns the life the
    /// camera granted, when its answer says.
    pub async fn renew(&self, life: Duration) -> Result<Option<Duration>> {
        const OP: &str = "Renew";
        let body = format!(
            "<wsnt:Renew><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:Renew>",
            xs_duration(life)
        );
        let a = self.device.call(OP, &self.address, &body).await?;
        with_body(OP, &self.address, &a, |b| {
            let r = child(b, "RenewResponse").ok_or("no RenewResponse")?;
            Ok(stated_life(r))
        })
    }

    /// `PullMessages`: waits up to `wait` on the camera for events, at most `limit` of them.
    /// The request's own timeout is `wait` plus the client's timeout.
    pub async fn pull(&self, wait: Duration, limit: u32) -> Result<Vec<CameraEvent>> {
        const OP: &str = "PullMessages";
        let body = format!(
            "<tev:PullMessages><tev:Timeout>{}</tev:Timeout><tev:MessageLimit>{}</tev:MessageLimit></tev:PullMessages>",
            xs_duration(wait),
            limit.max(1)
        );
        let created = (jiff::Timestamp::now() + self.device.clock_offset)
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let env = crate::soap::request(&body, self.device.creds.as_ref(), &created.to_string());
        let a = crate::soap::call(
            &self.device.http,
            OP,
            &self.address,
            env,
            wait + self.device.timeout,
            self.device.digest(),
        )
        .await?;
        with_body(OP, &self.address, &a, |b| {
            let r = child(b, "PullMessagesResponse").ok_or("no PullMessagesResponse")?;
            Ok(children(r, "NotificationMessage")
                .map(parse_notification)
                .collect())
        })
    }

    /// `Unsubscribe`.
    pub async fn unsubscribe(self) -> Result<()> {
        self.device
            .call("Unsubscribe", &self.address, "<wsnt:Unsubscribe/>")
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_kinds() {
        use EventKind::*;
        for (t, k) in [
            ("tns1:VideoSource/MotionAlarm", Motion),
            ("tns1:RuleEngine/CellMotionDetector/Motion", Motion),
            (
                "tns1:VideoSource/GlobalSceneChange/ImagingService",
                Tampering,
            ),
            ("tns1:RuleEngine/TamperDetector/Tamper", Tampering),
            ("tns1:VideoSource/SignalLoss", VideoLoss),
            ("tns1:Device/Trigger/DigitalInput", DigitalInput),
            ("tns1:Monitoring/ProcessorUsage", Other),
        ] {
            assert_eq!(EventKind::of_topic(t), k, "{t}");
        }
    }
}
