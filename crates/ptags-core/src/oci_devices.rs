//! A container's device list from its bundle's `config.json`, as an OCI
//! runtime builds its own (runc's `specconv`): deny every device, apply
//! `linux.resources.devices` in order, then allow the devices every
//! container gets (runc's `AllowedDevices`, but those `linux.devices`
//! redefines by path). ptags then holds the container to the same list,
//! keyed on its container ID rather than its cgroup.

use serde::Deserialize;

use crate::devices::{Access, DeviceList, DeviceRule, DeviceType};

/// More than any runtime writes; a bigger file is refused unread.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Why a bundle's device rules cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config.json is more than {MAX_CONFIG_BYTES} bytes")]
    TooBig,
    #[error("config.json is not valid JSON of the OCI runtime config: {0}")]
    Json(String),
    #[error("config.json: linux.resources.devices[{index}]: {why}")]
    Rule { index: usize, why: String },
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Deserialize, Default)]
struct Linux {
    #[serde(default)]
    resources: Option<Resources>,
    #[serde(default)]
    devices: Option<Vec<NodeSpec>>,
}

#[derive(Deserialize, Default)]
struct Resources {
    #[serde(default)]
    devices: Option<Vec<RuleSpec>>,
}

/// `linux.resources.devices[]`: absent type is `a`, absent numbers `*`.
#[derive(Deserialize)]
struct RuleSpec {
    allow: bool,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    major: Option<i64>,
    #[serde(default)]
    minor: Option<i64>,
    #[serde(default)]
    access: Option<String>,
}

/// `linux.devices[]`: only its path matters here.
#[derive(Deserialize)]
struct NodeSpec {
    path: String,
}

/// The devices runc allows every container, after the config's rules:
/// (path, rule). Those with a path give way to a `linux.devices` entry
/// of the same path, as in runc.
const RUNTIME_DEVICES: [(&str, &str); 10] = [
    ("", "c *:* m"),
    ("", "b *:* m"),
    ("/dev/null", "c 1:3 rwm"),
    ("/dev/random", "c 1:8 rwm"),
    ("/dev/full", "c 1:7 rwm"),
    ("/dev/tty", "c 5:0 rwm"),
    ("/dev/zero", "c 1:5 rwm"),
    ("/dev/urandom", "c 1:9 rwm"),
    ("", "c 136:* rwm"),
    ("", "c 5:2 rwm"),
];
/// runc 1.2 allows /dev/net/tun again, for compatibility.
const TUN: &str = "c 10:200 rwm";

impl RuleSpec {
    fn rule(&self) -> Result<DeviceRule, String> {
        let kind = match self.kind.as_deref().unwrap_or("a") {
            "a" => DeviceType::All,
            "b" => DeviceType::Block,
            "c" => DeviceType::Char,
            other => return Err(format!("type {other:?} is not a, b or c")),
        };
        let number = |n: Option<i64>, max: u32| match n {
            None | Some(-1) => Ok(None),
            Some(n) if (0..=i64::from(max)).contains(&n) => Ok(Some(n as u32)),
            Some(n) => Err(format!("device number {n} is out of range")),
        };
        let access = self.access.as_deref().unwrap_or("");
        if access.is_empty() {
            return Err("the access is empty".into());
        }
        if kind == DeviceType::All {
            // As the devices cgroup: an `a` rule is the default, whatever
            // else it names.
            return Ok(DeviceRule {
                kind,
                major: None,
                minor: None,
                access: Access::ALL,
            });
        }
        let text = format!(
            "{} {}:{} {access}",
            self.kind.as_deref().unwrap_or("a"),
            number(self.major, (1 << 12) - 1)?.map_or("*".into(), |n| n.to_string()),
            number(self.minor, (1 << 20) - 1)?.map_or("*".into(), |n| n.to_string()),
        );
        DeviceRule::parse(&text).map_err(|e| e.why.to_owned())
    }
}

/// The list a runtime enforces for the container of `config` (the bytes
/// of its bundle's `config.json`).
pub fn runtime_device_list(config: &[u8]) -> Result<DeviceList, ConfigError> {
    if config.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooBig);
    }
    let config: Config =
        serde_json::from_slice(config).map_err(|e| ConfigError::Json(e.to_string()))?;
    let linux = config.linux.unwrap_or_default();
    let mut list = DeviceList {
        default_allow: false,
        exceptions: Vec::new(),
    };
    let rules = linux.resources.and_then(|r| r.devices).unwrap_or_default();
    for (index, spec) in rules.iter().enumerate() {
        let rule = spec
            .rule()
            .map_err(|why| ConfigError::Rule { index, why })?;
        list.write(spec.allow, rule)
            .map_err(|why| ConfigError::Rule {
                index,
                why: why.to_owned(),
            })?;
    }
    let nodes: Vec<String> = linux
        .devices
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.path)
        .collect();
    let defaults = RUNTIME_DEVICES
        .iter()
        .filter(|(path, _)| path.is_empty() || !nodes.iter().any(|n| n == path))
        .map(|&(_, rule)| rule)
        .chain([TUN]);
    for rule in defaults {
        let rule = DeviceRule::parse(rule).expect("the runtime's rules are valid");
        list.write(true, rule)
            .expect("the runtime's rules fit in a list");
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &DeviceList, kind: DeviceType, major: u32, minor: u32, access: &str) -> bool {
        let a = DeviceRule::parse(&format!("c 0:0 {access}"))
            .unwrap()
            .access;
        list.allows(kind, major, minor, a)
    }

    #[test]
    fn runcs_default_config_gives_its_default_devices() {
        // `runc spec`'s rules.
        let l = runtime_device_list(
            br#"{"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}]}}}"#,
        )
        .unwrap();
        use DeviceType::{Block, Char};
        assert!(!l.default_allow);
        assert!(allows(&l, Char, 1, 3, "rwm"), "/dev/null");
        assert!(allows(&l, Char, 1, 5, "rw"), "/dev/zero");
        assert!(allows(&l, Char, 136, 4, "rw"), "a pty");
        assert!(allows(&l, Block, 8, 0, "m"), "mknod of anything, as runc");
        assert!(!allows(&l, Block, 8, 0, "r"), "the disk");
        assert!(!allows(&l, Char, 1, 1, "r"), "/dev/mem");
        assert!(allows(&l, Char, 10, 200, "rw"), "tun");
    }

    #[test]
    fn the_configs_rules_apply_in_order() {
        let l = runtime_device_list(
            br#"{"linux":{"resources":{"devices":[
                {"allow":false,"access":"rwm"},
                {"allow":true,"type":"b","major":8,"minor":0,"access":"r"},
                {"allow":true,"type":"c","major":10,"access":"rw"}
            ]}}}"#,
        )
        .unwrap();
        assert!(allows(&l, DeviceType::Block, 8, 0, "r"));
        assert!(!allows(&l, DeviceType::Block, 8, 0, "w"));
        assert!(
            allows(&l, DeviceType::Char, 10, 229, "rw"),
            "major 10, any minor"
        );
        // No rules at all: the runtime's defaults over deny-all.
        let l = runtime_device_list(b"{}").unwrap();
        assert!(!l.default_allow && !allows(&l, DeviceType::Block, 8, 0, "r"));
        // An allow-all config stays allow-all.
        let l = runtime_device_list(
            br#"{"linux":{"resources":{"devices":[{"allow":true,"access":"rwm"}]}}}"#,
        )
        .unwrap();
        assert!(l.default_allow && l.exceptions.is_empty());
    }

    #[test]
    fn bad_rules_are_named() {
        for (config, why) in [
            (
                r#"{"linux":{"resources":{"devices":[{"allow":true,"type":"x","access":"r"}]}}}"#,
                "type \"x\"",
            ),
            (
                r#"{"linux":{"resources":{"devices":[{"allow":true,"type":"c","major":5000,"access":"r"}]}}}"#,
                "out of range",
            ),
            (
                r#"{"linux":{"resources":{"devices":[{"allow":true,"type":"c","access":"rq"}]}}}"#,
                "rwm",
            ),
            (
                r#"{"linux":{"resources":{"devices":[{"allow":true,"type":"c"}]}}}"#,
                "empty",
            ),
            (
                r#"{"linux":{"resources":{"devices":[{"type":"c","access":"r"}]}}}"#,
                "allow",
            ),
            (r#"{"linux":5}"#, "JSON"),
        ] {
            let e = runtime_device_list(config.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{config}: {e}");
        }
    }
}
