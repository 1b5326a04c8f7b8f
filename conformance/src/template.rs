//! How the suite starts a node of the server under test: a command template
//! with placeholders, ports, the data path and TLS, read from the TOML file
//! `REGATTA_CONFORMANCE_CONFIG` names. The default is `conformance/server.toml`
//! (Regatta's flags), compiled in, so that file documents every key and is
//! exactly what runs when nothing is configured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The variable naming the template file.
pub const CONFIG_ENV: &str = "REGATTA_CONFORMANCE_CONFIG";

const DEFAULT: &str = include_str!("../server.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Named in the JUnit report.
    pub implementation: String,
    /// processes backend: the program.
    pub binary: Option<PathBuf>,
    /// containers backend: the image.
    pub image: Option<String>,
    /// containers backend: where a node's data directory is mounted.
    pub data_dir: String,
    pub ports: Ports,
    pub command: Command,
    /// Regatta's flag name -> the server's argument (`{value}`), `""`: none.
    pub flags: BTreeMap<String, String>,
    pub tls: Tls,
    pub tools: Tools,
    /// `[tls]` ca, cert and key read: how the suite reaches servers someone
    /// else runs.
    #[serde(skip)]
    pub client_tls: Option<crate::tls::ClientTls>,
}

/// The ports a node listens on in its container.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    pub api: u16,
    pub rest: u16,
    pub raft: u16,
    pub replication: u16,
    pub maintenance: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub leader: Vec<String>,
    pub follower: Vec<String>,
    pub tls: Vec<String>,
    pub tls_client: Vec<String>,
    pub join: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Every cluster serves TLS and the suite connects over TLS.
    #[serde(default)]
    pub serve: bool,
    /// External endpoints: the CA to trust, the client pair to present.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl Tls {
    /// The client side of `ca`, `cert`, `key` and `server_name`, read.
    fn client(&self) -> Result<Option<crate::tls::ClientTls>> {
        let pair = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => bail!("[tls] cert and key go together"),
        };
        match &self.ca {
            Some(ca) => Ok(Some(crate::tls::ClientTls::from_files(
                ca,
                pair,
                self.server_name.clone(),
            )?)),
            None if pair.is_some() => bail!("[tls] cert and key need ca too"),
            None => Ok(None),
        }
    }
}

/// The implementation's backup and restore tools (`[tools]`), which the
/// scenarios tagged `@needs-tools` run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    /// The tools' program; none: the server's own (the processes backend's
    /// binary, the image's entrypoint in a container).
    pub program: Option<String>,
    /// Arguments of a backup of every table into `{dir}`; empty: no tool.
    pub backup: Vec<String>,
    /// Arguments of a restore of the backup in `{dir}`; empty: no tool.
    pub restore: Vec<String>,
    /// Added to both against a cluster serving TLS.
    pub tls: Vec<String>,
}

/// One of the [`Tools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Backup,
    Restore,
}

/// What a tool's command line is made of.
#[derive(Debug, Clone, Default)]
pub struct ToolVars {
    /// The node's maintenance API as the tool reaches it (host:port).
    pub maintenance: String,
    /// The backup directory as the tool sees it.
    pub dir: String,
    /// The cluster's CA certificate as the tool sees it (TLS clusters).
    pub ca: Option<String>,
}

impl ToolVars {
    fn get(&self, name: &str) -> Option<String> {
        match name {
            "maintenance" => Some(self.maintenance.clone()),
            "dir" => Some(self.dir.clone()),
            "ca" => Some(self.ca.clone().unwrap_or_default()),
            _ => None,
        }
    }
}

/// What a node's command line is made of.
#[derive(Debug, Clone, Default)]
pub struct NodeVars {
    pub id: u64,
    pub members: String,
    pub raft_address: String,
    pub raft_listen: String,
    pub api_address: String,
    pub rest_address: String,
    pub replication_address: String,
    pub maintenance_address: String,
    pub data_dir: String,
    pub tables: String,
    pub leader_address: String,
    pub tls_dir: String,
}

impl NodeVars {
    fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "id" => self.id.to_string(),
            "members" => self.members.clone(),
            "raft_address" => self.raft_address.clone(),
            "raft_listen" => self.raft_listen.clone(),
            "api_address" => self.api_address.clone(),
            "rest_address" => self.rest_address.clone(),
            "replication_address" => self.replication_address.clone(),
            "maintenance_address" => self.maintenance_address.clone(),
            "data_dir" => self.data_dir.clone(),
            "tables" => self.tables.clone(),
            "leader_address" => self.leader_address.clone(),
            "tls_dir" => self.tls_dir.clone(),
            _ => return None,
        })
    }
}

static LOADED: OnceLock<Template> = OnceLock::new();

/// The template of this run: loaded by [`load`], else the default.
pub fn template() -> &'static Template {
    LOADED.get_or_init(|| Template::default_template().expect("the built-in server.toml parses"))
}

/// Reads `REGATTA_CONFORMANCE_CONFIG` (when set) and makes it this run's
/// template; says which on the terminal.
pub fn load() -> Result<&'static Template> {
    let template = match std::env::var_os(CONFIG_ENV) {
        Some(path) => {
            // cargo runs tests in the package's directory: a relative path
            // is read from the workspace root, where the user runs cargo.
            let path = PathBuf::from(path);
            let path = if path.is_relative() {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
            } else {
                path
            };
            let loaded = Template::from_file(&path)?;
            println!(
                "conformance: server template {} ({})",
                path.display(),
                loaded.implementation
            );
            loaded
        }
        None => Template::default_template()?,
    };
    let mut template = template;
    template.client_tls = template.tls.client()?;
    Ok(LOADED.get_or_init(|| template))
}

impl Template {
    pub fn default_template() -> Result<Template> {
        let template: Template =
            toml::from_str(DEFAULT).context("conformance/server.toml (the built-in default)")?;
        template.check()?;
        Ok(template)
    }

    /// The file at `path`; a relative `binary` in it is relative to the
    /// file's directory.
    pub fn from_file(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{CONFIG_ENV}={}", path.display()))?;
        let mut template =
            Template::parse(&text).with_context(|| format!("{CONFIG_ENV}={}", path.display()))?;
        if let (Some(binary), Some(dir)) = (&template.binary, path.parent()) {
            if binary.is_relative() {
                template.binary = Some(dir.join(binary));
            }
        }
        Ok(template)
    }

    /// `text`'s keys over the default's: tables merge key by key, any
    /// other value replaces the default's.
    pub fn parse(text: &str) -> Result<Template> {
        let file: toml::Table = toml::from_str(text)?;
        let mut merged: toml::Table =
            toml::from_str(DEFAULT).context("conformance/server.toml (the built-in default)")?;
        merge(&mut merged, file);
        let template: Template = merged.try_into()?;
        template.check()?;
        Ok(template)
    }

    /// Every placeholder is known and every `[flags]` value names `{value}`
    /// at most: an error here beats a node that fails to start.
    fn check(&self) -> Result<()> {
        let c = &self.command;
        let lists = [
            ("leader", &c.leader),
            ("follower", &c.follower),
            ("tls", &c.tls),
            ("tls_client", &c.tls_client),
            ("join", &c.join),
        ];
        let vars = NodeVars::default();
        for (name, list) in lists {
            for arg in list.iter() {
                render(arg, &vars).with_context(|| format!("[command] {name}: {arg:?}"))?;
            }
        }
        if c.leader.is_empty() || c.follower.is_empty() {
            bail!("[command] leader and follower must not be empty");
        }
        let t = &self.tools;
        for (name, list) in [
            ("backup", &t.backup),
            ("restore", &t.restore),
            ("tls", &t.tls),
        ] {
            for arg in list {
                render_with(arg, |v| ToolVars::default().get(v))
                    .with_context(|| format!("[tools] {name}: {arg:?}"))?;
            }
        }
        for (flag, argument) in &self.flags {
            let only_value = argument.replace("{value}", "");
            if only_value.contains('{') {
                bail!("[flags] {flag:?} = {argument:?}: the only placeholder here is {{value}}");
            }
        }
        Ok(())
    }

    /// Node `vars`' command line: its cluster's command, TLS and join
    /// arguments as asked, then the scenario's flags as the server takes them.
    pub fn node_command(
        &self,
        follower: bool,
        tls: Option<bool>,
        joining: bool,
        vars: &NodeVars,
        scenario_flags: &[String],
    ) -> Result<Vec<String>> {
        let c = &self.command;
        let mut lists = vec![if follower { &c.follower } else { &c.leader }];
        if let Some(client_certificate) = tls {
            lists.push(&c.tls);
            if client_certificate {
                lists.push(&c.tls_client);
            }
        }
        if joining {
            lists.push(&c.join);
        }
        let mut args = Vec::new();
        for list in lists {
            for arg in list {
                args.push(render(arg, vars)?);
            }
        }
        args.extend(self.scenario_flags(scenario_flags)?);
        Ok(args)
    }

    /// The arguments of `tool` (after its program); fails naming the
    /// missing tool when `[tools]` has none.
    pub fn tool_command(&self, tool: Tool, vars: &ToolVars) -> Result<Vec<String>> {
        let (name, list) = match tool {
            Tool::Backup => ("backup", &self.tools.backup),
            Tool::Restore => ("restore", &self.tools.restore),
        };
        if list.is_empty() {
            bail!(
                "the server under test ({}) has no {name} tool ([tools] {name} of the template is empty)",
                self.implementation
            );
        }
        let tls = if vars.ca.is_some() {
            &self.tools.tls[..]
        } else {
            &[]
        };
        list.iter()
            .chain(tls)
            .map(|arg| render_with(arg, |v| vars.get(v)))
            .collect()
    }

    /// Regatta's flags of a scenario (`--name=value`, `--name`) as the server
    /// under test takes them ([`Template::flags`]).
    pub fn scenario_flags(&self, flags: &[String]) -> Result<Vec<String>> {
        flags
            .iter()
            .map(|flag| {
                let (name, value) = match flag.split_once('=') {
                    Some((name, value)) => (name, value),
                    None => (flag.as_str(), ""),
                };
                match self.flags.get(name) {
                    None => Ok(flag.clone()),
                    Some(argument) if argument.is_empty() => bail!(
                        "the server under test ({}) has no setting for {name}, which the scenario needs ([flags] of the template)",
                        self.implementation
                    ),
                    Some(argument) => Ok(argument.replace("{value}", value)),
                }
            })
            .collect()
    }
}

/// `over`'s keys into `base`: a table into a table key by key, anything
/// else in place of what was there.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `arg` with each `{name}` replaced by the variable's value.
fn render(arg: &str, vars: &NodeVars) -> Result<String> {
    render_with(arg, |name| vars.get(name))
}

/// `arg` with each `{name}` replaced by `lookup(name)`.
fn render_with(arg: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .with_context(|| format!("an unclosed {{ in {arg:?}"))?;
        let name = &after[..end];
        let value =
            lookup(name).with_context(|| format!("unknown placeholder {{{name}}} in {arg:?}"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> NodeVars {
        NodeVars {
            id: 2,
            members: "1=a:5012,2=b:5012".into(),
            raft_address: "b:5012".into(),
            raft_listen: "0.0.0.0:5012".into(),
            api_address: "0.0.0.0:8443".into(),
            rest_address: "0.0.0.0:8079".into(),
            replication_address: "0.0.0.0:8444".into(),
            maintenance_address: "0.0.0.0:8445".into(),
            data_dir: "/data".into(),
            tables: "t,u".into(),
            leader_address: "l:8444".into(),
            tls_dir: "/data/tls".into(),
        }
    }

    #[test]
    fn the_default_is_regattas_command_line() {
        let template = Template::default_template().unwrap();
        let args = template
            .node_command(
                false,
                None,
                false,
                &vars(),
                &["--raft.snapshot-entries=20".into()],
            )
            .unwrap();
        assert_eq!(args[0], "leader");
        assert!(args.contains(&"--raft.node-id=2".to_string()));
        assert!(args.contains(&"--raft.initial-members=1=a:5012,2=b:5012".to_string()));
        assert!(args.contains(&"--raft.node-host-dir=/data/raft".to_string()));
        assert!(args.contains(&"--tables.names=t,u".to_string()));
        assert_eq!(args.last().unwrap(), "--raft.snapshot-entries=20");
        let follower = template
            .node_command(true, Some(false), true, &vars(), &[])
            .unwrap();
        assert_eq!(follower[0], "follower");
        assert!(follower.contains(&"--replication.leader-address=l:8444".to_string()));
        assert!(follower.contains(&"--api.cert-filename=/data/tls/node.crt".to_string()));
        assert!(!follower
            .iter()
            .any(|a| a.starts_with("--replication.cert-filename")));
        assert_eq!(follower.last().unwrap(), "--raft.join");
        let restore = template
            .tool_command(
                Tool::Restore,
                &ToolVars {
                    maintenance: "n1:8445".into(),
                    dir: "/backup".into(),
                    ca: Some("/backup/ca.crt".into()),
                },
            )
            .unwrap();
        assert_eq!(
            restore,
            [
                "restore",
                "--address=n1:8445",
                "--dir=/backup",
                "--yes",
                "--ca=/backup/ca.crt"
            ]
        );
    }

    #[test]
    fn a_file_overrides_what_it_names_and_renames_flags() {
        let template = Template::parse(
            r#"
            implementation = "other"
            [ports]
            api = 2379
            [command]
            leader = ["serve", "--id", "{id}", "--peers={members}", "--dir={data_dir}"]
            [flags]
            "--raft.snapshot-entries" = "--snapshot-every={value}"
            "--tables.token" = ""
            "#,
        )
        .unwrap();
        assert_eq!(template.implementation, "other");
        assert_eq!(template.ports.api, 2379);
        assert_eq!(template.ports.raft, 5012);
        assert_eq!(template.command.follower[0], "follower");
        let args = template
            .node_command(
                false,
                None,
                false,
                &vars(),
                &[
                    "--raft.snapshot-entries=20".into(),
                    "--raft.compaction-overhead=5".into(),
                ],
            )
            .unwrap();
        assert_eq!(
            args,
            [
                "serve",
                "--id",
                "2",
                "--peers=1=a:5012,2=b:5012",
                "--dir=/data",
                "--snapshot-every=20",
                "--raft.compaction-overhead=5"
            ]
        );
        let refused = template
            .scenario_flags(&["--tables.token=x".into()])
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("no setting for --tables.token"),
            "{refused}"
        );
    }

    #[test]
    fn mistakes_in_a_file_are_refused() {
        let unknown_key = Template::parse("implemntation = \"x\"").unwrap_err();
        assert!(format!("{unknown_key:#}").contains("implemntation"));
        let placeholder = Template::parse("[command]\nleader = [\"--id={node}\"]").unwrap_err();
        assert!(
            format!("{placeholder:#}").contains("unknown placeholder {node}"),
            "{placeholder:#}"
        );
        let tool = Template::parse("[tools]\nbackup = [\"--to={data_dir}\"]").unwrap_err();
        assert!(
            format!("{tool:#}").contains("unknown placeholder {data_dir}"),
            "{tool:#}"
        );
        let none = Template::parse("[tools]\nrestore = []")
            .unwrap()
            .tool_command(Tool::Restore, &ToolVars::default())
            .unwrap_err();
        assert!(none.to_string().contains("no restore tool"), "{none}");
        let flag = Template::parse("[flags]\n\"--x\" = \"--y={id}\"").unwrap_err();
        assert!(format!("{flag:#}").contains("{value}"), "{flag:#}");
    }
}
