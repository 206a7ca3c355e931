//! Carrying a vault's data key to a backup POP (commercial, issue 14 item 2): HPKE, RFC 9180,
//! base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
//!
//! The primary seals the data key to the backup's X25519 public key; the backup opens it with its
//! own transport secret and re-wraps it under its own master key. So the rows travel sealed as
//! stored, the backup verifies their MACs with the same data key, and no POP ever holds another
//! POP's master key; there is no shared secret. Never logs, stores or returns a key in the clear;
//! never touches SQLite or HTTP.
//!
//! Layout of a transported key: the 32-byte encapsulated key, then the ciphertext and its tag.
//! The associated data binds it to the vault and to both POP ids, so a key sent for one vault or
//! one pair cannot be replayed as another's.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use zeroize::Zeroize;

use super::{CryptoError, DataKey, KEY_LEN};

type Suite = X25519HkdfSha256;
type PrivateKey = <Suite as Kem>::PrivateKey;
type PublicKey = <Suite as Kem>::PublicKey;
type EncappedKey = <Suite as Kem>::EncappedKey;

const INFO: &[u8] = b"clavitor/replication/data-key/v1";
const ENC_LEN: usize = 32;

/// A backup POP's transport secret: opens data keys sealed to it. Derived (RFC 9180
/// `DeriveKeyPair`) from 32 secret bytes the POP keeps in a 0600 file, like its master key.
pub struct TransportSecret(PrivateKey);

/// A backup POP's transport public key, as a primary's replication file names it (hex).
#[derive(Clone)]
pub struct TransportPublic(PublicKey);

impl std::fmt::Debug for TransportSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportSecret(..)")
    }
}

impl std::fmt::Debug for TransportPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TransportPublic({})", self.to_hex())
    }
}

impl TransportSecret {
    /// The key pair derived from `seed` (the POP's secret bytes); the same seed, the same pair.
    pub fn from_seed(seed: &[u8; KEY_LEN]) -> Self {
        let (sk, _) = Suite::derive_keypair(seed);
        Self(sk)
    }

    pub fn public(&self) -> TransportPublic {
        TransportPublic(Suite::sk_to_pk(&self.0))
    }
}

impl TransportPublic {
    /// Parses 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        PublicKey::from_bytes(&bytes).ok().map(Self)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
}

fn aad(vault_id: &str, source_pop: &str, backup_pop: &str) -> Vec<u8> {
    [vault_id.as_bytes(), b"\0", source_pop.as_bytes(), b"\0", backup_pop.as_bytes()].concat()
}

/// Seals `key` to the backup `to`, bound to the vault and the (source, backup) pair.
pub fn seal_data_key(
    to: &TransportPublic,
    key: &DataKey,
    vault_id: &str,
    source_pop: &str,
    backup_pop: &str,
) -> Result<Vec<u8>, CryptoError> {
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Suite>(
        &OpModeS::Base,
        &to.0,
        INFO,
        &key.0,
        &aad(vault_id, source_pop, backup_pop),
    )
    .map_err(|_| CryptoError::Seal)?;
    Ok([enc.to_bytes().as_slice(), ct.as_slice()].concat())
}

/// Opens a data key sealed to this POP; any mismatch (key, vault, pair, bytes) is
/// [`CryptoError::Open`], deliberately indistinguishable.
pub fn open_data_key(
    secret: &TransportSecret,
    sealed: &[u8],
    vault_id: &str,
    source_pop: &str,
    backup_pop: &str,
) -> Result<DataKey, CryptoError> {
    let (enc, ct) = sealed.split_at_checked(ENC_LEN).ok_or(CryptoError::Open)?;
    let enc = EncappedKey::from_bytes(enc).map_err(|_| CryptoError::Open)?;
    let mut plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Suite>(
        &OpModeR::Base,
        &secret.0,
        &enc,
        INFO,
        ct,
        &aad(vault_id, source_pop, backup_pop),
    )
    .map_err(|_| CryptoError::Open)?;
    let Ok(key) = <[u8; KEY_LEN]>::try_from(plain.as_slice()) else {
        plain.zeroize();
        return Err(CryptoError::Open);
    };
    plain.zeroize();
    Ok(DataKey(key))
}

#[cfg(test)]
mod tests {
    use super::super::{MasterKey, random_bytes};
    use super::*;

    fn master() -> MasterKey {
        MasterKey(random_bytes())
    }

    #[test]
    fn a_data_key_reaches_the_backup_and_is_rewrapped_under_its_own_master_key() {
        let dk = DataKey::generate();
        let sealed_entry = dk.seal_entry("v1", "u1", b"secret").unwrap();
        let backup = TransportSecret::from_seed(&random_bytes());
        let public = TransportPublic::from_hex(&backup.public().to_hex()).unwrap();
        let moved = seal_data_key(&public, &dk, "v1", "paris-01", "zurich-01").unwrap();
        assert!(!moved.windows(KEY_LEN).any(|w| w == dk.0), "the key never travels in the clear");

        let received = open_data_key(&backup, &moved, "v1", "paris-01", "zurich-01").unwrap();
        let backup_master = master();
        let rewrapped = backup_master.wrap(&received, "v1").unwrap();
        let on_backup = backup_master.unwrap_key(&rewrapped, "v1").unwrap();
        // The backup opens the primary's sealed rows as they are, and derives the same row key.
        assert_eq!(on_backup.open_entry("v1", "u1", &sealed_entry).unwrap(), b"secret");
        assert_eq!(on_backup.0, dk.0);
    }

    #[test]
    fn another_pop_vault_pair_or_tampered_bytes_cannot_open_it() {
        let dk = DataKey::generate();
        let backup = TransportSecret::from_seed(&random_bytes());
        let moved = seal_data_key(&backup.public(), &dk, "v1", "paris-01", "zurich-01").unwrap();
        let stranger = TransportSecret::from_seed(&random_bytes());
        assert!(open_data_key(&stranger, &moved, "v1", "paris-01", "zurich-01").is_err());
        assert!(open_data_key(&backup, &moved, "v2", "paris-01", "zurich-01").is_err());
        assert!(open_data_key(&backup, &moved, "v1", "tokyo-01", "zurich-01").is_err());
        assert!(open_data_key(&backup, &moved, "v1", "paris-01", "tokyo-01").is_err());
        let mut tampered = moved.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(open_data_key(&backup, &tampered, "v1", "paris-01", "zurich-01").is_err());
        assert!(open_data_key(&backup, &moved[..20], "v1", "paris-01", "zurich-01").is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_public_key_and_bad_hex_is_refused() {
        let seed = random_bytes();
        assert_eq!(
            TransportSecret::from_seed(&seed).public().to_hex(),
            TransportSecret::from_seed(&seed).public().to_hex()
        );
        assert_eq!(TransportSecret::from_seed(&seed).public().to_hex().len(), 64);
        assert!(TransportPublic::from_hex("zz").is_none());
        assert!(TransportPublic::from_hex(&"ab".repeat(31)).is_none());
    }
}
