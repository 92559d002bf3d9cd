//! The network layer against real peers: Orthanc 1.10 (echo, store, presentation context
//! negotiation, rejections, connection errors), Orthanc over DICOM TLS with a throwaway CA, and
//! dcmtk's wlmscpfs as the Modality Worklist (C-FIND by accession number).

use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use lesiond::archive::association::{echo_peer, Association, NetError, Proposal, EXPLICIT_VR_LE, IMPLICIT_VR_LE, VERIFICATION};
use lesiond::archive::worklist::{find, WorklistItem, WorklistQuery};
use lesiond::archive::{Peer, TlsSettings};

use crate::common::dicom::{make_pki, wl_dump, Orthanc, Pki, Worklist, UNCOMPRESSED_ONLY};
use crate::common::free_port;

const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
/// A private (not standard) SOP class UID, under the dcmtk example root.
const UNKNOWN_SOP_CLASS: &str = "1.2.826.0.1.3680043.9999.77.1";
fn uid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("2.25.{}{}", nanos, N.fetch_add(1, Ordering::Relaxed))
}

/// A Secondary Capture RGB image, `side` x `side`, encoded Explicit VR LE (no file meta).
fn secondary_capture(sop_instance: &str, side: u16) -> Vec<u8> {
    let ui = |t, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
    let us = |t, v: u16| DataElement::new(t, VR::US, PrimitiveValue::from(v));
    let text = |t, vr, v: &str| DataElement::new(t, vr, PrimitiveValue::from(v));
    let n = side as usize * side as usize * 3;
    let pixels: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let obj = InMemDicomObject::from_element_iter([
        ui(tags::SOP_CLASS_UID, SECONDARY_CAPTURE),
        ui(tags::SOP_INSTANCE_UID, sop_instance),
        ui(tags::STUDY_INSTANCE_UID, &uid()),
        ui(tags::SERIES_INSTANCE_UID, &uid()),
        text(tags::PATIENT_NAME, VR::PN, "Test^Patient"),
        text(tags::PATIENT_ID, VR::LO, "DICOMNET1"),
        text(tags::MODALITY, VR::CS, "XC"),
        text(tags::CONVERSION_TYPE, VR::CS, "DI"),
        us(tags::SAMPLES_PER_PIXEL, 3),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::PLANAR_CONFIGURATION, 0),
        us(tags::ROWS, side),
        us(tags::COLUMNS, side),
        us(tags::BITS_ALLOCATED, 8),
        us(tags::BITS_STORED, 8),
        us(tags::HIGH_BIT, 7),
        us(tags::PIXEL_REPRESENTATION, 0),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)),
    ]);
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    out
}

fn sc_uncompressed() -> Proposal {
    Proposal::new(SECONDARY_CAPTURE, &[EXPLICIT_VR_LE, IMPLICIT_VR_LE])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_ok() {
    let orthanc = Orthanc::start("");
    echo_peer(&orthanc.peer()).await.unwrap();

    let mut a = Association::open(
        &orthanc.peer(),
        &[
            Proposal::new(VERIFICATION, &[IMPLICIT_VR_LE]),
            sc_uncompressed(),
        ],
    )
    .await
    .unwrap();
    a.echo().await.unwrap();
    a.echo().await.unwrap();
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_shows_up_in_orthanc() {
    let orthanc = Orthanc::start("");
    let mut a = Association::open(&orthanc.peer(), &[sc_uncompressed()])
        .await
        .unwrap();
    assert_eq!(a.accepted(SECONDARY_CAPTURE), Some(EXPLICIT_VR_LE));

    // 256x256 RGB: ~196 KB, many P-DATA fragments at Orthanc's maximum PDU length.
    let small = uid();
    let big = uid();
    for (sop_instance, side) in [(&small, 8u16), (&big, 256)] {
        let status = a
            .store(
                SECONDARY_CAPTURE,
                sop_instance,
                EXPLICIT_VR_LE,
                &secondary_capture(sop_instance, side),
            )
            .await
            .unwrap();
        assert!(status.is_success(), "{status}");
    }
    // A Part 10 file instead of a bare data set is refused before sending.
    let err = a
        .store(
            SECONDARY_CAPTURE,
            &uid(),
            EXPLICIT_VR_LE,
            &[0x02, 0x00, 0x00, 0x00, b'U', b'L'],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::InvalidRequest(_)), "{err}");
    a.release().await.unwrap();

    let instances = String::from_utf8_lossy(&orthanc.get_bytes("/instances?expand")).into_owned();
    assert!(instances.contains(&small), "{instances}");
    assert!(instances.contains(&big), "{instances}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpeg_baseline_in_its_own_context_is_accepted() {
    let orthanc = Orthanc::start("");
    let a = Association::open(
        &orthanc.peer(),
        &[
            Proposal::new(SECONDARY_CAPTURE, &[JPEG_BASELINE]),
            sc_uncompressed(),
        ],
    )
    .await
    .unwrap();
    assert!(a.accepts(SECONDARY_CAPTURE, JPEG_BASELINE));
    assert!(a.accepts(SECONDARY_CAPTURE, EXPLICIT_VR_LE));
    assert_eq!(a.accepted(SECONDARY_CAPTURE), Some(JPEG_BASELINE));
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncompressed_only_archive_refuses_the_jpeg_context() {
    let orthanc = Orthanc::start(UNCOMPRESSED_ONLY);
    let mut a = Association::open(
        &orthanc.peer(),
        &[
            Proposal::new(SECONDARY_CAPTURE, &[JPEG_BASELINE]),
            sc_uncompressed(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(a.accepted(SECONDARY_CAPTURE), Some(EXPLICIT_VR_LE));
    assert!(!a.accepts(SECONDARY_CAPTURE, JPEG_BASELINE));

    // Sending in the refused pair fails before anything goes on the wire, and says why.
    let sop = uid();
    let err = a
        .store(
            SECONDARY_CAPTURE,
            &sop,
            JPEG_BASELINE,
            &secondary_capture(&sop, 8),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, NetError::ContextRefused { .. }), "{msg}");
    assert!(
        msg.contains("Secondary Capture") && msg.contains("JPEG Baseline"),
        "{msg}"
    );
    // The association is still usable.
    let status = a
        .store(
            SECONDARY_CAPTURE,
            &sop,
            EXPLICIT_VR_LE,
            &secondary_capture(&sop, 8),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status}");
    a.release().await.unwrap();

    // Only the JPEG context proposed: nothing accepted, the association is not opened.
    let err = Association::open(
        &orthanc.peer(),
        &[Proposal::new(SECONDARY_CAPTURE, &[JPEG_BASELINE])],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, NetError::ContextRefused { .. }), "{err}");
    eprintln!("{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_called_ae_title_is_rejected_in_words() {
    let orthanc = Orthanc::start(r#""DicomCheckCalledAet": true"#);
    let mut peer = orthanc.peer();
    peer.called_ae = "NOTTHEPACS".into();
    let err = echo_peer(&peer).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, NetError::Rejected { .. }), "{msg}");
    assert!(msg.contains("called AE title not recognized"), "{msg}");
    assert!(!err.is_transient());
    // The right one still works.
    echo_peer(&orthanc.peer()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_cannot_connect() {
    let port = free_port();
    let peer = Peer {
        host: "127.0.0.1".into(),
        port,
        calling_ae: "LESIOND".into(),
        called_ae: "PACS".into(),
        tls: None,
        timeout: Duration::from_secs(5),
    };
    let err = echo_peer(&peer).await.unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(matches!(err, NetError::Connect { .. }), "{msg}");
    assert!(
        msg.starts_with(&format!(
            "cannot connect to the archive at 127.0.0.1:{port}"
        )),
        "{msg}"
    );
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_times_out() {
    // Accepts the TCP connection, never answers the A-ASSOCIATE-RQ.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(sock);
    });
    let peer = Peer {
        host: "127.0.0.1".into(),
        port,
        calling_ae: "LESIOND".into(),
        called_ae: "PACS".into(),
        tls: None,
        timeout: Duration::from_millis(700),
    };
    let started = std::time::Instant::now();
    let err = echo_peer(&peer).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        err.to_string(),
        "timed out after 1 s while opening the association"
    );
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sop_class_not_accepted_is_clear() {
    let orthanc = Orthanc::start(r#""UnknownSopClassAccepted": false"#);
    let mut a = Association::open(
        &orthanc.peer(),
        &[
            Proposal::new(VERIFICATION, &[IMPLICIT_VR_LE]),
            Proposal::new(UNKNOWN_SOP_CLASS, &[EXPLICIT_VR_LE, IMPLICIT_VR_LE]),
        ],
    )
    .await
    .unwrap();
    // The association succeeded, with that context silently refused.
    assert_eq!(a.accepted(UNKNOWN_SOP_CLASS), None);
    let sop = uid();
    let err = a
        .store(
            UNKNOWN_SOP_CLASS,
            &sop,
            EXPLICIT_VR_LE,
            &secondary_capture(&sop, 8),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("refused the presentation context") && msg.contains(UNKNOWN_SOP_CLASS),
        "{msg}"
    );
    a.echo().await.unwrap();
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_refusing_a_data_set_gives_a_failure_status() {
    let orthanc = Orthanc::start("");
    let mut a = Association::open(&orthanc.peer(), &[sc_uncompressed()])
        .await
        .unwrap();
    // A data set whose SOP Instance UID disagrees with the command: Orthanc answers with a
    // failure status (0xA900) rather than storing it.
    let sop = uid();
    let other = uid();
    let result = a
        .store(
            SECONDARY_CAPTURE,
            &sop,
            EXPLICIT_VR_LE,
            &secondary_capture(&other, 8),
        )
        .await;
    eprintln!("mismatched instance UID: {result:?}");
    let status = result.unwrap();
    assert!(!status.is_stored(), "{status}");
    assert_eq!(
        status.to_string(),
        "0xA900 error: data set does not match SOP class"
    );
    a.release().await.unwrap();
    eprintln!(
        "{}",
        orthanc
            .log()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// --- DICOM over TLS

fn tls_orthanc(pki: &Pki, client_cert_required: bool) -> Orthanc {
    Orthanc::start(&format!(
        r#""DicomTlsEnabled": true,
  "DicomTlsCertificate": "{}",
  "DicomTlsPrivateKey": "{}",
  "DicomTlsTrustedCertificates": "{}",
  "DicomTlsRemoteCertificateRequired": {client_cert_required}"#,
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    ))
}

fn tls_peer(o: &Orthanc, settings: TlsSettings) -> Peer {
    Peer {
        tls: Some(settings),
        ..o.peer()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_tls_with_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let orthanc = tls_orthanc(&pki, true);
    let with_cert = TlsSettings {
        ca_file: Some(pki.ca.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        server_name: None,
    };
    echo_peer(&tls_peer(&orthanc, with_cert.clone()))
        .await
        .unwrap();
    // By DNS name instead of the IP SAN.
    let by_name = TlsSettings {
        server_name: Some("localhost".into()),
        ..with_cert.clone()
    };
    echo_peer(&tls_peer(&orthanc, by_name)).await.unwrap();

    // Without a client certificate, the archive refuses the handshake.
    let without = TlsSettings {
        client_cert: None,
        client_key: None,
        ..with_cert.clone()
    };
    let err = echo_peer(&tls_peer(&orthanc, without)).await.unwrap_err();
    eprintln!("no client certificate: {err}");

    // An archive certificate from another CA is not trusted.
    let wrong_ca = TlsSettings {
        ca_file: Some(pki.other_ca.clone()),
        ..with_cert.clone()
    };
    let err = echo_peer(&tls_peer(&orthanc, wrong_ca)).await.unwrap_err();
    eprintln!("wrong CA: {err}");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");

    // A name the certificate does not carry.
    let wrong_name = TlsSettings {
        server_name: Some("pacs.example".into()),
        ..with_cert.clone()
    };
    let err = echo_peer(&tls_peer(&orthanc, wrong_name))
        .await
        .unwrap_err();
    eprintln!("wrong name: {err}");
    assert!(matches!(err, NetError::Tls { .. }), "{err}");

    // Plain DICOM to the TLS port.
    let err = echo_peer(&orthanc.peer()).await.unwrap_err();
    eprintln!("plain to TLS port: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_tls_without_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let orthanc = tls_orthanc(&pki, false);
    let settings = TlsSettings {
        ca_file: Some(pki.ca.clone()),
        client_cert: None,
        client_key: None,
        server_name: None,
    };
    echo_peer(&tls_peer(&orthanc, settings.clone()))
        .await
        .unwrap();

    // A missing CA file is a settings error naming the file.
    let missing = TlsSettings {
        ca_file: Some(dir.path().join("nope.pem")),
        ..settings
    };
    let err = echo_peer(&tls_peer(&orthanc, missing)).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, NetError::TlsConfig { .. }), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}

// --- Modality Worklist

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_by_accession_number() {
    let wl = Worklist::start(&[
        wl_dump(
            "ACC001",
            "PID123",
            "Doe^Jane",
            "1.2.826.0.1.3680043.8.498.1",
        ),
        wl_dump(
            "ACC002",
            "PID456",
            "Roe^Richard",
            "1.2.826.0.1.3680043.8.498.2",
        ),
    ]);
    let items = find(
        &wl.peer(),
        &WorklistQuery {
            accession_number: "ACC001",
            modality: Some("XC"),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        items,
        vec![WorklistItem {
            patient_id: "PID123".into(),
            patient_name: Some("Doe^Jane".into()),
            birth_date: Some("19800101".into()),
            sex: Some("F".into()),
            accession_number: "ACC001".into(),
            study_instance_uid: Some("1.2.826.0.1.3680043.8.498.1".into()),
            requested_procedure: Some("Dermoscopy of lesion".into()),
        }]
    );
    // Any modality (universal matching) finds it too.
    let items = find(
        &wl.peer(),
        &WorklistQuery {
            accession_number: "ACC002",
            modality: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].patient_id, "PID456");
    // Another modality does not.
    let items = find(
        &wl.peer(),
        &WorklistQuery {
            accession_number: "ACC002",
            modality: Some("CT"),
        },
    )
    .await
    .unwrap();
    assert!(items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_accession_number_is_empty() {
    let wl = Worklist::start(&[wl_dump("ACC001", "PID123", "Doe^Jane", "1.2.3.4")]);
    let items = find(
        &wl.peer(),
        &WorklistQuery {
            accession_number: "NOPE42",
            modality: Some("XC"),
        },
    )
    .await
    .unwrap();
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_accession_numbers_give_two_items() {
    let wl = Worklist::start(&[
        wl_dump("ACC009", "PID1", "Doe^Jane", "1.2.3.4.1"),
        wl_dump("ACC009", "PID2", "Doe^John", "1.2.3.4.2"),
    ]);
    let mut items = find(
        &wl.peer(),
        &WorklistQuery {
            accession_number: "ACC009",
            modality: Some("XC"),
        },
    )
    .await
    .unwrap();
    items.sort_by(|a, b| a.patient_id.cmp(&b.patient_id));
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].patient_id, "PID1");
    assert_eq!(items[1].patient_id, "PID2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_called_ae_title_is_rejected() {
    let wl = Worklist::start(&[wl_dump("ACC001", "PID123", "Doe^Jane", "1.2.3.4")]);
    let mut peer = wl.peer();
    peer.called_ae = "NOSUCHWL".into();
    let err = find(
        &peer,
        &WorklistQuery {
            accession_number: "ACC001",
            modality: None,
        },
    )
    .await
    .unwrap_err();
    eprintln!("{err}");
    assert!(
        err.to_string().contains("called AE title not recognized"),
        "{err}"
    );
}
