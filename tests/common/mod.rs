//! Helpers shared by the test binaries that check `tracing` output.
//!
//! A test that installs a thread-local subscriber lives in a test binary of its own (or with
//! tests that all install one): tracing caches per-callsite interest process-wide, so a test
//! without a subscriber running at the same time could make it miss events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::sync::{Arc, Mutex};

/// One event: its message and its other fields, as text.
pub type Event = (String, BTreeMap<String, String>);

/// A subscriber that keeps every event.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<Event>>>);

impl Capture {
    /// Makes this the current thread's subscriber until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// The fields of the first event with this message (empty if none).
    pub fn find(&self, message: &str) -> BTreeMap<String, String> {
        self.events()
            .into_iter()
            .find(|(m, _)| m == message)
            .map(|(_, f)| f)
            .unwrap_or_default()
    }

    /// The values of `field`, in the order the events came.
    pub fn values(&self, field: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|(_, mut f)| f.remove(field))
            .collect()
    }

    /// Every event as one line of `message k=v k=v`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (message, fields) in self.events() {
            out.push_str(&message);
            for (k, v) in fields {
                let _ = write!(out, " {k}={v}");
            }
            out.push('\n');
        }
        out
    }
}

struct Fields<'a>(&'a mut Event);

impl Fields<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: String) {
        if field.name() == "message" {
            self.0 .0 = value;
        } else {
            self.0 .1.insert(field.name().to_owned(), value);
        }
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.to_owned());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut e = Event::default();
        event.record(&mut Fields(&mut e));
        self.0.lock().unwrap().push(e);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
