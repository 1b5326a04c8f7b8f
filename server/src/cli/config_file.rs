//! The YAML config file (`--config`): keys are flag names without the
//! leading dashes, flat (`api.address: x`) or nested (`api: {address: x}`).

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use super::Cli;

fn flatten(
    prefix: &str,
    value: &serde_yaml::Value,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                let key = key
                    .as_str()
                    .ok_or_else(|| format!("non-string key under {prefix:?}"))?;
                let full = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&full, value, out)?;
            }
            Ok(())
        }
        serde_yaml::Value::Sequence(items) => {
            let items: Vec<String> = items.iter().map(scalar).collect::<Result<_, _>>()?;
            out.insert(prefix.to_string(), items.join(","));
            Ok(())
        }
        other => {
            out.insert(prefix.to_string(), scalar(other)?);
            Ok(())
        }
    }
}

fn scalar(value: &serde_yaml::Value) -> Result<String, String> {
    match value {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        serde_yaml::Value::Bool(b) => Ok(b.to_string()),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        serde_yaml::Value::Null => Ok(String::new()),
        other => Err(format!("unsupported value {other:?}")),
    }
}

/// The file's settings as `--flag=value` arguments, for every flag of
/// `subcommand` that neither the command line nor the environment set.
pub fn as_args(
    subcommand: &str,
    path: &str,
    matches: &ArgMatches,
) -> Result<Vec<std::ffi::OsString>, clap::Error> {
    let fail = |message: String| {
        clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!("config file {path}: {message}\n"),
        )
    };
    let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|err| fail(err.to_string()))?;
    let mut settings = BTreeMap::new();
    flatten("", &value, &mut settings).map_err(fail)?;

    let command = Cli::command();
    let sub = command
        .find_subcommand(subcommand)
        .ok_or_else(|| fail(format!("no subcommand {subcommand}")))?;
    let mut args = Vec::new();
    for (key, value) in settings {
        let arg = sub
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()))
            .ok_or_else(|| fail(format!("unknown setting {key:?}")))?;
        let id = arg.get_id().as_str();
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable) => continue,
            _ => args.push(format!("--{key}={value}").into()),
        }
    }
    Ok(args)
}
