//! Replicated entry rows (commercial, issue 14 items 3 and 5): the primary's dirty rows and
//! their acknowledgement, and a backup's apply of a batch exactly as the primary stored it.
//!
//! Primary: [`VaultDb::dirty_entries`] reads the oldest dirty rows (tombstones included) in
//! change order; [`VaultDb::mark_replicated`] clears `dirty` only for a row whose `change_seq`
//! is still the one that was sent, so a row changed while its batch was in flight stays dirty
//! and goes again. The backlog is the dirty rows on disk; nothing is held in memory.
//!
//! Rows keep the primary's id, uuid, sealed payload and MAC: the MAC covers the id, so a row is
//! valid here only under the same data key (which the backup received sealed to it, see
//! `crypto::key_transport`). A batch with any row whose MAC does not verify is refused whole and
//! changes nothing. Applying is idempotent and last write wins by (updated_at, version); on an
//! exact tie a tombstone wins, otherwise the stored row stays (a resend of the same row). Every
//! row applied advances the backup's own `change_seq`, so the running server's change watcher
//! picks it up. Applied rows are never dirty: a backup never replicates onward. Never decrypts.

use rusqlite::{OptionalExtension, params};

use super::vault_db::{EntryRow, VaultDb, bump_seq};
use super::{Ctx, StoreError};

/// What one batch did: rows written, and rows skipped because the stored row was as new or newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    pub written: usize,
    pub skipped: usize,
}

/// True if `incoming` should replace the stored row with (updated_at, version, deleted).
fn newer(incoming: &EntryRow, stored: (i64, i64, bool)) -> bool {
    let (updated_at, version, deleted) = stored;
    match (incoming.updated_at, incoming.version).cmp(&(updated_at, version)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        // A tombstone beats a write with the same stamp; anything else is a resend.
        std::cmp::Ordering::Equal => incoming.deleted && !deleted,
    }
}

impl VaultDb {
    /// The oldest `limit` dirty entry rows, in change order.
    pub fn dirty_entries(&self, limit: u32) -> Result<Vec<EntryRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, uuid, scopes, created_at, updated_at, version, deleted, change_seq, data, mac
                 FROM entries WHERE dirty = 1 ORDER BY change_seq LIMIT ?1",
            )
            .ctx(&self.path)?;
        let rows = st
            .query_map([limit], |r| {
                Ok(EntryRow {
                    id: r.get(0)?,
                    uuid: r.get(1)?,
                    scopes: r.get(2)?,
                    created_at: r.get(3)?,
                    updated_at: r.get(4)?,
                    version: r.get(5)?,
                    deleted: r.get(6)?,
                    change_seq: r.get(7)?,
                    data: r.get(8)?,
                    mac: r.get(9)?,
                })
            })
            .ctx(&self.path)?;
        rows.collect::<Result<_, _>>().ctx(&self.path)
    }

    /// How many entry rows wait to be replicated (the `replication_backlog` figure).
    pub fn dirty_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM entries WHERE dirty = 1", [], |r| r.get(0)).ctx(&self.path)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Marks the acknowledged rows, given as (id, change_seq as sent), replicated. A row whose
    /// change_seq moved on since it was sent stays dirty. Returns how many were marked.
    pub fn mark_replicated(&mut self, acked: &[(i64, i64)], now_ms: i64) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let mut marked = 0;
        for (id, seq) in acked {
            marked += tx
                .execute(
                    "UPDATE entries SET dirty = 0, replicated_at = ?3 WHERE id = ?1 AND change_seq = ?2 AND dirty = 1",
                    params![id, seq, now_ms],
                )
                .ctx(&path)?;
        }
        tx.commit().ctx(&path)?;
        Ok(marked)
    }

    /// Applies replicated entry rows in one transaction (see the module docs). Refused whole,
    /// with nothing changed, if a row's MAC does not verify under this vault's key or its uuid
    /// belongs to another id here.
    pub fn apply_replicated_entries(&mut self, rows: &[EntryRow], now_ms: i64) -> Result<Applied, StoreError> {
        if let Some(bad) = rows.iter().find(|r| !self.entry_authentic(r)) {
            return Err(StoreError::Conflict(format!(
                "replicated entry {} does not verify under this vault's key",
                bad.id
            )));
        }
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let mut out = Applied::default();
        for r in rows {
            let stored: Option<(i64, i64, bool)> = tx
                .query_row("SELECT updated_at, version, deleted FROM entries WHERE id = ?1", [r.id], |x| {
                    Ok((x.get(0)?, x.get(1)?, x.get(2)?))
                })
                .optional()
                .ctx(&path)?;
            let uuid_owner: Option<i64> = tx
                .query_row("SELECT id FROM entries WHERE uuid = ?1", [&r.uuid], |x| x.get(0))
                .optional()
                .ctx(&path)?;
            if uuid_owner.is_some_and(|id| id != r.id) {
                return Err(StoreError::Conflict(format!("replicated entry {} reuses another entry's uuid", r.id)));
            }
            if stored.is_some_and(|s| !newer(r, s)) {
                out.skipped += 1;
                continue;
            }
            let seq = bump_seq(&tx, &path)?;
            tx.execute(
                "INSERT INTO entries (id, uuid, scopes, created_at, updated_at, version, deleted, change_seq,
                                      dirty, replicated_at, data, mac)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)
                 ON CONFLICT(id) DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at,
                     version = excluded.version, deleted = excluded.deleted, change_seq = excluded.change_seq,
                     dirty = 0, replicated_at = excluded.replicated_at, data = excluded.data, mac = excluded.mac",
                params![
                    r.id,
                    r.uuid,
                    r.scopes,
                    r.created_at,
                    r.updated_at,
                    r.version,
                    r.deleted,
                    seq,
                    now_ms,
                    r.data,
                    r.mac
                ],
            )
            .ctx(&path)?;
            out.written += 1;
        }
        tx.commit().ctx(&path)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DataKey;
    use crate::store::AuditRecord;

    struct Pair {
        dir: std::path::PathBuf,
        primary: VaultDb,
        backup: VaultDb,
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn pair(backup_key: &DataKey) -> (Pair, DataKey) {
        let dir =
            std::env::temp_dir().join(format!("clavitor-rep-{}", hex::encode(crate::crypto::random_bytes::<8>())));
        std::fs::create_dir_all(&dir).unwrap();
        let dk = DataKey::generate();
        let mut primary = VaultDb::open(&dir.join("p.db")).unwrap();
        primary.set_row_key(dk.row_key(), "v1");
        let mut backup = VaultDb::open(&dir.join("b.db")).unwrap();
        backup.set_row_key(backup_key.row_key(), "v1");
        (Pair { dir, primary, backup }, dk)
    }

    fn audit() -> AuditRecord {
        AuditRecord {
            ts: 0,
            actor: "test".to_owned().into(),
            agent_id: None,
            action: "entry.create".into(),
            entry_id: None,
            client: String::new(),
            outcome: "ok".into(),
            detail: String::new(),
        }
    }

    /// The primary's data key as the backup receives it: sealed to its transport key.
    fn same_key(dk: &DataKey) -> DataKey {
        use crate::crypto::key_transport::{TransportSecret, open_data_key, seal_data_key};
        let backup = TransportSecret::from_seed(&crate::crypto::random_bytes());
        let moved = seal_data_key(&backup.public(), dk, "v1", "paris-01", "zurich-01").unwrap();
        open_data_key(&backup, &moved, "v1", "paris-01", "zurich-01").unwrap()
    }

    #[test]
    fn rows_arrive_as_stored_idempotently_and_the_last_write_wins() {
        let dk0 = DataKey::generate();
        let (mut p, dk) = pair(&dk0);
        // The backup holds the primary's data key (as HPKE transport gives it).
        p.backup.set_row_key(same_key(&dk).row_key(), "v1");
        let id = p.primary.insert_entry("u1", "s1", b"sealed-1", 1000, &audit()).unwrap();
        let first = p.primary.entries_since(0).unwrap();
        let before = p.backup.change_seq().unwrap();
        assert_eq!(p.backup.apply_replicated_entries(&first, 1).unwrap(), Applied { written: 1, skipped: 0 });
        assert!(p.backup.change_seq().unwrap() > before, "the backup's watcher sees the change");
        // A resend changes nothing.
        assert_eq!(p.backup.apply_replicated_entries(&first, 2).unwrap(), Applied { written: 0, skipped: 1 });
        let got = p.backup.entry(id).unwrap().unwrap();
        assert_eq!((got.uuid.as_str(), got.data.as_slice(), got.version), ("u1", b"sealed-1".as_slice(), 1));
        assert!(p.backup.entry_authentic(&got), "the MAC verifies on the backup");

        p.primary.update_entry(id, "s2", b"sealed-2", None, 2000, &audit()).unwrap();
        let second = p.primary.entries_since(0).unwrap();
        p.backup.apply_replicated_entries(&second, 3).unwrap();
        // An older write arriving late loses.
        assert_eq!(p.backup.apply_replicated_entries(&first, 4).unwrap(), Applied { written: 0, skipped: 1 });
        let got = p.backup.entry(id).unwrap().unwrap();
        assert_eq!((got.scopes.as_str(), got.data.as_slice(), got.version), ("s2", b"sealed-2".as_slice(), 2));

        // The tombstone wins over the write before it, and a late resend does not resurrect it.
        p.primary.delete_entry(id, 2000, &audit()).unwrap();
        let tomb = p.primary.entries_since(0).unwrap();
        p.backup.apply_replicated_entries(&tomb, 5).unwrap();
        assert_eq!(p.backup.apply_replicated_entries(&second, 6).unwrap(), Applied { written: 0, skipped: 1 });
        let got = p.backup.entry(id).unwrap().unwrap();
        assert!(got.deleted && got.data.is_empty(), "{got:?}");
    }

    #[test]
    fn only_acknowledged_unchanged_rows_stop_being_dirty() {
        let dk0 = DataKey::generate();
        let (mut p, _dk) = pair(&dk0);
        let a = p.primary.insert_entry("a", "s", b"1", 1000, &audit()).unwrap();
        let b = p.primary.insert_entry("b", "s", b"2", 1000, &audit()).unwrap();
        let c = p.primary.insert_entry("c", "s", b"3", 1000, &audit()).unwrap();
        let batch = p.primary.dirty_entries(2).unwrap();
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, b], "oldest first, batch-sized");
        // `b` changes while the batch is in flight: its acknowledgement must not clear it.
        p.primary.update_entry(b, "s", b"2b", None, 1001, &audit()).unwrap();
        let acked: Vec<_> = batch.iter().map(|r| (r.id, r.change_seq)).collect();
        assert_eq!(p.primary.mark_replicated(&acked, 5).unwrap(), 1);
        assert_eq!(p.primary.dirty_count().unwrap(), 2);
        let next = p.primary.dirty_entries(10).unwrap();
        assert_eq!(next.iter().map(|r| r.id).collect::<Vec<_>>(), vec![c, b]);
        assert_eq!(next[1].data, b"2b");
        // A second acknowledgement of the same rows is harmless.
        assert_eq!(p.primary.mark_replicated(&acked, 6).unwrap(), 0);
        // A delete makes the row dirty again, and the tombstone goes.
        p.primary.delete_entry(a, 1002, &audit()).unwrap();
        assert!(p.primary.dirty_entries(10).unwrap().iter().any(|r| r.id == a && r.deleted));
    }

    #[test]
    fn a_tombstone_beats_a_write_with_the_same_stamp() {
        let stored = (2000, 3, false);
        let mut row = EntryRow {
            id: 1,
            uuid: "u".into(),
            scopes: String::new(),
            created_at: 0,
            updated_at: 2000,
            version: 3,
            deleted: true,
            mac: None,
            change_seq: 0,
            data: Vec::new(),
        };
        assert!(newer(&row, stored));
        row.deleted = false;
        assert!(!newer(&row, stored), "same stamp, not a tombstone: a resend");
        assert!(!newer(&row, (2000, 3, true)), "a live row never replaces a tombstone of the same stamp");
    }

    #[test]
    fn a_batch_with_a_row_that_does_not_verify_changes_nothing() {
        let other = DataKey::generate();
        let (mut p, dk) = pair(&other);
        p.primary.insert_entry("u1", "s1", b"x", 1000, &audit()).unwrap();
        let rows = p.primary.entries_since(0).unwrap();
        // The backup holds another key: the primary's MACs do not verify under it.
        let err = p.backup.apply_replicated_entries(&rows, 1).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        assert!(p.backup.entries_since(0).unwrap().is_empty());

        // One forged row in an otherwise good batch: refused whole.
        p.backup.set_row_key(same_key(&dk).row_key(), "v1");
        let mut forged = rows[0].clone();
        forged.id = 99;
        forged.uuid = "u99".into();
        let err = p.backup.apply_replicated_entries(&[rows[0].clone(), forged], 1).unwrap_err();
        assert!(err.to_string().contains("99"), "{err}");
        assert!(p.backup.entries_since(0).unwrap().is_empty(), "nothing applied");
    }
}
