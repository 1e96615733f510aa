//! The local spool: where a revocation is made durable when Postgres cannot
//! take it, before the API answers 2xx.
//!
//! A spool is a directory of append-only files, one per process that wrote
//! to it (`spool-<uuid>.jsonl`). The first line names the key prefix the
//! file belongs to; every further line is one job in the queue's JSON wire
//! format, written and `fsync`'d before the write returns. A process holds
//! an exclusive lock on the file it appends to; a file nobody holds (its
//! writer died, or sealed it for replay) is replayed by any process of the
//! same prefix once Postgres answers: each job is recorded in Postgres as
//! pending for Redis (the same write as the direct path), then the file is
//! deleted. Replaying twice is harmless: every record is idempotent. A line
//! cut short by a crash was never acknowledged, and is skipped.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    future::Future,
    io::{BufRead, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use revokd_jobs::Job;
use serde::{Deserialize, Serialize};

/// First line of every spool file.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// Format version.
    revokd_spool: u32,
    /// The key prefix (deployment) the jobs belong to.
    prefix: String,
}

/// The file this process appends to, locked for as long as it is open.
struct Current {
    file: File,
    path: PathBuf,
}

/// A spool directory, shared by the processes of one deployment.
pub struct Spool {
    dir: PathBuf,
    prefix: String,
    current: Mutex<Option<Current>>,
    /// Jobs in files of this prefix not replayed yet (as last counted).
    pending: AtomicU64,
}

/// What a replay pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Files replayed and deleted.
    pub files: u64,
    /// Jobs recorded in Postgres.
    pub jobs: u64,
}

impl Spool {
    /// The spool in `dir` for the deployment under `prefix`; nothing is
    /// created until the first append.
    pub fn new(dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self {
            dir: dir.into(),
            prefix: prefix.to_owned(),
            current: Mutex::new(None),
            pending: AtomicU64::new(0),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Jobs waiting in the spool (this process's count: its own appends and
    /// the files it found at its last replay pass).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Appends `job` and waits until it is on disk. Blocking: call it from
    /// `spawn_blocking`.
    pub fn append(&self, job: &Job) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(job)?;
        line.push(b'\n');
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            *current = Some(self.create()?);
        }
        let Some(open) = current.as_mut() else {
            return Err(std::io::Error::other("spool file not open"));
        };
        let written = open
            .file
            .write_all(&line)
            .and_then(|()| open.file.sync_data());
        if let Err(error) = written {
            // A half-written line must not be followed by more: start a new file.
            *current = None;
            return Err(error);
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        crate::instruments::spool_appended(self.pending());
        Ok(())
    }

    /// A new file, locked and with its header, made under a name replayers
    /// pass over and only then given its `spool-*.jsonl` name: a replayer
    /// never sees it unlocked.
    fn create(&self) -> std::io::Result<Current> {
        fs::create_dir_all(&self.dir)?;
        let id = uuid::Uuid::now_v7().simple();
        let draft = self.dir.join(format!(".draft-{id}"));
        let path = self.dir.join(format!("spool-{id}.jsonl"));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&draft)?;
        file.try_lock().map_err(|e| match e {
            TryLockError::Error(e) => e,
            TryLockError::WouldBlock => std::io::Error::other("new spool file locked"),
        })?;
        let header = Header {
            revokd_spool: 1,
            prefix: self.prefix.clone(),
        };
        let mut line = serde_json::to_vec(&header)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_all()?;
        fs::rename(&draft, &path)?;
        // The new directory entry must survive a crash too.
        File::open(&self.dir)?.sync_all()?;
        Ok(Current { file, path })
    }

    /// Replays every spool file of this prefix that no live process holds
    /// (this process's own file included: it is sealed first, later appends
    /// go to a new file), recording each job with `record`. A file is
    /// deleted once all its jobs are recorded; on the first failure the
    /// pass stops and the file stays for the next one.
    pub async fn replay<F, Fut, E>(&self, mut record: F) -> Result<Replayed, E>
    where
        F: FnMut(Job) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: From<std::io::Error>,
    {
        let mut done = Replayed::default();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            // No directory: nothing was ever spooled here.
            self.pending.store(0, Ordering::Relaxed);
            return Ok(done);
        };
        let sealed = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let named =
            |p: &Path, f: fn(&str) -> bool| p.file_name().and_then(|n| n.to_str()).is_some_and(f);
        let (mut paths, drafts): (Vec<PathBuf>, Vec<PathBuf>) = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                named(p, |n| {
                    (n.starts_with("spool-") && n.ends_with(".jsonl")) || n.starts_with(".draft-")
                })
            })
            .partition(|p| named(p, |n| n.starts_with("spool-")));
        paths.sort();
        // A draft nobody holds was left by a writer that died before its
        // first job: it holds at most a header.
        for draft in drafts {
            if let Ok(file) = File::open(&draft)
                && file.try_lock().is_ok()
            {
                let _ = fs::remove_file(&draft);
            }
        }
        let mut waiting = 0u64;
        for path in paths {
            // Our sealed file is locked by us; any other must be free.
            let (file, ours) = match &sealed {
                Some(current) if current.path == path => (current.file.try_clone()?, true),
                _ => match File::open(&path) {
                    Ok(file) => (file, false),
                    Err(_) => continue, // replayed and deleted by another process
                },
            };
            if !ours {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => continue, // a live writer's file
                    Err(TryLockError::Error(e)) => return Err(e.into()),
                }
            }
            let Some(jobs) = self.read_jobs(&file, &path)? else {
                continue; // another deployment's file
            };
            let count = jobs.len() as u64;
            for (recorded, job) in (0u64..).zip(jobs) {
                if let Err(error) = record(job).await {
                    waiting += count - recorded;
                    self.pending.store(waiting, Ordering::Relaxed);
                    crate::instruments::spool_pending(waiting);
                    return Err(error);
                }
            }
            match fs::remove_file(&path) {
                // Replayed by another process meanwhile: just as done.
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            File::open(&self.dir)?.sync_all()?;
            done.files += 1;
            done.jobs += count;
            crate::instruments::spool_replayed(count);
        }
        self.pending.store(waiting, Ordering::Relaxed);
        crate::instruments::spool_pending(waiting);
        Ok(done)
    }

    /// The jobs of one file, or `None` when it belongs to another prefix.
    fn read_jobs(&self, mut file: &File, path: &Path) -> std::io::Result<Option<Vec<Job>>> {
        // Our own sealed file shares its offset with the appender: rewind.
        file.seek(SeekFrom::Start(0))?;
        let mut lines = BufReader::new(file).lines();
        let header: Option<Header> = match lines.next() {
            Some(line) => serde_json::from_str(&line?).ok(),
            // Empty: its writer died before the header reached the disk.
            None => Some(Header {
                revokd_spool: 1,
                prefix: self.prefix.clone(),
            }),
        };
        match header {
            Some(h) if h.prefix == self.prefix => {}
            Some(_) => return Ok(None),
            None => {
                tracing::error!(file = %path.display(), "spool file without a valid header left in place");
                return Ok(None);
            }
        }
        let mut jobs = Vec::new();
        for line in lines {
            let line = match line {
                Ok(line) => line,
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "unreadable spool line skipped");
                    continue;
                }
            };
            match serde_json::from_str::<Job>(&line) {
                Ok(Job::Unknown) => {
                    tracing::error!(file = %path.display(), "spooled job of an unknown kind skipped")
                }
                Ok(job) => jobs.push(job),
                // A line cut short by a crash was never acknowledged.
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "incomplete spool line skipped")
                }
            }
        }
        Ok(Some(jobs))
    }
}

#[cfg(test)]
mod tests {
    use revokd_jobs::{RevokeSubject, RevokeToken};

    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "revokd-spool-test-{}",
            uuid::Uuid::new_v4().simple()
        ))
    }

    async fn replay_all(spool: &Spool) -> Vec<Job> {
        let mut seen = Vec::new();
        spool
            .replay(|job| {
                seen.push(job);
                async { Ok::<(), std::io::Error>(()) }
            })
            .await
            .expect("replay");
        seen
    }

    #[tokio::test]
    async fn appended_jobs_replay_once_then_the_file_is_gone() {
        let dir = temp_dir();
        let spool = Spool::new(&dir, "p:");
        let a = Job::Revoke(RevokeToken::new("a", None, 10));
        let b = Job::RevokeAll(RevokeSubject::new("alice", 5));
        spool.append(&a).expect("append");
        spool.append(&b).expect("append");
        assert_eq!(spool.pending(), 2);
        assert_eq!(replay_all(&spool).await, vec![a.clone(), b]);
        assert_eq!(spool.pending(), 0);
        assert!(replay_all(&spool).await.is_empty(), "replayed twice");
        // Appends after a replay go to a new file.
        spool.append(&a).expect("append");
        assert_eq!(replay_all(&spool).await, vec![a]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_failed_replay_keeps_the_file_and_other_prefixes_are_left_alone() {
        let dir = temp_dir();
        let ours = Spool::new(&dir, "p:");
        let theirs = Spool::new(&dir, "q:");
        let a = Job::Revoke(RevokeToken::new("a", None, 10));
        ours.append(&a).expect("append");
        theirs.append(&a).expect("append");
        let failed = ours
            .replay(|_| async { Err::<(), _>(std::io::Error::other("postgres down")) })
            .await;
        assert!(failed.is_err());
        assert_eq!(ours.pending(), 1);
        assert_eq!(replay_all(&ours).await, vec![a.clone()]);
        // Their file is still locked by its (live) writer, and not ours anyway.
        let after_seal = Spool::new(&dir, "q:");
        assert!(
            replay_all(&after_seal).await.is_empty(),
            "held by a live writer"
        );
        drop(theirs);
        assert_eq!(replay_all(&after_seal).await, vec![a]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped() {
        let dir = temp_dir();
        let spool = Spool::new(&dir, "p:");
        let a = Job::Revoke(RevokeToken::new("a", None, 10));
        spool.append(&a).expect("append");
        let path = spool
            .current
            .lock()
            .expect("lock")
            .as_ref()
            .expect("open")
            .path
            .clone();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"{\"kind\":\"revoke\",\"job_")
            .expect("torn write");
        assert_eq!(replay_all(&spool).await, vec![a]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
