//! The embedded database (redb) in the state directory: every tag set
//! whose ID the kernel may hold, and the container registry. A change is
//! committed (durably) before the kernel sees the ID it concerns, so
//! that after a restart or a crash every ID the kernel holds resolves.
//!
//! A set is stored as references to tag contents, and each content (name
//! and value) once, under its content hash. Successive sets that differ by
//! one tag then cost that tag and a row of 33-byte references, not a copy
//! of every value they share: storing each set whole made a process that
//! adds 32 KB tags one at a time grow the file quadratically (issue 13).
//! How many sets hold each content is not stored: it is recomputed from
//! the set rows at open and kept in memory, so it cannot drift from the
//! rows it counts, whatever a crash interrupted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use ptags_core::{Digest, SetId, Tag, TagSet};
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// Content hash → the tag's content (see [`encode_tag`]).
const TAGS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tags");
/// Set ID → its tags as references (see [`encode_set`]).
const TAG_SETS: TableDefinition<u64, &[u8]> = TableDefinition::new("tag_sets");
/// The layout before issue 13: set ID → the whole set in the read
/// format. Converted, then deleted, when a database is opened.
const LEGACY_SETS: TableDefinition<u64, &[u8]> = TableDefinition::new("sets");
/// Container ID → [`ContainerRecord`] as JSON.
const CONTAINERS: TableDefinition<u64, &[u8]> = TableDefinition::new("containers");
/// Each container's audit policy, as its text: it lives and ends with
/// the container.
const AUDIT_POLICIES: TableDefinition<u64, &str> = TableDefinition::new("audit_policies");
/// Each container's device list, as its listing (`DeviceList::rules`):
/// it lives and ends with the container.
const DEVICE_LISTS: TableDefinition<u64, &str> = TableDefinition::new("device_lists");
/// Counters that must survive restarts.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The next set ID to hand out: IDs are never reused, even after a
/// restart, so that an ID in an old audit record names one set only.
const NEXT_SET_ID: &str = "next_set_id";

/// A reference in a set row: the content hash, then the keep flag (0 or 1).
const REF_LEN: usize = 33;
/// A tag row starts with the charged uid and the name's length (u32 LE each).
const TAG_HEADER_LEN: usize = 8;

/// Compaction is considered once the file is this large: below it the
/// space to win is not worth rewriting the file for.
const COMPACT_MIN_FILE: u64 = 8 << 20;
/// ... and done when the file is more than this many times the bytes its
/// rows and their index hold. Pages are allocated in powers of two, so a
/// file with no free page can still be up to about twice its rows; at four
/// times, at least half the file is free. Compacting costs a rewrite of
/// what is live, at most a third of what was freed since the file was
/// last this sparse, so its cost stays proportional to the writes that
/// freed the space.
const COMPACT_RATIO: u64 = 4;

/// Whether a file of `file_len` bytes whose rows and index hold `live`
/// bytes should be compacted.
fn worth_compacting(file_len: u64, live: u64) -> bool {
    file_len >= COMPACT_MIN_FILE && file_len > COMPACT_RATIO.saturating_mul(live)
}

/// A container as the registry keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: u64,
    pub parent: Option<u64>,
    pub depth: usize,
    pub owner_pid: u32,
    /// The owner's start time, clock ticks since boot.
    pub owner_start: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The inode of the user namespace its first process was in when the
    /// ID was set: where a reader inside must hold its capabilities.
    #[serde(default)]
    pub userns: Option<u64>,
}

/// A write that would take a uid over `limits.max_tag_bytes_per_uid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the tag data stored for uid {uid} would exceed limits.max_tag_bytes_per_uid \
     ({used} bytes stored, {adding} more, limit {limit})"
)]
pub struct OverLimit {
    pub uid: u32,
    pub used: u64,
    pub adding: u64,
    pub limit: u64,
}

/// The bytes of stored tag contents charged to each uid, against one
/// limit. A content is charged to the uid whose write first stored it and
/// released when the last set holding it is deleted; a write that reuses
/// a stored content adds nothing. This bounds what one user can make the
/// daemon keep on disk and in memory, whatever the permissions its tags
/// give it.
#[derive(Debug)]
pub struct TagBytes {
    limit: u64,
    by_uid: HashMap<u32, u64>,
}

impl TagBytes {
    pub fn new(limit: u64) -> TagBytes {
        TagBytes {
            limit,
            by_uid: HashMap::new(),
        }
    }

    /// Whether `uid` may be charged `adding` more bytes.
    pub fn check(&self, uid: u32, adding: u64) -> Result<(), OverLimit> {
        let used = self.by_uid.get(&uid).copied().unwrap_or(0);
        if used.saturating_add(adding) > self.limit {
            return Err(OverLimit {
                uid,
                used,
                adding,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Charges without checking: for contents already stored (at open, a
    /// lowered limit must not make the database unreadable).
    pub fn charge(&mut self, uid: u32, bytes: u64) {
        *self.by_uid.entry(uid).or_insert(0) += bytes;
    }

    pub fn release(&mut self, uid: u32, bytes: u64) {
        if let Some(used) = self.by_uid.get_mut(&uid) {
            *used = used.saturating_sub(bytes);
            if *used == 0 {
                self.by_uid.remove(&uid);
            }
        }
    }
}

/// What a stored content costs its uid: its row and its key.
fn charge_of(tag: &Tag) -> u64 {
    let len = TAG_HEADER_LEN + 32 + tag.name().len() + tag.value().map_or(0, str::len);
    len as u64
}

/// What the store knows of a stored content without reading it.
#[derive(Debug, Clone, Copy)]
struct StoredTag {
    /// How many stored sets hold it.
    sets: u64,
    /// Whom it is charged to.
    uid: u32,
    bytes: u64,
}

/// Why a set could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    #[error("{0:#}")]
    Database(anyhow::Error),
}

/// What the database held when it was opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Restored {
    pub sets: Vec<(SetId, TagSet)>,
    /// The next set ID to hand out.
    pub next_set_id: u64,
}

/// A tag row: uid (u32 LE), name length (u32 LE), name, value (an empty
/// value is no value, as for [`Tag`]). The keep flag is the set's.
fn encode_tag(tag: &Tag, uid: u32) -> Vec<u8> {
    let value = tag.value().unwrap_or("");
    let mut row = Vec::with_capacity(TAG_HEADER_LEN + tag.name().len() + value.len());
    row.extend_from_slice(&uid.to_le_bytes());
    row.extend_from_slice(&(tag.name().len() as u32).to_le_bytes());
    row.extend_from_slice(tag.name().as_bytes());
    row.extend_from_slice(value.as_bytes());
    row
}

/// Reads a tag row back, checking the content against the hash it is
/// stored under. Returns the tag (not kept) and its uid.
fn decode_tag(hash: &Digest, row: &[u8]) -> Result<(Tag, u32), String> {
    let header = row
        .get(..TAG_HEADER_LEN)
        .ok_or("the row is shorter than its header")?;
    let uid = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let name_len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    let rest = &row[TAG_HEADER_LEN..];
    if name_len > rest.len() {
        return Err(format!("the name length {name_len} runs past the row"));
    }
    let (name, value) = rest.split_at(name_len);
    let name = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8")?;
    let value = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8")?;
    let tag = Tag::new(name, Some(value), false).map_err(|e| e.to_string())?;
    if tag.content_hash() != hash {
        return Err("its content does not match its hash".into());
    }
    Ok((tag, uid))
}

/// A set row: one reference per tag, in the set's order.
fn encode_set(set: &TagSet) -> Vec<u8> {
    let mut row = Vec::with_capacity(set.len() * REF_LEN);
    for tag in set.iter() {
        row.extend_from_slice(&tag.content_hash().0);
        row.push(u8::from(tag.keep()));
    }
    row
}

fn decode_set(row: &[u8]) -> Result<Vec<(Digest, bool)>, String> {
    if row.len() % REF_LEN != 0 {
        return Err(format!(
            "its length {} is not a multiple of {REF_LEN}",
            row.len()
        ));
    }
    row.chunks_exact(REF_LEN)
        .map(|r| {
            let hash = Digest(r[..32].try_into().expect("32 bytes"));
            match r[32] {
                0 => Ok((hash, false)),
                1 => Ok((hash, true)),
                b => Err(format!("keep flag {b} is neither 0 nor 1")),
            }
        })
        .collect()
}

/// Writes set rows, and rows for the contents among `new` (charged to
/// `uid`), in `txn`.
fn put_sets<'t>(
    txn: &WriteTransaction,
    sets: &[(SetId, &TagSet)],
    new: impl Iterator<Item = &'t Tag>,
    uid: u32,
) -> Result<()> {
    let mut tags = txn.open_table(TAGS)?;
    for tag in new {
        tags.insert(&tag.content_hash().0, encode_tag(tag, uid).as_slice())?;
    }
    let mut rows = txn.open_table(TAG_SETS)?;
    for (id, set) in sets {
        rows.insert(id.0, encode_set(set).as_slice())?;
    }
    Ok(())
}

/// Converts the sets stored whole (before issue 13) to references, in
/// `txn`. Their contents are charged to uid 0: who wrote them was not
/// recorded.
fn migrate_legacy(txn: &WriteTransaction) -> Result<()> {
    let mut sets = Vec::new();
    for entry in txn.open_table(LEGACY_SETS)?.iter()? {
        let (id, bytes) = entry?;
        let set = TagSet::parse_read_format(bytes.value()).map_err(|(line, e)| {
            anyhow!("stored set {} is corrupt at line {line}: {e}", id.value())
        })?;
        sets.push((SetId(id.value()), set));
    }
    txn.delete_table(LEGACY_SETS)?;
    let mut contents: HashMap<Digest, &Tag> = HashMap::new();
    for (_, set) in &sets {
        for tag in set.iter() {
            contents.entry(*tag.content_hash()).or_insert(tag);
        }
    }
    let refs: Vec<(SetId, &TagSet)> = sets.iter().map(|(id, set)| (*id, set)).collect();
    put_sets(txn, &refs, contents.into_values(), 0)
}

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Every stored content, by content hash.
    tags: HashMap<Digest, StoredTag>,
    /// Each stored set's row: whom it is charged to, and its bytes. The
    /// rows of one user's many distinct sets cost the disk too.
    rows: HashMap<SetId, (u32, u64)>,
    usage: TagBytes,
}

/// What a stored set's row costs its uid: its references and its key.
fn row_charge(set: &TagSet) -> u64 {
    (set.len() * REF_LEN + 8) as u64
}

impl Store {
    /// Opens (or creates) `ptags.redb` under `dir` and reads the sets it
    /// holds. `max_tag_bytes_per_uid` bounds what later writes may add.
    pub fn open(dir: &Path, max_tag_bytes_per_uid: u64) -> Result<(Store, Restored)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("ptags.redb");
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        // The registry names containers and their owners, which only
        // callers with CAP_AUDIT_CONTROL may read through the daemon.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} root's alone", path.display()))?;
        }
        let txn = db.begin_write()?;
        txn.open_table(TAGS)?;
        txn.open_table(TAG_SETS)?;
        txn.open_table(CONTAINERS)?;
        txn.open_table(AUDIT_POLICIES)?;
        txn.open_table(DEVICE_LISTS)?;
        txn.open_table(META)?;
        migrate_legacy(&txn).context("converting the tag sets stored whole")?;
        txn.commit()?;
        let mut store = Store {
            db,
            path,
            tags: HashMap::new(),
            rows: HashMap::new(),
            usage: TagBytes::new(max_tag_bytes_per_uid),
        };
        let restored = store.load().context("loading tag sets")?;
        Ok((store, restored))
    }

    /// Reads every set, rebuilding them over shared contents, and
    /// recomputes which contents each set holds and who is charged.
    fn load(&mut self) -> Result<Restored> {
        let txn = self.db.begin_read()?;
        let mut contents: HashMap<Digest, (Tag, u32)> = HashMap::new();
        for entry in txn.open_table(TAGS)?.iter()? {
            let (hash, row) = entry?;
            let hash = Digest(*hash.value());
            let content = decode_tag(&hash, row.value())
                .map_err(|e| anyhow!("stored tag {hash} is corrupt: {e}"))?;
            contents.insert(hash, content);
        }
        let mut held: HashMap<Digest, u64> = HashMap::new();
        let mut sets = Vec::new();
        for entry in txn.open_table(TAG_SETS)?.iter()? {
            let (id, row) = entry?;
            let id = id.value();
            let set = decode_set(row.value())
                .and_then(|refs| {
                    refs.into_iter()
                        .map(|(hash, keep)| match contents.get(&hash) {
                            Some((tag, _)) => Ok(tag.with_keep(keep)),
                            None => Err(format!("it holds tag {hash}, which is not stored")),
                        })
                        .collect::<Result<Vec<Tag>, String>>()
                })
                .and_then(|tags| TagSet::from_tags(tags).map_err(|e| e.to_string()))
                .map_err(|e| anyhow!("stored set {id} is corrupt: {e}"))?;
            for tag in set.iter() {
                *held.entry(*tag.content_hash()).or_insert(0) += 1;
            }
            // Who made a row is not stored: rows found at start are
            // charged to uid 0, and given back to it when deleted.
            let bytes = row_charge(&set);
            self.usage.charge(0, bytes);
            self.rows.insert(SetId(id), (0, bytes));
            sets.push((SetId(id), set));
        }
        for (hash, (tag, uid)) in contents {
            // Contents are deleted in the transaction that deletes the
            // last set holding them: one no set holds is damage.
            let sets = held
                .get(&hash)
                .copied()
                .ok_or_else(|| anyhow!("stored tag {hash} is corrupt: no set holds it"))?;
            let bytes = charge_of(&tag);
            self.usage.charge(uid, bytes);
            self.tags.insert(hash, StoredTag { sets, uid, bytes });
        }
        let next_set_id = txn
            .open_table(META)?
            .get(NEXT_SET_ID)?
            .map_or(1, |v| v.value());
        Ok(Restored { sets, next_set_id })
    }

    /// Stores new sets and the next ID, in one durable transaction. The
    /// contents not stored yet, and the sets' rows, are charged to `uid`;
    /// if `limited` and that would take it over its limit, nothing is
    /// written.
    pub fn save_sets(
        &mut self,
        sets: &[(SetId, &TagSet)],
        next: u64,
        uid: u32,
        limited: bool,
    ) -> Result<(), SaveError> {
        let mut new: HashMap<Digest, &Tag> = HashMap::new();
        for (_, set) in sets {
            for tag in set.iter() {
                if !self.tags.contains_key(tag.content_hash()) {
                    new.entry(*tag.content_hash()).or_insert(tag);
                }
            }
        }
        let rows: u64 = sets.iter().map(|(_, set)| row_charge(set)).sum();
        let adding: u64 = new.values().map(|t| charge_of(t)).sum::<u64>() + rows;
        if limited {
            self.usage.check(uid, adding)?;
        }
        let write = || -> Result<()> {
            let txn = self.db.begin_write()?;
            put_sets(&txn, sets, new.values().copied(), uid)?;
            txn.open_table(META)?.insert(NEXT_SET_ID, next)?;
            txn.commit().context("committing tag sets")?;
            Ok(())
        };
        write().map_err(SaveError::Database)?;
        // Committed: only now does the index follow.
        for tag in new.values() {
            let bytes = charge_of(tag);
            self.tags.insert(
                *tag.content_hash(),
                StoredTag {
                    sets: 0,
                    uid,
                    bytes,
                },
            );
        }
        self.usage.charge(uid, adding);
        for (id, set) in sets {
            self.rows.insert(*id, (uid, row_charge(set)));
            for tag in set.iter() {
                if let Some(stored) = self.tags.get_mut(tag.content_hash()) {
                    stored.sets += 1;
                }
            }
        }
        Ok(())
    }

    /// Deletes sets, and the contents no remaining set holds, in one
    /// transaction; releases what those contents were charged.
    pub fn delete_sets(&mut self, ids: &[SetId]) -> Result<()> {
        let txn = self.db.begin_write()?;
        // Content → how many of the deleted sets held it.
        let mut released: HashMap<Digest, u64> = HashMap::new();
        {
            let mut rows = txn.open_table(TAG_SETS)?;
            for id in ids {
                let Some(row) = rows.remove(id.0)? else {
                    continue;
                };
                let refs = decode_set(row.value())
                    .map_err(|e| anyhow!("stored set {} is corrupt: {e}", id.0))?;
                for (hash, _) in refs {
                    *released.entry(hash).or_insert(0) += 1;
                }
            }
            let mut tags = txn.open_table(TAGS)?;
            for (hash, n) in &released {
                if self.tags.get(hash).is_some_and(|t| t.sets <= *n) {
                    tags.remove(&hash.0)?;
                }
            }
        }
        txn.commit().context("committing collected tag sets")?;
        for id in ids {
            if let Some((uid, bytes)) = self.rows.remove(id) {
                self.usage.release(uid, bytes);
            }
        }
        for (hash, n) in released {
            let Some(stored) = self.tags.get_mut(&hash) else {
                continue;
            };
            stored.sets = stored.sets.saturating_sub(n);
            if stored.sets == 0 {
                let StoredTag { uid, bytes, .. } = *stored;
                self.tags.remove(&hash);
                self.usage.release(uid, bytes);
            }
        }
        Ok(())
    }

    /// The database file's size, in bytes.
    pub fn file_len(&self) -> Result<u64> {
        let meta = std::fs::metadata(&self.path)
            .with_context(|| format!("reading the size of {}", self.path.display()))?;
        Ok(meta.len())
    }

    /// Gives free space back to the file system when most of the file is
    /// free (see [`COMPACT_RATIO`]); call after deleting. Returns the
    /// file's sizes before and after, when it compacted.
    pub fn compact_if_sparse(&mut self) -> Result<Option<(u64, u64)>> {
        let before = self.file_len()?;
        // The file's size alone rules out most collections, without the
        // walk over the trees that the statistics take.
        if before < COMPACT_MIN_FILE {
            return Ok(None);
        }
        let txn = self.db.begin_write()?;
        let stats = txn.stats()?;
        txn.abort()?;
        if !worth_compacting(before, stats.stored_bytes() + stats.metadata_bytes()) {
            return Ok(None);
        }
        self.compact()?;
        Ok(Some((before, self.file_len()?)))
    }

    /// Moves the rows to the start of the file and truncates it.
    pub fn compact(&mut self) -> Result<()> {
        self.db.compact().context("compacting the database")?;
        Ok(())
    }

    pub fn load_containers(&self) -> Result<Vec<ContainerRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CONTAINERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            let record: ContainerRecord = serde_json::from_slice(bytes.value())
                .with_context(|| format!("stored container {} is corrupt", id.value()))?;
            out.push(record);
        }
        Ok(out)
    }

    pub fn put_container(&self, record: &ContainerRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(CONTAINERS)?
            .insert(record.id, bytes.as_slice())?;
        txn.commit().context("committing a container")?;
        Ok(())
    }

    pub fn delete_container(&self, id: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(CONTAINERS)?.remove(id)?;
        txn.open_table(AUDIT_POLICIES)?.remove(id)?;
        txn.open_table(DEVICE_LISTS)?.remove(id)?;
        txn.commit().context("committing a dropped container")?;
        Ok(())
    }

    /// The audit policies, by container.
    pub fn load_policies(&self) -> Result<Vec<(u64, String)>> {
        self.load_texts(AUDIT_POLICIES)
    }

    /// Stores container `id`'s audit policy (`None`: clears it).
    pub fn put_policy(&self, id: u64, text: Option<&str>) -> Result<()> {
        self.put_text(AUDIT_POLICIES, id, text)
            .context("committing an audit policy")
    }

    /// The device lists, by container, as their listings.
    pub fn load_device_lists(&self) -> Result<Vec<(u64, String)>> {
        self.load_texts(DEVICE_LISTS)
    }

    /// Stores container `id`'s device list (`None`: clears it).
    pub fn put_device_list(&self, id: u64, listing: Option<&str>) -> Result<()> {
        self.put_text(DEVICE_LISTS, id, listing)
            .context("committing a device list")
    }

    fn load_texts(&self, def: TableDefinition<'_, u64, &str>) -> Result<Vec<(u64, String)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, text) = entry?;
            out.push((id.value(), text.value().to_owned()));
        }
        Ok(out)
    }

    fn put_text(
        &self,
        def: TableDefinition<'_, u64, &str>,
        id: u64,
        text: Option<&str>,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(def)?;
            match text {
                Some(text) => drop(table.insert(id, text)?),
                None => drop(table.remove(id)?),
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;

    const NO_LIMIT: u64 = u64::MAX;

    fn set(text: &str) -> TagSet {
        TagSet::parse_read_format(text.as_bytes()).unwrap()
    }

    fn open(dir: &Path) -> (Store, Restored) {
        Store::open(dir, NO_LIMIT).unwrap()
    }

    fn restored(sets: Vec<(SetId, TagSet)>, next_set_id: u64) -> Restored {
        Restored { sets, next_set_id }
    }

    fn row_count(store: &Store, table: TableDefinition<'_, &[u8; 32], &[u8]>) -> u64 {
        store
            .db
            .begin_read()
            .unwrap()
            .open_table(table)
            .unwrap()
            .len()
            .unwrap()
    }

    #[test]
    fn sets_and_containers_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let set = set("@a=1\nb\n");
        let record = ContainerRecord {
            id: 7,
            parent: Some(3),
            depth: 2,
            owner_pid: 10,
            owner_start: 99,
            created: 1_700_000_000,
            userns: Some(4026531837),
        };
        {
            let (mut store, loaded) = open(dir.path());
            assert_eq!(loaded, restored(vec![], 1));
            store.save_sets(&[(SetId(5), &set)], 6, 1000, true).unwrap();
            store.put_container(&record).unwrap();
            store
                .put_container(&ContainerRecord { id: 8, ..record })
                .unwrap();
            store.delete_container(8).unwrap();
        }
        let (mut store, loaded) = open(dir.path());
        assert_eq!(loaded, restored(vec![(SetId(5), set)], 6));
        assert_eq!(store.load_containers().unwrap(), vec![record]);
        store.delete_sets(&[SetId(5)]).unwrap();
        drop(store);
        assert_eq!(open(dir.path()).1, restored(vec![], 6));
    }

    #[test]
    fn sets_share_their_tags_on_disk_and_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let big = "v".repeat(30_000);
        let a = set(&format!("@a={big}\nb\n"));
        let b = set(&format!("a={big}\nc=1\n"));
        {
            let (mut store, _) = open(dir.path());
            store
                .save_sets(&[(SetId(1), &a), (SetId(2), &b)], 3, 0, true)
                .unwrap();
            // a (one content for both keep flags), b, c.
            assert_eq!(row_count(&store, TAGS), 3);
        }
        let (_, loaded) = open(dir.path());
        assert_eq!(loaded, restored(vec![(SetId(1), a), (SetId(2), b)], 3));
        let (x, y) = (&loaded.sets[0].1, &loaded.sets[1].1);
        assert!(x.get("a").unwrap().keep());
        assert!(!y.get("a").unwrap().keep());
        let value = |s: &TagSet| s.get("a").unwrap().value().unwrap().as_ptr();
        assert_eq!(value(x), value(y), "the restored sets share the value");
    }

    #[test]
    fn contents_go_with_the_last_set_holding_them() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two, three) = (set("a=1\n"), set("a=1\nb=2\n"), set("c\n"));
        {
            let (mut store, _) = open(dir.path());
            store
                .save_sets(&[(SetId(1), &one), (SetId(2), &two)], 3, 0, true)
                .unwrap();
            store.save_sets(&[(SetId(3), &three)], 4, 0, true).unwrap();
            assert_eq!(row_count(&store, TAGS), 3);
            store.delete_sets(&[SetId(1)]).unwrap();
            assert_eq!(row_count(&store, TAGS), 3, "set 2 still holds a=1");
        }
        // The counts are rebuilt from the rows after a restart.
        let (mut store, loaded) = open(dir.path());
        assert_eq!(
            loaded,
            restored(vec![(SetId(2), two), (SetId(3), three.clone())], 4)
        );
        store.delete_sets(&[SetId(2)]).unwrap();
        assert_eq!(row_count(&store, TAGS), 1);
        drop(store);
        let (mut store, loaded) = open(dir.path());
        assert_eq!(loaded, restored(vec![(SetId(3), three)], 4));
        store.delete_sets(&[SetId(3)]).unwrap();
        assert_eq!(row_count(&store, TAGS), 0);
        assert!(store.tags.is_empty());
        assert!(store.usage.by_uid.is_empty());
    }

    /// Writes one raw row, then expects opening to fail naming it.
    fn refused(write: impl FnOnce(&WriteTransaction), needle: &str) {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = open(dir.path());
            store
                .save_sets(&[(SetId(1), &set("a=1\n"))], 2, 0, true)
                .unwrap();
            let txn = store.db.begin_write().unwrap();
            write(&txn);
            txn.commit().unwrap();
        }
        let err = format!("{:#}", Store::open(dir.path(), NO_LIMIT).err().unwrap());
        assert!(err.contains(needle), "{err}");
    }

    #[test]
    fn corrupt_rows_are_refused() {
        let a = *set("a=1\n").iter().next().unwrap().content_hash();
        let set_row = |row: &'static [u8]| {
            move |txn: &WriteTransaction| {
                txn.open_table(TAG_SETS).unwrap().insert(9, row).unwrap();
            }
        };
        refused(set_row(&[0; 32]), "stored set 9 is corrupt: its length 32");
        refused(
            set_row(&[7; 33]),
            "stored set 9 is corrupt: keep flag 7 is neither 0 nor 1",
        );
        refused(
            set_row(&[0; 33]),
            "stored set 9 is corrupt: it holds tag 0000",
        );
        refused(
            move |txn| {
                let mut row = encode_tag(&Tag::new("a", Some("2"), false).unwrap(), 0);
                txn.open_table(TAGS)
                    .unwrap()
                    .insert(&a.0, row.as_slice())
                    .unwrap();
                row.truncate(3);
                txn.open_table(TAGS)
                    .unwrap()
                    .insert(&[1; 32], row.as_slice())
                    .unwrap();
            },
            "is corrupt: ",
        );
        refused(
            move |txn| {
                let row = encode_tag(&Tag::new("a", Some("2"), false).unwrap(), 0);
                txn.open_table(TAGS)
                    .unwrap()
                    .insert(&a.0, row.as_slice())
                    .unwrap();
            },
            "its content does not match its hash",
        );
        refused(
            |txn| {
                let tag = Tag::new("orphan", None, false).unwrap();
                let row = encode_tag(&tag, 0);
                txn.open_table(TAGS)
                    .unwrap()
                    .insert(&tag.content_hash().0, row.as_slice())
                    .unwrap();
            },
            "no set holds it",
        );
        refused(
            |txn| {
                let mut row = vec![0; 33];
                row.extend_from_slice(&a.0);
                row.push(0);
                row[..32].copy_from_slice(&a.0);
                txn.open_table(TAG_SETS)
                    .unwrap()
                    .insert(9, row.as_slice())
                    .unwrap();
            },
            "stored set 9 is corrupt: tag \"a\" appears twice",
        );
    }

    #[test]
    fn sets_stored_whole_are_converted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (set("@a=1\nb\n"), set("a=1\n"));
        {
            let db = Database::create(dir.path().join("ptags.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut rows = txn.open_table(LEGACY_SETS).unwrap();
                rows.insert(1, a.to_read_format().as_bytes()).unwrap();
                rows.insert(2, b.to_read_format().as_bytes()).unwrap();
                txn.open_table(META)
                    .unwrap()
                    .insert(NEXT_SET_ID, 3)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let (store, loaded) = open(dir.path());
        assert_eq!(loaded, restored(vec![(SetId(1), a), (SetId(2), b)], 3));
        assert_eq!(row_count(&store, TAGS), 2);
        let txn = store.db.begin_read().unwrap();
        assert!(
            txn.open_table(LEGACY_SETS).is_err(),
            "the old table is gone"
        );
    }

    #[test]
    fn uid_accounting() {
        let mut usage = TagBytes::new(100);
        assert_eq!(usage.check(1, 100), Ok(()));
        usage.charge(1, 60);
        assert_eq!(usage.check(2, 100), Ok(()), "each uid has its own limit");
        assert_eq!(
            usage.check(1, 41),
            Err(OverLimit {
                uid: 1,
                used: 60,
                adding: 41,
                limit: 100
            })
        );
        assert_eq!(usage.check(1, 40), Ok(()));
        assert_eq!(usage.check(1, u64::MAX).unwrap_err().adding, u64::MAX);
        usage.release(1, 60);
        assert_eq!(usage.check(1, 100), Ok(()));
        assert!(usage.by_uid.is_empty());
        // Restored contents are charged even over the limit.
        usage.charge(3, 150);
        assert!(usage.check(3, 1).is_err());
    }

    #[test]
    fn a_write_over_the_uid_limit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tag = |n: usize| Tag::new(&format!("t{n}"), Some(&"v".repeat(1000)), false).unwrap();
        let one = TagSet::from_tags(vec![tag(1)]).unwrap();
        let two = TagSet::from_tags(vec![tag(1), tag(2)]).unwrap();
        let three = TagSet::from_tags(vec![tag(1), tag(2), tag(3)]).unwrap();
        // Room for two of these contents and two sets' rows, not three.
        let limit = 2 * charge_of(&tag(0)) + row_charge(&one) + row_charge(&two) + 10;
        let (mut store, _) = Store::open(dir.path(), limit).unwrap();
        store.save_sets(&[(SetId(1), &one)], 2, 1000, true).unwrap();
        store.save_sets(&[(SetId(2), &two)], 3, 1000, true).unwrap();
        let err = store
            .save_sets(&[(SetId(3), &three)], 4, 1000, true)
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "the tag data stored for uid 1000 would exceed limits.max_tag_bytes_per_uid"
            ),
            "{err}"
        );
        assert!(matches!(err, SaveError::OverLimit(_)));
        // Unlimited (a privileged caller), the same uid may.
        store
            .save_sets(&[(SetId(9), &three)], 10, 1000, false)
            .unwrap();
        store.delete_sets(&[SetId(9)]).unwrap();
        // Another uid may store it; reusing stored contents costs nothing.
        store
            .save_sets(&[(SetId(3), &three)], 4, 1001, true)
            .unwrap();
        store
            .save_sets(&[(SetId(4), &three.kept())], 5, 1000, true)
            .unwrap();
        // Collected contents give the room back, after a restart too.
        store.delete_sets(&[SetId(1), SetId(2), SetId(3)]).unwrap();
        drop(store);
        let (mut store, loaded) = Store::open(dir.path(), limit).unwrap();
        assert_eq!(loaded.next_set_id, 5);
        // The one row left (set 4) is charged to uid 0 after a restart.
        assert!(!store.usage.by_uid.contains_key(&1000));
        assert_eq!(store.usage.by_uid[&0], row_charge(&three.kept()));
        store.save_sets(&[(SetId(5), &two)], 6, 1000, true).unwrap();
        assert_eq!(
            store.usage.by_uid[&1000],
            2 * charge_of(&tag(0)) + row_charge(&two)
        );
    }

    #[test]
    fn compaction_rule() {
        assert!(
            !worth_compacting(COMPACT_MIN_FILE - 1, 0),
            "small files stay"
        );
        assert!(worth_compacting(COMPACT_MIN_FILE, 0));
        assert!(worth_compacting(100 << 20, 24 << 20), "more than 3/4 free");
        assert!(!worth_compacting(100 << 20, 25 << 20));
    }

    /// Issue 13: 150 writes, each adding one tag with a 32,000-byte value
    /// to the set of the one before.
    #[test]
    fn one_tag_more_per_set_grows_the_file_linearly() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        let mut tags = Vec::new();
        let mut ids = Vec::new();
        for i in 0..150 {
            let value = format!("{i:05}").repeat(6400);
            tags.push(Tag::new(&format!("X:{i:03}"), Some(&value), false).unwrap());
            let set = TagSet::from_tags(tags.clone()).unwrap();
            let id = SetId(i + 1);
            store
                .save_sets(&[(id, &set)], id.0 + 1, 1000, true)
                .unwrap();
            ids.push(id);
        }
        let data = 150 * 32_000;
        let written = store.file_len().unwrap();
        assert!(written < 3 * data, "{written} bytes for {data} of values");
        // The last set holds every content: collecting the others frees
        // only their rows of references, and the file stays as it is.
        let last = ids.pop().unwrap();
        store.delete_sets(&ids).unwrap();
        store.compact().unwrap();
        assert!(store.file_len().unwrap() <= written);
        drop(store);
        let (mut store, loaded) = open(dir.path());
        assert_eq!(loaded.sets.len(), 1);
        assert_eq!(loaded.sets[0].0, last);
        assert_eq!(loaded.sets[0].1.len(), 150);
        // Once the process is gone, its last set goes too, and compacting
        // gives the space back.
        store.delete_sets(&[last]).unwrap();
        store.compact().unwrap();
        let compacted = store.file_len().unwrap();
        assert!(
            compacted < written / 2,
            "{compacted} after, {written} before"
        );
    }
}
