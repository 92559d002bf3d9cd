//! The page's Server-Sent Events stream: what the station is on connect (about, the recent
//! assessments, the current state, the examination context), then every change as it happens. Each event's data is the
//! JSON the daemon already made (the `state` and `assessment` payloads of docs/mqtt.md), so the
//! screen shows exactly what MQTT subscribers get.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures::Stream;
use tokio::sync::{broadcast, watch};

use super::feed::{About, Feeds};
use crate::report::context::ExaminationContext;

/// How soon a browser retries after the stream drops (a daemon restart): EventSource
/// reconnects by itself; the page shows "reconnecting" meanwhile.
const RETRY: Duration = Duration::from_secs(2);

struct Cursor {
    states: watch::Receiver<Option<Vec<u8>>>,
    context: watch::Receiver<Option<ExaminationContext>>,
    show_patient: bool,
    about: watch::Receiver<Option<About>>,
    live: broadcast::Receiver<Arc<[u8]>>,
    pending: VecDeque<Event>,
}

/// A state event: the state's JSON, or `null` for the empty message continuous mode sends to
/// clear the retained state (no examinations, so no state to show).
fn state_event(json: &[u8]) -> Option<Event> {
    json_event("state", if json.is_empty() { b"null" } else { json })
}

fn json_event(kind: &str, json: &[u8]) -> Option<Event> {
    // The daemon's own serde_json output: UTF-8, one line.
    let text = std::str::from_utf8(json).ok()?;
    Some(Event::default().event(kind).data(text))
}

/// A context event: what the screen may show of the context in force (`null`: no patient
/// selected).
fn context_event(context: Option<&ExaminationContext>, show_patient: bool) -> Option<Event> {
    let json = serde_json::to_vec(&context.map(|c| c.for_screen(show_patient))).ok()?;
    json_event("context", &json)
}

fn about_event(about: &About) -> Option<Event> {
    serde_json::to_vec(about).ok().and_then(|json| json_event("about", &json))
}

/// One page's stream. Subscribes to the live assessments before reading the recent ones, so
/// none falls between the two (the page drops a repeat by its `assessment_id`).
pub fn stream(feeds: &Feeds) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let live = feeds.assessments.subscribe();
    let mut states = feeds.states.clone();
    let mut about = feeds.about.clone();
    let mut context = feeds.context.clone();
    let show_patient = feeds.show_patient;
    let mut pending = VecDeque::new();
    pending.push_back(Event::default().retry(RETRY).comment("lesiond station screen"));
    pending.extend(about.borrow_and_update().as_ref().and_then(about_event));
    pending.extend(feeds.assessments.recent().iter().filter_map(|a| json_event("assessment", a)));
    pending.extend(states.borrow_and_update().as_deref().and_then(state_event));
    pending.extend(context_event(context.borrow_and_update().as_ref(), show_patient));
    let cursor = Cursor { states, context, show_patient, about, live, pending };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            tokio::select! {
                changed = c.states.changed() => {
                    // The sender lives as long as the daemon runs: gone means shutting down.
                    changed.ok()?;
                    let event = c.states.borrow_and_update().as_deref().and_then(state_event);
                    c.pending.extend(event);
                }
                changed = c.context.changed() => {
                    changed.ok()?;
                    let event = context_event(c.context.borrow_and_update().as_ref(), c.show_patient);
                    c.pending.extend(event);
                }
                changed = c.about.changed() => {
                    changed.ok()?;
                    let event = c.about.borrow_and_update().as_ref().and_then(about_event);
                    c.pending.extend(event);
                }
                got = c.live.recv() => match got {
                    Ok(json) => c.pending.extend(json_event("assessment", &json)),
                    // A page that fell behind skips what it missed; the next event is current.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    })
}
