//! Every Redis key and channel name revokd uses, built from one prefix in
//! one place (the README's key-layout table is this file). The queue's own
//! keys are apalis-redis's, under `{prefix}queue:jobs`; see [`super::queue`].

use super::redis::glob_escape;

/// The names under one key prefix (`revokd:` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}jti:{token_id}`: a revoked token, until it expires.
    pub fn jti(&self, token_id: &str) -> String {
        format!("{}jti:{token_id}", self.prefix)
    }

    /// `{prefix}sub:{subject}`: a subject's watermark.
    pub fn sub(&self, subject: &str) -> String {
        format!("{}sub:{subject}", self.prefix)
    }

    /// `{prefix}iss:{issuer}`: an issuer's watermark.
    pub fn iss(&self, issuer: &str) -> String {
        format!("{}iss:{issuer}", self.prefix)
    }

    /// The watermark key of a subject or an issuer ([`Self::sub`], [`Self::iss`]).
    pub fn watermark(&self, scope: super::Scope, key: &str) -> String {
        format!("{}{}:{key}", self.prefix, scope.tag())
    }

    /// `{prefix}rt:{token_id}`: a refresh token's registry entry.
    pub fn rt(&self, token_id: &str) -> String {
        format!("{}rt:{token_id}", self.prefix)
    }

    /// `{prefix}rtf:{family}`: present once the family is revoked.
    pub fn rtf(&self, family: &str) -> String {
        self.rtf_prefix() + family
    }

    /// `{prefix}rtf:`, for scripts that append the family themselves.
    pub fn rtf_prefix(&self) -> String {
        format!("{}rtf:", self.prefix)
    }

    /// `{prefix}events`: the stream of applied revocations replicas follow.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// `{prefix}marker`: present while Redis holds the whole deny-list.
    pub fn marker(&self) -> String {
        format!("{}marker", self.prefix)
    }

    /// `{prefix}count:{kind}`: how many `{kind}:` keys end in each minute.
    pub fn count(&self, kind: &str) -> String {
        format!("{}count:{kind}", self.prefix)
    }

    /// `{prefix}writable`: the probe write of each API process.
    pub fn writable(&self) -> String {
        format!("{}writable", self.prefix)
    }

    /// `{prefix}cleanup:last`: the last cleanup's report.
    pub fn cleanup_last(&self) -> String {
        format!("{}cleanup:last", self.prefix)
    }

    /// `{prefix}rebuilding:{id}`: a rebuild of Redis from Postgres under way.
    pub fn rebuilding(&self, id: &str) -> String {
        format!("{}rebuilding:{id}", self.prefix)
    }

    /// `{prefix}lease:{name}`: a lease one process holds at a time.
    pub fn lease(&self, name: &str) -> String {
        format!("{}lease:{name}", self.prefix)
    }

    /// `{prefix}done`: the channel announcing applied jobs (message: the
    /// job id).
    pub fn done_channel(&self) -> String {
        format!("{}done", self.prefix)
    }

    /// `{prefix}queue:jobs:wake`: the channel producers wake workers on.
    pub fn wake_channel(&self) -> String {
        revokd_jobs::wake_channel(&self.prefix)
    }

    /// A SCAN pattern for every key starting `{prefix}{kind}`.
    pub fn pattern(&self, kind: &str) -> String {
        format!("{}{kind}*", glob_escape(&self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        let keys = Keys::new("revokd:");
        assert_eq!(keys.jti("j"), "revokd:jti:j");
        assert_eq!(keys.sub("s"), "revokd:sub:s");
        assert_eq!(keys.iss("https://i/"), "revokd:iss:https://i/");
        assert_eq!(
            keys.watermark(crate::store::Scope::Subject, "s"),
            keys.sub("s")
        );
        assert_eq!(
            keys.watermark(crate::store::Scope::Issuer, "i"),
            keys.iss("i")
        );
        assert_eq!(keys.rt("r"), "revokd:rt:r");
        assert_eq!(keys.rtf("f"), "revokd:rtf:f");
        assert_eq!(keys.events(), "revokd:events");
        assert_eq!(keys.marker(), "revokd:marker");
        assert_eq!(keys.count("jti"), "revokd:count:jti");
        assert_eq!(keys.done_channel(), "revokd:done");
        assert_eq!(keys.wake_channel(), "revokd:queue:jobs:wake");
        assert_eq!(Keys::new("a*b:").pattern("jti:"), "a\\*b:jti:*");
    }
}
