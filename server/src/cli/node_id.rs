//! A node's id taken from its host name, for StatefulSets: the pod
//! `regatta-2` is node 3 (ordinal + 1, since 0 is no node id). The image has
//! no shell to compute it, and every pod shares one command line.
//!
//! Ids are never used again once removed (`regatta cluster remove-member`),
//! so a pod whose volume was lost comes back under a new id: `--raft.node-ids`
//! names it (`regatta-2=4`), and a node whose id came from there and is not
//! among the initial members joins (as with `--raft.join`).

use std::collections::BTreeMap;

/// How this node's id was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// `--raft.node-id` (or its default).
    Flag,
    /// The host name's ordinal.
    Ordinal,
    /// `--raft.node-ids`: a replacement under a new id.
    Override,
}

/// The id of `host`: its entry in `overrides` (`host=id,...`), else the
/// number after its last `-`, plus one.
pub fn from_host_name(host: &str, overrides: Option<&str>) -> Result<(u64, IdSource), String> {
    let overrides = parse_overrides(overrides.unwrap_or_default())?;
    if let Some(&id) = overrides.get(host) {
        return Ok((id, IdSource::Override));
    }
    let ordinal = host
        .rsplit_once('-')
        .map(|(_, ordinal)| ordinal)
        .filter(|ordinal| !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|ordinal| ordinal.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "--raft.node-id-from-hostname: the host name {host:?} does not end in \
                 -<number> (a StatefulSet pod's ordinal), and --raft.node-ids does not name it"
            )
        })?;
    ordinal
        .checked_add(1)
        .map(|id| (id, IdSource::Ordinal))
        .ok_or_else(|| format!("--raft.node-id-from-hostname: ordinal {ordinal} is too large"))
}

/// `host=id,...` of `--raft.node-ids`.
fn parse_overrides(spec: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut ids = BTreeMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, id) = entry
            .split_once('=')
            .ok_or_else(|| format!("--raft.node-ids: {entry:?} is not host=id"))?;
        let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            format!("--raft.node-ids: {entry:?}: the id must be a number above 0")
        })?;
        if ids.insert(host.trim().to_string(), id).is_some() {
            return Err(format!("--raft.node-ids: {host:?} is named twice"));
        }
    }
    Ok(ids)
}

/// This machine's host name (a pod's name on Kubernetes).
pub fn host_name() -> Result<String, String> {
    // The kernel's is what a container was given; HOSTNAME is a fallback
    // for systems without procfs.
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .ok_or("--raft.node-id-from-hostname: this machine's host name is unknown")?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_ordinal_plus_one_is_its_id() {
        assert_eq!(
            from_host_name("regatta-0", None),
            Ok((1, IdSource::Ordinal))
        );
        assert_eq!(
            from_host_name("leader-regatta-12", Some("")),
            Ok((13, IdSource::Ordinal))
        );
    }

    #[test]
    fn a_replaced_pod_takes_its_new_id_from_the_overrides() {
        let overrides = Some("regatta-1=4, regatta-2=7");
        assert_eq!(
            from_host_name("regatta-1", overrides),
            Ok((4, IdSource::Override))
        );
        assert_eq!(
            from_host_name("regatta-0", overrides),
            Ok((1, IdSource::Ordinal))
        );
    }

    #[test]
    fn names_without_an_ordinal_and_bad_overrides_are_refused() {
        for host in ["regatta", "regatta-", "regatta-x1", "node1", "regatta-+1"] {
            let err = from_host_name(host, None).unwrap_err();
            assert!(err.contains("does not end in -<number>"), "{host}: {err}");
        }
        assert!(from_host_name("regatta-0", Some("regatta-1"))
            .unwrap_err()
            .contains("is not host=id"));
        assert!(from_host_name("regatta-0", Some("regatta-1=0"))
            .unwrap_err()
            .contains("above 0"));
        assert!(from_host_name("regatta-0", Some("a=2,a=3"))
            .unwrap_err()
            .contains("named twice"));
        assert!(from_host_name("regatta-18446744073709551615", None)
            .unwrap_err()
            .contains("too large"));
    }
}
