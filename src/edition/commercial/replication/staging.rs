//! A backup's staging of auth snapshots that arrive in parts (issue 14 follow-up): the parts of
//! one (source POP, vault, auth seq) are held in memory until the last one arrives, then handed
//! over whole, so the apply replaces the agent set in one transaction and a backup never serves
//! half of a new agent set.
//!
//! Owns only memory, bounded two ways: a total byte cap across every source and vault (past it a
//! part is refused, retryably, and nothing already staged is lost), and staleness (a set no part
//! reached for `max_age_s`, or one a newer snapshot of the same vault supersedes, is dropped).
//! Parts arrive in order (the primary sends them so); a resend of a staged part replaces it. A
//! backup that lost its staging (a restart) says so, and the primary starts over from part 0.
//! Never does I/O, never applies anything, never logs rows.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::replica::AuthSnapshot;

/// The most parts one snapshot may be split into.
pub const MAX_AUTH_PARTS: u32 = 1024;

/// The staged bytes (request bodies of staged parts) a backup holds at most, over every source
/// and vault: 16 MiB, some 45,000 agents at once.
pub const STAGING_CAP_BYTES: usize = 16 * 1024 * 1024;

/// One part as it arrived: which snapshot it belongs to, where it goes, and its rows.
pub struct Part {
    pub seq: i64,
    pub index: u32,
    pub count: u32,
    /// The part's agents and passkeys; part 0 carries the keyring.
    pub rows: AuthSnapshot,
    /// The request body's size, charged against the cap.
    pub bytes: usize,
}

/// What a part did.
#[derive(Debug)]
pub enum Staged {
    /// Held; `have` parts of the snapshot are staged.
    Waiting { have: u32 },
    /// The last part: the whole snapshot, its parts concatenated in order.
    Complete(AuthSnapshot),
}

/// Why a part was refused (nothing staged changed, except that a stale set may be dropped).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// No staged parts lead up to this one (the backup restarted, dropped them, or one was
    /// skipped): the primary starts over from part 0.
    #[error("the parts before part {index} of this snapshot are not staged here; start over from part 0")]
    Missing { index: u32 },
    /// The staged parts belong to another snapshot (seq) or split (part count).
    #[error(
        "this part's snapshot (seq {seq}, {count} parts) differs from the one staged (seq {staged_seq}, {staged_count} parts)"
    )]
    Mismatch { seq: i64, count: u32, staged_seq: i64, staged_count: u32 },
    /// Staging it would pass the byte cap: retry later.
    #[error("the staging of auth snapshot parts is full ({cap} bytes); retry later")]
    Full { cap: usize },
}

struct Set {
    seq: i64,
    count: u32,
    parts: Vec<AuthSnapshot>,
    /// Body bytes of each staged part, in order.
    sizes: Vec<usize>,
    /// When a part last arrived (Unix s).
    touched: i64,
}

impl Set {
    fn bytes(&self) -> usize {
        self.sizes.iter().sum()
    }
}

#[derive(Default)]
struct Inner {
    sets: HashMap<(String, String), Set>,
    total: usize,
}

pub struct Staging {
    inner: Mutex<Inner>,
    cap: usize,
    max_age_s: i64,
}

impl Staging {
    pub fn new(cap: usize, max_age_s: u64) -> Self {
        Self { inner: Mutex::new(Inner::default()), cap, max_age_s: i64::try_from(max_age_s).unwrap_or(i64::MAX) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes staged now, over every source and vault.
    #[cfg(test)]
    pub fn staged_bytes(&self) -> usize {
        self.lock().total
    }

    /// Stages `part` of `vault`'s snapshot from `source` (the caller checked index < count,
    /// 1 < count <= [`MAX_AUTH_PARTS`]).
    pub fn put(&self, source: &str, vault: &str, part: Part, now: i64) -> Result<Staged, StageError> {
        let mut s = self.lock();
        // Stale: no part for longer than a request may take to arrive.
        let max_age = self.max_age_s;
        let mut freed = 0;
        s.sets.retain(|_, set| {
            let keep = now.saturating_sub(set.touched) <= max_age;
            if !keep {
                freed += set.bytes();
            }
            keep
        });
        s.total = s.total.saturating_sub(freed);
        let key = (source.to_owned(), vault.to_owned());
        if part.index == 0 {
            // A snapshot starts (or starts over): whatever was staged for this vault goes.
            if let Some(old) = s.sets.remove(&key) {
                s.total = s.total.saturating_sub(old.bytes());
            }
            if s.total.saturating_add(part.bytes) > self.cap {
                return Err(StageError::Full { cap: self.cap });
            }
            s.total += part.bytes;
            s.sets.insert(
                key,
                Set { seq: part.seq, count: part.count, parts: vec![part.rows], sizes: vec![part.bytes], touched: now },
            );
            return Ok(Staged::Waiting { have: 1 });
        }
        let Some(set) = s.sets.get(&key) else {
            return Err(StageError::Missing { index: part.index });
        };
        if (set.seq, set.count) != (part.seq, part.count) {
            let err =
                StageError::Mismatch { seq: part.seq, count: part.count, staged_seq: set.seq, staged_count: set.count };
            // A newer snapshot supersedes the staged one; its own part 0 comes next.
            if part.seq > set.seq
                && let Some(old) = s.sets.remove(&key)
            {
                s.total = s.total.saturating_sub(old.bytes());
            }
            return Err(err);
        }
        let have = set.parts.len();
        let at = part.index as usize;
        if at > have {
            return Err(StageError::Missing { index: part.index });
        }
        let before = set.sizes.get(at).copied().unwrap_or(0);
        let total = s.total.saturating_sub(before).saturating_add(part.bytes);
        if total > self.cap {
            return Err(StageError::Full { cap: self.cap });
        }
        s.total = total;
        let Some(set) = s.sets.get_mut(&key) else {
            return Err(StageError::Missing { index: part.index });
        };
        set.touched = now;
        if at == have {
            set.parts.push(part.rows);
            set.sizes.push(part.bytes);
        } else if let (Some(p), Some(b)) = (set.parts.get_mut(at), set.sizes.get_mut(at)) {
            // A resend (its answer was lost): the same rows again.
            *p = part.rows;
            *b = part.bytes;
        }
        if set.parts.len() < set.count as usize {
            return Ok(Staged::Waiting { have: u32::try_from(set.parts.len()).unwrap_or(u32::MAX) });
        }
        let Some(done) = s.sets.remove(&key) else {
            return Err(StageError::Missing { index: part.index });
        };
        s.total = s.total.saturating_sub(done.bytes());
        let mut whole = AuthSnapshot { seq: done.seq, agents: Vec::new(), passkeys: Vec::new(), keyring: None };
        for (i, p) in done.parts.into_iter().enumerate() {
            if i == 0 {
                whole.keyring = p.keyring;
            }
            whole.agents.extend(p.agents);
            whole.passkeys.extend(p.passkeys);
        }
        Ok(Staged::Complete(whole))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::vault_db::AgentRow;

    fn agent(id: i64) -> AgentRow {
        AgentRow {
            id,
            token_hash: format!("{id:064x}"),
            name: format!("a{id}"),
            scopes: String::new(),
            all_access: false,
            admin: false,
            created_at: 0,
            expires_at: None,
            parent_id: None,
            reveal_to_model: false,
            proxy_only_listed: false,
            mac: None,
        }
    }

    fn part(seq: i64, index: u32, count: u32, bytes: usize) -> Part {
        let keyring = (index == 0).then(|| "{\"wraps\":[]}".to_owned());
        let rows = AuthSnapshot { seq, agents: vec![agent(i64::from(index) + 1)], passkeys: Vec::new(), keyring };
        Part { seq, index, count, rows, bytes }
    }

    fn waiting(r: Result<Staged, StageError>) -> u32 {
        match r {
            Ok(Staged::Waiting { have }) => have,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parts_in_order_complete_the_snapshot_whole_and_free_their_bytes() {
        let st = Staging::new(1000, 300);
        assert_eq!(waiting(st.put("p", "v", part(7, 0, 3, 100), 0)), 1);
        assert_eq!(waiting(st.put("p", "v", part(7, 1, 3, 100), 1)), 2);
        // A resend of a staged part (its answer was lost) replaces it.
        assert_eq!(waiting(st.put("p", "v", part(7, 1, 3, 100), 2)), 2);
        assert_eq!(st.staged_bytes(), 200);
        let Ok(Staged::Complete(whole)) = st.put("p", "v", part(7, 2, 3, 100), 3) else { panic!("complete") };
        assert_eq!((whole.seq, whole.agents.iter().map(|a| a.id).collect::<Vec<_>>()), (7, vec![1, 2, 3]));
        assert_eq!(whole.keyring.as_deref(), Some("{\"wraps\":[]}"), "the keyring of part 0");
        assert_eq!(st.staged_bytes(), 0);
        // The set is gone: a late resend of its last part finds nothing staged.
        assert_eq!(st.put("p", "v", part(7, 2, 3, 100), 4).unwrap_err(), StageError::Missing { index: 2 });
    }

    #[test]
    fn a_lost_staging_a_gap_or_another_snapshot_means_start_over() {
        let st = Staging::new(1000, 300);
        // Nothing staged (a restarted backup).
        assert_eq!(st.put("p", "v", part(7, 1, 3, 10), 0).unwrap_err(), StageError::Missing { index: 1 });
        waiting(st.put("p", "v", part(7, 0, 3, 10), 0));
        // A skipped part.
        assert_eq!(st.put("p", "v", part(7, 2, 3, 10), 0).unwrap_err(), StageError::Missing { index: 2 });
        // Another split of the same seq, an older seq: refused, the staged set stays.
        let e = st.put("p", "v", part(7, 1, 4, 10), 0).unwrap_err();
        assert!(matches!(e, StageError::Mismatch { staged_count: 3, .. }), "{e:?}");
        let e = st.put("p", "v", part(6, 1, 3, 10), 0).unwrap_err();
        assert!(matches!(e, StageError::Mismatch { seq: 6, staged_seq: 7, .. }), "{e:?}");
        assert_eq!(st.staged_bytes(), 10);
        // A newer seq drops the stale set.
        assert!(matches!(st.put("p", "v", part(8, 1, 3, 10), 0), Err(StageError::Mismatch { .. })));
        assert_eq!(st.staged_bytes(), 0);
        // A new part 0 starts over, whatever was staged.
        waiting(st.put("p", "v", part(8, 0, 3, 10), 0));
        waiting(st.put("p", "v", part(8, 1, 3, 10), 0));
        assert_eq!(waiting(st.put("p", "v", part(9, 0, 2, 30), 0)), 1);
        assert_eq!(st.staged_bytes(), 30);
        // Sources and vaults are staged apart.
        assert!(matches!(st.put("q", "v", part(9, 1, 2, 10), 0), Err(StageError::Missing { .. })));
        assert!(matches!(st.put("p", "w", part(9, 1, 2, 10), 0), Err(StageError::Missing { .. })));
    }

    #[test]
    fn the_byte_cap_holds_across_sources_and_vaults_and_a_refusal_keeps_what_is_staged() {
        let st = Staging::new(250, 300);
        waiting(st.put("p", "v", part(1, 0, 3, 100), 0));
        waiting(st.put("q", "w", part(1, 0, 3, 100), 0));
        assert_eq!(st.put("p", "v", part(1, 1, 3, 100), 0).unwrap_err(), StageError::Full { cap: 250 });
        assert_eq!(st.put("r", "x", part(1, 0, 3, 51), 0).unwrap_err(), StageError::Full { cap: 250 });
        assert_eq!(st.staged_bytes(), 200, "nothing staged was lost");
        waiting(st.put("r", "x", part(1, 0, 3, 50), 0));
        assert_eq!(st.staged_bytes(), 250);
        // A part 0 that starts a vault over frees its old set first.
        waiting(st.put("p", "v", part(2, 0, 3, 100), 0));
        assert_eq!(st.staged_bytes(), 250);
    }

    #[test]
    fn a_set_no_part_reached_within_the_max_age_is_dropped() {
        let st = Staging::new(1000, 300);
        waiting(st.put("p", "v", part(1, 0, 3, 100), 1000));
        waiting(st.put("p", "v", part(1, 1, 3, 100), 1200));
        // Touched at 1200: still there at 1500.
        waiting(st.put("q", "w", part(1, 0, 2, 10), 1500));
        assert_eq!(st.staged_bytes(), 210);
        // Past it, the set goes (and its bytes with it), so its next part finds nothing.
        assert_eq!(st.put("p", "v", part(1, 2, 3, 100), 1501).unwrap_err(), StageError::Missing { index: 2 });
        assert_eq!(st.staged_bytes(), 10);
    }
}
