//! The `audit` table's multi-row INSERTs (their text, batch sizes and binds in one place),
//! prepared once per connection, with text bound in place.
//!
//! rusqlite binds every string `SQLITE_TRANSIENT`: SQLite allocates and copies it before the
//! statement runs. An audit row has four strings and a busy node writes a row per read, so those
//! copies (an allocation, a copy and a free each) were a sixth of the audit mover's time. Here the
//! strings are bound `SQLITE_STATIC`, pointing into the caller's rows. That is sound only while
//! the rows live and while the statement holds no pointer past the call, so [`Insert::run`] binds,
//! steps, then resets the statement and clears its bindings before it returns, whatever happened.
//!
//! Owns: raw statement handles of one connection. Must never: outlive that connection (an
//! [`Inserts`] is dropped by its owner before the connection: see `AuditStore`'s `Drop`), be used
//! with another connection, or be used from two threads at once (it is `Send`, not `Sync`).

use std::ffi::{c_int, c_uint};
use std::ptr::NonNull;

use rusqlite::{Connection, ffi};

use super::audit_sql::AuditRecord;

/// Columns bound per row, in the order of [`insert_sql`]'s column list (and of `bind_all`).
const COLUMNS: usize = 9;

/// Rows per multi-row INSERT, largest first; a batch is split into these so that only this
/// many statements are ever prepared (an `AuditStore`'s `Inserts` holds them all).
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// What a row whose id is already taken does: fails the batch (a new row: ids are reserved, so
/// this means the file was changed behind the writer's back), or is skipped (a spool replayed
/// after a crash, whose rows may already have been moved).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnTaken {
    Fail,
    Skip,
}

/// The INSERT of `CHUNKS[size]` rows, [`COLUMNS`] parameters each.
fn insert_sql(size: usize, on_taken: OnTaken) -> &'static str {
    static SQL: std::sync::LazyLock<[Vec<String>; 2]> = std::sync::LazyLock::new(|| {
        let row = format!("({})", ["?"; COLUMNS].join(", "));
        ["OR FAIL", "OR IGNORE"].map(|conflict| {
            CHUNKS
                .iter()
                .map(|n| {
                    let rows = vec![row.as_str(); *n].join(", ");
                    // OR FAIL, not the default ABORT: an ABORT statement that writes several
                    // rows keeps a statement journal so it can undo its own rows alone (a 64 KiB
                    // buffer and a copy of every page it touches, per batch). A failed batch is
                    // rolled back whole by its caller, so that undo is never needed.
                    format!(
                        "INSERT {conflict} INTO audit (id, ts, actor, agent_id, action, entry_id, client, outcome, detail) VALUES {rows}"
                    )
                })
                .collect()
        })
    });
    SQL[usize::from(on_taken == OnTaken::Skip)].get(size).map_or("", String::as_str)
}

/// One prepared INSERT of exactly `rows` rows.
struct Insert {
    stmt: NonNull<ffi::sqlite3_stmt>,
    rows: usize,
}

// SAFETY: a statement may move between threads with its connection (SQLite's multi-thread
// mode); `Inserts` lives in the same `AuditStore` as its connection and is only reached through
// `&mut`, so it is never used by two threads at once.
unsafe impl Send for Insert {}

impl Drop for Insert {
    fn drop(&mut self) {
        // SAFETY: the handle came from sqlite3_prepare_v3 and is finalized once, here, while its
        // connection is still open (the owner drops `Inserts` first).
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// The error SQLite reports for `rc` on `conn`, as rusqlite reports its own.
fn error(conn: &Connection, rc: c_int) -> rusqlite::Error {
    // SAFETY: the handle is only read from, on the thread that holds `&Connection`.
    let db = unsafe { conn.handle() };
    // SAFETY: `db` is open; sqlite3_errmsg returns a NUL-terminated string owned by SQLite,
    // copied here before anything else runs on the connection.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(db);
        (!text.is_null()).then(|| std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    // SAFETY: as above.
    let code = unsafe { ffi::sqlite3_extended_errcode(db) };
    rusqlite::Error::SqliteFailure(ffi::Error::new(if code == ffi::SQLITE_OK { rc } else { code }), message)
}

impl Insert {
    fn prepare(conn: &Connection, sql: &str, rows: usize) -> rusqlite::Result<Self> {
        let len = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt = std::ptr::null_mut();
        // SAFETY: `sql` is valid for `len` bytes; the out pointer is a local. PERSISTENT: the
        // statement is kept for the connection's life.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                conn.handle(),
                sql.as_ptr().cast(),
                len,
                ffi::SQLITE_PREPARE_PERSISTENT as c_uint,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(conn, rc));
        }
        let stmt = NonNull::new(stmt).ok_or(rusqlite::Error::InvalidQuery)?;
        // Owned from here: dropped (finalized) on the way out if the text does not fit the rows.
        let insert = Self { stmt, rows };
        // SAFETY: reads a property of the live statement.
        let params = unsafe { ffi::sqlite3_bind_parameter_count(insert.stmt.as_ptr()) };
        if usize::try_from(params).ok() != Some(rows * COLUMNS) {
            return Err(rusqlite::Error::InvalidParameterCount(rows * COLUMNS, usize::try_from(params).unwrap_or(0)));
        }
        Ok(insert)
    }

    /// Inserts `rows` (exactly `self.rows` of them) with their ids; returns how many rows the
    /// statement wrote (fewer than given when it skips rows whose id is taken).
    fn run(&mut self, conn: &Connection, rows: &[(i64, &AuditRecord)]) -> rusqlite::Result<usize> {
        if rows.len() != self.rows {
            return Err(rusqlite::Error::InvalidParameterCount(rows.len() * COLUMNS, self.rows * COLUMNS));
        }
        let st = self.stmt.as_ptr();
        let result = Self::bind_all(st, rows).and_then(|()| {
            // SAFETY: every parameter is bound; the bound strings live in `rows`, borrowed for
            // this whole call.
            match unsafe { ffi::sqlite3_step(st) } {
                // SAFETY: reads a counter of the open connection.
                ffi::SQLITE_DONE => Ok(usize::try_from(unsafe { ffi::sqlite3_changes64(conn.handle()) }).unwrap_or(0)),
                rc => Err(rc),
            }
        });
        // SAFETY: after this no pointer into `rows` is left in the statement; the reset's own
        // return code repeats the step's error, already taken above.
        unsafe {
            ffi::sqlite3_reset(st);
            ffi::sqlite3_clear_bindings(st);
        }
        result.map_err(|rc| error(conn, rc))
    }

    fn bind_all(st: *mut ffi::sqlite3_stmt, rows: &[(i64, &AuditRecord)]) -> Result<(), c_int> {
        let ok = |rc: c_int| if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) };
        // SAFETY (all three): `st` is a live statement and `at` one of its parameters (counted
        // from `rows.len() == self.rows`). Text is bound STATIC: SQLite reads it in place until
        // the statement is reset and its bindings cleared, which `run` does before `rows` can go.
        let int = |at: usize, v: i64| ok(unsafe { ffi::sqlite3_bind_int64(st, at as c_int, v) });
        let opt = |at: usize, v: Option<i64>| match v {
            Some(v) => int(at, v),
            None => ok(unsafe { ffi::sqlite3_bind_null(st, at as c_int) }),
        };
        let text = |at: usize, v: &str| {
            ok(unsafe {
                ffi::sqlite3_bind_text64(
                    st,
                    at as c_int,
                    v.as_ptr().cast(),
                    v.len() as u64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                )
            })
        };
        for (i, (id, r)) in rows.iter().enumerate() {
            let at = i * COLUMNS;
            int(at + 1, *id)?;
            int(at + 2, r.ts)?;
            text(at + 3, &r.actor)?;
            opt(at + 4, r.agent_id)?;
            text(at + 5, &r.action)?;
            opt(at + 6, r.entry_id)?;
            text(at + 7, &r.client)?;
            text(at + 8, &r.outcome)?;
            text(at + 9, &r.detail)?;
        }
        Ok(())
    }
}

/// The prepared INSERTs of one connection, by SQL text (each text has one row count).
#[derive(Default)]
pub(crate) struct Inserts {
    prepared: Vec<(&'static str, Insert)>,
}

impl Inserts {
    /// Runs `sql` (an INSERT of `rows.len()` rows, [`COLUMNS`] parameters each) over `rows` on
    /// `conn`, preparing it on first use. `conn` must be the connection every earlier call used.
    fn run(&mut self, conn: &Connection, sql: &'static str, rows: &[(i64, &AuditRecord)]) -> rusqlite::Result<usize> {
        // The texts are statics: the same text is the same pointer, no need to compare 2 KiB.
        let at = match self.prepared.iter().position(|(s, _)| std::ptr::eq(*s, sql)) {
            Some(at) => at,
            None => {
                self.prepared.push((sql, Insert::prepare(conn, sql, rows.len())?));
                self.prepared.len() - 1
            }
        };
        self.prepared[at].1.run(conn, rows)
    }

    /// Inserts every row of `rows` in [`CHUNKS`]-sized statements on `conn` (the connection
    /// every earlier call used); returns how many were written.
    pub(crate) fn insert_all(
        &mut self,
        conn: &Connection,
        rows: &[(i64, &AuditRecord)],
        on_taken: OnTaken,
    ) -> rusqlite::Result<usize> {
        let mut rest = rows;
        let mut written = 0;
        while !rest.is_empty() {
            let size = CHUNKS.iter().position(|c| *c <= rest.len()).unwrap_or(CHUNKS.len() - 1);
            let (chunk, tail) = rest.split_at(CHUNKS[size].min(rest.len()));
            written += self.run(conn, insert_sql(size, on_taken), chunk)?;
            rest = tail;
        }
        Ok(written)
    }

    /// Finalizes every statement; for the owner's `Drop`, before the connection closes.
    pub(crate) fn clear(&mut self) {
        self.prepared.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    const SQL1: &str = "INSERT OR FAIL INTO audit (id, ts, actor, agent_id, action, entry_id, client, outcome, detail) \
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    const SQL2: &str = "INSERT OR IGNORE INTO audit (id, ts, actor, agent_id, action, entry_id, client, outcome, detail) \
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?, ?, ?, ?)";

    fn record(client: &str, detail: &str, agent: Option<i64>) -> AuditRecord {
        AuditRecord {
            ts: 1_700_000_000_000,
            actor: Cow::Borrowed("agent"),
            agent_id: agent,
            action: Cow::Borrowed("entry.read"),
            entry_id: None,
            client: client.to_owned(),
            outcome: Cow::Borrowed("ok"),
            detail: detail.to_owned(),
        }
    }

    fn stored(conn: &Connection) -> Vec<(i64, Option<i64>, String, String)> {
        let mut st = conn.prepare("SELECT id, agent_id, client, detail FROM audit ORDER BY id").unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn rows_read_back_exactly_and_a_failed_run_leaves_the_statement_usable() {
        let (dir, path) = crate::audit::temp_vault_file();
        let conn = Connection::open(&path).unwrap();
        let mut inserts = Inserts::default();
        let a = record("", "", None);
        let b = record("2001:db8::1", "läuft – ✓", Some(7));
        assert_eq!(inserts.run(&conn, SQL1, &[(10, &a)]).unwrap(), 1);
        // Strings dropped right after the call: nothing of them may be read later.
        {
            let c = record(&"x".repeat(300), &"d".repeat(5000), Some(3));
            assert_eq!(inserts.run(&conn, SQL1, &[(11, &c)]).unwrap(), 1);
        }
        // A taken id fails the OR FAIL statement with SQLite's constraint code; the statement
        // runs again afterwards.
        let err = inserts.run(&conn, SQL1, &[(10, &b)]).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ConstraintViolation), "{err}");
        assert_eq!(inserts.run(&conn, SQL1, &[(12, &b)]).unwrap(), 1);
        // OR IGNORE skips the taken id and says so in its count.
        assert_eq!(inserts.run(&conn, SQL2, &[(12, &a), (13, &b)]).unwrap(), 1);
        // The wrong number of rows for a statement is refused before anything is bound, also
        // when it is the first use of its text.
        assert!(inserts.run(&conn, SQL2, &[(14, &a)]).is_err());
        let mut fresh = Inserts::default();
        assert!(fresh.run(&conn, SQL2, &[(14, &a)]).is_err());
        assert!(fresh.prepared.is_empty());
        assert_eq!(
            stored(&conn),
            vec![
                (10, None, String::new(), String::new()),
                (11, Some(3), "x".repeat(300), "d".repeat(5000)),
                (12, Some(7), "2001:db8::1".to_owned(), "läuft – ✓".to_owned()),
                (13, Some(7), "2001:db8::1".to_owned(), "läuft – ✓".to_owned()),
            ]
        );
        assert_eq!(inserts.prepared.len(), 2, "one statement per text");
        inserts.clear();
        // The connection closes cleanly once its statements are gone.
        conn.close().map_err(|(_, e)| e).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
