//! Real DICOM peers on free loopback ports, for the archive's tests: Orthanc (Debian's 1.10)
//! as the archive, dcmtk's wlmscpfs as the Modality Worklist, and a throwaway PKI made by
//! openssl for DICOM over TLS. Each is killed when dropped. A missing program fails the test
//! with the line that says how to install it (scripts/deps.sh does): CI must not pass by
//! skipping the archive.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lesiond::archive::Peer;
use serde_json::Value;

use super::{find_installed, free_port, wait_until};

const DEPS: &str = "install Debian's orthanc, dcmtk, dicom3tools and openssl (scripts/deps.sh does)";

/// `orthanc`, `wlmscpfs`, `dump2dcm`, `dciodvfy`, `openssl`, ...
pub fn dicom_program(name: &str) -> PathBuf {
    find_installed(name, DEPS)
}

/// Orthanc accepting only the uncompressed transfer syntaxes: an archive that refuses JPEG.
pub const UNCOMPRESSED_ONLY: &str = r#""AcceptedTransferSyntaxes": ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"],
  "DeflatedTransferSyntaxAccepted": false, "JpegTransferSyntaxAccepted": false,
  "Jpeg2000TransferSyntaxAccepted": false, "JpegLosslessTransferSyntaxAccepted": false,
  "JpipTransferSyntaxAccepted": false, "Mpeg2TransferSyntaxAccepted": false,
  "RleTransferSyntaxAccepted": false, "Mpeg4TransferSyntaxAccepted": false,
  "H265TransferSyntaxAccepted": false"#;

/// Waits for `port` to listen; panics with the server's log if it exits or never listens.
fn wait_for_port(port: u16, child: &mut Child, log: &Path, what: &str) {
    let mut exited = None;
    let up = wait_until(Duration::from_secs(20), || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    if let Some(status) = exited {
        panic!("{what} exited ({status}): {}", log());
    }
    assert!(up, "{what} did not listen on {port}: {}", log());
}

/// An Orthanc with its own storage, configuration and ports.
pub struct Orthanc {
    pub dir: tempfile::TempDir,
    pub aet: String,
    pub dicom_port: u16,
    pub http_port: u16,
    child: Option<Child>,
}

impl Orthanc {
    /// `extra`: more members of its JSON configuration, e.g. `"DicomCheckCalledAet": true`.
    pub fn start(extra: &str) -> Orthanc {
        let dir = tempfile::tempdir().expect("tempdir");
        let (dicom_port, http_port) = (free_port(), free_port());
        let aet = "ORTHANCTEST".to_string();
        let d = dir.path().display();
        let config = format!(
            r#"{{
  "Name": "lesiond test",
  "DicomAet": "{aet}",
  "DicomPort": {dicom_port},
  "HttpPort": {http_port},
  "StorageDirectory": "{d}/storage",
  "IndexDirectory": "{d}/index",
  "AuthenticationEnabled": false,
  {unknown}"RemoteAccessAllowed": false{sep}{extra}
}}"#,
            sep = if extra.trim().is_empty() { "" } else { ",\n  " },
            // A test may set it itself; JSON with a duplicate key is ambiguous.
            unknown = if extra.contains("UnknownSopClassAccepted") { "" } else { "\"UnknownSopClassAccepted\": true,\n  " },
        );
        std::fs::write(dir.path().join("orthanc.json"), config).expect("write orthanc.json");
        let mut o = Orthanc { dir, aet, dicom_port, http_port, child: None };
        o.spawn();
        o
    }

    fn spawn(&mut self) {
        let err = self.dir.path().join("orthanc.err");
        // Appended: a restarted Orthanc's log follows the first one's.
        let open = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p).expect("orthanc log");
        let mut child = Command::new(dicom_program("Orthanc"))
            .arg(self.dir.path().join("orthanc.json"))
            .stdout(Stdio::from(open(&self.dir.path().join("orthanc.log"))))
            .stderr(Stdio::from(open(&err)))
            .spawn()
            .expect("start Orthanc");
        wait_for_port(self.http_port, &mut child, &err, "Orthanc");
        wait_for_port(self.dicom_port, &mut child, &err, "Orthanc");
        self.child = Some(child);
        // The HTTP server may listen before the REST API answers.
        let up = wait_until(Duration::from_secs(20), || self.try_get("/system").is_some_and(|(code, _)| code == 200));
        assert!(up, "Orthanc /system did not answer: {}", self.log());
    }

    /// `kill -9`: no clean shutdown; its storage and index stay for `restart`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-KILL", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports, configuration and storage.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill9");
        self.spawn();
    }

    /// A minimal HTTP/1.0 GET against the REST API: (status code, body).
    pub fn try_get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..head_end]);
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, buf[head_end + 4..].to_vec()))
    }

    /// GET that must answer 200.
    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let (code, body) = self.try_get(path).unwrap_or_else(|| panic!("Orthanc REST did not answer GET {path}"));
        assert_eq!(code, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        body
    }

    pub fn get_json(&self, path: &str) -> Value {
        serde_json::from_slice(&self.get_bytes(path)).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The Orthanc ids of the instances it holds (empty while it is down).
    pub fn instance_ids(&self) -> Vec<String> {
        match self.try_get("/instances") {
            Some((200, body)) => serde_json::from_slice::<Vec<String>>(&body).unwrap_or_default(),
            _ => vec![],
        }
    }

    /// The archive as lesiond's network layer sees it.
    pub fn peer(&self) -> Peer {
        Peer {
            host: "127.0.0.1".into(),
            port: self.dicom_port,
            calling_ae: "LESIOND".into(),
            called_ae: self.aet.clone(),
            tls: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Its error log (Orthanc logs to stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.err")).unwrap_or_default()
    }

    /// The `[dicom]` section a daemon files into this archive with.
    pub fn dicom_section(&self, extra: &str) -> String {
        format!(
            "[dicom]\nenabled = true\nae_title = \"LESIOND\"\npeer_ae_title = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nsop_class = \"dermoscopic\"\ntimeout_secs = 10\nretry_max_secs = 2\n{extra}\n",
            self.aet, self.dicom_port
        )
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// dcmtk's worklist SCP over a folder of `.wl` files made with dump2dcm.
pub struct Worklist {
    pub dir: tempfile::TempDir,
    pub aet: String,
    pub port: u16,
    child: Child,
}

impl Worklist {
    /// `dumps`: dcmdump-style texts, one per worklist entry (`wl_dump`).
    pub fn start(dumps: &[String]) -> Worklist {
        let dir = tempfile::tempdir().expect("tempdir");
        let aet = "WLTEST".to_string();
        let ae_dir = dir.path().join(&aet);
        std::fs::create_dir_all(&ae_dir).expect("mkdir");
        std::fs::write(ae_dir.join("lockfile"), "").expect("lockfile");
        for (i, dump) in dumps.iter().enumerate() {
            let txt = dir.path().join(format!("item{i}.dump"));
            std::fs::write(&txt, dump).expect("write dump");
            let out = Command::new(dicom_program("dump2dcm")).arg(&txt).arg(ae_dir.join(format!("item{i}.wl"))).output().expect("dump2dcm");
            assert!(out.status.success(), "dump2dcm: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port();
        let log = dir.path().join("wlmscpfs.log");
        let mut child = Command::new(dicom_program("wlmscpfs"))
            .arg("-dfp")
            .arg(dir.path())
            .arg(port.to_string())
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("wl.err")).expect("log")))
            .spawn()
            .expect("start wlmscpfs");
        wait_for_port(port, &mut child, &log, "wlmscpfs");
        Worklist { dir, aet, port, child }
    }

    pub fn peer(&self) -> Peer {
        Peer { host: "127.0.0.1".into(), port: self.port, calling_ae: "LESIOND".into(), called_ae: self.aet.clone(), tls: None, timeout: Duration::from_secs(10) }
    }

    /// The `[dicom.worklist]` section a daemon queries this worklist with.
    pub fn section(&self) -> String {
        format!("[dicom.worklist]\nhost = \"127.0.0.1\"\nport = {}\npeer_ae_title = \"{}\"\n", self.port, self.aet)
    }
}

impl Drop for Worklist {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A worklist entry as a dcmdump text. wlmscpfs ignores (with a warning in its log) entries
/// missing Requested Procedure ID or the step's ID / performing physician / description.
pub fn wl_dump(accession: &str, patient_id: &str, name: &str, study_uid: &str) -> String {
    format!(
        "(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{accession}]
(0010,0010) PN [{name}]
(0010,0020) LO [{patient_id}]
(0010,0030) DA [19800101]
(0010,0040) CS [F]
(0020,000d) UI [{study_uid}]
(0032,1060) LO [Dermoscopy of lesion]
(0040,1001) SH [RP001]
(0040,0100) SQ (Sequence with undefined length)
(fffe,e000) na (Item with undefined length)
(0008,0060) CS [XC]
(0040,0001) AE [DERMCAM]
(0040,0002) DA [20261205]
(0040,0003) TM [0900]
(0040,0006) PN [Smith^Anna]
(0040,0007) LO [Dermoscopy]
(0040,0009) SH [SPS001]
(fffe,e00d) na (ItemDelimitationItem)
(fffe,e0dd) na (SequenceDelimitationItem)
"
    )
}

/// Runs openssl in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(dicom_program("openssl")).current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA, a server certificate for 127.0.0.1 / localhost, a client certificate, and a
/// second CA that signed neither.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

pub fn make_pki(dir: &Path) -> Pki {
    let ext_srv = "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                   keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
    let ext_cli = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n";
    std::fs::write(dir.join("srv.ext"), ext_srv).expect("write");
    std::fs::write(dir.join("cli.ext"), ext_cli).expect("write");
    for ca in ["ca", "otherca"] {
        let (key, crt, subj) = (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN=lesiond test {ca}"));
        openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
    }
    for (who, cn) in [("srv", "localhost"), ("cli", "LESIOND")] {
        let (key, csr, crt, ext, subj) = (format!("{who}.key"), format!("{who}.csr"), format!("{who}.crt"), format!("{who}.ext"), format!("/CN={cn}"));
        openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", &ext]);
    }
    Pki {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("srv.crt"),
        server_key: dir.join("srv.key"),
        client_cert: dir.join("cli.crt"),
        client_key: dir.join("cli.key"),
        other_ca: dir.join("otherca.crt"),
    }
}
