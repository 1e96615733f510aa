//! One change on the `{prefix}events` stream, as the deny-list's Lua scripts
//! append it (field `k` names the kind), and how a stream entry is parsed.
//! An entry of an unknown kind or with a missing field parses to `None` and
//! the follower skips it.

use std::collections::HashMap;

/// One change read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A token on the deny-list until `until`.
    Token { id: String, until: i64 },
    /// Tokens on the deny-list, each until its time: what one write of
    /// several entries announces in one stream entry (kind `T`, see
    /// `store/redis/lua/revoke_many.lua`).
    Tokens(Vec<(String, i64)>),
    /// A subject watermark.
    Subject {
        id: String,
        not_before: i64,
        until: i64,
    },
    /// A refresh-token registry entry (state rank 0 active, 1 rotated, 2 revoked).
    Refresh {
        id: String,
        family: String,
        state: u8,
        until: i64,
    },
    /// A revoked refresh-token family.
    Family { id: String, until: i64 },
    /// An issuer watermark.
    Issuer {
        id: String,
        not_before: i64,
        until: i64,
    },
}

impl Event {
    /// The ids of the tokens this event puts on the deny-list.
    pub(super) fn token_ids(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Self::Token { id, .. } => (Some(id.as_str()), &[][..]),
            Self::Tokens(tokens) => (None, tokens.as_slice()),
            _ => (None, &[][..]),
        };
        one.into_iter()
            .chain(many.iter().map(|(id, _)| id.as_str()))
    }

    /// Parses a stream entry's fields; `None` for an entry it does not know.
    pub(super) fn parse(map: &HashMap<String, redis::Value>) -> Option<Self> {
        let text =
            |k: &str| -> Option<String> { redis::from_redis_value(map.get(k)?.clone()).ok() };
        let num = |k: &str| -> Option<i64> { text(k)?.parse().ok() };
        match text("k")?.as_str() {
            "t" => Some(Self::Token {
                id: text("id")?,
                until: num("until")?,
            }),
            "T" => {
                let tokens = text("ids").as_deref().and_then(grouped_tokens);
                if tokens.is_none() {
                    tracing::warn!(
                        "a stream entry of grouped tokens could not be read; the replica gets them at its next load"
                    );
                }
                tokens.map(Self::Tokens)
            }
            "s" => Some(Self::Subject {
                id: text("id")?,
                not_before: num("nb")?,
                until: num("until")?,
            }),
            "r" => Some(Self::Refresh {
                id: text("id")?,
                family: text("fam")?,
                state: u8::try_from(num("st")?).ok()?,
                until: num("until")?,
            }),
            "i" => Some(Self::Issuer {
                id: text("id")?,
                not_before: num("nb")?,
                until: num("until")?,
            }),
            "f" => Some(Self::Family {
                id: text("id")?,
                until: num("until")?,
            }),
            _ => None,
        }
    }
}

/// The tokens of a grouped entry's `ids`: a JSON array of token_id, until,
/// token_id, until, …, the untils as strings.
fn grouped_tokens(ids: &str) -> Option<Vec<(String, i64)>> {
    let flat: Vec<String> = serde_json::from_str(ids).ok()?;
    if !flat.len().is_multiple_of(2) {
        return None;
    }
    let mut flat = flat.into_iter();
    let mut tokens = Vec::with_capacity(flat.len() / 2);
    while let (Some(id), Some(until)) = (flat.next(), flat.next()) {
        tokens.push((id, until.parse().ok()?));
    }
    Some(tokens)
}
