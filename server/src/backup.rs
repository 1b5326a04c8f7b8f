//! Backup directories (`docs/backups.md`, `features/fixtures/regatta-go/README.md`):
//! one `<table>.bak` command stream per table and a `manifest.json` naming
//! each file with its MD5, written the way Regatta (Go) writes and reads
//! them. Used by `regatta backup` and `regatta restore`; no server code.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// RFC 3339 time the backup started.
    pub started: String,
    /// RFC 3339 time the backup finished.
    pub finished: String,
    /// One entry per table, sorted by name.
    pub tables: Vec<ManifestTable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    pub name: String,
    /// Always `REPLICATED`.
    #[serde(rename = "type")]
    pub kind: String,
    pub file_name: String,
    /// Lowercase hex MD5 of the file.
    pub md5: String,
}

/// What is wrong with a backup directory.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup directory {0} does not exist")]
    MissingDirectory(PathBuf),
    #[error("backup directory {dir} has no {MANIFEST_FILE}")]
    MissingManifest { dir: PathBuf },
    #[error("{path}: not a backup manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("table {table}: file {file} is missing")]
    MissingFile { table: String, file: PathBuf },
    #[error(
        "table {table}: checksum mismatch: {file} has MD5 {actual}, the manifest says {expected}"
    )]
    ChecksumMismatch {
        table: String,
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("table name {0:?} cannot be a file name")]
    UnsafeTableName(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file a table is backed up to: `<table>.bak`.
pub fn file_name(table: &str) -> Result<String, BackupError> {
    let unsafe_name =
        table.is_empty() || table == "." || table == ".." || table.contains(['/', '\\', '\0']);
    if unsafe_name {
        return Err(BackupError::UnsafeTableName(table.to_string()));
    }
    Ok(format!("{table}.bak"))
}

/// Lowercase hex MD5 of a file, read in 1 MiB pieces.
pub fn file_md5(path: &Path) -> Result<String, BackupError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(io_error(path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex_lower(&hasher.finalize()))
}

pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads the manifest of `dir` and checks every file it names against its
/// MD5, before anything is restored.
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    if !dir.is_dir() {
        return Err(BackupError::MissingDirectory(dir.to_path_buf()));
    }
    let path = dir.join(MANIFEST_FILE);
    let raw = match fs::read(&path) {
        Ok(raw) => raw,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(BackupError::MissingManifest {
                dir: dir.to_path_buf(),
            })
        }
        Err(err) => return Err(io_error(&path)(err)),
    };
    let manifest: Manifest =
        serde_json::from_slice(&raw).map_err(|err| BackupError::BadManifest {
            path: path.clone(),
            reason: err.to_string(),
        })?;
    for table in &manifest.tables {
        let file = table_file(dir, table)?;
        if !file.is_file() {
            return Err(BackupError::MissingFile {
                table: table.name.clone(),
                file,
            });
        }
        let actual = file_md5(&file)?;
        if !actual.eq_ignore_ascii_case(&table.md5) {
            return Err(BackupError::ChecksumMismatch {
                table: table.name.clone(),
                file,
                expected: table.md5.clone(),
                actual,
            });
        }
    }
    Ok(manifest)
}

/// The file of a manifest entry; a name that would leave the directory is refused.
pub fn table_file(dir: &Path, table: &ManifestTable) -> Result<PathBuf, BackupError> {
    let name = Path::new(&table.file_name);
    let plain = name.components().count() == 1
        && matches!(
            name.components().next(),
            Some(std::path::Component::Normal(_))
        );
    if !plain {
        return Err(BackupError::BadManifest {
            path: dir.join(MANIFEST_FILE),
            reason: format!("file name {:?} is not a plain file name", table.file_name),
        });
    }
    Ok(dir.join(name))
}

/// Writes `manifest.json` into `dir` and makes it and the directory durable.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let path = dir.join(MANIFEST_FILE);
    let mut json = serde_json::to_vec_pretty(manifest).map_err(|err| BackupError::BadManifest {
        path: path.clone(),
        reason: err.to_string(),
    })?;
    json.push(b'\n');
    write_durably(&path, &json)?;
    sync_dir(dir)
}

/// Writes `bytes` to `path` through a temporary file, fsynced, then renamed.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))
}

/// Fsyncs a directory, so renames and new files in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(dir))
}

/// An RFC 3339 timestamp of now (UTC, microseconds), as the manifest holds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../features/fixtures/regatta-go/backups")
            .join(name)
    }

    #[test]
    fn the_go_backup_verifies_and_lists_its_tables_sorted() {
        let manifest = verify(&fixture("complete")).expect("complete backup verifies");
        let names: Vec<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["applicable-device-secure-policy", "regatta-test"]);
        assert!(manifest.tables.iter().all(|t| t.kind == "REPLICATED"));
        assert_eq!(manifest.started, "2021-09-10T14:37:50.868666+02:00");
    }

    #[test]
    fn an_empty_table_file_verifies() {
        let manifest = verify(&fixture("empty")).expect("empty backup verifies");
        assert_eq!(manifest.tables[0].md5, "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn a_wrong_checksum_is_refused_naming_the_table() {
        let err = verify(&fixture("corrupted")).expect_err("corrupted backup");
        assert!(matches!(err, BackupError::ChecksumMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("regatta-test") && message.contains("checksum mismatch"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_file_is_refused_naming_it() {
        let err = verify(&fixture("missing-file")).expect_err("missing file");
        assert!(matches!(err, BackupError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("regatta-test.bak"), "{err}");
    }

    #[test]
    fn a_missing_directory_and_manifest_are_clear_errors() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let gone = dir.path().join("nope");
        assert!(matches!(
            verify(&gone),
            Err(BackupError::MissingDirectory(_))
        ));
        assert!(matches!(
            verify(dir.path()),
            Err(BackupError::MissingManifest { .. })
        ));
        fs::write(dir.path().join(MANIFEST_FILE), b"{not json").expect("write");
        assert!(matches!(
            verify(dir.path()),
            Err(BackupError::BadManifest { .. })
        ));
    }

    #[test]
    fn a_manifest_cannot_point_outside_its_directory() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let manifest = Manifest {
            started: now_rfc3339(),
            finished: now_rfc3339(),
            tables: vec![ManifestTable {
                name: "t".into(),
                kind: "REPLICATED".into(),
                file_name: "../t.bak".into(),
                md5: String::new(),
            }],
        };
        write_manifest(dir.path(), &manifest).expect("write");
        assert!(matches!(
            verify(dir.path()),
            Err(BackupError::BadManifest { .. })
        ));
    }

    #[test]
    fn a_written_manifest_reads_back_in_the_go_layout() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        fs::write(dir.path().join("t.bak"), b"").expect("write");
        let manifest = Manifest {
            started: now_rfc3339(),
            finished: now_rfc3339(),
            tables: vec![ManifestTable {
                name: "t".into(),
                kind: "REPLICATED".into(),
                file_name: file_name("t").expect("file name"),
                md5: file_md5(&dir.path().join("t.bak")).expect("md5"),
            }],
        };
        write_manifest(dir.path(), &manifest).expect("write");
        assert_eq!(verify(dir.path()).expect("verify"), manifest);
        let raw: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(MANIFEST_FILE)).expect("read"))
                .expect("json");
        assert_eq!(raw["tables"][0]["type"], "REPLICATED");
        assert_eq!(raw["tables"][0]["file_name"], "t.bak");
        assert!(!dir.path().join("manifest.tmp").exists());
    }

    #[test]
    fn table_names_that_are_not_file_names_are_refused() {
        for name in ["", ".", "..", "a/b", "a\\b"] {
            assert!(file_name(name).is_err(), "{name:?}");
        }
        assert_eq!(
            file_name("regatta-test").expect("plain"),
            "regatta-test.bak"
        );
    }
}
