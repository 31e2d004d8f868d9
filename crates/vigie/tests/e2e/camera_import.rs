//! `vigie camera import` on the real binary: a generated 1,200-line inventory (French Excel
//! style: BOM, `;`, quoted fields holding `;` and `,`) becomes `[[cameras]]` entries that
//! `vigie check-config` accepts; bad lines are reported with their numbers and nothing is
//! written; `--skip-bad` imports the rest; a password column is refused without its value being
//! printed; ids already configured are refused. And `check-config` explains nonsense stream
//! roles.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vigie");
const COMMUNES: usize = 12;

fn config(dir: &Path) -> String {
    let mut t = format!("[storage]\ndata_dir = \"{}\"\n", dir.join("data").display());
    for i in 1..=COMMUNES {
        let _ = write!(
            t,
            "[[communes]]\nid = \"c{i:02}\"\nname = \"Commune n°{i}\"\n"
        );
    }
    t
}

/// Runs the binary; (success, stdout, stderr).
fn run(args: &[&str], envs: &[(String, String)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().cloned())
        .env_remove("VIGIE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1,200-line inventory: every third camera has a sub-stream, communes given by name,
/// names and addresses with `;` and `,` (quoted), classes in French.
fn inventory(n: usize) -> String {
    let mut t = String::from(
        "\u{feff}Identifiant;Nom;Commune;Classe;Adresse;ONVIF;Flux principal;Flux secondaire;Utilisateur;Mot de passe env\r\n",
    );
    for i in 1..=n {
        let c = (i % COMMUNES) + 1;
        let class = ["gros plan", "large", "trafic", ""][i % 4];
        let sub = if i % 3 == 0 {
            format!(
                "rtsp://10.{}.{}.{}/Streaming/Channels/102",
                c,
                i / 250,
                i % 250
            )
        } else {
            String::new()
        };
        let _ = write!(
            t,
            "cam-{i:04};\"Carrefour {i}; voie \"\"nord\"\"\";Commune n°{c};{class};\"{i}, avenue de Paris\";;rtsp://10.{c}.{}.{}/Streaming/Channels/101;{sub};recorder;VIGIE_CAM_C{c:02}\r\n",
            i / 250,
            i % 250
        );
    }
    t
}

#[test]
fn camera_import_of_a_1200_line_inventory_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigie.toml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    let inv = dir.path().join("inventaire.csv");
    std::fs::write(&inv, inventory(1200)).unwrap();
    let out = dir.path().join("cameras.toml");
    let cfg_s = cfg.to_str().unwrap();
    let (ok, _, err) = run(
        &[
            "camera",
            "import",
            inv.to_str().unwrap(),
            "--config",
            cfg_s,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("1200 camera(s) imported (separator ';', UTF-8)"),
        "{err}"
    );
    let toml = std::fs::read_to_string(&out).unwrap();
    assert_eq!(toml.matches("[[cameras]]").count(), 1200);
    assert_eq!(toml.matches("role = \"live\"").count(), 400);
    assert!(!toml.contains("password ="), "a password was written");
    // Never overwrites.
    let (ok, _, err) = run(
        &[
            "camera",
            "import",
            inv.to_str().unwrap(),
            "--config",
            cfg_s,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && err.contains("exists"), "{err}");

    // Appended to the configuration: check-config accepts it (with the passwords' variables
    // set, as on the recorder), and refuses it without them, naming the variable.
    let mut full = std::fs::read_to_string(&cfg).unwrap();
    full.push_str(&toml);
    std::fs::write(&cfg, &full).unwrap();
    let envs: Vec<(String, String)> = (1..=COMMUNES)
        .map(|c| (format!("VIGIE_CAM_C{c:02}"), "s3cret".to_owned()))
        .collect();
    let (ok, stdout, err) = run(&["check-config", cfg_s], &envs);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("12 commune(s), 1200 camera(s), 1600 stream(s)"),
        "{stdout}"
    );
    let (ok, _, err) = run(&["check-config", cfg_s], &[]);
    assert!(!ok && err.contains("VIGIE_CAM_C01 is not set"), "{err}");

    // The same inventory again: every id clashes with the configuration; nothing written.
    let out2 = dir.path().join("again.toml");
    let (ok, _, err) = run(
        &[
            "camera",
            "import",
            inv.to_str().unwrap(),
            "--config",
            cfg_s,
            "--out",
            out2.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok, "{err}");
    assert!(err.contains("1200 invalid line(s)"), "{err}");
    assert!(
        err.contains("line 2: id \"cam-0001\" is already a camera of the configuration"),
        "{err}"
    );
    assert!(!out2.exists());
}

#[test]
fn camera_import_reports_bad_lines_refuses_passwords_and_skips_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigie.toml");
    std::fs::write(&cfg, config(dir.path())).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let inv = dir.path().join("inv.csv");
    std::fs::write(
        &inv,
        "id,name,commune,rtsp_main,username,password,password_env\n\
         ok-1,\"Gare, parvis\",c01,rtsp://10.0.0.1/1,rec,,VIGIE_A\n\
         ok-1,Twice,c01,rtsp://10.0.0.1/2,,,\n\
         pw-3,Pass,c02,rtsp://10.0.0.1/3,rec,Tr0ub4dor&3,\n\
         short-4,Short\n\
         ok-5,Fine,Commune n°5,rtsp://10.0.0.1/5,,,\n",
    )
    .unwrap();
    let out = dir.path().join("out.toml");
    let args = [
        "camera",
        "import",
        inv.to_str().unwrap(),
        "--config",
        cfg_s,
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, _, err) = run(&args, &[]);
    assert!(!ok, "{err}");
    for needle in [
        "3 invalid line(s); nothing written",
        "line 3: id \"ok-1\" is already on line 2",
        "line 4: a password in clear",
        "line 5: 2 fields, the header has 7",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(
        !err.contains("Tr0ub4dor"),
        "the password was printed: {err}"
    );
    assert!(!out.exists(), "written despite bad lines");

    let mut skip = args.to_vec();
    skip.push("--skip-bad");
    let (ok, _, err) = run(&skip, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("skipped: line 4: a password in clear"),
        "{err}"
    );
    assert!(
        err.contains("2 camera(s) imported") && err.contains("3 line(s) skipped"),
        "{err}"
    );
    let toml = std::fs::read_to_string(&out).unwrap();
    assert!(
        !toml.contains("Tr0ub4dor") && !toml.contains("pw-3"),
        "{toml}"
    );
    let mut full = std::fs::read_to_string(&cfg).unwrap();
    full.push_str(&toml);
    std::fs::write(&cfg, &full).unwrap();
    let (ok, stdout, err) = run(
        &["check-config", cfg_s],
        &[("VIGIE_A".to_owned(), "x".to_owned())],
    );
    assert!(ok && stdout.contains("2 camera(s)"), "{stdout}{err}");
}

#[test]
fn check_config_explains_nonsense_stream_roles() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigie.toml");
    let cam = |roles: [&str; 2]| {
        format!(
            "{}[[cameras]]\nid = \"dome\"\nname = \"Dôme\"\ncommune = \"c01\"\n\
             [[cameras.streams]]\nname = \"main\"\nurl = \"rtsp://h/1\"\nrole = \"{}\"\n\
             [[cameras.streams]]\nname = \"sub\"\nurl = \"rtsp://h/2\"\nrole = \"{}\"\n",
            config(dir.path()),
            roles[0],
            roles[1]
        )
    };
    for (roles, needle) in [
        (["live", "live"], "camera \"dome\" has no stream to record"),
        (
            ["both", "live"],
            "camera \"dome\" has 2 streams with the live role (main, sub)",
        ),
        (["record", "wall"], "unknown variant `wall`"),
    ] {
        std::fs::write(&cfg, cam(roles)).unwrap();
        let (ok, _, err) = run(&["check-config", cfg.to_str().unwrap()], &[]);
        assert!(!ok, "{roles:?} accepted");
        assert!(err.contains(needle), "{roles:?}: {err}");
    }
    std::fs::write(&cfg, cam(["record", "live"])).unwrap();
    let (ok, _, err) = run(&["check-config", cfg.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
}
