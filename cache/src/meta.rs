//! The metadata database: images, blobs, snapshots and cache records in redb.
//!
//! Every record is a JSON value under a string key in one of four tables. Each operation opens
//! the database, runs one transaction and closes it again: redb holds an exclusive file lock for
//! as long as a database is open, so keeping it open would lock every other kiln process out of
//! the store. Opening per operation lets several processes share one store; redb's lock
//! serialises their transactions (a process that finds the file locked retries for a while).
//! Within a process a mutex does the same.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{ReadableTable as _, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// One table of JSON records.
#[derive(Clone, Copy)]
pub(crate) struct Table(TableDefinition<'static, &'static str, &'static [u8]>);

pub(crate) const IMAGES: Table = Table(TableDefinition::new("images"));
pub(crate) const BLOBS: Table = Table(TableDefinition::new("blobs"));
pub(crate) const SNAPSHOTS: Table = Table(TableDefinition::new("snapshots"));
pub(crate) const CACHE_RECORDS: Table = Table(TableDefinition::new("cache_records"));

const ALL_TABLES: [Table; 4] = [IMAGES, BLOBS, SNAPSHOTS, CACHE_RECORDS];

/// How long to wait for another process to release the database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The metadata database file plus the in-process lock around it.
#[derive(Debug)]
pub(crate) struct Meta {
    path: PathBuf,
    lock: Mutex<()>,
}

/// A write transaction handed to [`Meta::write`] closures.
pub(crate) struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
    path: &'a Path,
}

impl Meta {
    pub(crate) fn open(path: PathBuf) -> Result<Self, Error> {
        let meta = Self {
            path,
            lock: Mutex::new(()),
        };
        // Create the file and every table so readers never meet a missing table.
        meta.write(|_| Ok(()))?;
        Ok(meta)
    }

    fn with_db<T>(&self, f: impl FnOnce(&redb::Database) -> Result<T, Error>) -> Result<T, Error> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        let db = loop {
            match redb::Database::create(&self.path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    if start.elapsed() > BUSY_TIMEOUT {
                        return Err(Error::DatabaseBusy {
                            path: self.path.clone(),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::db(&self.path, e)),
            }
        };
        f(&db)
    }

    /// Runs `f` in one write transaction and commits it (durably) if `f` succeeds.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, Error>) -> Result<T, Error> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(|e| Error::db(&self.path, e))?;
            for table in ALL_TABLES {
                txn.open_table(table.0)
                    .map_err(|e| Error::db(&self.path, e))?;
            }
            let out = f(&Tx {
                txn: &txn,
                path: &self.path,
            })?;
            txn.commit().map_err(|e| Error::db(&self.path, e))?;
            Ok(out)
        })
    }

    /// Reads one record.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, Error> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| Error::db(&self.path, e))?;
            let t = txn
                .open_table(table.0)
                .map_err(|e| Error::db(&self.path, e))?;
            let Some(value) = t.get(key).map_err(|e| Error::db(&self.path, e))? else {
                return Ok(None);
            };
            decode(key, value.value()).map(Some)
        })
    }

    /// Lists every record of a table, in key order.
    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, Error> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(|e| Error::db(&self.path, e))?;
            let t = txn
                .open_table(table.0)
                .map_err(|e| Error::db(&self.path, e))?;
            let mut out = Vec::new();
            for item in t.iter().map_err(|e| Error::db(&self.path, e))? {
                let (k, v) = item.map_err(|e| Error::db(&self.path, e))?;
                out.push((k.value().to_owned(), decode(k.value(), v.value())?));
            }
            Ok(out)
        })
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Record {
        key: key.to_owned(),
        source,
    })
}

impl Tx<'_> {
    fn err(&self, e: impl Into<redb::Error>) -> Error {
        Error::db(self.path, e)
    }

    pub(crate) fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Record {
            key: key.to_owned(),
            source,
        })?;
        let mut t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        t.insert(key, bytes.as_slice()).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, Error> {
        let t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let Some(value) = t.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|source| Error::Record {
                key: key.to_owned(),
                source,
            })
    }

    pub(crate) fn remove(&self, table: Table, key: &str) -> Result<bool, Error> {
        let mut t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let existed = t.remove(key).map_err(|e| self.err(e))?.is_some();
        Ok(existed)
    }

    pub(crate) fn list<T: DeserializeOwned>(
        &self,
        table: Table,
    ) -> Result<Vec<(String, T)>, Error> {
        let t = self.txn.open_table(table.0).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = k.value().to_owned();
            let value = serde_json::from_slice(v.value()).map_err(|source| Error::Record {
                key: key.clone(),
                source,
            })?;
            out.push((key, value));
        }
        Ok(out)
    }
}
