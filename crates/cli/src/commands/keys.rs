//! `acteon keys new`: a random secret and the `[[auth.keys]]` entry that
//! configures it. The server stores only the secret's SHA-256 (hex, of the
//! secret's bytes as sent in `Authorization: Bearer <secret>`), so the
//! secret is shown once, here, and nowhere else.

use std::fmt::Write as _;

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Context;
use crate::args::{KeysCommand, NewKeyArgs, Op};
use crate::output;

/// Random bytes per secret: 256 bits.
const SECRET_BYTES: usize = 32;

/// A new key: what the caller gets and what the server is told.
#[derive(Debug, Serialize)]
struct NewKey {
    id: String,
    secret: String,
    key_sha256: String,
    grants: Vec<Grant>,
    /// The `[[auth.keys]]` table, ready to paste.
    toml: String,
}

#[derive(Debug, Serialize)]
struct Grant {
    namespace: String,
    tenant: String,
    ops: Vec<&'static str>,
}

pub(super) fn run(context: &Context, command: KeysCommand) -> anyhow::Result<()> {
    let KeysCommand::New(args) = command;
    let key = new_key(args)?;
    if context.json() {
        return output::json(&key);
    }
    output::line(format!("secret: {}", key.secret))?;
    output::line("(give it to the caller; only its SHA-256 goes into the configuration)\n")?;
    output::line(key.toml.trim_end())?;
    if key.grants.is_empty() {
        eprintln!("no --tenant or --namespace: the key has no grant and may do nothing yet");
    }
    Ok(())
}

fn new_key(args: NewKeyArgs) -> anyhow::Result<NewKey> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).context("random source")?;
    let secret = hex::encode(bytes);
    let key_sha256 = hex::encode(Sha256::digest(secret.as_bytes()));
    let id = match args.id {
        Some(id) => id,
        None => format!("key-{}", &key_sha256[..8]),
    };
    let grants = match (args.namespace, args.tenant) {
        (None, None) => Vec::new(),
        (namespace, tenant) => {
            let mut ops: Vec<&'static str> = Vec::new();
            for op in args.ops.iter().map(|op| Op::as_str(*op)) {
                if !ops.contains(&op) {
                    ops.push(op);
                }
            }
            vec![Grant {
                namespace: namespace.unwrap_or_else(|| "*".to_owned()),
                tenant: tenant.unwrap_or_else(|| "*".to_owned()),
                ops,
            }]
        }
    };
    let toml = toml_entry(&id, &key_sha256, &grants);
    Ok(NewKey {
        id,
        secret,
        key_sha256,
        grants,
        toml,
    })
}

fn toml_entry(id: &str, key_sha256: &str, grants: &[Grant]) -> String {
    let mut toml = String::from("[[auth.keys]]\n");
    let _ = writeln!(toml, "id = {}", toml_string(id));
    let _ = writeln!(toml, "key_sha256 = \"{key_sha256}\"");
    if grants.is_empty() {
        toml.push_str("grants = []\n");
        return toml;
    }
    toml.push_str("grants = [\n");
    for grant in grants {
        let ops: Vec<String> = grant.ops.iter().map(|op| toml_string(op)).collect();
        let _ = writeln!(
            toml,
            "  {{ namespace = {}, tenant = {}, ops = [{}] }},",
            toml_string(&grant.namespace),
            toml_string(&grant.tenant),
            ops.join(", ")
        );
    }
    toml.push_str("]\n");
    toml
}

/// A TOML basic string: quoted, with `"`, `\` and control characters
/// escaped, so any id the operator picks stays one value.
fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(namespace: Option<&str>, tenant: Option<&str>) -> NewKeyArgs {
        NewKeyArgs {
            id: Some("planner \"one\"".into()),
            namespace: namespace.map(str::to_owned),
            tenant: tenant.map(str::to_owned),
            ops: vec![Op::Publish, Op::Subscribe, Op::Publish],
        }
    }

    #[test]
    fn the_hash_is_of_the_secret_and_the_toml_names_it() {
        let key = new_key(args(None, Some("demo"))).unwrap();
        assert_eq!(key.secret.len(), 2 * SECRET_BYTES);
        assert_eq!(
            key.key_sha256,
            hex::encode(Sha256::digest(key.secret.as_bytes()))
        );
        assert_eq!(
            key.toml,
            format!(
                "[[auth.keys]]\nid = \"planner \\\"one\\\"\"\nkey_sha256 = \"{}\"\ngrants = [\n  \
                 {{ namespace = \"*\", tenant = \"demo\", ops = [\"publish\", \"subscribe\"] }},\n]\n",
                key.key_sha256
            )
        );
        assert!(!key.toml.contains(&key.secret));
    }

    #[test]
    fn secrets_differ_and_no_scope_means_no_grant() {
        let one = new_key(args(None, None)).unwrap();
        let two = new_key(args(None, None)).unwrap();
        assert_ne!(one.secret, two.secret);
        assert!(one.grants.is_empty());
        assert!(one.toml.ends_with("grants = []\n"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(toml_string("a\nb\\"), "\"a\\u000Ab\\\\\"");
    }
}
