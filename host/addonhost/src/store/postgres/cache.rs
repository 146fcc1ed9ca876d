//! What a transaction read of the rows its locks protect, kept to answer
//! the same read again without a round trip, and kept true by the
//! transaction's own writes.
//!
//! A write transaction holds the lock of every row it reads here (its
//! app's, a KV key's), so nobody else changes them until it ends; a
//! read-only one reads one snapshot. Either way a row read once reads the
//! same later, but for what the transaction itself writes: each write
//! method updates or forgets the entries it touches.

use std::collections::HashMap;

use crate::store::{App, Attachment, ConfigVar, Resource};

/// A read, as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    App(String),
    ResourceByUuid(String),
    ResourceByName(String),
    ResourceById(i64),
    ResourceByPartnerId(String, String),
    AttachmentsOf(i64),
    AttachmentByName(i64, String),
    Var(i64, String),
    VarsOf(i64),
    TakenOver(i64, String),
    Kv(String, String),
    KvSize(String, String),
    KvUsage(String),
    NextRelease(i64),
    NewIds(&'static str),
}

/// What a read answered.
#[derive(Debug, Clone)]
pub enum Val {
    App(Option<App>),
    /// Boxed: a resource is several times the size of any other answer.
    Resource(Option<Box<Resource>>),
    Attachments(Vec<Attachment>),
    Attachment(Option<Attachment>),
    Var(Option<ConfigVar>),
    Vars(Vec<ConfigVar>),
    Flag(bool),
    Bytes(Option<Vec<u8>>),
    Size(Option<i64>),
    Usage(i64, i64),
    Number(i64),
    Ids(Vec<i64>),
}

/// The reads kept.
#[derive(Default)]
pub struct Cache {
    entries: HashMap<Key, Val>,
}

impl Cache {
    pub fn get(&self, key: &Key) -> Option<&Val> {
        self.entries.get(key)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    pub fn set(&mut self, key: Key, val: Val) {
        self.entries.insert(key, val);
    }

    /// Forgets every entry `which` picks.
    pub fn forget(&mut self, which: impl Fn(&Key) -> bool) {
        self.entries.retain(|k, _| !which(k));
    }

    /// Forgets every resource read (a resource was written).
    pub fn forget_resources(&mut self) {
        self.forget(|k| {
            matches!(
                k,
                Key::ResourceByUuid(_)
                    | Key::ResourceByName(_)
                    | Key::ResourceById(_)
                    | Key::ResourceByPartnerId(..)
            )
        });
    }

    /// Forgets every attachment read (an attachment was written).
    pub fn forget_attachments(&mut self) {
        self.forget(|k| matches!(k, Key::AttachmentsOf(_) | Key::AttachmentByName(..)));
    }

    /// Forgets every config var read (vars were written by attachment).
    pub fn forget_vars(&mut self) {
        self.forget(|k| matches!(k, Key::Var(..) | Key::VarsOf(_) | Key::TakenOver(..)));
    }

    /// Takes one of the ids reserved for new rows of `table`.
    pub fn take_id(&mut self, table: &'static str) -> Option<i64> {
        match self.entries.get_mut(&Key::NewIds(table)) {
            Some(Val::Ids(ids)) => ids.pop(),
            _ => None,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
