//! The snapshot a replica loads while Postgres is down: every deny-list
//! entry, watermark, refresh-token entry and revoked family under the
//! prefix, with the unix time each ends, handed over one SCAN page at a
//! time so that no more than a page is held. Reads the key kinds of
//! [`super::denylist`] and [`super::registry`]; nothing else.

use super::{DenyList, registry::RefreshEntry, scan_page};

/// What a replica holds (one page of it), with the unix time each entry ends.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(token_id, until)`.
    pub tokens: Vec<(String, i64)>,
    /// `(subject, not_before, until)`.
    pub subjects: Vec<(String, i64, i64)>,
    /// `(token_id, family, state rank, until)` of registered refresh tokens.
    pub refresh: Vec<(String, String, u8, i64)>,
    /// `(family, until)` of revoked families.
    pub families: Vec<(String, i64)>,
    /// `(issuer, not_before, until)`.
    pub issuers: Vec<(String, i64, i64)>,
}

/// The deny-list's key kinds a replica snapshot reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotKind {
    Token,
    Subject,
    Refresh,
    Family,
    Issuer,
}

impl SnapshotKind {
    const ALL: [Self; 5] = [
        Self::Token,
        Self::Subject,
        Self::Refresh,
        Self::Family,
        Self::Issuer,
    ];

    /// The key name part after the prefix.
    fn tag(self) -> &'static str {
        match self {
            Self::Token => "jti:",
            Self::Subject => "sub:",
            Self::Refresh => "rt:",
            Self::Family => "rtf:",
            Self::Issuer => "iss:",
        }
    }

    /// Whether the key's value matters (else only its TTL).
    fn has_value(self) -> bool {
        matches!(self, Self::Subject | Self::Refresh | Self::Issuer)
    }
}

impl Snapshot {
    fn add(&mut self, kind: SnapshotKind, id: String, value: Option<String>, until: i64) {
        match kind {
            SnapshotKind::Token => self.tokens.push((id, until)),
            SnapshotKind::Subject => {
                if let Some(nb) = value.and_then(|v| v.parse().ok()) {
                    self.subjects.push((id, nb, until));
                }
            }
            SnapshotKind::Refresh => {
                let entry = value.and_then(|v| serde_json::from_str::<RefreshEntry>(&v).ok());
                if let Some(entry) = entry {
                    self.refresh
                        .push((id, entry.family, entry.state as u8, until));
                }
            }
            SnapshotKind::Family => self.families.push((id, until)),
            SnapshotKind::Issuer => {
                if let Some(nb) = value.and_then(|v| v.parse().ok()) {
                    self.issuers.push((id, nb, until));
                }
            }
        }
    }
}

impl DenyList {
    /// Every deny-list entry, watermark, refresh-token entry and revoked
    /// family alive at `now`, with the unix time each ends, handed to
    /// `page` one SCAN page at a time; SCAN plus pipelined reads.
    pub async fn snapshot(
        &self,
        now: i64,
        mut page: impl FnMut(Snapshot),
    ) -> redis::RedisResult<()> {
        /// Keys asked for per SCAN call: one pass over the keyspace, each
        /// batch's values fetched in one pipeline before the next SCAN.
        const SCAN_COUNT: usize = 5_000;
        let mut conn = self.conn.clone();
        let pattern = self.keys.pattern("");
        let mut cursor = 0u64;
        loop {
            let (next, keys) = scan_page(&mut conn, cursor, &pattern, SCAN_COUNT).await?;
            // (kind, id) of each deny-list key; the prefix's other keys (the
            // queue, the stream, the marker) are passed over.
            let wanted: Vec<(SnapshotKind, &str, &str)> = keys
                .iter()
                .filter_map(|key| {
                    let rest = key.strip_prefix(self.keys.prefix())?;
                    SnapshotKind::ALL.iter().find_map(|&kind| {
                        rest.strip_prefix(kind.tag())
                            .map(|id| (kind, key.as_str(), id))
                    })
                })
                .collect();
            if !wanted.is_empty() {
                let mut pipe = redis::pipe();
                for (kind, key, _) in &wanted {
                    if kind.has_value() {
                        pipe.get(*key);
                    } else {
                        // A placeholder reply, so every key answers (value, ttl).
                        pipe.cmd("TYPE").arg(*key);
                    }
                    pipe.ttl(*key);
                }
                let values: Vec<(Option<String>, i64)> = pipe.query_async(&mut conn).await?;
                let mut snapshot = Snapshot::default();
                for ((kind, _, id), (value, ttl)) in wanted.into_iter().zip(values) {
                    if ttl > 0 {
                        snapshot.add(kind, id.to_owned(), value, now + ttl);
                    }
                }
                page(snapshot);
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
