//! The operator's camera inventory (a spreadsheet saved as CSV) turned into `[[cameras]]`
//! entries: `vigie camera import`. Pure: bytes in, TOML text and a report out; the binary reads
//! and writes the files.
//!
//! Owns: reading the CSV (UTF-8 with or without BOM, or Windows-1252 as French Excel saves
//! "CSV (séparateur : point-virgule)"; the separator `,`, `;` or tab detected from the header
//! line), the column names (French or English, see [`COLUMNS`]), the checks of each line (with
//! its line number), id clashes with the file itself and with the existing configuration, and
//! rendering the TOML. Every camera it writes is then validated with the configuration's own
//! rules ([`Config::from_toml_str`] over the existing configuration plus the new entries), so
//! what it writes is what `vigie check-config` accepts; a problem found there is reported on
//! the line it came from.
//!
//! Secrets: a password never reaches the output (only `password_env`, the name of an
//! environment variable): a line with a password (in a password column or inside a URL) is an
//! error, and its value is never repeated in a message.
//!
//! Does not own: files (the binary), ONVIF (item 1 of issue 17; the `onvif` column is written as
//! the camera's `onvif` key).

use std::collections::HashMap;
use std::fmt;

use crate::config::{Config, is_credential_param};
use crate::ids::validate_id;

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The header is unusable (missing columns, unreadable file).
    #[error("{0}")]
    Header(String),
    /// Some lines are invalid (and `skip_bad` was not set): nothing is written.
    #[error("{} invalid line(s); nothing written (fix them, or pass --skip-bad to import the others):\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    BadLines(Vec<LineError>),
    /// The existing configuration cannot be read.
    #[error("the existing configuration: {0}")]
    Existing(String),
    /// The commune map is unusable.
    #[error("commune map: {0}")]
    CommuneMap(String),
}

/// A problem with one line of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The separator; detected from the header line when `None`.
    pub delimiter: Option<u8>,
    /// Import the good lines and report the bad ones, instead of writing nothing.
    pub skip_bad: bool,
    /// Commune as written in the inventory (name, INSEE code…; compared case-insensitively) →
    /// commune id of the configuration.
    pub commune_map: HashMap<String, String>,
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The `[[cameras]]` entries, to append to the configuration.
    pub toml: String,
    /// Cameras written.
    pub cameras: usize,
    /// Lines left out (only with `skip_bad`).
    pub skipped: Vec<LineError>,
    /// The separator used.
    pub delimiter: u8,
    /// `UTF-8` or `Windows-1252`.
    pub encoding: &'static str,
    /// Things worth saying that are not errors (ignored columns…).
    pub warnings: Vec<String>,
}

/// A column of the inventory: its key and the header names it is known by (compared
/// lowercase, accents removed, spaces and dashes as `_`).
pub const COLUMNS: &[(&str, &[&str])] = &[
    ("id", &["id", "identifiant", "camera_id", "id_camera"]),
    ("name", &["name", "nom", "libelle", "camera"]),
    ("commune", &["commune", "ville", "city", "town"]),
    ("class", &["class", "classe", "type"]),
    (
        "address",
        &["address", "adresse", "localisation", "location"],
    ),
    ("onvif", &["onvif", "onvif_url", "url_onvif"]),
    (
        "rtsp_main",
        &[
            "rtsp_main",
            "main",
            "url_main",
            "main_url",
            "rtsp",
            "url",
            "rtsp_principal",
            "flux_principal",
            "url_principale",
        ],
    ),
    (
        "rtsp_sub",
        &[
            "rtsp_sub",
            "sub",
            "url_sub",
            "sub_url",
            "rtsp_secondaire",
            "flux_secondaire",
            "url_secondaire",
        ],
    ),
    ("username", &["username", "user", "utilisateur", "login"]),
    (
        "password_env",
        &[
            "password_env",
            "env_password",
            "mot_de_passe_env",
            "variable_mot_de_passe",
            "env",
        ],
    ),
    (
        "password",
        &["password", "mot_de_passe", "mdp", "pass", "pwd", "passwd"],
    ),
];

/// Header name → column key.
fn column_key(header: &str) -> Option<&'static str> {
    let norm: String = header
        .trim()
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'à' | 'â' | 'ä' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' => 'i',
            'ô' | 'ö' => 'o',
            'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            ' ' | '-' | '.' | '\'' => '_',
            c => c,
        })
        .collect();
    let norm = norm.trim_matches('_');
    COLUMNS
        .iter()
        .find(|(_, names)| names.contains(&norm))
        .map(|(k, _)| *k)
}

/// Windows-1252 → Unicode for 0x80..=0x9F (the rest is Latin-1).
const CP1252_80: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// The text of the file: UTF-8 (BOM removed), else Windows-1252.
fn decode(bytes: &[u8]) -> (String, &'static str) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), "UTF-8"),
        Err(_) => (
            bytes
                .iter()
                .map(|&b| match b {
                    0x80..=0x9F => CP1252_80[usize::from(b - 0x80)],
                    b => char::from(b),
                })
                .collect(),
            "Windows-1252",
        ),
    }
}

/// The separator of the header line: the most frequent of `;`, `,` and tab outside quotes
/// (`,` on a tie). French Excel writes `;`.
pub fn detect_delimiter(text: &str) -> u8 {
    let line = text.lines().next().unwrap_or("");
    let (mut quoted, mut counts) = (false, [0usize; 3]);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => counts[0] += 1,
            ';' if !quoted => counts[1] += 1,
            '\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = counts.iter().copied().max().unwrap_or(0);
    if best == 0 || counts[0] == best {
        b','
    } else if counts[1] == best {
        b';'
    } else {
        b'\t'
    }
}

/// A TOML basic string (quoted, escaped).
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// One good line of the inventory.
#[derive(Debug, Clone)]
struct Row {
    line: u64,
    id: String,
    name: String,
    commune: String,
    class: Option<&'static str>,
    address: Option<String>,
    onvif: Option<String>,
    main: Option<String>,
    sub: Option<String>,
    username: Option<String>,
    password_env: Option<String>,
}

impl Row {
    fn render(&self, out: &mut String) {
        out.push_str(&format!("\n# inventaire ligne {}", self.line));
        if let Some(a) = &self.address {
            // One comment line, whatever the cell held.
            let a: String = a
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            out.push_str(&format!(" — adresse : {a}"));
        }
        out.push_str(&format!(
            "\n[[cameras]]\nid = {}\nname = {}\ncommune = {}\n",
            q(&self.id),
            q(&self.name),
            q(&self.commune)
        ));
        if let Some(c) = self.class {
            out.push_str(&format!("class = {}\n", q(c)));
        }
        if let Some(o) = &self.onvif {
            out.push_str(&format!("onvif = {}\n", q(o)));
        }
        let has_sub = self.sub.is_some();
        for (name, url) in [("main", &self.main), ("sub", &self.sub)] {
            let Some(url) = url else { continue };
            out.push_str(&format!(
                "  [[cameras.streams]]\n  name = {}\n  url = {}\n",
                q(name),
                q(url)
            ));
            if let Some(u) = &self.username {
                out.push_str(&format!("  username = {}\n", q(u)));
            }
            if let Some(e) = &self.password_env {
                out.push_str(&format!("  password_env = {}\n", q(e)));
            }
            if has_sub {
                // The main stream is recorded, the sub-stream feeds the live wall.
                let role = if name == "main" { "record" } else { "live" };
                out.push_str(&format!("  role = {}\n", q(role)));
            }
        }
    }
}

fn class_of(cell: &str) -> Result<Option<&'static str>, String> {
    let c = cell.trim().to_lowercase().replace([' ', '_'], "-");
    Ok(Some(match c.as_str() {
        "" => return Ok(None),
        "close-up" | "closeup" | "gros-plan" | "grosplan" | "proche" => "close-up",
        "wide" | "large" | "ensemble" | "vue-large" | "general" | "générale" | "vue-générale" => {
            "wide"
        }
        "traffic" | "trafic" | "circulation" | "routier" => "traffic",
        _ => {
            return Err(format!(
                "class {:?} is not one of close-up (gros plan), wide (large), traffic (trafic)",
                cell.trim()
            ));
        }
    }))
}

/// Checks a URL cell: scheme among `schemes`, a host, and no credential in it.
fn url_of(column: &str, cell: &str, schemes: &[&str]) -> Result<Option<String>, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(None);
    }
    let u = url::Url::parse(cell).map_err(|e| {
        format!(
            "column {column}: not a URL ({e}): {}",
            crate::config::redact_url(cell)
        )
    })?;
    if u.password().is_some() || u.query_pairs().any(|(k, _)| is_credential_param(&k)) {
        return Err(format!(
            "column {column} holds a password: Vigie never writes passwords to its configuration; remove it from the URL, give the user in the username column and the name of an environment variable holding the password in password_env (the value is not shown)"
        ));
    }
    if !schemes.contains(&u.scheme()) {
        return Err(format!(
            "column {column}: the scheme must be {}, not {}:// ({})",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or "),
            u.scheme(),
            crate::config::redact_url(cell)
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("column {column}: the URL has no host"));
    }
    Ok(Some(cell.to_owned()))
}

fn env_name_ok(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Reads a commune map: a CSV of two columns, the commune as the inventory writes it and the
/// commune id of the configuration (a header line is allowed; separator detected).
pub fn parse_commune_map(bytes: &[u8]) -> Result<HashMap<String, String>, ImportError> {
    let (text, _) = decode(bytes);
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(detect_delimiter(&text))
        .from_reader(text.as_bytes());
    let mut map = HashMap::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| ImportError::CommuneMap(e.to_string()))?;
        let (Some(from), Some(to)) = (rec.get(0), rec.get(1)) else {
            return Err(ImportError::CommuneMap(format!(
                "line {}: two columns expected (the commune as written in the inventory, its id)",
                i + 1
            )));
        };
        let (from, to) = (from.trim(), to.trim());
        if i == 0 && validate_id(to).is_err() {
            continue; // a header
        }
        validate_id(to)
            .map_err(|e| ImportError::CommuneMap(format!("line {}: id {to:?} {e}", i + 1)))?;
        map.insert(from.to_lowercase(), to.to_owned());
    }
    Ok(map)
}

/// Imports an inventory against the existing configuration (`existing_toml`, its text).
pub fn import(
    bytes: &[u8],
    existing_toml: &str,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    // The existing configuration, with any environment variable taken as set: the machine
    // running the import need not hold the cameras' passwords (check-config on the recorder
    // checks them).
    let any_env = |_: &str| Some(String::new());
    let existing = Config::from_toml_str(existing_toml, "configuration", &any_env)
        .map_err(|e| ImportError::Existing(e.to_string()))?;
    let (text, encoding) = decode(bytes);
    let delimiter = opts.delimiter.unwrap_or_else(|| detect_delimiter(&text));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::None)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Header(format!("line 1 (header): {e}")))?
        .clone();
    let mut warnings = Vec::new();
    let mut col: HashMap<&'static str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        match column_key(h) {
            Some(k) if col.contains_key(k) => {
                return Err(ImportError::Header(format!(
                    "line 1 (header): two columns mean {k} ({:?} and {h:?})",
                    headers.get(col[k]).unwrap_or("")
                )));
            }
            Some(k) => {
                col.insert(k, i);
            }
            None if h.trim().is_empty() => {}
            None => warnings.push(format!("column {h:?} ignored (not a known column)")),
        }
    }
    let missing: Vec<&str> = ["id", "name", "commune"]
        .into_iter()
        .filter(|k| !col.contains_key(k))
        .collect();
    if !missing.is_empty() || !(col.contains_key("rtsp_main") || col.contains_key("onvif")) {
        let sep = match delimiter {
            b';' => "';'",
            b'\t' => "tab",
            _ => "','",
        };
        return Err(ImportError::Header(format!(
            "line 1 (header, separator {sep}): missing column(s) {}{}; the columns are id, name, commune, class, address, onvif, rtsp_main, rtsp_sub, username, password_env (French names accepted: identifiant, nom, classe, adresse, flux_principal, flux_secondaire, utilisateur, mot_de_passe_env)",
            missing.join(", "),
            if col.contains_key("rtsp_main") || col.contains_key("onvif") {
                ""
            } else {
                if missing.is_empty() {
                    "rtsp_main or onvif"
                } else {
                    ", rtsp_main or onvif"
                }
            }
        )));
    }
    if col.contains_key("password") {
        warnings.push(
            "the inventory has a password column: its values are never written (lines with one are refused); use password_env".into(),
        );
    }

    // Communes: id, the commune map, or the commune's name.
    let commune_of = |cell: &str| -> Option<String> {
        let c = cell.trim();
        if existing.communes.iter().any(|x| x.id == c) {
            return Some(c.to_owned());
        }
        let lower = c.to_lowercase();
        if let Some(id) = opts.commune_map.get(&lower) {
            return Some(id.clone());
        }
        existing
            .communes
            .iter()
            .find(|x| x.name.trim().to_lowercase() == lower)
            .map(|x| x.id.clone())
    };

    // Line numbers from byte offsets (the csv crate's own line count is off after `\r\n`).
    let newlines: Vec<u64> = text
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'\n')
        .map(|(i, _)| i as u64)
        .collect();
    let line_at = |p: Option<&csv::Position>| {
        // After `\r\n` a record's offset is its line's `\n`, which belongs to the line before.
        p.map_or(0, |p| {
            1 + newlines.partition_point(|&n| n <= p.byte()) as u64
        })
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut bad: Vec<LineError> = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for rec in reader.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = line_at(e.position());
                bad.push(LineError {
                    line,
                    message: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        let line = line_at(rec.position());
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if rec.len() != headers.len() {
            bad.push(LineError {
                line,
                message: format!(
                    "{} fields, the header has {} (a field holding the separator must be quoted)",
                    rec.len(),
                    headers.len()
                ),
            });
            continue;
        }
        let cells: HashMap<&'static str, String> = col
            .iter()
            .map(|(&k, &i)| (k, rec.get(i).unwrap_or("").trim().to_owned()))
            .collect();
        match row(line, &cells, &commune_of, &existing, &seen) {
            Ok(r) => {
                seen.insert(r.id.clone(), line);
                rows.push(r);
            }
            Err(messages) => bad.extend(
                messages
                    .into_iter()
                    .map(|message| LineError { line, message }),
            ),
        }
    }

    // The configuration's own rules over the existing configuration plus the new cameras.
    let base = existing.cameras.len();
    loop {
        let (toml, starts) = render(&rows);
        let combined = format!("{existing_toml}\n{toml}");
        let problems = match toml::from_str::<Config>(&combined) {
            // A key this version's configuration does not know (e.g. `onvif` before ONVIF
            // support): the line whose entry holds it.
            Err(e) => {
                let offset = e
                    .span()
                    .map(|s| s.start.saturating_sub(existing_toml.len() + 1));
                let row = offset
                    .filter(|_| e.span().is_some_and(|s| s.start > existing_toml.len()))
                    .map(|o| starts.partition_point(|&st| st <= o).saturating_sub(1));
                match row {
                    Some(i) if i < rows.len() => {
                        bad.push(LineError {
                            line: rows[i].line,
                            message: format!(
                                "not accepted by this version's configuration: {}",
                                e.message()
                            ),
                        });
                        rows.remove(i);
                        continue;
                    }
                    _ => {
                        return Err(ImportError::Existing(format!(
                            "the configuration with the imported cameras does not parse: {e}"
                        )));
                    }
                }
            }
            Ok(_) => match Config::from_toml_str(&combined, "import", &any_env) {
                Ok(_) => Vec::new(),
                Err(crate::config::ConfigError::Invalid { problems, .. }) => problems,
                Err(e) => {
                    return Err(ImportError::Existing(format!(
                        "the configuration with the imported cameras does not parse: {e}"
                    )));
                }
            },
        };
        let mut drop = Vec::new();
        for p in &problems {
            let idx = p
                .key
                .strip_prefix("cameras[")
                .and_then(|r| r.split(']').next())
                .and_then(|n| n.parse::<usize>().ok());
            match idx {
                Some(i) if i >= base && i - base < rows.len() => {
                    let r = &rows[i - base];
                    let key = p.key.split_once('.').map_or("", |(_, k)| k);
                    bad.push(LineError {
                        line: r.line,
                        message: format!("{key}: {}", p.message),
                    });
                    drop.push(i - base);
                }
                _ => {
                    return Err(ImportError::Existing(format!(
                        "{p} (a problem of the existing configuration: fix it first)"
                    )));
                }
            }
        }
        if drop.is_empty() {
            bad.sort_by_key(|e| e.line);
            if !bad.is_empty() && !opts.skip_bad {
                return Err(ImportError::BadLines(bad));
            }
            return Ok(Imported {
                cameras: rows.len(),
                toml,
                skipped: bad,
                delimiter,
                encoding,
                warnings,
            });
        }
        drop.sort_unstable();
        drop.dedup();
        for i in drop.into_iter().rev() {
            rows.remove(i);
        }
    }
}

/// The TOML of `rows`, and where each row's text starts in it.
fn render(rows: &[Row]) -> (String, Vec<usize>) {
    let mut out = String::from(
        "# Caméras importées par « vigie camera import » : à ajouter à la configuration.\n# Cameras imported by `vigie camera import`: append to the configuration.\n",
    );
    let mut starts = Vec::with_capacity(rows.len());
    for r in rows {
        starts.push(out.len());
        r.render(&mut out);
    }
    (out, starts)
}

/// Checks one line; every problem of the line at once.
fn row(
    line: u64,
    cells: &HashMap<&'static str, String>,
    commune_of: &dyn Fn(&str) -> Option<String>,
    existing: &Config,
    seen: &HashMap<String, u64>,
) -> Result<Row, Vec<String>> {
    let cell = |k: &str| cells.get(k).map_or("", String::as_str);
    let mut errs = Vec::new();
    if !cell("password").is_empty() {
        errs.push("a password in clear in the password column: Vigie never writes passwords to its configuration; put it in an environment variable of the recorder and give that variable's name in password_env (the value is not shown)".to_owned());
    }
    let id = cell("id").to_owned();
    if let Err(e) = validate_id(&id) {
        errs.push(format!(
            "id {id:?} {e} (ids are lowercase: a-z, 0-9, - and _)"
        ));
    } else if let Some(prev) = seen.get(&id) {
        errs.push(format!("id {id:?} is already on line {prev}"));
    } else if existing.cameras.iter().any(|c| c.id == id) {
        errs.push(format!(
            "id {id:?} is already a camera of the configuration"
        ));
    }
    let name = cell("name").to_owned();
    if name.is_empty() {
        errs.push("name is empty".into());
    } else if name.chars().count() > 200 {
        errs.push("name is longer than 200 characters".into());
    }
    let commune_cell = cell("commune");
    let commune = match commune_of(commune_cell) {
        Some(c) => c,
        None => {
            errs.push(if commune_cell.is_empty() {
                "commune is empty".into()
            } else {
                format!(
                    "unknown commune {commune_cell:?}: declare it under [[communes]] (id or name) or map it with --commune-map"
                )
            });
            String::new()
        }
    };
    let class = class_of(cell("class")).unwrap_or_else(|e| {
        errs.push(e);
        None
    });
    let mut url = |col: &str, schemes: &[&str]| {
        url_of(col, cell(col), schemes).unwrap_or_else(|e| {
            errs.push(e);
            None
        })
    };
    let main = url("rtsp_main", &["rtsp", "rtsps"]);
    let sub = url("rtsp_sub", &["rtsp", "rtsps"]);
    let onvif = url("onvif", &["http", "https"]);
    if cell("rtsp_main").is_empty() && !cell("rtsp_sub").is_empty() {
        errs.push("a sub-stream (rtsp_sub) without a main stream (rtsp_main)".into());
    }
    if cell("rtsp_main").is_empty() && cell("rtsp_sub").is_empty() && cell("onvif").is_empty() {
        errs.push("no stream: give rtsp_main (and rtsp_sub) or the ONVIF URL".into());
    }
    let username = Some(cell("username").to_owned()).filter(|s| !s.is_empty());
    let password_env = Some(cell("password_env").to_owned()).filter(|s| !s.is_empty());
    if let Some(e) = &password_env
        && !env_name_ok(e)
    {
        errs.push(format!(
            "password_env {e:?} is not an environment variable name (letters, digits and _, not starting with a digit)"
        ));
    }
    let address = Some(cell("address").to_owned()).filter(|s| !s.is_empty());
    if errs.is_empty() {
        Ok(Row {
            line,
            id,
            name,
            commune,
            class,
            address,
            onvif,
            main,
            sub,
            username,
            password_env,
        })
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[storage]
data_dir = "/var/lib/vigie"
[[communes]]
id = "versailles"
name = "Versailles"
[[communes]]
id = "le-chesnay"
name = "Le Chesnay-Rocquencourt"
[[cameras]]
id = "versailles-gare-rd"
name = "Gare"
commune = "versailles"
  [[cameras.streams]]
  name = "main"
  url = "rtsp://10.1.2.3/s"
"#;

    fn ok(csv: &[u8], opts: &ImportOptions) -> Imported {
        import(csv, CONFIG, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    fn bad_lines(csv: &[u8]) -> Vec<LineError> {
        match import(csv, CONFIG, &ImportOptions::default()) {
            Err(ImportError::BadLines(v)) => v,
            other => panic!("expected bad lines, got {other:?}"),
        }
    }

    /// The output appended to the configuration is a valid configuration with those cameras.
    fn combined(out: &Imported) -> Config {
        Config::from_toml_str(&format!("{CONFIG}\n{}", out.toml), "t", &|_| {
            Some("x".into())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", out.toml))
    }

    #[test]
    fn french_excel_export_with_bom_semicolons_and_quoted_fields_imports() {
        let csv = "\u{feff}Identifiant;Nom;Commune;Classe;Adresse;Flux principal;Flux secondaire;Utilisateur;Mot de passe env\n\
                   vers-parvis;\"Parvis; côté nord\";Versailles;gros plan;\"3, place de la Gare\";rtsp://10.0.0.1/101;rtsp://10.0.0.1/102;rec;VIGIE_CAM_A\n\
                   chesnay-rond-point;Rond-point \"Parly 2\";le chesnay-rocquencourt;trafic;;rtsp://10.0.0.2/101;;;\n";
        let out = ok(csv.as_bytes(), &ImportOptions::default());
        assert_eq!(out.delimiter, b';');
        assert_eq!(out.encoding, "UTF-8");
        assert_eq!(out.cameras, 2);
        let c = combined(&out);
        let cam = c.camera("vers-parvis").unwrap();
        assert_eq!(cam.name, "Parvis; côté nord");
        assert_eq!(cam.commune, "versailles");
        assert_eq!(cam.class, crate::config::CameraClass::CloseUp);
        assert_eq!(cam.live_stream().unwrap().name, "sub");
        assert_eq!(cam.record_stream().unwrap().name, "main");
        assert_eq!(cam.streams[0].password_env.as_deref(), Some("VIGIE_CAM_A"));
        assert!(
            out.toml.contains("adresse : 3, place de la Gare"),
            "{}",
            out.toml
        );
        let cam = c.camera("chesnay-rond-point").unwrap();
        assert_eq!(cam.commune, "le-chesnay");
        // Quotes inside an unquoted field are kept as written, and escaped in the TOML.
        assert_eq!(cam.name, "Rond-point \"Parly 2\"");
    }

    #[test]
    fn comma_separated_with_quoted_commas_and_an_embedded_newline() {
        let csv = "id,name,commune,address,rtsp_main\n\
                   a1,\"Gare, parvis\",versailles,\"1 rue X\nbâtiment B\",rtsp://h/1\n\
                   a2,Quai,versailles,,rtsp://h/2\n\
                   A3,Bad,versailles,,rtsp://h/3\n";
        let e = bad_lines(csv.as_bytes());
        // The record after a quoted newline keeps its true line number.
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 5, "{e:?}");
        assert!(e[0].message.contains("lowercase"), "{e:?}");
        let out = ok(
            csv.as_bytes(),
            &ImportOptions {
                skip_bad: true,
                ..Default::default()
            },
        );
        assert_eq!(out.delimiter, b',');
        assert_eq!(out.cameras, 2);
        assert_eq!(out.skipped.len(), 1);
        let c = combined(&out);
        assert_eq!(c.camera("a1").unwrap().name, "Gare, parvis");
        // One comment line for the address, whatever it held.
        assert!(
            out.toml.contains("adresse : 1 rue X bâtiment B\n"),
            "{}",
            out.toml
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number_and_nothing_is_written() {
        let csv = "id,name,commune,class,rtsp_main,rtsp_sub,password_env\n\
                   ok-1,One,versailles,wide,rtsp://h/1,,\n\
                   ok-1,Dup,versailles,,rtsp://h/2,,\n\
                   versailles-gare-rd,Clash,versailles,,rtsp://h/3,,\n\
                   x-4,Nowhere,paris,,rtsp://h/4,,\n\
                   x-5,Class,versailles,dome,rtsp://h/5,,\n\
                   x-6,Scheme,versailles,,http://h/6,,\n\
                   x-7,Short,versailles\n\
                   x-8,Sub only,versailles,,,rtsp://h/8,\n\
                   x-9,Env,versailles,,rtsp://h/9,,1BAD\n\
                   ,,,,,,\n\
                   x-11,,versailles,,rtsp://h/11,,\n";
        let e = bad_lines(csv.as_bytes());
        let lines: Vec<u64> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10, 12], "{e:#?}");
        let text = ImportError::BadLines(e.clone()).to_string();
        for needle in [
            "line 3: id \"ok-1\" is already on line 2",
            "line 4: id \"versailles-gare-rd\" is already a camera of the configuration",
            "line 5: unknown commune \"paris\"",
            "line 6: class \"dome\"",
            "line 7: column rtsp_main: the scheme must be rtsp:// or rtsps://",
            "line 8: 3 fields, the header has 7",
            "line 9: a sub-stream (rtsp_sub) without a main stream",
            "line 10: password_env \"1BAD\"",
            "line 12: name is empty",
            "nothing written",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }

    #[test]
    fn onvif_urls_are_written_as_the_cameras_onvif_key_or_reported_on_their_line() {
        let csv = "id,name,commune,onvif,rtsp_main\n\
                   o-1,Dome,versailles,http://10.0.0.9/onvif/device_service,rtsp://10.0.0.9/1\n\
                   o-2,Plain,versailles,,rtsp://10.0.0.8/1\n\
                   o-3,Bad,versailles,ftp://10.0.0.7/x,rtsp://10.0.0.7/1\n";
        let e = bad_lines(csv.as_bytes());
        assert!(
            e.iter()
                .any(|e| e.line == 4 && e.message.contains("http://")),
            "{e:?}"
        );
        let out = ok(
            csv.as_bytes(),
            &ImportOptions {
                skip_bad: true,
                ..Default::default()
            },
        );
        // This version's configuration may or may not know the camera's `onvif` key (issue 17,
        // item 1): either the camera is written with it and the whole passes validation, or its
        // line is reported, naming the key.
        let c = combined(&out);
        assert!(c.camera("o-2").is_some());
        match c.camera("o-1") {
            Some(_) => assert!(
                out.toml
                    .contains("onvif = \"http://10.0.0.9/onvif/device_service\""),
                "{}",
                out.toml
            ),
            None => assert!(
                out.skipped
                    .iter()
                    .any(|e| e.line == 2 && e.message.contains("onvif")),
                "{:?}",
                out.skipped
            ),
        }
    }

    #[test]
    fn line_numbers_are_right_with_crlf_line_ends() {
        let csv = "id;name;commune;rtsp_main\r\nok-1;A;versailles;rtsp://h/1\r\nBAD;B;versailles;rtsp://h/2\r\n";
        let e = bad_lines(csv.as_bytes());
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [3], "{e:?}");
    }

    #[test]
    fn passwords_are_refused_and_never_repeated() {
        let csv = "id,name,commune,rtsp_main,username,password,password_env\n\
                   p-1,A,versailles,rtsp://h/1,rec,hunter2,\n\
                   p-2,B,versailles,rtsp://rec:hunter3@h/2,,,\n\
                   p-3,C,versailles,rtsp://h/3?user=rec&password=hunter4,,,\n\
                   p-4,D,versailles,rtsp://h/4,rec,,VIGIE_CAM_D\n";
        let e = bad_lines(csv.as_bytes());
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 4]);
        let text = format!("{e:?}");
        assert!(!text.contains("hunter"), "{text}");
        assert!(text.contains("password_env"), "{text}");
        let out = ok(
            csv.as_bytes(),
            &ImportOptions {
                skip_bad: true,
                ..Default::default()
            },
        );
        assert_eq!(out.cameras, 1);
        assert!(!out.toml.contains("hunter") && !out.toml.contains("password ="));
        assert!(out.toml.contains("password_env = \"VIGIE_CAM_D\""));
        assert!(out.warnings.iter().any(|w| w.contains("password column")));
    }

    #[test]
    fn windows_1252_commune_map_and_missing_columns() {
        // "Né" and "Crème" in Windows-1252, separator ';'.
        let mut csv = b"id;nom;commune;url\nw-1;Cr\xe8me;N\xe9-sur-Seine;rtsp://h/1\n".to_vec();
        let map = parse_commune_map("commune,id\nNé-sur-Seine,le-chesnay\n".as_bytes()).unwrap();
        let out = ok(
            &csv,
            &ImportOptions {
                commune_map: map,
                ..Default::default()
            },
        );
        assert_eq!(out.encoding, "Windows-1252");
        let c = combined(&out);
        assert_eq!(c.camera("w-1").unwrap().name, "Crème");
        assert_eq!(c.camera("w-1").unwrap().commune, "le-chesnay");
        csv = b"id;nom;url\nw-1;A;rtsp://h/1\n".to_vec();
        let e = import(&csv, CONFIG, &ImportOptions::default()).unwrap_err();
        assert!(
            matches!(e, ImportError::Header(_))
                && e.to_string().contains("missing column(s) commune"),
            "{e}"
        );
    }

    #[test]
    fn problems_found_by_the_configuration_rules_point_at_their_line() {
        // A user name in the URL and another in the username column is fine for the
        // configuration; a password_env without any user name is not (its own rule).
        let csv = "id,name,commune,rtsp_main,password_env\n\
                   c-1,A,versailles,rtsp://h/1,VIGIE_X\n\
                   c-2,B,versailles,rtsp://h/2,\n";
        let e = bad_lines(csv.as_bytes());
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("without a username"), "{e:?}");
    }
}
