//! Per-topic watermark stores (spec §7.9 `WatermarkStore`): in memory for
//! the web (a full retained replay per page load), persisted for mobile and
//! desktop under `khala.sync.watermark.<topic>`.

use crate::error::StoreError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `load/save/clear` per topic. Shared by reference so a lane and a test
/// (or a reconnecting lane) can see the same store.
pub trait WatermarkStore: Send + Sync + std::fmt::Debug {
    fn load(&self, topic: &str) -> Result<Option<i64>, StoreError>;
    fn save(&self, topic: &str, watermark: i64) -> Result<(), StoreError>;
    fn clear(&self, topic: &str) -> Result<(), StoreError>;
}

/// The key a topic's watermark is stored under (the mobile MMKV key).
pub fn storage_key(topic: &str) -> String {
    format!("khala.sync.watermark.{topic}")
}

#[derive(Debug, Default)]
pub struct MemoryWatermarkStore {
    watermarks: Mutex<BTreeMap<String, i64>>,
}

impl MemoryWatermarkStore {
    pub fn new() -> Self {
        MemoryWatermarkStore::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.watermarks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl WatermarkStore for MemoryWatermarkStore {
    fn load(&self, topic: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.map().get(&storage_key(topic)).copied())
    }

    fn save(&self, topic: &str, watermark: i64) -> Result<(), StoreError> {
        self.map().insert(storage_key(topic), watermark);
        Ok(())
    }

    fn clear(&self, topic: &str) -> Result<(), StoreError> {
        self.map().remove(&storage_key(topic));
        Ok(())
    }
}

/// A JSON object `{ "khala.sync.watermark.<topic>": n, … }` in one file
/// under a directory, rewritten whole (through a temporary file and a
/// rename) on every change, so a crash leaves the old or the new map.
#[derive(Debug)]
pub struct PersistedWatermarkStore {
    path: PathBuf,
    lock: Mutex<()>,
}

pub const PERSISTED_FILE_NAME: &str = "khala-sync-watermarks.json";

impl PersistedWatermarkStore {
    pub fn new(directory: &Path) -> Self {
        PersistedWatermarkStore {
            path: directory.join(PERSISTED_FILE_NAME),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, action: &'static str, reason: impl ToString) -> StoreError {
        StoreError {
            action,
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn read(&self) -> Result<Map<String, Value>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(error) => return Err(self.error("read", error)),
        };
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(self.error("read", "not a JSON object")),
            Err(error) => Err(self.error("read", error)),
        }
    }

    fn write(&self, map: &Map<String, Value>) -> Result<(), StoreError> {
        let temporary = self.path.with_extension("json.tmp");
        let text = Value::Object(map.clone()).to_string();
        std::fs::write(&temporary, text).map_err(|error| self.error("write", error))?;
        std::fs::rename(&temporary, &self.path).map_err(|error| self.error("write", error))
    }

    fn update(&self, change: impl FnOnce(&mut Map<String, Value>)) -> Result<(), StoreError> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut map = self.read()?;
        change(&mut map);
        self.write(&map)
    }
}

impl WatermarkStore for PersistedWatermarkStore {
    fn load(&self, topic: &str) -> Result<Option<i64>, StoreError> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match self.read()?.get(&storage_key(topic)) {
            None => Ok(None),
            // A value that is not a non-negative integer is no cursor: the
            // lane replays the whole retained journal, as with none.
            Some(value) => Ok(value.as_i64().filter(|watermark| *watermark >= 0)),
        }
    }

    fn save(&self, topic: &str, watermark: i64) -> Result<(), StoreError> {
        self.update(|map| {
            map.insert(storage_key(topic), Value::from(watermark));
        })
    }

    fn clear(&self, topic: &str) -> Result<(), StoreError> {
        self.update(|map| {
            map.remove(&storage_key(topic));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(store: &dyn WatermarkStore) {
        assert_eq!(store.load("t").ok(), Some(None));
        store.save("t", 4).expect("save");
        store.save("u", 9).expect("save");
        assert_eq!(store.load("t").ok(), Some(Some(4)));
        store.clear("t").expect("clear");
        assert_eq!(store.load("t").ok(), Some(None));
        assert_eq!(store.load("u").ok(), Some(Some(9)));
    }

    #[test]
    fn both_stores_load_save_and_clear_per_topic() {
        round_trip(&MemoryWatermarkStore::new());
        let directory = tempfile::tempdir().expect("tempdir");
        round_trip(&PersistedWatermarkStore::new(directory.path()));
    }

    #[test]
    fn the_persisted_store_survives_a_new_instance_under_the_mobile_key() {
        let directory = tempfile::tempdir().expect("tempdir");
        PersistedWatermarkStore::new(directory.path())
            .save("runtime.codex_worker_summaries", 12)
            .expect("save");
        let reopened = PersistedWatermarkStore::new(directory.path());
        assert_eq!(
            reopened.load("runtime.codex_worker_summaries").ok(),
            Some(Some(12))
        );
        let text = std::fs::read_to_string(reopened.path()).expect("read");
        assert!(text.contains("khala.sync.watermark.runtime.codex_worker_summaries"));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let directory = tempfile::tempdir().expect("tempdir");
        let store = PersistedWatermarkStore::new(directory.path());
        std::fs::write(store.path(), "[1,2").expect("write");
        assert!(store.load("t").is_err());
    }
}
