//! [`Scope`]: whose watermark — a subject's or an issuer's — and the names
//! it has in each store. Both kinds are stored alike: one key or row per
//! subject or issuer, holding `not_before`, only ever raised.

/// Whose watermark: a subject's or an issuer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `subject_watermarks`, written by `revoke_all` jobs.
    Subject,
    /// `issuer_watermarks`, written by `revoke_issuer` jobs.
    Issuer,
}

impl Scope {
    /// The Redis key kind: `{prefix}sub:{subject}`, `{prefix}iss:{issuer}`.
    pub fn tag(self) -> &'static str {
        match self {
            Scope::Subject => "sub",
            Scope::Issuer => "iss",
        }
    }

    /// The claim it is keyed by (`sub`, `iss`).
    pub fn claim(self) -> &'static str {
        match self {
            Scope::Subject => "sub",
            Scope::Issuer => "iss",
        }
    }

    /// What it is called in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Scope::Subject => "subject",
            Scope::Issuer => "issuer",
        }
    }

    /// The `k` field of its events on the stream replicas follow.
    pub fn event(self) -> &'static str {
        match self {
            Scope::Subject => "s",
            Scope::Issuer => "i",
        }
    }

    /// The Postgres table.
    pub fn table(self) -> &'static str {
        match self {
            Scope::Subject => "subject_watermarks",
            Scope::Issuer => "issuer_watermarks",
        }
    }

    /// The key column, in the table and in `revocation_audit`.
    pub fn column(self) -> &'static str {
        match self {
            Scope::Subject => "subject",
            Scope::Issuer => "issuer",
        }
    }

    /// The job kind that raises it (and its audit rows record).
    pub fn job_kind(self) -> &'static str {
        match self {
            Scope::Subject => "revoke_all",
            Scope::Issuer => "revoke_issuer",
        }
    }
}
