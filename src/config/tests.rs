//! The configuration's loading, validation and resolution, from text and an explicit environment.
use super::*;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_and_env(
        text,
        &ConfigOrigin::Embedded,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn embedded_demo_config_is_valid() {
    let c = load(DEMO_TOML, &[]).expect("demo config loads");
    assert_eq!(c.source.kind, SourceKind::Synthetic);
}

#[test]
fn production_config_is_valid() {
    let text = include_str!("../../config/lesiond.toml");
    let c = load(text, &[]).expect("production config loads");
    assert_eq!(c.source.kind, SourceKind::Camera);
    // The production file spells out the checks and the examination: it must say what the
    // defaults (measured in docs/examination.md) are, not a stale copy of them.
    assert_eq!(c.checks, ChecksConfig::default());
    assert_eq!(c.examination, ExaminationSettings::default());
    assert_eq!(c.viewer, ViewerConfig::default());
    assert!(c.moved_keys.is_empty(), "the shipped file uses no old key names: {:?}", c.moved_keys);
}

#[test]
fn a_viewer_on_the_network_needs_a_token_file() {
    let lan = [("LESIOND_VIEWER__LISTEN", "0.0.0.0:8080")];
    let err = load(DEMO_TOML, &lan).unwrap_err().to_string();
    assert!(err.contains("viewer.listen") && err.contains("viewer.token_file"), "{err}");
    let with_token = [lan[0], ("LESIOND_VIEWER__TOKEN_FILE", "/etc/lesiond/viewer-token")];
    assert!(load(DEMO_TOML, &with_token).is_ok());
    assert!(load(DEMO_TOML, &[lan[0], ("LESIOND_VIEWER__ENABLED", "false")]).is_ok(), "a disabled viewer listens nowhere");
    assert!(load(DEMO_TOML, &[("LESIOND_VIEWER__LISTEN", "[::1]:0")]).is_ok(), "IPv6 loopback");
    let err = load(DEMO_TOML, &[("LESIOND_VIEWER__LISTEN", "localhost")]).unwrap_err().to_string();
    assert!(err.contains("viewer.listen"), "{err}");
}

#[test]
fn the_viewer_limits_are_validated() {
    for (key, value) in [
        ("LESIOND_VIEWER__MAX_CONNECTIONS", "0"),
        ("LESIOND_VIEWER__MAX_CONNECTIONS_PER_CLIENT", "65"),
        ("LESIOND_VIEWER__HEADER_TIMEOUT_SECS", "0"),
        ("LESIOND_VIEWER__IDLE_TIMEOUT_SECS", "0"),
        ("LESIOND_VIEWER__MAX_FAILED_LOGINS", "0"),
        ("LESIOND_VIEWER__LOGIN_BLOCK_SECS", "0"),
    ] {
        let err = load(DEMO_TOML, &[(key, value)]).unwrap_err().to_string();
        let name = key.trim_start_matches("LESIOND_VIEWER__").to_lowercase();
        assert!(err.contains(&format!("viewer.{name}")), "{key}={value}: {err}");
    }
    let text = DEMO_TOML.replace("[viewer]\n", "[viewer]\nallowed_hosts = [\"station-3.clinic.lan\"]\n");
    assert!(load(&text, &[]).is_ok_and(|c| c.viewer.allowed_hosts == ["station-3.clinic.lan"]));
    let text = DEMO_TOML.replace("[viewer]\n", "[viewer]\nallowed_hosts = [\"http://x/\"]\n");
    assert!(load(&text, &[]).unwrap_err().to_string().contains("viewer.allowed_hosts"));
}

#[test]
fn env_overrides_nested_keys() {
    let c = load(
        DEMO_TOML,
        &[
            ("LESIOND_MQTT__PORT", "1884"),
            ("LESIOND_SOURCE__DIRECTORY__FPS", "2.5"),
            ("LESIOND_SOURCE__KIND", "directory"),
            ("LESIOND_DATA", "/not/a/config/key"),
        ],
    )
    .expect("overrides load");
    assert_eq!(c.mqtt.port, 1884);
    assert_eq!(c.source.directory.fps, 2.5);
    assert_eq!(c.source.kind, SourceKind::Directory);
}

#[test]
fn unknown_key_is_named() {
    let text = DEMO_TOML.replace("[mqtt]", "[mqtt]\nprot = 1");
    let err = load(&text, &[]).unwrap_err().to_string();
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn unknown_env_key_is_named() {
    let err = load(DEMO_TOML, &[("LESIOND_MQTT__PROT", "1")]).unwrap_err().to_string();
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let err = load(DEMO_TOML, &[("LESIOND_MQTT__PORT", "seventy")]).unwrap_err().to_string();
    assert!(err.contains("mqtt.port") || err.contains("port"), "{err}");
    let err = load(DEMO_TOML, &[("LESIOND_PIPELINE__QUEUE_CAPACITY", "0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("pipeline.queue_capacity"), "{err}");
    let err = load(DEMO_TOML, &[("LESIOND_STATION__ID", "a/b")]).unwrap_err().to_string();
    assert!(err.contains("station.id"), "{err}");
}

#[test]
fn broken_toml_is_an_error() {
    assert!(load("[station\nid = ", &[]).is_err());
}

#[test]
fn credentials_need_tls_off_loopback() {
    let remote = DEMO_TOML.replace("host = \"localhost\"", "host = \"10.1.2.3\"\nusername = \"u\"");
    assert!(load(&remote, &[]).unwrap_err().to_string().contains("allow_insecure_credentials"));
    assert!(load(&remote, &[("LESIOND_MQTT__ALLOW_INSECURE_CREDENTIALS", "true")]).is_ok());
    let local = DEMO_TOML.replace("host = \"localhost\"", "host = \"127.0.0.1\"\nusername = \"u\"");
    assert!(load(&local, &[("LESIOND_MQTT__PASSWORD", "pw")]).is_ok());
    // The password is never printed.
    let c = load(&local, &[("LESIOND_MQTT__PASSWORD", "hunter2")]).expect("loads");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn a_reload_applies_only_the_reloadable_part() {
    let running = load(DEMO_TOML, &[]).expect("loads");
    let new = load(
        DEMO_TOML,
        &[("LESIOND_STATION__ID", "renamed"), ("LESIOND_MQTT__PUBLISH_FRAMES", "true"), ("LESIOND_SOURCE__SYNTHETIC__FPS", "9"), ("LESIOND_PIPELINE__QUEUE_CAPACITY", "5")],
    )
    .expect("loads");
    let (applied, ignored) = running.reloaded(new);
    assert_eq!(ignored, ["[station]", "[mqtt]"]);
    assert_eq!(applied.station, running.station, "station.id needs a restart");
    assert_eq!(applied.mqtt, running.mqtt, "mqtt.publish_frames needs a restart");
    assert_eq!(applied.source.synthetic.fps, 9.0);
    assert_eq!(applied.pipeline.queue_capacity, 5);
    let (same, none) = running.reloaded(running.clone());
    assert_eq!((same, none.len()), (running, 0));
}

#[test]
fn focus_relative_min_is_read_under_examination() {
    let text = format!("{DEMO_TOML}\n[examination]\nfocus_relative_min = 0.5\n");
    let c = load(&text, &[]).expect("loads");
    assert_eq!(c.examination.focus_relative_min, 0.5);
    assert!(c.moved_keys.is_empty(), "{:?}", c.moved_keys);
    let c = load(DEMO_TOML, &[("LESIOND_EXAMINATION__FOCUS_RELATIVE_MIN", "0.4")]).expect("loads");
    assert_eq!(c.examination.focus_relative_min, 0.4);
    assert_eq!(load(DEMO_TOML, &[]).expect("loads").examination.focus_relative_min, 0.65, "the default");
}

#[test]
fn the_old_checks_focus_relative_min_still_works_and_warns() {
    let text = format!("{DEMO_TOML}\n[checks]\nfocus_min = 2.0\nfocus_relative_min = 0.5\n");
    for c in [
        load(&text, &[]).expect("the old key in the file loads"),
        load(DEMO_TOML, &[("LESIOND_CHECKS__FOCUS_RELATIVE_MIN", "0.5")]).expect("the old key in the environment loads"),
    ] {
        assert_eq!(c.examination.focus_relative_min, 0.5);
        let [moved] = c.moved_keys.as_slice() else { panic!("one warning: {:?}", c.moved_keys) };
        assert!(!moved.both_set);
        let warning = moved.to_string();
        assert!(warning.contains("checks.focus_relative_min") && warning.contains("examination.focus_relative_min"), "{warning}");
    }
}

#[test]
fn with_both_focus_relative_min_keys_the_new_one_wins_and_the_warning_says_so() {
    let text = format!("{DEMO_TOML}\n[checks]\nfocus_relative_min = 0.5\n[examination]\nfocus_relative_min = 0.7\n");
    let c = load(&text, &[]).expect("loads");
    assert_eq!(c.examination.focus_relative_min, 0.7);
    let [moved] = c.moved_keys.as_slice() else { panic!("one warning: {:?}", c.moved_keys) };
    assert!(moved.both_set);
    let warning = moved.to_string();
    assert!(warning.contains("using examination.focus_relative_min") && warning.contains("ignoring checks.focus_relative_min"), "{warning}");
    // The same from the environment, against the file's old key.
    let c = load(&text.replace("focus_relative_min = 0.7\n", ""), &[("LESIOND_EXAMINATION__FOCUS_RELATIVE_MIN", "0.8")]).expect("loads");
    assert_eq!((c.examination.focus_relative_min, c.moved_keys.len()), (0.8, 1));
}

#[test]
fn an_invalid_focus_relative_min_names_the_key() {
    let key_of = |r: Result<Config, ConfigError>| match r {
        Err(ConfigError::Invalid { invalid, .. }) => (invalid.key.clone(), invalid.to_string()),
        other => panic!("expected an invalid value, got {other:?}"),
    };
    let (key, message) = key_of(load(DEMO_TOML, &[("LESIOND_EXAMINATION__FOCUS_RELATIVE_MIN", "1.5")]));
    assert_eq!(key, "examination.focus_relative_min");
    assert!(message.contains("examination.focus_relative_min = 1.5"), "{message}");
    // Written under the old name: the message names it as written.
    let (key, message) = key_of(load(DEMO_TOML, &[("LESIOND_CHECKS__FOCUS_RELATIVE_MIN", "1.5")]));
    assert_eq!(key, "examination.focus_relative_min");
    assert!(message.contains("written as checks.focus_relative_min"), "{message}");
    let (key, message) = key_of(load(DEMO_TOML, &[("LESIOND_CHECKS__FOCUS_RELATIVE_MIN", "sharp")]));
    assert_eq!(key, "checks.focus_relative_min");
    assert!(message.contains("checks.focus_relative_min"), "{message}");
    let err = load(DEMO_TOML, &[("LESIOND_EXAMINATION__FOCUS_RELATIVE_MIN", "sharp")]).unwrap_err().to_string();
    assert!(err.contains("focus_relative_min"), "{err}");
}

#[test]
fn the_examination_mode_is_resolved_from_the_source() {
    let with = |env: &[(&str, &str)]| load(DEMO_TOML, env).expect("loads");
    let auto = [("LESIOND_EXAMINATION__MODE", "auto")];
    assert_eq!(with(&auto).examination.mode, ExaminationMode::Continuous, "synthetic frames are no examination");
    let batch = [auto[0], ("LESIOND_SOURCE__KIND", "directory")];
    assert_eq!(with(&batch).examination.mode, ExaminationMode::Continuous, "a batch replay keeps one result per file");
    let paced = [batch[0], batch[1], ("LESIOND_SOURCE__DIRECTORY__FPS", "15")];
    assert_eq!(with(&paced).examination.mode, ExaminationMode::Auto, "a paced replay is a video");
    let c = with(&[paced[0], paced[1], paced[2], ("LESIOND_MQTT__PUBLISH_FRAMES", "true")]);
    assert!(c.screen_previews && !with(&paced).screen_previews);
    assert_eq!(c.mqtt.client_id, format!("lesiond-{}", c.station.id));
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "LESIOND_STATION__ID", "LESIOND_SOURCE__KIND", "LESIOND_SOURCE__DIRECTORY__FPS",
        "LESIOND_SOURCE__CAMERA__WIDTH", "LESIOND_SOURCE__SYNTHETIC__FPS", "LESIOND_MODEL__THREADS",
        "LESIOND_MQTT__PORT", "LESIOND_MQTT__HOST", "LESIOND_MQTT__PROTOCOL", "LESIOND_PIPELINE__QUEUE_CAPACITY",
        "LESIOND_SPOOL__MAX_BYTES", "LESIOND_LOG__LEVEL", "LESIOND_MQTT__TLS__CA_FILE", "LESIOND_NOPE__X",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        // Arbitrary text as the config file: an error or a config, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = load(&text, &[]);
        }

        // The demo config with a line of it replaced by garbage.
        #[test]
        fn mutated_demo_config_never_panics(line in 0usize..40, junk in ".{0,60}") {
            let mut lines: Vec<&str> = DEMO_TOML.lines().collect();
            let at = line % lines.len();
            lines[at] = &junk;
            let _ = load(&lines.join("\n"), &[]);
        }

        // Arbitrary values for real keys from the environment: an error naming a key, or a
        // valid config.
        #[test]
        fn arbitrary_env_values_never_panic(picks in proptest::collection::vec((0usize..14, ".{0,30}"), 0..5)) {
            let env: Vec<(String, String)> = picks.iter().map(|(k, v)| (KEYS[*k].to_string(), v.clone())).collect();
            let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            match load(DEMO_TOML, &refs) {
                Ok(c) => prop_assert!(c.pipeline.queue_capacity >= 1 && c.mqtt.port >= 1),
                Err(e) => prop_assert!(e.to_string().starts_with("invalid configuration")),
            }
        }
    }
}

#[test]
fn dicom_is_checked_when_enabled_and_each_error_names_its_key() {
    let on = [
        ("LESIOND_DICOM__ENABLED", "true"),
        ("LESIOND_DICOM__HOST", "127.0.0.1"),
        ("LESIOND_DICOM__PEER_AE_TITLE", "ORTHANC"),
    ];
    let c = load(DEMO_TOML, &on).expect("a minimal archive");
    assert_eq!((c.dicom.ae_title.as_str(), c.dicom.port, c.dicom.sop_class), ("LESIOND", 104, DicomSopClass::Dermoscopic));
    assert!(!c.dicom.send_unassigned, "nothing unassigned lands in a patient archive by default");
    assert!(load(DEMO_TOML, &[("LESIOND_DICOM__PEER_AE_TITLE", "")]).is_ok(), "a disabled section may stay half filled in");
    for (key, value, named) in [
        ("LESIOND_DICOM__PEER_AE_TITLE", "", "dicom.peer_ae_title"),
        ("LESIOND_DICOM__AE_TITLE", "A_TITLE_OF_17_CHR", "dicom.ae_title"),
        ("LESIOND_DICOM__AE_TITLE", "BACK\\SLASH", "dicom.ae_title"),
        ("LESIOND_DICOM__HOST", " ", "dicom.host"),
        ("LESIOND_DICOM__PORT", "0", "dicom.port"),
        ("LESIOND_DICOM__TIMEOUT_SECS", "0", "dicom.timeout_secs"),
    ] {
        let mut env = on.to_vec();
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        let err = load(DEMO_TOML, &env).expect_err(key).to_string();
        assert!(err.contains(named), "{key}={value:?}: {err}");
    }
    let err = load(DEMO_TOML, &[on[0], on[1], on[2], ("LESIOND_DICOM__SOP_CLASS", "ct")]).expect_err("sop class").to_string();
    assert!(err.contains("sop_class") || err.contains("dermoscopic"), "{err}");
}

#[test]
fn the_context_lives_beside_the_spool_unless_told() {
    let c = load(DEMO_TOML, &[("LESIOND_SPOOL__DIR", "/var/lib/lesiond/spool")]).expect("loads");
    assert_eq!(c.context.dir, std::path::PathBuf::from("/var/lib/lesiond/context"));
    assert_eq!(c.context.idle_timeout, std::time::Duration::from_secs(1800));
    let c = load(DEMO_TOML, &[("LESIOND_CONTEXT__DIR", "/srv/ctx"), ("LESIOND_CONTEXT__IDLE_TIMEOUT_SECS", "0")]).expect("loads");
    assert_eq!((c.context.dir.to_str(), c.context.idle_timeout.is_zero()), (Some("/srv/ctx"), true));
}

#[test]
fn a_worklist_is_checked_even_with_the_archive_off() {
    let text = format!("{DEMO_TOML}\n[dicom.worklist]\nhost = \"\"\nport = 104\npeer_ae_title = \"WL\"\n");
    let err = load(&text, &[]).expect_err("an empty worklist host").to_string();
    assert!(err.contains("dicom.worklist.host"), "{err}");
    let text = format!("{DEMO_TOML}\n[dicom.worklist]\nhost = \"127.0.0.1\"\nport = 104\npeer_ae_title = \"WL\"\n");
    assert!(load(&text, &[]).is_ok_and(|c| !c.dicom.enabled && c.dicom.worklist.is_some()));
}
