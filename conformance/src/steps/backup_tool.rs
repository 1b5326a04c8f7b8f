//! The server's backup tool (`features/backup_tool.feature`): a backup
//! directory of table files and a `manifest.json`, as Regatta's `regatta
//! backup` writes it, restored into a fresh cluster; Regatta (Go)'s own
//! directories, whole, corrupted or missing a file. The tool is the
//! template's `[tools]`, run by the backend ([`crate::backend::Cluster::run_tool`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use md5::{Digest, Md5};

use crate::backend::ToolRun;
use crate::template::Tool;
use crate::world::RegattaWorld;

/// The scenario's backup directories, under one temporary directory.
pub struct ToolDirs {
    root: tempfile::TempDir,
    /// The last tool run: the directory it used and how it ended.
    pub last: Option<(String, ToolRun)>,
}

fn dirs(world: &mut RegattaWorld) -> Result<&mut ToolDirs> {
    if world.tool_dirs.is_none() {
        let root = tempfile::Builder::new()
            .prefix("regatta-backups-")
            .tempdir()?;
        world.tool_dirs = Some(ToolDirs { root, last: None });
    }
    world.tool_dirs.as_mut().context("backup directories")
}

/// The backup directory `name` of the scenario (created when missing).
fn dir_of(world: &mut RegattaWorld, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '.']) {
        bail!("a backup directory's name is one plain word, not {name:?}");
    }
    let dir = dirs(world)?.root.path().join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn run(world: &mut RegattaWorld, tool: Tool, name: &str) -> Result<()> {
    let dir = dir_of(world, name)?;
    let cluster = world.cluster()?;
    let run = cluster.run_tool(1, tool, &dir).await?;
    dirs(world)?.last = Some((name.to_string(), run));
    Ok(())
}

fn last_run(world: &RegattaWorld) -> Result<&(String, ToolRun)> {
    world
        .tool_dirs
        .as_ref()
        .and_then(|dirs| dirs.last.as_ref())
        .context("the scenario has run no tool")
}

#[when(regex = r#"^I back up every table of node 1 with the backup tool into "([^"]*)"$"#)]
async fn back_up(world: &mut RegattaWorld, name: String) -> Result<()> {
    run(world, Tool::Backup, &name).await
}

#[when(regex = r#"^I restore "([^"]*)" into node 1 with the backup tool$"#)]
async fn restore(world: &mut RegattaWorld, name: String) -> Result<()> {
    run(world, Tool::Restore, &name).await
}

/// A copy of the Regatta (Go) backup directory `fixture`, so the tool can
/// neither change the suite's files nor be told where they are.
#[when(regex = r#"^I restore the Go backup directory "([^"]*)" into node 1 with the backup tool$"#)]
async fn restore_go(world: &mut RegattaWorld, fixture: String) -> Result<()> {
    let source = super::maintenance::go_fixture(&fixture);
    let name = format!("go-{fixture}");
    let dir = dir_of(world, &name)?;
    for entry in std::fs::read_dir(&source).with_context(|| source.display().to_string())? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    run(world, Tool::Restore, &name).await
}

#[then("the tool succeeds")]
async fn succeeds(world: &mut RegattaWorld) -> Result<()> {
    let (name, run) = last_run(world)?;
    if !run.success {
        bail!("the tool failed on {name:?}:\n{}", run.output);
    }
    Ok(())
}

/// It fails, and what it printed names the culprit (a table or a file).
#[then(regex = r#"^the tool fails, naming "([^"]*)"$"#)]
async fn fails(world: &mut RegattaWorld, named: String) -> Result<()> {
    let (name, run) = last_run(world)?;
    if run.success {
        bail!("the tool succeeded on {name:?}:\n{}", run.output);
    }
    if !run.output.contains(&named) {
        bail!(
            "the tool failed on {name:?} without naming {named:?}:\n{}",
            run.output
        );
    }
    Ok(())
}

/// The directory is one Regatta (Go) reads: `manifest.json` with
/// `started`, `finished` and one entry per table (`name`, `type`
/// REPLICATED, `file_name`, `md5` of the file, in hex), nothing else. Each
/// table's file also becomes the backup `<dir>/<table>` for the steps that
/// check a backup's records.
#[then(
    regex = r#"^the backup directory "([^"]*)" has a manifest of the tables "([^"]*)", each file with its md5$"#
)]
async fn manifest(world: &mut RegattaWorld, name: String, tables: String) -> Result<()> {
    let dir = dir_of(world, &name)?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).context("manifest.json")?)
            .context("manifest.json is not JSON")?;
    for field in ["started", "finished"] {
        if !manifest[field].is_string() {
            bail!("manifest.json has no {field:?} time: {manifest}");
        }
    }
    let entries = manifest["tables"]
        .as_array()
        .context("manifest.json has no \"tables\" list")?;
    let mut listed = BTreeSet::new();
    let mut files = BTreeSet::from(["manifest.json".to_string()]);
    for entry in entries {
        let field = |key: &str| {
            entry[key]
                .as_str()
                .with_context(|| format!("a manifest entry without {key:?}: {entry}"))
        };
        let (table, file) = (field("name")?, field("file_name")?);
        if field("type")? != "REPLICATED" {
            bail!("table {table} has type {:?}, not REPLICATED", entry["type"]);
        }
        if Path::new(file).components().count() != 1 {
            bail!("table {table}'s file {file:?} is not a plain file name");
        }
        let bytes =
            std::fs::read(dir.join(file)).with_context(|| format!("{table}'s file {file}"))?;
        let md5 = crate::fuzz::proto::hex(&Md5::digest(&bytes));
        if field("md5")? != md5 {
            bail!(
                "{file}: the manifest says md5 {}, the file has {md5}",
                field("md5")?
            );
        }
        listed.insert(table.to_string());
        files.insert(file.to_string());
        world.backups.insert(format!("{name}/{table}"), bytes);
    }
    let expected: BTreeSet<String> = tables.split(", ").map(String::from).collect();
    if listed != expected {
        bail!("the manifest lists {listed:?}, expected {expected:?}");
    }
    let present: BTreeSet<String> = std::fs::read_dir(&dir)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    if present != files {
        bail!("the directory holds {present:?}; the manifest names {files:?}");
    }
    Ok(())
}

/// Byte for byte the files may differ (Snappy's framing leaves the
/// compressor its choices); record for record they hold the same table,
/// type, key and value, which is what a restore reads (a server may add
/// revisions to its pairs).
#[then(
    regex = r#"^the backup "([^"]*)" of "([^"]*)" holds the same records as the Go backup file "([^"]*)"$"#
)]
async fn same_records_as_go(
    world: &mut RegattaWorld,
    name: String,
    table: String,
    fixture: String,
) -> Result<()> {
    let ours = world.backups.get(&name).context("no such backup")?;
    let ours = records(ours)?;
    let path = super::maintenance::go_fixture(&fixture);
    let theirs = records(&std::fs::read(&path).context(fixture)?)?;
    if let Some(other) = ours.iter().find(|r| r.0 != table.as_bytes()) {
        bail!(
            "a record names table {}, expected {table}",
            crate::values::show(&other.0)
        );
    }
    if ours.len() != theirs.len() {
        bail!(
            "the backup holds {} records, the Go file {}",
            ours.len(),
            theirs.len()
        );
    }
    if let Some((i, (a, b))) = ours
        .iter()
        .zip(&theirs)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        bail!("record {i} differs: ours {a:?}, Go's {b:?}");
    }
    Ok(())
}

/// One record as a restore reads it: table, type, key, value.
type Record = (Vec<u8>, i32, Vec<u8>, Vec<u8>);

fn records(bytes: &[u8]) -> Result<Vec<Record>> {
    Ok(crate::command_stream::decode(bytes)?
        .into_iter()
        .map(|command| {
            let kv = command.kv.unwrap_or_default();
            (command.table, command.r#type, kv.key, kv.value)
        })
        .collect())
}
