//! TLS, credentials and the example ACL (config/mosquitto.acl), against a real mosquitto that
//! enforces them. Certificates are made by openssl in the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const STATION_PASSWORD: &str = "s3cret-station-pw";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, and certificates it signs for `names` (the first is also the server's SAN list).
fn make_ca(dir: &Path, ca: &str) {
    openssl(dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem"), "-days", "2", "-subj", &format!("/CN={ca}")]);
}

fn make_cert(dir: &Path, ca: &str, name: &str, san: &str) {
    openssl(dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", &format!("/CN={name}")]);
    std::fs::write(dir.join(format!("{name}.ext")), format!("subjectAltName={san}\n")).expect("ext");
    openssl(dir, &["x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial", "-out", &format!("{name}.pem"), "-days", "2", "-extfile", &format!("{name}.ext")]);
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "otherca");
        make_cert(d, "ca", "server", "DNS:localhost,IP:127.0.0.1");
        for client in ["station-1", "dashboard", "station-2"] {
            make_cert(d, "ca", client, &format!("DNS:{client}"));
        }
        let passwd = d.join("passwd");
        for (i, (user, pw)) in [("station-1", STATION_PASSWORD), ("dashboard", "dash-pw"), ("station-2", "other-pw")].iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            if i == 0 {
                c.arg("-c");
            }
            assert!(c.args(["-b"]).arg(&passwd).args([user, pw]).status().expect("mosquitto_passwd").success());
        }
        std::fs::write(d.join("station.pw"), format!("{STATION_PASSWORD}\n")).expect("pw");
        std::fs::write(d.join("wrong.pw"), "not-the-password\n").expect("pw");
        // mosquitto drops to its own user: it must be able to read the files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for e in std::fs::read_dir(d).expect("ls").flatten() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A broker enforcing TLS with client certificates, passwords and the example ACL.
    fn broker(&self) -> Broker {
        let port = free_port();
        let acl = repo().join("config/mosquitto.acl");
        let conf = format!(
            "listener {port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\nallow_anonymous false\npassword_file {pw}\nacl_file {acl}\nlog_dest stderr\nlog_type all\n",
            ca = self.path("ca.pem").display(),
            cert = self.path("server.pem").display(),
            key = self.path("server.key").display(),
            pw = self.path("passwd").display(),
            acl = acl.display(),
        );
        Broker::start_with(port, &conf, self.client_args("dashboard", "dash-pw"))
    }

    fn client_args(&self, user: &str, pw: &str) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        vec!["--cafile".into(), p("ca.pem"), "--cert".into(), p(&format!("{user}.pem")), "--key".into(), p(&format!("{user}.key")), "-u".into(), user.into(), "-P".into(), pw.into()]
    }

    /// The station's config: TLS with its client certificate and its password file.
    fn station_config(&self, port: u16, ca: &str, password_file: &str, work: &Path) -> String {
        let source = "[source]\nkind = \"synthetic\"\n\n[source.synthetic]\nfps = 5.0\nwidth = 320\nheight = 240\n";
        config_text("station-1", port, source, work).replace("host = \"127.0.0.1\"", "host = \"localhost\"").replace(
            "[spool]",
            &format!(
                "username = \"station-1\"\npassword_file = \"{pw}\"\n\n[mqtt.tls]\nca_file = \"{ca}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n\n[spool]",
                pw = self.path(password_file).display(),
                ca = self.path(ca).display(),
                cert = self.path("station-1.pem").display(),
                key = self.path("station-1.key").display(),
            ),
        )
    }
}

#[test]
fn tls_with_client_certificate_password_and_acl() {
    let pki = Pki::new();
    let broker = pki.broker();
    let work = tempfile::tempdir().expect("tempdir");
    let dashboard = Subscriber::start(&broker, "lesiond/#");
    let config = write_file(work.path(), "c.toml", &pki.station_config(broker.port, "ca.pem", "station.pw", work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(30), || dashboard.on("station-1/classification").len() >= 2), "{}", daemon.log_text());
    assert_eq!(broker.retained("lesiond/station-1/status").as_deref(), Some("online"));

    // Another station, with a valid certificate and password, may not command station-1
    // (the ACL drops it): station-1 stays unpaused. The intruder must really have connected and
    // sent its PUBLISH (mosquitto_pub exits 0: the broker took the packet), and the broker must
    // say it denied it — otherwise "not paused" would also hold for an intruder that never got in.
    let intruder: Vec<String> = pki.client_args("station-2", "other-pw");
    let intruder: Vec<&str> = intruder.iter().map(String::as_str).collect();
    let sent = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-i", "intruder-2", "-t", "lesiond/station-1/cmd/pause", "-m", "{}"])
        .args(&intruder)
        .output()
        .expect("mosquitto_pub");
    assert!(sent.status.success(), "the intruder connected and published: {}", String::from_utf8_lossy(&sent.stderr));
    let broker_log = || std::fs::read_to_string(broker.dir.path().join("mosquitto.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || broker_log().contains("Denied PUBLISH from intruder-2")),
        "the broker denied the intruder's command\n{}",
        broker_log()
    );
    // The dashboard may.
    assert!(publish(&broker, "lesiond/station-1/cmd/status", r#"{"request_id":"d1"}"#, &[]));
    assert!(wait_until(Duration::from_secs(5), || !dashboard.on("station-1/reply/status").is_empty()), "{}", daemon.log_text());
    let reply: serde_json::Value = serde_json::from_str(&dashboard.on("station-1/reply/status")[0].payload).expect("JSON");
    assert_eq!(reply["state"]["paused"], false, "the intruder's pause was refused by the ACL");
    assert!(dashboard.on("station-1/reply/pause").is_empty());

    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
    assert!(!daemon.log_text().contains(STATION_PASSWORD), "the password is never logged");
}

#[test]
fn wrong_password_is_a_clear_error() {
    let pki = Pki::new();
    let broker = pki.broker();
    let work = tempfile::tempdir().expect("tempdir");
    let config = write_file(work.path(), "c.toml", &pki.station_config(broker.port, "ca.pem", "wrong.pw", work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(wait_until(Duration::from_secs(10), || daemon.log_text().contains("refused the credentials")), "{}", daemon.log_text());
    assert!(daemon.child.try_wait().expect("try_wait").is_none(), "keeps running and retrying");
    assert_ne!(broker.retained("lesiond/station-1/status").as_deref(), Some("online"));
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
    assert!(!daemon.log_text().contains("not-the-password"));
}

#[test]
fn wrong_ca_is_a_clear_error() {
    let pki = Pki::new();
    let broker = pki.broker();
    let work = tempfile::tempdir().expect("tempdir");
    let config = write_file(work.path(), "c.toml", &pki.station_config(broker.port, "otherca.pem", "station.pw", work.path()));
    let mut daemon = Daemon::start(&config, &[], work.path());
    assert!(
        wait_until(Duration::from_secs(10), || daemon.log_text().contains("not signed by the CA in mqtt.tls.ca_file")),
        "{}",
        daemon.log_text()
    );
    daemon.signal("-TERM");
    assert!(daemon.wait(Duration::from_secs(8)).expect("exits").success());
}

#[test]
fn credentials_without_tls_to_a_remote_host_need_an_opt_in() {
    let work = tempfile::tempdir().expect("tempdir");
    let text = config_text("s", 1883, "[source]\nkind = \"synthetic\"\n", work.path())
        .replace("host = \"127.0.0.1\"", "host = \"broker.clinic.example\"\nusername = \"s\"");
    let path = write_file(work.path(), "c.toml", &text);
    let out = lesiond().args(["check", "--config"]).arg(&path).output().expect("check");
    assert_eq!(out.status.code(), Some(2), "refused as a configuration error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_insecure_credentials"));
    // With the opt-in the configuration is accepted: `check` goes on to the model and the
    // (unreachable) broker and fails there, with exit 1, not 2.
    let path = write_file(work.path(), "c2.toml", &text.replace("username = \"s\"", "username = \"s\"\nallow_insecure_credentials = true"));
    let out = lesiond().args(["check", "--config"]).arg(&path).output().expect("check");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("broker.clinic.example"), "it got as far as the broker: {all}");
    assert!(!all.contains("allow_insecure_credentials"), "{all}");
}
