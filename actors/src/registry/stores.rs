//! Session stores on disk (`store_root/{id}/`, the WhatsApp credentials), bound to the Laravel
//! user that started them and bounded in number over time.
//!
//! A store outlives its session whenever the session ends without a logout (credentials are
//! kept: see `session::lifecycle`). So that such a store cannot reopen someone else's account,
//! it records its owner (`owner`, the `user_id`); `POST /start` with that id and another user is
//! refused. So that stores left behind do not pile up forever, a sweep removes those no session
//! has used for `sessions.leftover_store_retention` (the owner file's time is refreshed at every
//! start).

use std::{
    fs,
    io::{self, ErrorKind},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use actix::prelude::*;
use slog::{info, warn};

use super::SessionRegistry;

/// How often stores left behind are looked for.
pub const LEFTOVER_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The first sweep, after the restore has had time to finish.
pub const FIRST_LEFTOVER_SWEEP: Duration = Duration::from_secs(120);

/// The file holding a store's owner: the `user_id` in decimal, or `none`.
const OWNER_FILE: &str = "owner";

/// What an owner file says.
fn owner_text(user_id: Option<u64>) -> String {
    user_id.map_or_else(|| "none".to_string(), |user_id| user_id.to_string())
}

/// Who a store on disk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOwner {
    /// No store yet, or one from before owners were recorded: whoever starts it now owns it.
    Unclaimed,
    /// Started by this user (`None`: started without a `user_id`).
    User(Option<u64>),
}

/// Reads the owner of the store at `dir`. An empty owner file (a crash between creating and
/// writing it, before the rename below existed) counts as unclaimed.
pub fn owner_of(dir: &Path) -> io::Result<StoreOwner> {
    match fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(text) if text.trim().is_empty() => Ok(StoreOwner::Unclaimed),
        Ok(text) => {
            let text = text.trim();
            Ok(StoreOwner::User(if text == "none" {
                None
            } else {
                Some(
                    text.parse().map_err(|_| {
                        io::Error::new(ErrorKind::InvalidData, "unreadable owner file")
                    })?,
                )
            }))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(StoreOwner::Unclaimed),
        Err(error) => Err(error),
    }
}

/// Binds the store at `dir` to `user_id` (creating the directory, private to wasup's user) and
/// marks it used now. The owner file is replaced atomically (written beside, then renamed), and
/// only touched when the owner stays the same, so a crash never leaves it half-written.
pub fn claim(dir: &Path, user_id: Option<u64>) -> io::Result<()> {
    use std::{
        io::Write,
        os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if owner_of(dir).is_ok_and(|owner| owner == StoreOwner::User(user_id)) {
        return touch(dir);
    }
    let fresh = dir.join(format!("{OWNER_FILE}.new"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // Private like the credentials beside it.
        .mode(0o600)
        .open(&fresh)?;
    file.write_all(owner_text(user_id).as_bytes())?;
    file.sync_all()?;
    fs::rename(&fresh, dir.join(OWNER_FILE))
}

/// Marks the store at `dir` used now (its owner file's time, which the leftover sweep reads).
pub fn touch(dir: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .append(true)
        .open(dir.join(OWNER_FILE))?
        .set_modified(SystemTime::now())
}

/// Whether a store exists at `dir` with anything in it (a kept store, maybe with a login).
pub fn holds_anything(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// Whether `user_id` may start the session whose store is at `dir`.
pub fn may_start(dir: &Path, user_id: Option<u64>) -> bool {
    match owner_of(dir) {
        Ok(StoreOwner::Unclaimed) => true,
        Ok(StoreOwner::User(owner)) => owner == user_id,
        // An owner that cannot be read is no proof of ownership.
        Err(_) => false,
    }
}

/// The stores under `root` not used for `retention` (by their owner file's time, else the
/// directory's) and not named by `in_use`.
pub fn leftovers(
    root: &Path,
    retention: Duration,
    now: SystemTime,
    in_use: impl Fn(&str) -> bool,
) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter(|entry| !entry.file_name().to_str().is_some_and(&in_use))
        .filter(|entry| {
            let path = entry.path();
            let used_at = fs::metadata(path.join(OWNER_FILE))
                .or_else(|_| fs::metadata(&path))
                .and_then(|metadata| metadata.modified());
            used_at.is_ok_and(|at| now.duration_since(at).is_ok_and(|idle| idle >= retention))
        })
        .map(|entry| entry.path())
        .collect()
}

impl SessionRegistry {
    /// Removes the stores no session has used for `sessions.leftover_store_retention` (once the
    /// sessions recorded in Redis are restored, so none of theirs is taken for a leftover).
    pub(super) fn sweep_leftover_stores(&mut self, ctx: &mut Context<Self>) {
        if self.store.as_ref().is_some_and(|store| !store.restored) {
            return;
        }
        self.forget_stale_stopped(ctx);
        // A store in use is used now: a long-running session's store, once it ends without a
        // logout, counts its retention from then, not from its start.
        for session_id in self.sessions.keys() {
            let _ = touch(&self.store_root.join(session_id));
        }
        let stale = leftovers(
            &self.store_root,
            self.config.leftover_store_retention,
            SystemTime::now(),
            |id| self.sessions.contains_key(id) || self.tombstones.stands(id),
        );
        for dir in &stale {
            if let Err(error) = fs::remove_dir_all(dir) {
                warn!(self.log, "Leftover session store could not be removed."; "dir" => %dir.display(), "error" => %error);
            }
        }
        if !stale.is_empty() {
            info!(self.log, "Session stores unused past the retention removed.";
                "count" => stale.len(), "retention" => ?self.config.leftover_store_retention);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wasup-stores-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_store_belongs_to_the_user_that_started_it() {
        let dir = scratch("owner").join("s1");
        assert!(may_start(&dir, Some(7)), "no store yet");
        claim(&dir, Some(7)).expect("claim");
        assert!(may_start(&dir, Some(7)));
        assert!(!may_start(&dir, Some(8)));
        assert!(!may_start(&dir, None));
        claim(&dir, None).expect("claim");
        assert!(may_start(&dir, None));
        fs::write(dir.join(OWNER_FILE), "garbage").expect("write");
        assert!(
            !may_start(&dir, Some(7)),
            "an unreadable owner proves nothing"
        );
        let _ = fs::remove_dir_all(dir.parent().expect("root"));
    }

    #[test]
    fn leftovers_are_stores_unused_for_the_retention_and_not_in_use() {
        let root = scratch("leftovers");
        for id in ["old", "busy", "fresh"] {
            claim(&root.join(id), Some(1)).expect("claim");
        }
        let later = SystemTime::now() + Duration::from_secs(3600);
        let mut found = leftovers(&root, Duration::from_secs(1800), later, |id| id == "busy");
        found.sort();
        assert_eq!(found, [root.join("fresh"), root.join("old")]);
        assert!(
            leftovers(&root, Duration::from_secs(1800), SystemTime::now(), |_| {
                false
            })
            .is_empty(),
            "nothing is that old yet"
        );
        let _ = fs::remove_dir_all(root);
    }
}
