//! The chain's encoding: canonical JSON, entry hashes, signed checkpoints, and the walk
//! that checks them. Pure functions; the store is in the parent module.
//!
//! - An entry is the canonical JSON of `{"chain", "seq", "event"}`: object keys sorted by
//!   code point, no whitespace, numbers and strings as `serde_json` writes them.
//! - Its hash is `SHA-256("saas-audit/v1\n" ‖ previous hash ‖ "\n" ‖ entry)` in lowercase
//!   hex; the first entry's previous hash is [`GENESIS`].
//! - Each entry also carries a MAC of its hash, `HMAC-SHA256(mac key, hash)` in hex: without
//!   the audit key, an entry cannot be rewritten, even with every later hash recomputed.
//! - A checkpoint is an Ed25519 signature over
//!   `"saas-audit-checkpoint/v1\n" ‖ chain ‖ "\n" ‖ seq ‖ "\n" ‖ hash ‖ "\n" ‖ signed_at_ms`.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The previous hash of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `value` as canonical JSON: object keys sorted, no whitespace.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, &map[key]);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The hash of an entry whose canonical text is `entry`, following `previous`.
pub fn entry_hash(previous: &str, entry: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"saas-audit/v1\n");
    hasher.update(previous.as_bytes());
    hasher.update(b"\n");
    hasher.update(entry.as_bytes());
    hex::encode(hasher.finalize())
}

/// The audit key: an Ed25519 key that signs checkpoints and a MAC key for entries, both from
/// one seed derived from the server's key-encryption key, so every server sharing that key
/// signs alike and whoever holds only the database can forge neither.
#[derive(Clone)]
pub struct AuditKey {
    signing: SigningKey,
    mac: [u8; 32],
    id: String,
}

impl AuditKey {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&hmac(seed, b"checkpoint signing key"));
        let mac = hmac(seed, b"entry mac key");
        let id = key_id(&signing.verifying_key());
        Self { signing, mac, id }
    }

    /// The MAC of an entry's hash, hex.
    pub fn entry_mac(&self, hash: &str) -> String {
        hex::encode(hmac(&self.mac, hash.as_bytes()))
    }

    /// Whether `mac` is the MAC of `hash` (compared in constant time).
    pub fn mac_matches(&self, hash: &str, mac: &str) -> bool {
        use hmac::Mac;
        let Ok(given) = hex::decode(mac) else { return false };
        let mut check = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.mac).expect("any key length");
        check.update(hash.as_bytes());
        check.verify_slice(&given).is_ok()
    }

    /// The key's id: the first 16 hex digits of the SHA-256 of its public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key, base64url: what an outside verifier needs.
    pub fn public_key(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes())
    }

    /// Signs the checkpoint of `chain` at `seq` with `hash`; base64url.
    pub fn sign(&self, point: &Checkpoint) -> String {
        use base64::Engine;
        let signature = self.signing.sign(point.message().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.to_bytes())
    }

    /// Whether `signature` is this key's signature of `point`.
    pub fn verifies(&self, point: &Checkpoint, signature: &str) -> bool {
        use base64::Engine;
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else { return false };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else { return false };
        self.signing.verifying_key().verify(point.message().as_bytes(), &signature).is_ok()
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// What a checkpoint signs: a chain's head at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The chain: a tenant id, or `platform`.
    pub chain: String,
    /// The last entry it covers.
    pub seq: i64,
    /// That entry's hash.
    pub hash: String,
    /// When it was signed, Unix milliseconds.
    pub signed_at: i64,
}

impl Checkpoint {
    fn message(&self) -> String {
        format!("saas-audit-checkpoint/v1\n{}\n{}\n{}\n{}", self.chain, self.seq, self.hash, self.signed_at)
    }
}

/// A stored entry as the walk reads it.
#[derive(Debug, Clone)]
pub(super) struct StoredEntry {
    /// Its position.
    pub seq: i64,
    /// The event id column.
    pub event_id: String,
    /// The event type column.
    pub event_type: String,
    /// The canonical text.
    pub entry: String,
    /// The stored previous hash.
    pub prev_hash: String,
    /// The stored hash.
    pub hash: String,
    /// The stored MAC of the hash.
    pub mac: String,
}

/// A stored checkpoint as the walk reads it.
#[derive(Debug, Clone)]
pub(super) struct StoredCheckpoint {
    /// What it signs.
    pub point: Checkpoint,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The signature, base64url.
    pub signature: String,
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Breach {
    /// The entry that is altered or missing (for a forged checkpoint, the entry it names).
    pub seq: i64,
    /// The event the entry holds, when the entry is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Its type, when the entry is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
}

/// Walks a chain's entries in `seq` order, checking each against the one before, its MAC
/// and the checkpoints, and stops at the first breach.
pub(super) struct Walk<'a> {
    chain: &'a str,
    key: &'a AuditKey,
    /// Checkpoints not checked yet, in `seq` order.
    checkpoints: std::collections::VecDeque<StoredCheckpoint>,
    last_good_checkpoint: i64,
    /// The next expected sequence number.
    next: i64,
    /// The hash of the last good entry.
    previous: String,
    previous_entry: Option<StoredEntry>,
    breach: Option<Breach>,
}

impl<'a> Walk<'a> {
    /// A walk of `chain` from its first entry; `checkpoints` in any order.
    pub(super) fn new(chain: &'a str, key: &'a AuditKey, checkpoints: Vec<StoredCheckpoint>) -> Self {
        let mut walk = Self {
            chain,
            key,
            checkpoints: std::collections::VecDeque::new(),
            last_good_checkpoint: 0,
            next: 1,
            previous: GENESIS.to_owned(),
            previous_entry: None,
            breach: None,
        };
        walk.add_checkpoints(checkpoints);
        walk
    }

    /// Adds checkpoints to check (in any order; the caller adds them page by page, ahead of
    /// the entries they name).
    pub(super) fn add_checkpoints(&mut self, checkpoints: Vec<StoredCheckpoint>) {
        self.checkpoints.extend(checkpoints);
        self.checkpoints.make_contiguous().sort_by_key(|c| c.point.seq);
    }

    /// Entries checked and found good.
    pub(super) fn verified(&self) -> i64 {
        self.next - 1
    }

    /// Checks the next entry; `false` once a breach is found.
    pub(super) fn step(&mut self, entry: StoredEntry) -> bool {
        if self.breach.is_some() {
            return false;
        }
        // Checkpoints before the first entry name nothing that exists.
        if !self.check_checkpoints_through(self.next - 1) {
            return false;
        }
        if let Some(breach) = self.check(&entry) {
            self.breach = Some(breach);
            return false;
        }
        self.next += 1;
        self.previous = entry.hash.clone();
        self.previous_entry = Some(entry);
        self.check_checkpoints_through(self.next - 1)
    }

    fn check(&self, entry: &StoredEntry) -> Option<Breach> {
        let at = |why: &str| Breach {
            seq: entry.seq,
            event_id: Some(entry.event_id.clone()),
            event_type: Some(entry.event_type.clone()),
            reason: why.to_owned(),
        };
        if entry.seq > self.next {
            return Some(Breach {
                seq: self.next,
                event_id: None,
                event_type: None,
                reason: format!(
                    "entry {} is missing: the chain goes from {} to {}",
                    self.next,
                    self.next - 1,
                    entry.seq
                ),
            });
        }
        if entry.seq < self.next {
            return Some(at("entry appears twice"));
        }
        // The hash covers the stored bytes; they need only parse to be compared with the
        // columns (re-encoding could change how a float is written).
        let parsed = serde_json::from_str::<Value>(&entry.entry).ok().filter(Value::is_object);
        let Some(parsed) = parsed else { return Some(at("altered: its content is not a JSON object")) };
        let matches = parsed["chain"] == self.chain
            && parsed["seq"] == entry.seq
            && parsed["event"]["id"] == entry.event_id.as_str()
            && parsed["event"]["type"] == entry.event_type.as_str();
        if !matches {
            return Some(at("altered: its columns do not match its content"));
        }
        if entry.prev_hash != self.previous {
            return Some(at("altered: it does not link to the entry before it"));
        }
        if entry_hash(&self.previous, &entry.entry) != entry.hash {
            return Some(at("altered: its hash does not match its content"));
        }
        if !self.key.mac_matches(&entry.hash, &entry.mac) {
            return Some(at("altered: its MAC does not match (rewritten without the audit key)"));
        }
        None
    }

    /// Checks the checkpoints at or before `seq`.
    fn check_checkpoints_through(&mut self, seq: i64) -> bool {
        while self.checkpoints.front().is_some_and(|c| c.point.seq <= seq) {
            let Some(checkpoint) = self.checkpoints.pop_front() else { break };
            if let Some(breach) = self.check_checkpoint(&checkpoint) {
                self.breach = Some(breach);
                return false;
            }
            self.last_good_checkpoint = checkpoint.point.seq;
        }
        true
    }

    /// Whether the checkpoint is signed by this server's key; a breach naming it if not.
    fn forged(&self, checkpoint: &StoredCheckpoint) -> Option<Breach> {
        let point = &checkpoint.point;
        let bad = |reason: String| Breach { seq: point.seq, event_id: None, event_type: None, reason };
        if point.chain != self.chain {
            return Some(bad(format!("the checkpoint at {} belongs to another chain", point.seq)));
        }
        if checkpoint.key_id != self.key.id() {
            return Some(bad(format!(
                "the checkpoint at {} is signed by key {}, not by this server's audit key {}",
                point.seq,
                checkpoint.key_id,
                self.key.id()
            )));
        }
        if !self.key.verifies(point, &checkpoint.signature) {
            return Some(bad(format!("the checkpoint at {} has an invalid signature (forged or altered)", point.seq)));
        }
        None
    }

    fn check_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Option<Breach> {
        if let Some(forged) = self.forged(checkpoint) {
            return Some(forged);
        }
        let point = &checkpoint.point;
        if point.seq < 1 {
            return Some(Breach {
                seq: point.seq,
                event_id: None,
                event_type: None,
                reason: format!("the checkpoint at {} names no entry", point.seq),
            });
        }
        if point.hash != self.previous {
            // Only a holder of the audit key could have written entries that pass their MACs
            // and still differ from what was signed.
            return Some(Breach {
                seq: self.last_good_checkpoint + 1,
                event_id: None,
                event_type: None,
                reason: format!(
                    "altered: entries {} to {} differ from what the checkpoint at {} signed",
                    self.last_good_checkpoint + 1,
                    point.seq,
                    point.seq
                ),
            });
        }
        None
    }

    /// Ends the walk, given the head the store records (`None` when it has none): checks that
    /// no entry is missing after the last one and that no checkpoint names an entry past it.
    pub(super) fn finish(mut self, head: Option<(i64, String)>) -> Option<Breach> {
        if self.breach.is_some() {
            return self.breach;
        }
        let last = self.next - 1;
        let missing_after = |until: i64, what: &str| Breach {
            seq: last + 1,
            event_id: None,
            event_type: None,
            reason: format!("entries {} to {until} are missing: {what} records them", last + 1),
        };
        if let Some(checkpoint) = self.checkpoints.pop_front() {
            return Some(match self.forged(&checkpoint) {
                Some(forged) => forged,
                None => {
                    missing_after(checkpoint.point.seq, &format!("the signed checkpoint at {}", checkpoint.point.seq))
                }
            });
        }
        let at_last = |reason: &str| Breach {
            seq: last,
            event_id: self.previous_entry.as_ref().map(|e| e.event_id.clone()),
            event_type: self.previous_entry.as_ref().map(|e| e.event_type.clone()),
            reason: reason.to_owned(),
        };
        match head {
            Some((seq, _)) if seq > last => Some(missing_after(seq, "the chain head")),
            Some((seq, _)) if seq < last => Some(at_last(&format!("the chain head was moved back to entry {seq}"))),
            Some((_, hash)) if hash != self.previous && last > 0 => {
                Some(at_last("the chain head records another hash for this entry"))
            }
            None if last > 0 => Some(at_last("the chain head is missing")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: i64) -> Vec<StoredEntry> {
        let mut previous = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let entry = canonical(&serde_json::json!({
                    "chain": "ten_a", "seq": seq,
                    "event": {"id": format!("evt_{seq}"), "type": "auth.x.v1", "data": {"b": 1, "a": [seq]}}
                }));
                let hash = entry_hash(&previous, &entry);
                let stored = StoredEntry {
                    seq,
                    event_id: format!("evt_{seq}"),
                    event_type: "auth.x.v1".into(),
                    entry,
                    prev_hash: previous.clone(),
                    mac: key().entry_mac(&hash),
                    hash: hash.clone(),
                };
                previous = hash;
                stored
            })
            .collect()
    }

    fn key() -> AuditKey {
        AuditKey::from_seed(&[7; 32])
    }

    fn checkpoint(key: &AuditKey, entries: &[StoredEntry], seq: i64) -> StoredCheckpoint {
        let point =
            Checkpoint { chain: "ten_a".into(), seq, hash: entries[seq as usize - 1].hash.clone(), signed_at: 1 };
        StoredCheckpoint { signature: key.sign(&point), key_id: key.id().into(), point }
    }

    fn walk(
        entries: Vec<StoredEntry>,
        checkpoints: Vec<StoredCheckpoint>,
        head: Option<(i64, String)>,
    ) -> Option<Breach> {
        let key = key();
        let mut walk = Walk::new("ten_a", &key, checkpoints);
        for entry in entries {
            if !walk.step(entry) {
                break;
            }
        }
        walk.finish(head)
    }

    fn head(entries: &[StoredEntry]) -> Option<(i64, String)> {
        entries.last().map(|e| (e.seq, e.hash.clone()))
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let value: Value = serde_json::from_str(r#"{ "b": [1, {"z": 1, "a": "é\n"}], "a": null }"#).unwrap();
        assert_eq!(canonical(&value), r#"{"a":null,"b":[1,{"a":"é\n","z":1}]}"#);
    }

    #[test]
    fn an_intact_chain_passes() {
        let entries = chain_of(5);
        let checkpoints = vec![checkpoint(&key(), &entries, 2), checkpoint(&key(), &entries, 5)];
        assert_eq!(walk(entries.clone(), checkpoints, head(&entries)), None);
        assert_eq!(walk(vec![], vec![], None), None);
    }

    #[test]
    fn an_altered_entry_is_named() {
        let mut entries = chain_of(5);
        let h = head(&entries);
        entries[2].entry = entries[2].entry.replace(r#""b":1"#, r#""b":2"#);
        let breach = walk(entries, vec![], h).unwrap();
        assert_eq!((breach.seq, breach.event_id.as_deref()), (3, Some("evt_3")));
        assert!(breach.reason.contains("hash does not match"), "{}", breach.reason);
    }

    #[test]
    fn an_entry_rewritten_with_every_later_hash_fails_its_mac() {
        let mut entries = chain_of(5);
        entries[2].entry = entries[2].entry.replace(r#""b":1"#, r#""b":2"#);
        let mut previous = entries[1].hash.clone();
        for e in &mut entries[2..] {
            e.prev_hash = previous.clone();
            e.hash = entry_hash(&previous, &e.entry);
            previous = e.hash.clone();
        }
        let h = head(&entries);
        let breach = walk(entries, vec![], h).unwrap();
        assert_eq!(breach.seq, 3, "{}", breach.reason);
        assert!(breach.reason.contains("MAC"), "{}", breach.reason);
    }

    #[test]
    fn an_altered_link_is_named_where_it_is() {
        let mut entries = chain_of(4);
        let h = head(&entries);
        entries[2].prev_hash = "a".repeat(64);
        let breach = walk(entries, vec![], h).unwrap();
        assert_eq!(breach.seq, 3, "{}", breach.reason);
        assert!(breach.reason.contains("does not link"), "{}", breach.reason);
    }

    #[test]
    fn floats_that_do_not_survive_re_encoding_still_verify() {
        // Stored as written; parsing and writing it again may change its digits.
        let entry = r#"{"chain":"ten_a","event":{"data":{"observed":120.88995980580641},"id":"evt_1","type":"analytics.x.v1"},"seq":1}"#;
        let hash = entry_hash(GENESIS, entry);
        let stored = StoredEntry {
            seq: 1,
            event_id: "evt_1".into(),
            event_type: "analytics.x.v1".into(),
            entry: entry.into(),
            prev_hash: GENESIS.into(),
            mac: key().entry_mac(&hash),
            hash: hash.clone(),
        };
        assert_eq!(walk(vec![stored], vec![], Some((1, hash))), None);
    }

    #[test]
    fn a_head_moved_back_is_reported() {
        let entries = chain_of(4);
        let breach = walk(entries.clone(), vec![], Some((2, entries[1].hash.clone()))).unwrap();
        assert_eq!(breach.seq, 4, "{}", breach.reason);
        assert!(breach.reason.contains("moved back"), "{}", breach.reason);
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let mut entries = chain_of(5);
        let h = head(&entries);
        entries.remove(1);
        let breach = walk(entries, vec![], h).unwrap();
        assert_eq!((breach.seq, breach.event_id), (2, None));
        assert!(breach.reason.contains("missing"), "{}", breach.reason);
    }

    #[test]
    fn deleting_the_newest_entries_is_caught_by_the_head_or_a_checkpoint() {
        let entries = chain_of(5);
        let checkpoints = vec![checkpoint(&key(), &entries, 5)];
        let breach = walk(entries[..3].to_vec(), checkpoints, None).unwrap();
        assert_eq!(breach.seq, 4, "{}", breach.reason);
        let breach = walk(entries[..3].to_vec(), vec![], head(&entries)).unwrap();
        assert_eq!(breach.seq, 4, "{}", breach.reason);
    }

    #[test]
    fn a_chain_rewritten_with_the_key_is_still_caught_by_the_checkpoint() {
        let entries = chain_of(6);
        let checkpoints = vec![checkpoint(&key(), &entries, 2), checkpoint(&key(), &entries, 6)];
        // Rewrite entry 4 and re-hash everything after it, head included.
        let mut forged = entries[..3].to_vec();
        let mut previous = entries[2].hash.clone();
        for e in &entries[3..] {
            let entry = if e.seq == 4 { e.entry.replace(r#""b":1"#, r#""b":9"#) } else { e.entry.clone() };
            let hash = entry_hash(&previous, &entry);
            let mac = key().entry_mac(&hash);
            forged.push(StoredEntry { entry, prev_hash: previous.clone(), hash: hash.clone(), mac, ..e.clone() });
            previous = hash;
        }
        let h = head(&forged);
        let breach = walk(forged, checkpoints, h).unwrap();
        assert_eq!(breach.seq, 3, "{}", breach.reason);
        assert!(breach.reason.contains("entries 3 to 6"), "{}", breach.reason);
    }

    #[test]
    fn a_forged_checkpoint_is_refused() {
        let entries = chain_of(3);
        let other = AuditKey::from_seed(&[8; 32]);
        let mut forged = checkpoint(&other, &entries, 3);
        let breach = walk(entries.clone(), vec![forged.clone()], head(&entries)).unwrap();
        assert!(breach.reason.contains("not by this server's audit key"), "{}", breach.reason);
        forged.key_id = key().id().into();
        let breach = walk(entries.clone(), vec![forged.clone()], head(&entries)).unwrap();
        assert!(breach.reason.contains("invalid signature"), "{}", breach.reason);
        // A forged checkpoint past the end is a forgery, not a sign of missing entries.
        forged.point.seq = 1_000_000;
        let breach = walk(entries.clone(), vec![forged], head(&entries)).unwrap();
        assert!(breach.reason.contains("invalid signature"), "{}", breach.reason);
        // A signed checkpoint that names no entry.
        let mut nowhere = checkpoint(&key(), &entries, 1);
        nowhere.point.seq = 0;
        nowhere.signature = key().sign(&nowhere.point);
        let breach = walk(entries.clone(), vec![nowhere], head(&entries)).unwrap();
        assert!(breach.reason.contains("names no entry"), "{}", breach.reason);
    }
}
