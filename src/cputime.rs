//! CPU time of the process and per thread, so `lesiond bench` can say where a frame's CPU goes
//! within one run instead of comparing the daemon with a bare-engine measurement taken minutes
//! apart.
//!
//! Linux only (`/proc/self/task/*/schedstat`, nanoseconds); elsewhere every figure is zero.

use std::collections::HashMap;
use std::time::Duration;

/// CPU time (user + system) the calling thread has used so far.
pub fn this_thread() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we pass; the clock id is a constant.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU time (user + system) of the whole process so far.
pub fn process() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The calling thread's id.
pub fn this_thread_id() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Names of lesiond's other threads, none of them the engine's. (The inference thread is not
/// here: a new thread inherits the name of the one that starts it, so an engine that starts its
/// worker pool at the first invoke — TF Lite does — names its workers "inference" too. The
/// inference thread is told apart by its id instead.)
const OWN_THREADS: &[&str] = &["capture", "tokio-rt-worker", "bench-rss"];

/// CPU time so far of every thread that is neither the main thread, `caller`, nor one of
/// lesiond's own: in a running pipeline with `caller` the inference thread, the inference
/// engine's worker pool (ONNX Runtime, TF Lite, XNNPACK).
pub fn library_threads(caller: u32) -> HashMap<u32, Duration> {
    let pid = std::process::id();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return HashMap::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if tid == pid || tid == caller || OWN_THREADS.contains(&comm.trim_end()) {
                return None;
            }
            // schedstat: time on the CPU (ns), time waiting to run (ns), timeslices.
            let ns: u64 = std::fs::read_to_string(task.path().join("schedstat")).ok()?.split_whitespace().next()?.parse().ok()?;
            Some((tid, Duration::from_nanos(ns)))
        })
        .collect()
}

/// CPU used by the library threads between two snapshots (threads started in between count
/// from zero).
pub fn library_threads_since(caller: u32, before: &HashMap<u32, Duration>) -> Duration {
    library_threads(caller)
        .into_iter()
        .map(|(tid, now)| now.saturating_sub(before.get(&tid).copied().unwrap_or_default()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc, Barrier};

    fn spin(d: Duration) {
        let t0 = this_thread();
        while this_thread() - t0 < d {}
    }

    #[test]
    fn library_threads_are_counted_and_lesionds_own_are_not() {
        let me = this_thread_id();
        let before = library_threads(me);
        // Each thread burns CPU, says its thread id, and stays alive until the snapshots are taken.
        let done = Arc::new(Barrier::new(3));
        let (tid_tx, tid_rx) = mpsc::channel();
        let start = |name: Option<&str>, busy: Duration| {
            let (done, tid_tx) = (done.clone(), tid_tx.clone());
            let builder = name.map_or_else(std::thread::Builder::new, |n| std::thread::Builder::new().name(n.into()));
            builder
                .spawn(move || {
                    spin(busy);
                    let _ = tid_tx.send((busy, this_thread_id()));
                    done.wait();
                })
                .expect("thread")
        };
        // Named like the inference thread, as an engine's workers started on it are.
        let library = start(Some("inference"), Duration::from_millis(50));
        let own = start(Some("capture"), Duration::from_millis(80));
        let tids: HashMap<Duration, u32> = tid_rx.iter().take(2).map(|(busy, tid)| (busy, tid)).collect();
        let now = library_threads(me);
        let since = library_threads_since(me, &before);
        done.wait();
        library.join().expect("join");
        own.join().expect("join");
        let library_cpu = now.get(&tids[&Duration::from_millis(50)]).copied().unwrap_or_default();
        assert!(library_cpu >= Duration::from_millis(50), "library thread counted {library_cpu:?}");
        assert!(!now.contains_key(&tids[&Duration::from_millis(80)]), "a thread named capture is lesiond's own");
        assert!(since >= library_cpu, "a thread started after the first snapshot counts from zero");
        assert!(!now.contains_key(&me), "the caller is not its own worker");
    }
}
