//! The spool on a real temporary directory: privacy, damage, resource shortages, restarts,
//! and the destinations' own delivery cursors.

use super::*;

const ONE: &[Destination] = &[Destination { name: "mqtt", kinds: &[EntryKind::Classification, EntryKind::Assessment] }];
const MQTT: Delivery = Delivery(0);

fn result_id(json: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(json).expect("JSON");
    v["result_id"].as_str().or(v["assessment_id"].as_str()).unwrap_or_default().to_string()
}

fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), max_bytes, max_age_hours: 24, fsync: false }
}

fn result(id: &str) -> Vec<u8> {
    format!(r#"{{"result_id":"{id}","pad":"{}"}}"#, "x".repeat(60)).into_bytes()
}

fn drain(spool: &Spool) -> Vec<String> {
    let mut ids = Vec::new();
    let mut at = None;
    while let Some(r) = spool.next_after(MQTT, at) {
        at = Some(r.number);
        ids.push(result_id(&r.json));
    }
    ids
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn open_err(dir: &Path) -> String {
    match Spool::open(&config(dir, 1 << 20), ONE) {
        Ok(_) => panic!("{} was accepted as a spool directory", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn directory_and_entries_are_private_whatever_the_umask() {
    // SAFETY: umask only sets the process's file creation mask (022: the usual default, under
    // which the spool used to make 0755 / 0644).
    unsafe { libc::umask(0o022) };
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("spool");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("open");
    let n = spool.append(EntryKind::Classification, &result("r1")).expect("append");
    assert_eq!(mode(&dir), 0o700, "the spool directory");
    assert_eq!(mode(&spool.path(n)), 0o600, "a spool entry");
    // An existing directory that others may read (the previous version made 0755) is made
    // private, and so are the entries in it.
    drop(spool);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(spool_path(&dir, n), std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("reopen");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&spool.path(n)), 0o600);
    assert_eq!(drain(&spool), ["r1"]);
}

/// Entry `n`'s file, found without opening the spool.
fn spool_path(dir: &Path, n: u64) -> PathBuf {
    let prefix = format!("{n:020}.");
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&prefix) && !f.ends_with(".tmp")))
        .expect("the entry's file")
}

#[test]
fn a_symlink_planted_at_the_next_temporary_name_is_not_followed_and_nothing_is_lost() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("spool");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("open");
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"not yours").expect("write");
    // The attacker plants links at the names the next two entries are written under (the
    // previous version's and this one's).
    for n in 1..=2u64 {
        for name in [format!("{n:020}.json.tmp"), format!("{n:020}.entry.tmp")] {
            std::os::unix::fs::symlink(&victim, dir.join(name)).expect("symlink");
        }
    }
    spool.append(EntryKind::Classification, &result("r1")).expect("append");
    spool.append(EntryKind::Classification, &result("r2")).expect("append");
    assert_eq!(std::fs::read(&victim).expect("read"), b"not yours", "the link was followed");
    assert_eq!(drain(&spool), ["r1", "r2"]);
    drop(spool);
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("reopen");
    assert_eq!(drain(&spool), ["r1", "r2"]);
}

#[test]
fn a_symlinked_or_shared_spool_directory_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let real = work.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = work.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let err = open_err(&link);
    assert!(err.contains(&link.display().to_string()) && err.contains("symbolic link"), "{err}");
    for m in [0o775, 0o777, 0o1777, 0o720] {
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(m)).expect("chmod");
        let err = open_err(&real);
        assert!(err.contains(&real.display().to_string()) && err.contains("writable by"), "{m:o}: {err}");
    }
}

#[test]
fn a_json_file_dropped_into_the_spool_is_set_aside_not_published() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("spool");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("open");
    spool.append(EntryKind::Classification, &result("r1")).expect("append");
    drop(spool);
    let evil = br#"{"assessment_id":"evil","top":[]}"#;
    std::fs::write(dir.join("00000000000000000007.json"), evil).expect("write");
    std::fs::write(dir.join("00000000000000000008.entry"), evil).expect("write");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("reopen");
    assert_eq!(drain(&spool), ["r1"]);
    assert_eq!(spool.stats().damaged, 2);
    let rejected = dir.join("rejected");
    assert_eq!(std::fs::read(rejected.join("00000000000000000007.json")).expect("kept aside"), evil);
    assert_eq!(mode(&rejected), 0o700);
}

#[test]
fn a_truncated_entry_is_set_aside_not_published() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("spool");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("open");
    spool.append(EntryKind::Classification, &result("r1")).expect("append");
    let n = spool.append(EntryKind::Classification, &result("r2")).expect("append");
    let whole = std::fs::read(spool.path(n)).expect("read");
    std::fs::write(spool.path(n), &whole[..whole.len() - 3]).expect("truncate");
    // Read back while running...
    assert_eq!(drain(&spool), ["r1"]);
    assert_eq!(spool.stats().damaged, 1);
    let name = spool.path(n).file_name().map(|s| s.to_owned()).expect("name");
    assert!(dir.join("rejected").join(&name).exists(), "kept aside for inspection");
    // ... and at start.
    let m = spool.append(EntryKind::Classification, &result("r3")).expect("append");
    let whole = std::fs::read(spool.path(m)).expect("read");
    drop(spool);
    std::fs::write(spool_path(&dir, m), &whole[..whole.len() / 2]).expect("truncate");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("reopen");
    assert_eq!(drain(&spool), ["r1"]);
    assert_eq!(spool.stats().damaged, 1);
}

#[test]
fn a_descriptor_shortage_is_retried_never_taken_for_damage() {
    if !crate::fsread::test_support::in_child("spool::tests::a_descriptor_shortage_is_retried_never_taken_for_damage") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&config(work.path(), 1 << 20), ONE).expect("open");
    spool.append(EntryKind::Classification, &result("r0")).expect("append");
    // No descriptor left: the write waits for one instead of losing the result.
    let held = crate::fsread::test_support::exhaust_descriptors();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(held);
    });
    spool.append(EntryKind::Classification, &result("r1")).expect("retried until a descriptor was free");
    release.join().expect("join");
    // Reading with no descriptor left is not damage: the entry stays.
    let held = crate::fsread::test_support::exhaust_descriptors();
    assert!(spool.next_after(MQTT, None).is_none());
    drop(held);
    assert_eq!(drain(&spool), ["r0", "r1"]);
    assert_eq!(spool.stats().damaged, 0);
}

#[test]
fn assessments_are_spooled_like_classifications_and_read_back_as_assessments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("open");
    spool.append(EntryKind::Classification, &result("r1")).expect("append");
    spool.append(EntryKind::Assessment, br#"{"assessment_id":"a1","frames":[]}"#).expect("append");
    // The spool stores bytes and the recorder's kind; it never looks inside.
    spool.append(EntryKind::Classification, b"not JSON at all").expect("append");
    drop(spool);
    // After a restart: both kinds come back, in order, each with its kind.
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("reopen");
    let a = spool.next_after(MQTT, None).expect("first");
    let b = spool.next_after(MQTT, Some(a.number)).expect("second");
    assert_eq!((result_id(&a.json).as_str(), a.kind), ("r1", EntryKind::Classification));
    assert_eq!((result_id(&b.json).as_str(), b.kind), ("a1", EntryKind::Assessment));
    let c = spool.next_after(MQTT, Some(b.number)).expect("third");
    assert_eq!((c.json.as_slice(), c.kind), (&b"not JSON at all"[..], EntryKind::Classification));
    assert!(spool.next_after(MQTT, Some(c.number)).is_none());
    assert_eq!(spool.stats().damaged, 0);
}

#[test]
fn entries_survive_a_restart_in_order_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("open");
    let a = spool.append(EntryKind::Classification, &result("a")).expect("append");
    spool.append(EntryKind::Classification, &result("b")).expect("append");
    spool.remove(MQTT, a);
    drop(spool);
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("reopen");
    spool.append(EntryKind::Classification, &result("c")).expect("append");
    assert_eq!(drain(&spool), ["b", "c"]);
    assert_eq!(spool.stats().depth, 2);
}

#[test]
fn a_full_spool_drops_the_oldest_and_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = result("0").len() as u64;
    let spool = Spool::open(&config(dir.path(), one * 3), ONE).expect("open");
    for id in ["1", "2", "3", "4", "5"] {
        spool.append(EntryKind::Classification, &result(id)).expect("append");
    }
    assert_eq!(drain(&spool), ["3", "4", "5"]);
    let s = spool.stats();
    assert_eq!((s.depth, s.dropped), (3, 2));
    assert!(matches!(spool.append(EntryKind::Classification, &vec![b'x'; (one * 4) as usize]), Err(SpoolError::TooLarge { .. })));
}

#[test]
fn a_slow_fsync_does_not_block_readers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::open(&SpoolConfig { fsync: true, ..config(dir.path(), 1 << 20) }, ONE).expect("open");
    spool.fsync_delay = Some(Duration::from_millis(800));
    let spool = std::sync::Arc::new(spool);
    spool.append(EntryKind::Classification, &result("first")).expect("append");
    let writer = {
        let spool = spool.clone();
        std::thread::spawn(move || spool.append(EntryKind::Classification, &result("slow")).expect("append"))
    };
    std::thread::sleep(Duration::from_millis(150)); // the writer is inside its fsync now
    let started = std::time::Instant::now();
    let _ = spool.stats();
    let first = spool.next_after(MQTT, None).expect("the first entry");
    assert!(spool.acknowledge(MQTT, first.number).is_some());
    let took = started.elapsed();
    assert!(!writer.is_finished(), "the writer was still in its fsync");
    assert!(took < Duration::from_millis(300), "readers waited {took:?} for a writer's fsync");
    writer.join().expect("join");
    assert_eq!(drain(&spool), ["slow"]);
}

#[test]
fn garbage_and_half_written_entries_are_set_aside_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("open");
    spool.append(EntryKind::Classification, &result("good")).expect("append");
    drop(spool);
    std::fs::write(dir.path().join("00000000000000000007.entry"), b"\x00\xffgarbage{").expect("write");
    std::fs::write(dir.path().join("00000000000000000008.entry"), b"").expect("write");
    std::fs::write(dir.path().join("00000000000000000009.entry.tmp"), b"LESIOND-SPOOL 1").expect("write");
    std::fs::write(dir.path().join("README"), b"not an entry").expect("write");
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("damage never stops the spool");
    assert_eq!(drain(&spool), ["good"]);
    // The incomplete write is removed; the rest is kept aside.
    assert_eq!(spool.stats().damaged, 4);
    let mut aside: Vec<String> = std::fs::read_dir(dir.path().join("rejected")).expect("rejected").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    aside.sort();
    assert_eq!(aside, ["00000000000000000007.entry", "00000000000000000008.entry", "README"]);
    // New entries are numbered after every entry seen.
    let n = spool.append(EntryKind::Classification, &result("new")).expect("append");
    assert!(n >= 2);
    // An entry damaged after indexing is set aside when read.
    std::fs::write(spool.path(n), b"{").expect("corrupt");
    assert_eq!(drain(&spool), ["good"]);
    assert_eq!(spool.stats().damaged, 5);
}

#[test]
fn the_previous_versions_entries_are_taken_once_at_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A spool the previous version left: plain JSON files, 0644, no format file.
    std::fs::write(dir.path().join("00000000000000000003.json"), result("old-a")).expect("write");
    std::fs::write(dir.path().join("00000000000000000004.json"), br#"{"assessment_id":"old-b"}"#).expect("write");
    std::fs::write(dir.path().join("00000000000000000005.json"), b"{\"result_id\":").expect("write");
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("open");
    let a = spool.next_after(MQTT, None).expect("first");
    let b = spool.next_after(MQTT, Some(a.number)).expect("second");
    assert_eq!((a.number, result_id(&a.json).as_str(), a.kind), (3, "old-a", EntryKind::Classification));
    assert_eq!((b.number, result_id(&b.json).as_str(), b.kind), (4, "old-b", EntryKind::Assessment));
    assert_eq!(spool.stats().damaged, 1, "the broken one");
    assert!(!dir.path().join("00000000000000000003.json").exists(), "converted");
    // Numbered after every name seen, the broken one's too.
    assert_eq!(spool.append(EntryKind::Classification, &result("new")).expect("append"), 6);
    drop(spool);
    // Once converted, a JSON file is foreign.
    std::fs::write(dir.path().join("00000000000000000009.json"), result("dropped")).expect("write");
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("reopen");
    assert_eq!(drain(&spool), ["old-a", "old-b", "new"]);
    assert_eq!(spool.stats().damaged, 1);
}

const TWO: &[Destination] = &[
    Destination { name: "mqtt", kinds: &[EntryKind::Classification, EntryKind::Assessment] },
    Destination { name: "archive", kinds: &[EntryKind::Assessment] },
];
const ARCHIVE: Delivery = Delivery(1);

fn ids(spool: &Spool, delivery: Delivery) -> Vec<String> {
    spool.read_batch(delivery, None, 100).iter().map(|r| result_id(&r.json)).collect()
}

#[test]
fn each_destination_has_its_own_cursor_and_an_entry_leaves_when_all_have_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&config(dir.path(), 1 << 20), TWO).expect("open");
    let c = spool.append(EntryKind::Classification, &result("c1")).expect("append");
    let a1 = spool.append(EntryKind::Assessment, br#"{"assessment_id":"a1"}"#).expect("append");
    let a2 = spool.append(EntryKind::Assessment, br#"{"assessment_id":"a2"}"#).expect("append");
    // The archive takes assessments only; MQTT takes everything.
    assert_eq!(ids(&spool, MQTT), ["c1", "a1", "a2"]);
    assert_eq!(ids(&spool, ARCHIVE), ["a1", "a2"]);
    // MQTT delivers everything while the archive is down: nothing leaves that the archive
    // still needs, and the archive's cursor is untouched.
    for n in [c, a1, a2] {
        assert!(spool.remove(MQTT, n).is_some());
    }
    assert!(spool.remove(MQTT, a1).is_none(), "acknowledged twice");
    assert!(!spool.has_after(MQTT, None));
    assert_eq!(ids(&spool, ARCHIVE), ["a1", "a2"]);
    assert_eq!((spool.stats().depth, spool.pending(MQTT), spool.pending(ARCHIVE)), (2, 0, 2));
    assert!(!spool.path(c).exists(), "the classification was MQTT's alone");
    // Restarts remember what MQTT acknowledged (through the compaction at each start too):
    // nothing is sent to it twice.
    let mut spool = spool;
    for _ in 0..2 {
        drop(spool);
        spool = Spool::open(&config(dir.path(), 1 << 20), TWO).expect("reopen");
        assert!(ids(&spool, MQTT).is_empty(), "MQTT's acknowledgements were lost");
        assert_eq!(ids(&spool, ARCHIVE), ["a1", "a2"]);
    }
    // The archive comes back: once it has both, the spool is empty, on disk too.
    assert!(spool.remove(ARCHIVE, a1).is_some());
    assert!(spool.remove(ARCHIVE, a2).is_some());
    assert!(spool.is_empty());
    drop(spool);
    let spool = Spool::open(&config(dir.path(), 1 << 20), TWO).expect("reopen");
    assert!(spool.is_empty());
    assert!(!dir.path().join("mqtt.acked").exists(), "acknowledgements compacted away");
}

#[test]
fn a_destination_added_later_gets_what_is_still_spooled_and_one_removed_is_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&config(dir.path(), 1 << 20), TWO).expect("open");
    let a = spool.append(EntryKind::Assessment, br#"{"assessment_id":"a1"}"#).expect("append");
    spool.remove(MQTT, a);
    drop(spool);
    // The archive is switched off: the entry has no one left to wait for.
    let spool = Spool::open(&config(dir.path(), 1 << 20), ONE).expect("reopen");
    assert!(ids(&spool, MQTT).is_empty());
    assert!(spool.is_empty(), "MQTT had it; the archive is gone");
    assert!(!dir.path().join("archive.acked").exists());
    assert_eq!(spool.stats().damaged, 0, "an acknowledgement file is not foreign");
}

/// An assessment's judged frame travels with it: written, read back byte for byte (after a
/// restart too), counted in the spool's size, and a damaged image sets the entry aside like a
/// damaged payload.
#[test]
fn an_image_travels_with_its_assessment_and_is_checked_like_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("spool");
    let image: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let json = br#"{"assessment_id":"a1","frames":[]}"#;
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("open");
    let n = spool.append_waiting(EntryKind::Assessment, json, Some(&image), &|_| true).expect("append");
    let plain = spool.append(EntryKind::Classification, &result("r1")).expect("append");
    assert_eq!(spool.stats().bytes, (json.len() + image.len() + result("r1").len()) as u64);
    drop(spool);
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("reopen");
    let back = spool.next_after(MQTT, None).expect("the assessment");
    assert_eq!((back.number, back.kind, back.json.as_slice(), back.image.as_deref()), (n, EntryKind::Assessment, &json[..], Some(&image[..])));
    assert_eq!(spool.next_after(MQTT, Some(n)).expect("the classification").image, None);
    // One bit flipped in the image: the entry is set aside, never delivered with a wrong frame.
    drop(spool);
    let path = spool_path(&dir, n);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).expect("write");
    let spool = Spool::open(&config(&dir, 1 << 20), ONE).expect("reopen");
    assert_eq!(spool.next_after(MQTT, None).map(|r| r.number), Some(plain));
    assert_eq!(spool.stats().damaged, 1);
}
