//! The data directory: `node.db`, `vaults/<vault_id>.db`, and (by default) `master.key`.
//!
//! Owns first-run initialisation and opening a vault file with the master key. It refuses to
//! guess: a vault whose key does not unwrap, or more vaults than the edition serves, is an error.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::gate::{self, SetupCode};
use super::{VaultError, VaultId};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::crypto::{DataKey, MasterKey};
use crate::store::node_db::{NodeDb, VaultRegistration};
use crate::store::vault_db::VaultDb;

#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
    pub master_key_file: PathBuf,
}

/// What `init` did, for the caller to report once.
pub struct InitReport {
    pub created_master_key: bool,
    pub vault_id: VaultId,
    pub created_vault: bool,
    /// True if the vault already has agents (e.g. an owner made with `agent add --admin`).
    pub owner_exists: bool,
    /// A fresh one-time setup code, present while the vault has no passkey: its link enrolls
    /// the first passkey and, if the vault has no agent yet, creates the owner (`vault::gate`).
    pub setup_code: Option<SetupCode>,
}

/// A vault file opened with its data key.
pub struct OpenVault {
    pub id: VaultId,
    pub key: DataKey,
    pub db: VaultDb,
}

impl DataDir {
    pub fn new(root: PathBuf, master_key_file: Option<PathBuf>) -> Self {
        let master_key_file = master_key_file.unwrap_or_else(|| root.join("master.key"));
        Self { root, master_key_file }
    }

    pub fn node_db_path(&self) -> PathBuf {
        self.root.join("node.db")
    }

    pub fn vault_path(&self, id: &VaultId) -> PathBuf {
        self.root.join("vaults").join(format!("{id}.db"))
    }

    /// True when nothing has been initialised here yet.
    pub fn is_uninitialised(&self) -> bool {
        !self.node_db_path().exists()
    }

    fn ensure_dirs(&self) -> Result<(), VaultError> {
        for dir in [self.root.clone(), self.root.join("vaults")] {
            if !dir.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| VaultError::Setup(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        Ok(())
    }

    pub fn load_master_key(&self) -> Result<MasterKey, VaultError> {
        Ok(MasterKey::load(&self.master_key_file)?)
    }

    /// Creates whatever is missing: directories, master key, node.db, the vault; and, while the
    /// vault has no passkey, a new one-time setup code (replacing an unused one).
    pub fn init(&self) -> Result<InitReport, VaultError> {
        self.ensure_dirs()?;
        let (master, created_master_key) = if self.master_key_file.exists() {
            (self.load_master_key()?, false)
        } else {
            if !self.is_uninitialised() {
                return Err(VaultError::Setup(format!(
                    "{} exists but the master key {} does not: refusing to create a new key for existing vaults",
                    self.node_db_path().display(),
                    self.master_key_file.display()
                )));
            }
            (MasterKey::create(&self.master_key_file)?, true)
        };
        let node = NodeDb::open(&self.node_db_path())?;
        let mut regs = node.vaults()?;
        let (vault_id, created_vault) = match regs.pop() {
            Some(reg) => (VaultId::parse(&reg.vault_id)?, false),
            None => {
                // Vault registration is a create the edition may cap (with none registered yet,
                // only a cap of zero could refuse; kept so a later multi-vault path inherits it).
                crate::edition::current()
                    .assert_within_cap(
                        crate::edition::Capped::Vaults,
                        regs.len() as u64,
                        1,
                        Actor::LocalOperator.label().as_str(),
                    )
                    .map_err(|e| VaultError::CapExceeded(e.0))?;
                let id = VaultId::generate();
                let key = DataKey::generate();
                let wrapped = master.wrap(&key, &rows_authenticated(&id))?;
                let mut db = VaultDb::open(&self.vault_path(&id))?;
                db.set_identity(id.as_str(), &hex::encode(wrapped)).map_err(VaultError::from_store)?;
                node.register_vault(&VaultRegistration {
                    vault_id: id.to_string(),
                    file_name: format!("{id}.db"),
                    created_at: crate::store::now_ms(),
                })?;
                (id, true)
            }
        };
        let mut open = self.open_vault(&master, &vault_id)?;
        if created_vault {
            let event = AuditEvent::new(Actor::LocalOperator, Action::VaultInit, Outcome::Ok).client("local");
            open.db.append_audit(&event.record())?;
        }
        let owner_exists = !open.db.agents()?.is_empty();
        let setup_code = if open.db.credentials()?.is_empty() {
            Some(self.issue_setup_code(&mut open.db, &vault_id)?)
        } else {
            None
        };
        Ok(InitReport { created_master_key, vault_id, created_vault, owner_exists, setup_code })
    }

    /// Creates one more vault (hosted vaults, issue 16): its file and wrapped data key, its
    /// registry row (refused past the edition's vault cap, counted in the insert's
    /// transaction), its `vault.init` row, and a one-time owner setup code. `actor` names who
    /// asked (`local-operator`, `mgmt:<token id>`) in the audit rows. Nothing is left behind
    /// when it fails.
    pub fn add_vault(&self, master: &MasterKey, actor: &str) -> Result<(VaultId, SetupCode), VaultError> {
        self.ensure_dirs()?;
        let id = VaultId::generate();
        let path = self.vault_path(&id);
        let created = (|| {
            let key = DataKey::generate();
            let wrapped = master.wrap(&key, &rows_authenticated(&id))?;
            let mut db = VaultDb::open(&path)?;
            db.set_identity(id.as_str(), &hex::encode(wrapped)).map_err(VaultError::from_store)?;
            drop(db);
            let mut node = NodeDb::open(&self.node_db_path())?;
            let reg = VaultRegistration {
                vault_id: id.to_string(),
                file_name: format!("{id}.db"),
                created_at: crate::store::now_ms(),
            };
            let row = crate::store::AuditRecord {
                ts: crate::store::now_ms(),
                actor: actor.to_owned().into(),
                agent_id: None,
                action: "vault.create".into(),
                entry_id: None,
                client: String::new(),
                outcome: "ok".into(),
                detail: format!("vault={id}"),
            };
            node.register_vault_checked(&reg, &row, |live| {
                crate::edition::current()
                    .assert_within_cap(crate::edition::Capped::Vaults, live, 1, actor)
                    .map_err(|e| VaultError::CapExceeded(e.0))
            })??;
            let mut open = self.open_vault(master, &id)?;
            let mut init = AuditEvent::new(Actor::LocalOperator, Action::VaultInit, Outcome::Ok).record();
            init.actor = actor.to_owned().into();
            open.db.append_audit(&init)?;
            self.issue_setup_code(&mut open.db, &id)
        })();
        match created {
            Ok(code) => Ok((id, code)),
            Err(e) => {
                // A file nobody registered is removed. One registered but not finished (the
                // disk filled after the insert) stays listed, so the operator sees and retires it.
                let registered = NodeDb::open(&self.node_db_path())
                    .and_then(|n| n.vaults())
                    .map(|v| v.iter().any(|r| r.vault_id == id.as_str()))
                    .unwrap_or(true);
                if !registered {
                    remove_vault_files(&path);
                }
                Err(e)
            }
        }
    }

    /// Issues a vault's one-time setup code and records in node.db which vault issued it (its
    /// SHA-256, never the code), so a setup link finds its vault without the node opening every
    /// vault it serves.
    fn issue_setup_code(&self, db: &mut VaultDb, id: &VaultId) -> Result<SetupCode, VaultError> {
        let code = gate::issue_setup_code(db)?;
        let hash = crate::crypto::sha256_hex(code.reveal().as_bytes());
        NodeDb::open(&self.node_db_path())?.index_setup_code(&hash, id.as_str())?;
        Ok(code)
    }

    /// Registered vault ids, in creation order.
    pub fn vault_ids(&self) -> Result<Vec<VaultId>, VaultError> {
        if self.is_uninitialised() {
            return Err(VaultError::Setup(format!(
                "{} is not initialised; run `clavitor init` (or `clavitor serve`, which initialises an empty data dir)",
                self.root.display()
            )));
        }
        let node = NodeDb::open(&self.node_db_path())?;
        node.vaults()?.iter().map(|r| VaultId::parse(&r.vault_id)).collect()
    }

    /// The one vault a single-vault command works on: the only one, or the one named.
    pub fn pick_vault(&self, wanted: Option<&str>) -> Result<VaultId, VaultError> {
        let ids = self.vault_ids()?;
        match wanted {
            Some(w) => ids
                .into_iter()
                .find(|id| id.as_str() == w)
                .ok_or_else(|| VaultError::Setup(format!("no vault {w:?} in {}", self.root.display()))),
            None => match ids.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(VaultError::Setup("the data dir holds no vault; run `clavitor init`".into())),
                _ => Err(VaultError::Setup("the data dir holds several vaults; name one with --vault".into())),
            },
        }
    }

    /// Creates and registers a vault with a given id and data key (a replica, issue 14: the
    /// source's vault id and its data key, received sealed to this POP and opened by the
    /// caller), wrapped under this node's own master key. `prepare` marks the new file before
    /// it is registered. Refuses an id this node already has.
    pub fn create_vault_with_key(
        &self,
        id: &VaultId,
        key: &DataKey,
        prepare: impl FnOnce(&mut VaultDb) -> Result<(), crate::store::StoreError>,
    ) -> Result<(), VaultError> {
        let master = self.load_master_key()?;
        let node = NodeDb::open(&self.node_db_path())?;
        if node.vaults()?.iter().any(|r| r.vault_id == id.as_str()) || self.vault_path(id).exists() {
            return Err(VaultError::Setup(format!("vault {id} already exists on this node")));
        }
        let wrapped = master.wrap(key, &rows_authenticated(id))?;
        let mut db = VaultDb::open(&self.vault_path(id))?;
        db.set_identity(id.as_str(), &hex::encode(wrapped)).map_err(VaultError::from_store)?;
        prepare(&mut db).map_err(VaultError::from_store)?;
        node.register_vault(&VaultRegistration {
            vault_id: id.to_string(),
            file_name: format!("{id}.db"),
            created_at: crate::store::now_ms(),
        })?;
        Ok(())
    }

    /// Removes the file of a vault whose creation stopped before its registration (a process
    /// killed in between, e.g. a backup adopting a replica): no node serves an unregistered file,
    /// and [`Self::create_vault_with_key`] would refuse the id for ever. `ours` decides from the
    /// file whether it is such a leftover; a registered vault is never touched. True if removed.
    pub fn remove_unregistered_vault(
        &self,
        id: &VaultId,
        ours: impl FnOnce(&VaultDb) -> bool,
    ) -> Result<bool, VaultError> {
        let node = NodeDb::open(&self.node_db_path())?;
        let path = self.vault_path(id);
        if node.vaults()?.iter().any(|r| r.vault_id == id.as_str()) || !path.exists() {
            return Ok(false);
        }
        if !ours(&VaultDb::open(&path)?) {
            return Ok(false);
        }
        for suffix in ["", "-wal", "-shm", "-spool"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VaultError::Setup(format!("cannot remove an unregistered vault file: {e}"))),
            }
        }
        Ok(true)
    }

    pub fn open_vault(&self, master: &MasterKey, id: &VaultId) -> Result<OpenVault, VaultError> {
        let path = self.vault_path(id);
        if !path.exists() {
            return Err(VaultError::Setup(format!("vault file {} is missing", path.display())));
        }
        let db = VaultDb::open(&path)?;
        let stored_id = db.meta("vault_id")?.ok_or_else(|| VaultError::Corrupt("vault file has no id".into()))?;
        if stored_id != id.as_str() {
            return Err(VaultError::Corrupt(format!("{} holds vault {stored_id}, not {id}", path.display())));
        }
        let wrapped_hex =
            db.meta("wrapped_key")?.ok_or_else(|| VaultError::Corrupt("vault file has no data key".into()))?;
        let wrapped = hex::decode(wrapped_hex).map_err(|_| VaultError::Corrupt("data key is not hex".into()))?;
        // The wrap's associated data says whether the file's rows are MACed. A file from before
        // row MACs (wrapped under the bare vault id) gets its MACs here, once, and in the same
        // transaction its key re-wrapped under the new context; from then on a row without a
        // valid MAC grants nothing. A flag in the file could be reset by anyone who can write
        // it, to have an inserted row MACed ("laundered") at the next open; this wrap cannot be
        // made without the master key.
        let mut db = db;
        let context = rows_authenticated(id);
        let (key, upgraded) = match master.unwrap_key(&wrapped, &context) {
            Ok(key) => (key, true),
            Err(_) => (
                master.unwrap_key(&wrapped, id.as_str()).map_err(|_| {
                    VaultError::Setup(format!(
                        "the master key {} does not open vault {id}: wrong key file?",
                        self.master_key_file.display()
                    ))
                })?,
                false,
            ),
        };
        db.set_row_key(key.row_key(), id.as_str());
        if !upgraded {
            let rewrapped = hex::encode(master.wrap(&key, &context)?);
            let (agents, entries) = db.authenticate_existing_rows(&rewrapped).map_err(VaultError::from_store)?;
            tracing::info!(vault = %id, agents, entries, "vault rows authenticated (one-time upgrade)");
        }
        Ok(OpenVault { id: id.clone(), key, db })
    }
}

/// Removes a vault's file and its WAL, shared-memory and audit-spool companions (missing ones
/// are fine).
pub fn remove_vault_files(path: &Path) -> bool {
    let mut ok = true;
    for suffix in ["", "-wal", "-shm", "-spool"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => ok = false,
        }
    }
    ok
}

/// The wrap context of a vault whose granting rows carry MACs (see `open_vault`).
fn rows_authenticated(id: &VaultId) -> String {
    format!("{id}\0rows-mac-v1")
}

/// True if `path` is readable by group or others (used to warn about a lax data dir).
pub fn is_group_or_world_accessible(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.permissions().mode() & 0o077 != 0).unwrap_or(false)
}
