//! The binary's side of the access journal: opening it, journaling service start/stop,
//! configuration loads and retention's deletions, and `vigie audit verify`.

use std::sync::Arc;

use anyhow::Context;
use sha2::{Digest, Sha256};
use vigie_audit::{Action, Journal, NewEntry, Query};
use vigie_core::Clock;
use vigie_core::config::Config;

pub fn journal_dir(config: &Config) -> std::path::PathBuf {
    config.storage.data_dir.join("journal")
}

/// Signs the journal head with the installation key (the key stays in `vigie-export`; the
/// journal only sees this signer).
struct InstallationSigner(vigie_export::InstallationKey);

impl vigie_audit::HeadSigner for InstallationSigner {
    fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.0.sign(message)
    }
    fn public(&self) -> ed25519_dalek::VerifyingKey {
        self.0.public()
    }
}

/// Opens the journal with its head signed by the installation key (created on first use) and
/// purges checked against `retention.journal_days`.
pub fn open_journal(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Journal> {
    let dir = journal_dir(config);
    let (key, created) = vigie_export::InstallationKey::load_or_create(&config.storage.data_dir)
        .context("loading the installation signing key (it signs the access journal's head)")?;
    if created {
        tracing::info!(public_key = %key.public_hex(), path = %key.path().display(), "created the installation signing key (Ed25519)");
    }
    let options = vigie_audit::JournalOptions {
        signer: Some(Arc::new(InstallationSigner(key))),
        retention: Some(vigie_core::Duration90k::from_secs(
            i64::from(config.retention.journal_days) * 86_400,
        )),
    };
    Journal::open_with(&dir, clock, options).with_context(|| {
        format!(
            "opening the access journal in {} (is another Vigie running on this data directory?)",
            dir.display()
        )
    })
}

/// Journals the start, and the configuration when it differs from the last one journaled
/// (a digest of the whole configuration, secrets excluded: they print as `***`).
pub fn journal_start(journal: &Journal, config: &Config) {
    let digest = hex::encode(Sha256::digest(format!("{config:?}").as_bytes()));
    journal.append_or_log(NewEntry::new("system", Action::ServiceStart).details(
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
        }),
    ));
    let last = journal
        .query(&Query {
            action: Some(Action::ConfigLoad),
            ..Default::default()
        })
        .ok()
        .and_then(|v| v.last().cloned());
    let previous = last
        .as_ref()
        .and_then(|e| e.details["sha256"].as_str().map(str::to_owned));
    if previous.as_deref() != Some(digest.as_str()) {
        journal.append_or_log(NewEntry::new("system", Action::ConfigLoad).details(
            serde_json::json!({
                "sha256": digest,
                "previous_sha256": previous,
                "communes": config.communes.iter().map(|c| &c.id).collect::<Vec<_>>(),
                "cameras": config.cameras.iter().map(|c| &c.id).collect::<Vec<_>>(),
                "streams": config.streams().count(),
                "retention_max_days": config.retention.max_days,
            }),
        ));
    }
}

/// Journals every destruction of footage and each change of the "recording blocked" state.
pub fn journal_retention(
    journal: &Journal,
    report: &vigie_store::RetentionReport,
    blocked: &mut bool,
) {
    for d in &report.deleted {
        journal.append_or_log(
            NewEntry::new("system", Action::RetentionDelete)
                .camera(&d.camera, &d.stream)
                .range(d.start, d.end)
                .reason(d.reason.clone())
                .details(serde_json::json!({ "segment_id": d.segment_id, "bytes": d.bytes })),
        );
    }
    if report.recording_blocked != *blocked {
        *blocked = report.recording_blocked;
        let reason = if *blocked {
            "disk full of footage under legal hold: recording stopped"
        } else {
            "free space available again: recording resumed"
        };
        journal.append_or_log(
            NewEntry::new("system", Action::RecordingBlocked)
                .reason(reason)
                .details(
                    serde_json::json!({ "blocked": *blocked, "free_bytes": report.free_bytes }),
                ),
        );
    }
}

/// `vigie audit verify`: checks the chain, its signed head and its purges, and lists every
/// tamper alarm; exit status 1 if anything is wrong. A cluster node checks every node's journal
/// (`crate::audit_cluster`).
pub fn verify(config: &Config) -> anyhow::Result<()> {
    #[cfg(feature = "cluster")]
    if config.cluster.is_some() {
        return crate::audit_cluster::verify(config);
    }
    let journal = open_journal(config, Arc::new(vigie_core::SystemClock))?;
    let problems = check_local(config, &journal)?;
    if problems.is_empty() {
        println!("access journal OK");
        Ok(())
    } else {
        anyhow::bail!("{}", problems.join("; "))
    }
}

/// Checks this node's journal, opened offline: chain, signed head, purges, tamper alarms and
/// (cluster) the head anchored in etcd. Prints what it finds; returns the problems (empty: OK).
pub fn check_local(config: &Config, journal: &Journal) -> anyhow::Result<Vec<String>> {
    // A cluster node also checks its journal against the head it anchored in etcd: a journal
    // cut or replaced while the node was stopped verifies on its own but not against it.
    #[cfg(feature = "cluster")]
    let anchor_problems = crate::cluster::verify_journal_anchor(config, journal)?;
    #[cfg(not(feature = "cluster"))]
    let anchor_problems: Vec<String> = {
        let _ = config;
        Vec::new()
    };
    for p in &anchor_problems {
        println!("ANCHOR MISMATCH: {p}");
    }
    let report = journal.verify()?;
    for a in &report.alarms {
        println!(
            "TAMPER ALARM #{} raised {}{}: {}",
            a.id,
            vigie_core::Time90k(a.time_90k).to_rfc3339(),
            a.entry_seq
                .map(|s| format!(" (journal entry {s})"))
                .unwrap_or_default(),
            a.problem
        );
    }
    match &report.first_broken {
        None => {
            println!(
                "hash chain intact: {} entries verified (sequence {}..{}), head {}",
                report.entries,
                report.first_seq,
                report.first_seq + report.entries,
                match &report.head_key {
                    Some(k) => format!("signed by the installation key {k}"),
                    None => "not signed".to_owned(),
                }
            );
        }
        Some((seq, why)) => {
            println!("access journal BROKEN at entry {seq}: {why}");
            println!("({} entries verified before it)", report.entries);
        }
    }
    let mut problems = Vec::new();
    if !anchor_problems.is_empty() {
        problems.push(format!(
            "the access journal does not hold the head anchored in etcd ({} problem(s))",
            anchor_problems.len()
        ));
    }
    if let Some((seq, _)) = &report.first_broken {
        problems.push(format!("access journal verification failed at entry {seq}"));
    } else if !report.alarms.is_empty() {
        problems.push(format!(
            "the access journal was tampered with ({} tamper alarm(s) on record)",
            report.alarms.len()
        ));
    }
    Ok(problems)
}
