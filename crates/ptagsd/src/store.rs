//! The embedded database (redb) in the state directory: every tag set
//! whose ID the kernel may hold, and the container registry. A change is
//! committed (durably) before the kernel sees the ID it concerns, so
//! that after a restart or a crash every ID the kernel holds resolves.

use std::path::Path;

use anyhow::{Context, Result};
use ptags_core::{SetId, TagSet};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Set ID → the set in the read format.
const SETS: TableDefinition<u64, &[u8]> = TableDefinition::new("sets");
/// Container ID → [`ContainerRecord`] as JSON.
const CONTAINERS: TableDefinition<u64, &[u8]> = TableDefinition::new("containers");
/// Counters that must survive restarts.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The next set ID to hand out: IDs are never reused, even after a
/// restart, so that an ID in an old audit record names one set only.
const NEXT_SET_ID: &str = "next_set_id";

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
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) `ptags.redb` under `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("ptags.redb");
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(SETS)?;
        txn.open_table(CONTAINERS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// Every stored set, and the next set ID to hand out.
    pub fn load_sets(&self) -> Result<(Vec<(SetId, TagSet)>, u64)> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SETS)?;
        let mut sets = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            let set = TagSet::parse_read_format(bytes.value()).map_err(|(line, e)| {
                anyhow::anyhow!("stored set {} is corrupt at line {line}: {e}", id.value())
            })?;
            sets.push((SetId(id.value()), set));
        }
        let next = txn
            .open_table(META)?
            .get(NEXT_SET_ID)?
            .map_or(1, |v| v.value());
        Ok((sets, next))
    }

    /// Stores new sets and the next ID, in one durable transaction.
    pub fn save_sets(&self, sets: &[(SetId, &TagSet)], next: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SETS)?;
            for (id, set) in sets {
                table.insert(id.0, set.to_read_format().as_bytes())?;
            }
            txn.open_table(META)?.insert(NEXT_SET_ID, next)?;
        }
        txn.commit().context("committing tag sets")?;
        Ok(())
    }

    pub fn delete_sets(&self, ids: &[SetId]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SETS)?;
            for id in ids {
                table.remove(id.0)?;
            }
        }
        txn.commit().context("committing collected tag sets")?;
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
        txn.commit().context("committing a dropped container")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_containers_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let set = TagSet::parse_read_format(b"@a=1\nb\n").unwrap();
        let record = ContainerRecord {
            id: 7,
            parent: Some(3),
            depth: 2,
            owner_pid: 10,
            owner_start: 99,
            created: 1_700_000_000,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.load_sets().unwrap(), (vec![], 1));
            store.save_sets(&[(SetId(5), &set)], 6).unwrap();
            store.put_container(&record).unwrap();
            store
                .put_container(&ContainerRecord { id: 8, ..record })
                .unwrap();
            store.delete_container(8).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_sets().unwrap(), (vec![(SetId(5), set)], 6));
        assert_eq!(store.load_containers().unwrap(), vec![record]);
        store.delete_sets(&[SetId(5)]).unwrap();
        assert_eq!(store.load_sets().unwrap(), (vec![], 6));
    }
}
