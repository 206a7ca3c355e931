//! The audit spool: where a row becomes durable before its request is answered, without waiting
//! for SQLite.
//!
//! A file (`<vault file>-spool`, 0600) mapped into memory in two halves. A request copies its row
//! into the active half and takes the next id of a range reserved in the vault file
//! (`meta.audit_reserved_upto`); once the copy is done the row is in the kernel's page cache, so
//! the process being killed (even by SIGKILL) cannot lose it, and no syscall was made. The pool
//! thread of [`super::writer`] moves the rows into the `audit` table in large batches a few
//! milliseconds later: it switches the halves, writes the rows of the inactive one with their
//! ids in one transaction, then marks that half empty. After a crash the rows of both halves are
//! written again, skipping ids already there ([`Spool::open`]).
//!
//! Each half starts with a header (a magic number and the half's generation, raised every time
//! the half is reused); each record carries its length and a CRC-32 of the generation and its
//! bytes, so reading stops at the first torn or stale record. Records are written one at a time
//! under the spool's lock, so only the last one can be torn, and a torn record was never
//! acknowledged.
//!
//! Must never: hand out an id outside the reservation, report a row before all its bytes are in
//! the mapping, reuse a half whose rows are not yet in SQLite, or be open twice for one file (an
//! exclusive `flock`; a second opener gets `None` and uses the group commit instead).
//! Under `AuditSync::Full` there is no spool: that mode's promise (a power cut loses nothing) needs
//! an fsync per batch, which the group commit does.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use memmap2::MmapMut;

use crate::store::{AuditRecord, AuditStore, Reservation, StoreError};

/// Bytes per half: 1,700 to 3,300 rows of a read (80 to 150 bytes each), 20 to 40 ms of a busy
/// node's reads. The pool thread moves them every 5 ms, or 20 ms when busy, at once when a half
/// is half full (see [`Appended::Spooled`]'s `wake`); a row that finds the half full waits for
/// it. The file (two halves) exists while its vault is open: a hosted node has one per open vault.
const HALF: usize = 256 * 1024;
/// The fill of the active half, and the ids left in the reservation, at which the row that
/// reaches them asks for the pool thread at once rather than at its next round.
const WAKE_AT_BYTES: usize = HALF / 2;
const WAKE_AT_IDS_LEFT: i64 = 1024;
const MAGIC: u64 = u64::from_le_bytes(*b"CVTSPOOL");
/// Magic and generation.
const HALF_HEADER: usize = 16;
/// Length, CRC, id, ts, agent, entry, five string lengths (three one-byte, two two-byte) and a pad.
const RECORD_HEADER: usize = 48;
/// A longer row (only a long `detail` could make one) goes through the group commit instead.
const MAX_RECORD: usize = 16 * 1024;
/// Stands for NULL in the agent and entry fields.
const NONE: i64 = i64::MIN;

/// Why a row was not spooled: it goes through the group commit (`TooBig`), or waits for the pool
/// thread to make room or ids (`Full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Full,
    TooBig,
}

/// What [`Spool::append`] did with a row.
pub enum Appended {
    /// Durable, with this id. `wake`: this row filled the half or used the ids past the point
    /// where the pool thread should move rows now, not at its next round.
    Spooled {
        id: i64,
        wake: bool,
    },
    Refused(AuditRecord, Refusal),
}

/// Rows taken out of the spool for one move ([`Spool::take`]).
pub struct Taken {
    pub rows: Vec<(i64, AuditRecord)>,
    /// The half that holds them (none when only the reservation is being looked after).
    half: Option<usize>,
    /// Every id below this is in `rows` or already moved.
    pub settled_below: i64,
    /// The reservation when they were taken.
    pub held: Reservation,
}

struct State {
    map: MmapMut,
    active: usize,
    /// Where the next record goes in the active half (from the half's start).
    offset: usize,
    generation: [u64; 2],
    reservation: Reservation,
    /// The rows in the active half, for the pool thread (so it never parses the mapping).
    pending: Vec<(i64, AuditRecord)>,
    /// The inactive half holds rows not yet in SQLite.
    other_busy: bool,
    /// No more ids are handed out ([`Spool::close`]): a move leaves the reservation alone.
    closed: bool,
}

pub struct Spool {
    state: Mutex<State>,
    path: PathBuf,
    /// Holds the `flock` for as long as the spool is open.
    _file: File,
}

impl Drop for Spool {
    /// A spool whose rows are all in SQLite is removed with its last handle (a vault closed for
    /// being idle, a node that stops); one with rows left stays for the next open to move them.
    fn drop(&mut self) {
        let st = self.lock();
        if st.pending.is_empty() && !st.other_busy {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The spool file of a vault file (or node.db).
pub fn spool_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-spool");
    PathBuf::from(p)
}

/// Moves into `db` the rows that a node killed before it could move them left in its spool;
/// nothing if there is no spool, or a running node holds it (that node moves them within
/// milliseconds). For readers outside the node (`clavitor audit list`).
pub fn move_left_rows(db: &Path) -> Result<(), StoreError> {
    if !spool_path(db).exists() {
        return Ok(());
    }
    let mut store = AuditStore::open(db, crate::store::AuditSync::Normal)?;
    if let Some(spool) = Spool::open(db, &mut store)? {
        let next = spool.close();
        store.release(next)?;
    }
    Ok(())
}

impl Spool {
    /// Opens (or creates) `db`'s spool, writes into `store` any rows an earlier run left in it,
    /// and reserves ids. `Ok(None)` if another process or handle has the spool open.
    pub fn open(db: &Path, store: &mut AuditStore) -> Result<Option<Self>, StoreError> {
        let path = spool_path(db);
        let io = |e: std::io::Error| StoreError::Conflict(format!("audit spool {}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        let len = file.metadata().map_err(io)?.len();
        if len != (2 * HALF) as u64 {
            // New (or not ours): zeros written rather than a sparse file, so that a write through
            // the mapping never needs a block the disk no longer has (which would be SIGBUS).
            file.set_len(0).map_err(io)?;
            let zeros = vec![0u8; 2 * HALF];
            file.write_all(&zeros).map_err(io)?;
        }
        // SAFETY: the file is ours (opened above, locked exclusively, 0600), its length fixed at
        // 2 * HALF and never changed while mapped; every access goes through `State`'s lock.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        let mut left = Vec::new();
        let mut generation = [0u64; 2];
        for (half, gen_slot) in generation.iter_mut().enumerate() {
            let (g, rows) = read_half(&map[half * HALF..(half + 1) * HALF]);
            *gen_slot = g;
            left.extend(rows);
        }
        if !left.is_empty() {
            left.sort_by_key(|(id, _)| *id);
            let written = store.replay_spooled(&left)?;
            tracing::info!(spool = %path.display(), found = left.len(), written, "audit rows of an earlier run moved from the spool");
        }
        // Both halves are in SQLite now: neither may be read again.
        for half in 0..2 {
            map[half * HALF..half * HALF + HALF_HEADER].fill(0);
        }
        let reservation = store.reserve_fresh()?;
        let next_generation = generation[0].max(generation[1]) + 1;
        generation[0] = next_generation;
        write_half_header(&mut map, 0, next_generation);
        let state = State {
            map,
            active: 0,
            offset: HALF_HEADER,
            generation,
            reservation,
            pending: Vec::new(),
            other_busy: false,
            closed: false,
        };
        Ok(Some(Self { state: Mutex::new(state), path, _file: file }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies `record` into the spool and gives it the next reserved id. On refusal the record
    /// comes back.
    pub fn append(&self, record: AuditRecord) -> Appended {
        let Some(size) = encoded_len(&record) else { return Appended::Refused(record, Refusal::TooBig) };
        let mut st = self.lock();
        let id = st.reservation.next;
        if id > st.reservation.upto || st.offset + size > HALF {
            return Appended::Refused(record, Refusal::Full);
        }
        let start = st.active * HALF + st.offset;
        let generation = st.generation[st.active];
        encode(&mut st.map[start..start + size], generation, id, &record);
        let filled = st.offset < WAKE_AT_BYTES && st.offset + size >= WAKE_AT_BYTES;
        st.offset += size;
        st.reservation.next += 1;
        st.pending.push((id, record));
        let wake = filled || st.reservation.upto - id == WAKE_AT_IDS_LEFT;
        Appended::Spooled { id, wake }
    }

    /// The rows waiting to be moved, and the switch to the other half for rows that come after
    /// them. `None` if nothing waits (unless `always` and the spool is open: then the reservation
    /// alone is looked after) or the other half is still busy (its rows are being moved).
    pub fn take(&self, always: bool) -> Option<Taken> {
        let mut st = self.lock();
        if st.pending.is_empty() {
            // A closed spool has nothing more to look after: its reservation was given back.
            if !always || st.closed {
                return None;
            }
            return Some(Taken {
                rows: Vec::new(),
                half: None,
                settled_below: st.reservation.next,
                held: st.reservation,
            });
        }
        if st.other_busy {
            return None;
        }
        let old = st.active;
        let new = 1 - old;
        let generation = st.generation[0].max(st.generation[1]) + 1;
        st.generation[new] = generation;
        write_half_header(&mut st.map, new, generation);
        st.active = new;
        st.offset = HALF_HEADER;
        st.other_busy = true;
        let rows = std::mem::take(&mut st.pending);
        Some(Taken { rows, half: Some(old), settled_below: st.reservation.next, held: st.reservation })
    }

    /// After `taken`'s rows are in SQLite: their half is empty again, and the reservation is
    /// what the move left (`now`). True if the spool's next id jumped (past a row written
    /// outside it).
    pub fn moved(&self, taken: &Taken, now: Reservation) -> bool {
        let mut st = self.lock();
        if let Some(half) = taken.half {
            st.map[half * HALF..half * HALF + HALF_HEADER].fill(0);
            st.other_busy = false;
        }
        if now == taken.held || st.closed {
            return false;
        }
        // A jump (rows written outside the spool took ids above the old range) or a longer
        // range: ids already handed out since the take stay below `now.next` either way.
        let jumped = now.next > st.reservation.next;
        st.reservation.next = st.reservation.next.max(now.next);
        st.reservation.upto = now.upto;
        jumped
    }

    /// Hands out no more ids (a node that stops); returns the first id not handed out.
    pub fn close(&self) -> i64 {
        let mut st = self.lock();
        st.closed = true;
        st.reservation.upto = st.reservation.next - 1;
        st.reservation.next
    }

    /// The next id the spool would hand out.
    pub fn next_id(&self) -> i64 {
        self.lock().reservation.next
    }
}

fn write_half_header(map: &mut MmapMut, half: usize, generation: u64) {
    let at = half * HALF;
    // Generation first: the magic makes the header count.
    map[at + 8..at + 16].copy_from_slice(&generation.to_le_bytes());
    map[at..at + 8].copy_from_slice(&MAGIC.to_le_bytes());
}

/// The encoded size of `r` (a multiple of 8), or `None` if it is too long for the spool.
fn encoded_len(r: &AuditRecord) -> Option<usize> {
    let short = |s: &str| u8::try_from(s.len()).ok();
    short(&r.actor)?;
    short(&r.action)?;
    short(&r.outcome)?;
    let n = RECORD_HEADER + r.actor.len() + r.action.len() + r.outcome.len() + r.client.len() + r.detail.len();
    let n = n.div_ceil(8) * 8;
    (n <= MAX_RECORD).then_some(n)
}

fn crc(generation: u64, bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(bytes);
    h.finalize()
}

/// Writes `r` into `out` (exactly [`encoded_len`] bytes). The CRC goes in last.
fn encode(out: &mut [u8], generation: u64, id: i64, r: &AuditRecord) {
    let len = out.len();
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[8..16].copy_from_slice(&id.to_le_bytes());
    out[16..24].copy_from_slice(&r.ts.to_le_bytes());
    out[24..32].copy_from_slice(&r.agent_id.unwrap_or(NONE).to_le_bytes());
    out[32..40].copy_from_slice(&r.entry_id.unwrap_or(NONE).to_le_bytes());
    out[40] = r.actor.len() as u8;
    out[41] = r.action.len() as u8;
    out[42] = r.outcome.len() as u8;
    out[43] = 0;
    out[44..46].copy_from_slice(&(r.client.len() as u16).to_le_bytes());
    out[46..48].copy_from_slice(&(r.detail.len() as u16).to_le_bytes());
    let mut at = RECORD_HEADER;
    for s in [r.actor.as_bytes(), r.action.as_bytes(), r.outcome.as_bytes(), r.client.as_bytes(), r.detail.as_bytes()] {
        out[at..at + s.len()].copy_from_slice(s);
        at += s.len();
    }
    out[at..].fill(0);
    let sum = crc(generation, &out[8..]);
    out[4..8].copy_from_slice(&sum.to_le_bytes());
}

/// One record at the start of `bytes`, if it is whole and of `generation`: its id, the row and
/// its length.
fn decode(bytes: &[u8], generation: u64) -> Option<(i64, AuditRecord, usize)> {
    let u32_at = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let i64_at = |at: usize| bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(i64::from_le_bytes);
    let len = usize::try_from(u32_at(0)?).ok()?;
    if !(RECORD_HEADER..=MAX_RECORD).contains(&len) || len % 8 != 0 || len > bytes.len() {
        return None;
    }
    if u32_at(4)? != crc(generation, &bytes[8..len]) {
        return None;
    }
    let id = i64_at(8)?;
    let ts = i64_at(16)?;
    let opt = |v: i64| (v != NONE).then_some(v);
    let (agent_id, entry_id) = (opt(i64_at(24)?), opt(i64_at(32)?));
    let lens = [
        usize::from(bytes[40]),
        usize::from(bytes[41]),
        usize::from(bytes[42]),
        usize::from(u16::from_le_bytes([bytes[44], bytes[45]])),
        usize::from(u16::from_le_bytes([bytes[46], bytes[47]])),
    ];
    let mut at = RECORD_HEADER;
    let mut texts = Vec::with_capacity(5);
    for n in lens {
        let s = std::str::from_utf8(bytes.get(at..at + n)?).ok()?;
        texts.push(s.to_owned());
        at += n;
    }
    if at > len {
        return None;
    }
    let mut texts = texts.into_iter();
    let mut next = || texts.next().unwrap_or_default();
    let (actor, action, outcome, client, detail) = (next(), next(), next(), next(), next());
    let record = AuditRecord {
        ts,
        actor: Cow::Owned(actor),
        agent_id,
        action: Cow::Owned(action),
        entry_id,
        client,
        outcome: Cow::Owned(outcome),
        detail,
    };
    Some((id, record, len))
}

/// The generation of a half and the whole records of that generation in it, in order; a half
/// without the magic (empty, or already moved) has none.
fn read_half(half: &[u8]) -> (u64, Vec<(i64, AuditRecord)>) {
    let magic = u64::from_le_bytes(half[0..8].try_into().unwrap_or_default());
    let generation = u64::from_le_bytes(half[8..16].try_into().unwrap_or_default());
    if magic != MAGIC {
        return (generation, Vec::new());
    }
    let mut rows = Vec::new();
    let mut at = HALF_HEADER;
    while let Some((id, record, len)) = decode(&half[at..], generation) {
        rows.push((id, record));
        at += len;
    }
    (generation, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditSync, RESERVE};

    fn record(i: i64) -> AuditRecord {
        AuditRecord {
            ts: 1_700_000_000_000 + i,
            actor: Cow::Borrowed("agent"),
            agent_id: Some(i),
            action: Cow::Borrowed("entry.read"),
            entry_id: (i % 2 == 0).then_some(i),
            client: format!("10.0.0.{}", i % 250),
            outcome: Cow::Borrowed("ok"),
            detail: if i % 3 == 0 { String::new() } else { format!("n={i}") },
        }
    }

    fn stored(path: &Path) -> Vec<(i64, AuditRecord)> {
        let db = crate::store::vault_db::VaultDb::open(path).unwrap();
        let mut rows: Vec<_> = db.audit(None, 100_000).unwrap().into_iter().map(|r| (r.id, r.record)).collect();
        rows.sort_by_key(|(id, _)| *id);
        rows
    }

    #[test]
    fn records_read_back_exactly_and_a_torn_or_stale_one_ends_the_half() {
        let mut half = vec![0u8; HALF];
        write_half_header_raw(&mut half, 7);
        let mut at = HALF_HEADER;
        let rows: Vec<(i64, AuditRecord)> = (1..=5).map(|i| (100 + i, record(i))).collect();
        let mut ends = Vec::new();
        for (id, r) in &rows {
            let n = encoded_len(r).unwrap();
            encode(&mut half[at..at + n], 7, *id, r);
            at += n;
            ends.push(at);
        }
        assert_eq!(read_half(&half), (7, rows.clone()));
        // The last record torn (its last byte never written): the four before it remain.
        let mut torn = half.clone();
        torn[ends[4] - 9] ^= 0xff;
        assert_eq!(read_half(&torn).1, rows[..4].to_vec());
        // A half reused under a new generation: its old records do not count.
        let mut reused = half.clone();
        write_half_header_raw(&mut reused, 8);
        assert!(read_half(&reused).1.is_empty());
        // A half marked moved: nothing.
        let mut moved = half;
        moved[..HALF_HEADER].fill(0);
        assert!(read_half(&moved).1.is_empty());
    }

    fn write_half_header_raw(half: &mut [u8], generation: u64) {
        half[8..16].copy_from_slice(&generation.to_le_bytes());
        half[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    }

    #[test]
    fn rows_left_in_the_spool_are_moved_at_the_next_open_and_only_once() {
        let (dir, path) = crate::audit::temp_vault_file();
        let mut store = AuditStore::open(&path, AuditSync::Normal).unwrap();
        let spool = Spool::open(&path, &mut store).unwrap().unwrap();
        // A second opener (another process, or a vault reopened while this one lives) is refused.
        assert!(Spool::open(&path, &mut AuditStore::open(&path, AuditSync::Normal).unwrap()).unwrap().is_none());
        let mut want = Vec::new();
        for i in 0..10 {
            let Appended::Spooled { id, .. } = spool.append(record(i)) else { panic!("spooled") };
            want.push((id, record(i)));
        }
        // Five moved, five more appended into the other half, then the process "dies".
        let taken = spool.take(false).unwrap();
        let now = store.move_spooled(&taken.rows, taken.settled_below, taken.held).unwrap();
        spool.moved(&taken, now);
        for i in 10..15 {
            let Appended::Spooled { id, .. } = spool.append(record(i)) else { panic!("spooled") };
            want.push((id, record(i)));
        }
        let taken = spool.take(false).unwrap();
        // Moved into SQLite, but the half not yet marked (a crash right after the commit).
        store.move_spooled(&taken.rows, taken.settled_below, taken.held).unwrap();
        for i in 15..18 {
            let Appended::Spooled { id, .. } = spool.append(record(i)) else { panic!("spooled") };
            want.push((id, record(i)));
        }
        drop(spool);
        drop(store);
        assert_eq!(stored(&path).len(), 15);
        let mut store = AuditStore::open(&path, AuditSync::Normal).unwrap();
        let spool = Spool::open(&path, &mut store).unwrap().unwrap();
        assert_eq!(stored(&path), want);
        // Ids go on from the last row, and nothing is replayed twice.
        assert_eq!(spool.next_id(), want.last().unwrap().0 + 1);
        drop(spool);
        drop(Spool::open(&path, &mut store).unwrap().unwrap());
        assert_eq!(stored(&path), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_row_written_outside_the_spool_goes_above_its_range_and_the_spool_jumps_past_it() {
        let (dir, path) = crate::audit::temp_vault_file();
        let mut store = AuditStore::open(&path, AuditSync::Normal).unwrap();
        let spool = Spool::open(&path, &mut store).unwrap().unwrap();
        let Appended::Spooled { id: a, .. } = spool.append(record(1)) else { panic!("spooled") };
        // The CLI (another connection) writes a row meanwhile.
        let db = crate::store::vault_db::VaultDb::open(&path).unwrap();
        let cli = db.append_audit(&record(2)).unwrap();
        assert!(cli > a + RESERVE / 2, "a row outside the spool takes an id above the reservation: {cli} vs {a}");
        let Appended::Spooled { id: b, .. } = spool.append(record(3)) else { panic!("spooled") };
        assert_eq!(b, a + 1, "the spool keeps its range until it learns of the row");
        let settled =
            |db: &crate::store::vault_db::VaultDb| db.meta("audit_settled").unwrap().unwrap().parse::<i64>().unwrap();
        let taken = spool.take(false).unwrap();
        let now = store.move_spooled(&taken.rows, taken.settled_below, taken.held).unwrap();
        spool.moved(&taken, now);
        assert!(settled(&db) <= cli, "the outside row is not final yet: a copier must wait for it");
        let Appended::Spooled { id: c, .. } = spool.append(record(4)) else { panic!("spooled") };
        assert_eq!(c, cli + 1, "after the move the spool's ids go on above the outside row");
        let taken = spool.take(false).unwrap();
        let now = store.move_spooled(&taken.rows, taken.settled_below, taken.held).unwrap();
        spool.moved(&taken, now);
        assert_eq!(settled(&db), c + 1);
        let ids: Vec<i64> = stored(&path).into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![a, b, cli, c]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_row_that_fills_half_a_half_or_nears_the_end_of_the_ids_asks_for_a_move() {
        let (dir, path) = crate::audit::temp_vault_file();
        let mut store = AuditStore::open(&path, AuditSync::Normal).unwrap();
        let spool = Spool::open(&path, &mut store).unwrap().unwrap();
        let (mut wakes, mut n) = (Vec::new(), 0);
        // Until the half is full: exactly one wake, from the row that crossed its middle.
        loop {
            let before = spool.lock().offset;
            match spool.append(record(n)) {
                Appended::Spooled { wake, .. } => wakes.extend(wake.then_some((before, spool.lock().offset))),
                Appended::Refused(_, refusal) => {
                    assert_eq!(refusal, Refusal::Full);
                    break;
                }
            }
            n += 1;
        }
        assert_eq!(wakes.len(), 1, "{wakes:?}");
        assert!(wakes[0].0 < WAKE_AT_BYTES && wakes[0].1 >= WAKE_AT_BYTES, "woke at {wakes:?}");
        // Moved, and both halves appended to (a half at a time) until 1,024 ids are left: the row
        // that leaves exactly that many asks again, whatever the fill.
        let mut asked_at_ids_left = Vec::new();
        loop {
            let taken = spool.take(false).unwrap();
            let now = store.move_spooled(&taken.rows, taken.settled_below, taken.held).unwrap();
            spool.moved(&taken, Reservation { upto: taken.held.upto, ..now });
            let mut full = false;
            while !full {
                match spool.append(record(n)) {
                    Appended::Spooled { id, wake } => {
                        let left = spool.lock().reservation.upto - id;
                        if wake && left == WAKE_AT_IDS_LEFT {
                            asked_at_ids_left.push(id);
                        }
                    }
                    Appended::Refused(..) => full = true,
                }
                n += 1;
            }
            let reservation = spool.lock().reservation;
            if reservation.next > reservation.upto {
                break;
            }
            assert!(n < 4 * RESERVE, "the reservation never ran out");
        }
        assert_eq!(asked_at_ids_left.len(), 1, "{asked_at_ids_left:?}");
        drop(spool);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
