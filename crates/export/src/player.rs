//! The offline `player.html` and the `LISEZ-MOI.txt` of a package.
//!
//! `player.html` is self-contained (inline CSS and JS, a Content-Security-Policy allowing no
//! network access) and embeds the exact bytes of `manifest.json` (base64) and its signature. It
//! plays the MP4 next to it with `<video src>`, shows the manifest, recomputes the MP4's SHA-256
//! with `crypto.subtle.digest` (reading the file with XMLHttpRequest; when the browser refuses
//! to read `file://` URLs, as Chromium does by default, it asks for the file with a file picker)
//! and shows VALIDE/VALID or INVALIDE/INVALID; where the browser supports Ed25519 in WebCrypto it
//! also checks the manifest's signature. French first, English second.

use base64::Engine;

use crate::manifest::{Manifest, MultiManifest};

const TEMPLATE: &str = include_str!("player.html");
/// The multi-camera player: one video and one fingerprint check per camera, played in sync.
const TEMPLATE_MULTI: &str = include_str!("player_multi.html");

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The player page for a manifest (`manifest_bytes` = the exact bytes of `manifest.json`).
pub(crate) fn player_html(m: &Manifest, manifest_bytes: &[u8], signature_b64: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    TEMPLATE
        .replace("__TITLE__", &html_escape(&m.export_id))
        .replace("__MANIFEST_B64__", &b64.encode(manifest_bytes))
        // base64 only: nothing to escape.
        .replace(
            "__SIGNATURE_B64__",
            &signature_b64
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                .collect::<String>(),
        )
}

/// The player page of a multi-camera package.
pub(crate) fn player_multi_html(
    m: &MultiManifest,
    manifest_bytes: &[u8],
    signature_b64: &str,
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    TEMPLATE_MULTI
        .replace("__TITLE__", &html_escape(&m.export_id))
        .replace("__MANIFEST_B64__", &b64.encode(manifest_bytes))
        .replace(
            "__SIGNATURE_B64__",
            &signature_b64
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                .collect::<String>(),
        )
}

/// `LISEZ-MOI.txt` of a multi-camera package (French, then English).
pub(crate) fn readme_multi(m: &MultiManifest, key_hex: &str) -> String {
    let cams: String = m
        .cameras
        .iter()
        .map(|c| {
            format!(
                "  {file}\n      caméra / camera {name} ({id}), commune {commune}, flux / stream {stream}\n      période effective / actual {a} → {b}\n",
                file = c.video.file,
                name = c.camera.name,
                id = c.camera.id,
                commune = c.camera.commune.name,
                stream = c.stream,
                a = c.actual.start.local,
                b = c.actual.end.local,
            )
        })
        .collect();
    format!(
        "PIÈCE VIDÉO MULTI-CAMÉRAS — VIDÉOPROTECTION (Vigie {version})
=============================================================

Export {id} — procédure {proc} — {n} caméras
Période demandée : {rs} → {re} ({tz})
Requérant : {req}
Opérateur : {op}

ENREGISTREMENTS NATIFS (copie du flux, sans réencodage) / NATIVE RECORDINGS (stream copy)
{cams}
CONTENU
  manifest.json  description de la pièce (une entrée par caméra dans « cameras »),
                 empreintes SHA-256 et tailles de tous les fichiers
  manifest.sig   signature Ed25519 (base64) des octets exacts de manifest.json
  signing-key.pub  clé publique de l'installation (hex puis PEM)
  player.html    lecteur hors ligne : lit toutes les vidéos ensemble, affiche le manifeste et
                 recalcule l'empreinte de chaque vidéo (VALIDE / INVALIDE)
  SHA256SUMS, SHA256SUMS.sig  empreintes de tous les fichiers et leur signature

VÉRIFIER
  1. Empreintes :   sha256sum -c SHA256SUMS
  2. Signature et intégrité complètes :   vigie verify PAQUET.zip   (ou le dossier décompressé)
  3. Sans Vigie, avec OpenSSL 3 :
       base64 -d manifest.sig > manifest.sig.bin
       openssl pkeyutl -verify -pubin -inkey signing-key.pub -rawin -in manifest.json -sigfile manifest.sig.bin
  4. La clé publique doit être celle publiée par l'installation (GET /api/v1/signing-key,
     « vigie key show ») : {key}

MULTI-CAMERA VIDEO EXHIBIT — CCTV (English)
===========================================
Export {id}, procedure {proc}, {n} cameras, {rs} → {re} ({tz}). Each MP4 above is one
camera's native recording (stream copy, no re-encoding); manifest.json describes each of them
(\"cameras\") and lists the SHA-256 and size of every file; manifest.sig is the Ed25519 signature
(base64) of its exact bytes; player.html plays the videos together offline and recomputes each
fingerprint. To verify: `sha256sum -c SHA256SUMS`; `vigie verify PACKAGE.zip` checks every hash
and both signatures; without Vigie use the OpenSSL commands above. The public key must be the
installation's published key: {key}
",
        version = m.software.version,
        id = m.export_id,
        proc = m.procedure,
        n = m.cameras.len(),
        rs = m.requested.start.local,
        re = m.requested.end.local,
        tz = m.timezone,
        req = m.requester,
        op = m.operator,
        key = key_hex,
    )
}

/// `LISEZ-MOI.txt`: how to play and verify the package (French, then English).
pub(crate) fn readme(m: &Manifest, key_hex: &str) -> String {
    let mp4 = &m.video.file;
    format!(
        "PIÈCE VIDÉO — VIDÉOPROTECTION (Vigie {version})
==============================================

Export {id} — procédure {proc}
Caméra : {cam_name} ({cam_id}), commune de {commune}
Période demandée : {rs} → {re} ({tz})
Période effective : {as_} → {ae}
Requérant : {req}
Opérateur : {op}

CONTENU
  {mp4}  enregistrement natif (copie du flux, sans réencodage), lisible par VLC, ffplay, un navigateur
  manifest.json  description de la pièce, empreintes SHA-256 et tailles des fichiers
  manifest.sig   signature Ed25519 (base64) des octets exacts de manifest.json
  signing-key.pub  clé publique de l'installation (hex puis PEM)
  player.html    lecteur hors ligne : ouvrez-le dans un navigateur, il lit la vidéo,
                 affiche le manifeste et recalcule l'empreinte (VALIDE / INVALIDE)
  SHA256SUMS, SHA256SUMS.sig  empreintes de tous les fichiers et leur signature

VÉRIFIER
  1. Empreinte de la vidéo :   sha256sum {mp4}
     doit être égale à « sha256 » du fichier {mp4} dans manifest.json, ou :  sha256sum -c SHA256SUMS
  2. Signature et intégrité complètes :   vigie verify PAQUET.zip   (ou le dossier décompressé)
     avec --config vigie.toml, vérifie aussi que la clé est celle de l'installation.
  3. Sans Vigie, avec OpenSSL 3 :
       base64 -d manifest.sig > manifest.sig.bin
       openssl pkeyutl -verify -pubin -inkey signing-key.pub -rawin -in manifest.json -sigfile manifest.sig.bin
  4. La clé publique doit être celle publiée par l'installation (GET /api/v1/signing-key,
     « vigie key show ») : {key}

VIDEO EXHIBIT — CCTV (English)
==============================
Export {id}, procedure {proc}, camera {cam_name} ({cam_id}), {rs} → {re} ({tz}).
Files: {mp4} is the native recording (stream copy, no re-encoding); manifest.json describes it
and lists the SHA-256 and size of every file; manifest.sig is the Ed25519 signature (base64) of
the exact bytes of manifest.json; signing-key.pub is the installation's public key; player.html
plays the video offline, shows the manifest and recomputes the fingerprint.
To verify: `sha256sum {mp4}` must equal the manifest (or `sha256sum -c SHA256SUMS`);
`vigie verify PACKAGE.zip` checks every hash and both signatures; without Vigie use the OpenSSL
commands above. The public key must be the installation's published key: {key}
",
        version = m.software.version,
        id = m.export_id,
        proc = m.procedure,
        cam_name = m.camera.name,
        cam_id = m.camera.id,
        commune = m.camera.commune.name,
        rs = m.requested.start.local,
        re = m.requested.end.local,
        tz = m.timezone,
        as_ = m.actual.start.local,
        ae = m.actual.end.local,
        req = m.requester,
        op = m.operator,
        key = key_hex,
    )
}
