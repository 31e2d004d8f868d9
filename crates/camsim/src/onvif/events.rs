//! Scripted camera alarms and the PullPoint subscriptions that receive them. Owns the event
//! kinds (their ONVIF topics and data items) and the per-subscription queues; not the SOAP.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Queued messages per subscription (older ones are dropped beyond it).
pub const MAX_QUEUED: usize = 1000;
/// Open subscriptions at most (the oldest expired ones go first; then creation is refused).
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// A subscription nobody pulls from (or renews) for this long expires (`TerminationTime`), by
/// default ([`EventBus::set_policy`] changes it).
pub const SUBSCRIPTION_TTL: Duration = Duration::from_secs(60);

/// The alarms camsim can raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `tns1:VideoSource/MotionAlarm` (data `State`).
    Motion,
    /// `tns1:VideoSource/GlobalSceneChange/ImagingService` (data `State`): the view was
    /// covered, moved or sprayed.
    Tampering,
    /// `tns1:VideoSource/SignalLoss` (data `State`): the sensor gives no picture.
    VideoLoss,
    /// `tns1:Device/Trigger/DigitalInput` (source `InputToken`, data `LogicalState`).
    DigitalInput,
}

impl EventKind {
    /// Every kind, in a stable order.
    pub const ALL: [EventKind; 4] = [
        EventKind::Motion,
        EventKind::Tampering,
        EventKind::VideoLoss,
        EventKind::DigitalInput,
    ];

    /// The ONVIF topic (with the `tns1` prefix).
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::Motion => "tns1:VideoSource/MotionAlarm",
            EventKind::Tampering => "tns1:VideoSource/GlobalSceneChange/ImagingService",
            EventKind::VideoLoss => "tns1:VideoSource/SignalLoss",
            EventKind::DigitalInput => "tns1:Device/Trigger/DigitalInput",
        }
    }

    /// (source item name, source value, data item name).
    pub fn items(self) -> (&'static str, &'static str, &'static str) {
        match self {
            EventKind::DigitalInput => ("InputToken", "di0", "LogicalState"),
            _ => ("Source", "vs0", "State"),
        }
    }

    /// The name used on the command line and the control API.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Motion => "motion",
            EventKind::Tampering => "tampering",
            EventKind::VideoLoss => "video-loss",
            EventKind::DigitalInput => "digital-input",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<EventKind, String> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown event {s:?} (motion, tampering, video-loss, digital-input)")
            })
    }
}

/// One raised alarm.
#[derive(Clone, Debug)]
pub struct Event {
    /// What.
    pub kind: EventKind,
    /// Active (`true`) or cleared.
    pub state: bool,
    /// When, RFC 3339 UTC.
    pub utc: String,
}

struct Subscription {
    queue: VecDeque<Event>,
    expires: Instant,
}

/// How subscriptions live: `ttl` from creation and from each renewal (a renewal asking for less
/// gets less: `ttl` is the camera's longest subscription life), and whether a pull extends it by `ttl` (many cameras do; others expire a subscription that is
/// pulled but never renewed).
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionPolicy {
    /// Life given at creation.
    pub ttl: Duration,
    /// A `PullMessages` extends the subscription by `ttl`.
    pub pull_extends: bool,
}

impl Default for SubscriptionPolicy {
    fn default() -> SubscriptionPolicy {
        SubscriptionPolicy {
            ttl: SUBSCRIPTION_TTL,
            pull_extends: true,
        }
    }
}

/// All subscriptions of one simulated device.
#[derive(Default)]
pub struct EventBus {
    subs: Mutex<(u64, HashMap<u64, Subscription>)>,
    policy: Mutex<SubscriptionPolicy>,
    notify: Notify,
    /// Events raised so far.
    pub raised: std::sync::atomic::AtomicU64,
    /// Subscriptions created so far.
    pub created: std::sync::atomic::AtomicU64,
    /// Successful `Renew`s so far.
    pub renewed: std::sync::atomic::AtomicU64,
}

impl EventBus {
    /// Changes how subscriptions created from now on (and pulls, renewals) behave.
    pub fn set_policy(&self, policy: SubscriptionPolicy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The current policy.
    pub fn policy(&self) -> SubscriptionPolicy {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Renew`: the subscription lives `asked` from `now`, at most the policy's TTL (which it
    /// gets when nothing is asked). Returns its new life, `None` if it does not exist (or
    /// expired).
    pub fn renew(&self, id: u64, now: Instant, asked: Option<Duration>) -> Option<Duration> {
        let ttl = self.policy().ttl;
        let life = asked
            .unwrap_or(ttl)
            .min(ttl)
            .max(Duration::from_millis(100));
        let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.1.get_mut(&id).filter(|s| s.expires > now)?;
        s.expires = now + life;
        self.renewed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(life)
    }

    /// Opens a subscription; `None` when [`MAX_SUBSCRIPTIONS`] are open and none expired.
    pub fn subscribe(&self, now: Instant) -> Option<u64> {
        let ttl = self.policy().ttl;
        let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        g.1.retain(|_, s| s.expires > now);
        if g.1.len() >= MAX_SUBSCRIPTIONS {
            return None;
        }
        g.0 += 1;
        let id = g.0;
        g.1.insert(
            id,
            Subscription {
                queue: VecDeque::new(),
                expires: now + ttl,
            },
        );
        self.created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(id)
    }

    /// Closes a subscription; false if it did not exist.
    pub fn unsubscribe(&self, id: u64) -> bool {
        let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        g.1.remove(&id).is_some()
    }

    /// Number of open subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.subs.lock().unwrap_or_else(|p| p.into_inner()).1.len()
    }

    /// Raises an alarm to every open subscription.
    pub fn raise(&self, ev: Event) {
        self.raised
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        for s in g.1.values_mut() {
            if s.queue.len() >= MAX_QUEUED {
                s.queue.pop_front();
            }
            s.queue.push_back(ev.clone());
        }
        drop(g);
        self.notify.notify_waiters();
    }

    /// `PullMessages`: up to `limit` queued events, waiting up to `timeout` for the first one.
    /// `None` if the subscription does not exist (or expired).
    pub async fn pull(&self, id: u64, limit: usize, timeout: Duration) -> Option<Vec<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let policy = self.policy();
        let mut first = true;
        loop {
            let notified = self.notify.notified();
            {
                let now = Instant::now();
                let mut g = self.subs.lock().unwrap_or_else(|p| p.into_inner());
                let s = g.1.get_mut(&id).filter(|s| s.expires > now)?;
                if policy.pull_extends && first {
                    s.expires = now + policy.ttl;
                }
                first = false;
                if !s.queue.is_empty() || tokio::time::Instant::now() >= deadline {
                    let n = s.queue.len().min(limit.max(1));
                    return Some(s.queue.drain(..n).collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // Deadline: one last look (answers empty).
                continue;
            }
        }
    }
}
