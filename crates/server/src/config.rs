//! The server's configuration: one struct, layered once at start-up.
//!
//! Layers, later ones winning: built-in defaults, the TOML file
//! (`--config`), `ACTEON_<SECTION>__<KEY>` environment variables (a double
//! underscore between levels, e.g. `ACTEON_SERVER__LISTEN`),
//! `ACTEON_KAFKA_BOOTSTRAP`, then command-line flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use acteon_bus::{KAFKA_BOOTSTRAP_ENV, KafkaConfig, MemoryConfig, ProtectedProperty};
use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::auth::{ApiKeyConfig, AuthConfig};
use crate::limits::LimitsConfig;
use crate::pipeline::{AuditConfig, QuotaConfig, RuleConfig};

/// API keys as a JSON array of `{id, key_sha256, grants}`, added to
/// `[[auth.keys]]`: secrets' hashes can come from the environment.
pub const AUTH_KEYS_ENV: &str = "ACTEON_AUTH_KEYS";

const ENV_PREFIX: &str = "ACTEON";
const ENV_LEVEL_SEPARATOR: &str = "__";

/// Command-line flags of `acteon-server`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "acteon-server",
    version,
    about = "Multi-tenant event bus for AI agents"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded state store (overrides `state.data_dir`).
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub state: StateConfig,
    pub bus: BusConfig,
    /// `[[rules]]`, evaluated in priority order before every publish.
    pub rules: Vec<RuleConfig>,
    /// `[[quotas]]`, publish rate limits.
    pub quotas: Vec<QuotaConfig>,
    pub audit: AuditConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub durable: crate::durable::DurableConfig,
    pub idempotency: crate::idempotency::IdempotencyConfig,
    pub log: crate::logging::LogConfig,
    pub metrics: crate::metrics::MetricsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Interval of SSE keep-alive comments, so proxies keep idle streams open.
    pub sse_keep_alive_secs: u64,
    /// How long shutdown waits for the producer to deliver what it holds.
    pub shutdown_flush_timeout_ms: u64,
    /// How long shutdown waits for open connections (a client that stopped
    /// reading its SSE stream holds one) before closing them.
    pub shutdown_grace_ms: u64,
    /// Open SSE subscriptions at most; more are refused with 503. Each one
    /// is a Kafka consumer with its own buffers on the Kafka backend.
    pub max_subscriptions: usize,
    /// A connection whose peer has not taken any of the bytes written to it
    /// for this long is closed: an SSE reader that stopped reading gives
    /// back its consumer and its place.
    pub send_timeout_ms: u64,
    /// Records in one `POST /v1/bus/topics/{kafka_name}/records` at most.
    pub max_batch_records: usize,
    /// Largest batch body; larger ones get 413.
    pub max_batch_body_bytes: usize,
    pub cors: crate::cors::CorsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            sse_keep_alive_secs: 15,
            shutdown_flush_timeout_ms: 5_000,
            shutdown_grace_ms: 10_000,
            max_subscriptions: 10_000,
            send_timeout_ms: 30_000,
            max_batch_records: 1_000,
            max_batch_body_bytes: 8 * 1024 * 1024,
            cors: crate::cors::CorsConfig::default(),
        }
    }
}

/// Which state store keeps topic metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateEngine {
    /// SQLite in `data_dir`: survives restarts.
    #[default]
    Sqlite,
    /// Process memory: gone at exit. For tests and throw-away runs.
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    pub engine: StateEngine,
    pub data_dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            engine: StateEngine::Sqlite,
            data_dir: PathBuf::from("./acteon-data"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Serve the `/v1/bus` API.
    pub enabled: bool,
    /// The Kafka backend; without it the in-memory backend is used.
    pub kafka: Option<KafkaConfig>,
    pub memory: MemoryConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            kafka: None,
            memory: MemoryConfig::default(),
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("{AUTH_KEYS_ENV} is not a JSON array of keys: {0}")]
    KeysVariable(serde_json::Error),
    #[error("auth keys file {path}: {message}")]
    KeysFile { path: PathBuf, message: String },
    #[error(transparent)]
    KafkaProperty(#[from] ProtectedProperty),
}

/// A `[auth] keys_file`: `[[keys]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<ApiKeyConfig>,
}

impl Config {
    /// Loads the layers from the real environment and the given flags.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        Self::load_from(cli, std::env::vars().collect())
    }

    /// Loads the layers with `env` standing in for the process environment.
    pub fn load_from(cli: &Cli, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = &cli.config {
            // TOML whatever the file is called (acteon.toml.example too).
            let file = config::File::from(path.as_path()).format(config::FileFormat::Toml);
            builder = builder.add_source(file.required(true));
        }
        // Only variables with a level separator are settings; others with the
        // prefix (ACTEON_KAFKA_BOOTSTRAP, ACTEON_URL, ...) are not keys.
        let settings: config::Map<String, String> = env
            .iter()
            .filter(|(name, _)| {
                name.strip_prefix(ENV_PREFIX)
                    .and_then(|rest| rest.strip_prefix('_'))
                    .is_some_and(|rest| rest.contains(ENV_LEVEL_SEPARATOR))
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator(ENV_LEVEL_SEPARATOR)
                .try_parsing(true)
                .source(Some(settings)),
        );
        if let Some(bootstrap) = env.get(KAFKA_BOOTSTRAP_ENV).filter(|v| !v.is_empty()) {
            builder = builder.set_override("bus.kafka.bootstrap_servers", bootstrap.as_str())?;
        }
        let mut config: Self = builder.build()?.try_deserialize()?;
        if let Some(listen) = cli.listen {
            config.server.listen = listen;
        }
        if let Some(data_dir) = &cli.data_dir {
            config.state.data_dir = data_dir.clone();
        }
        if let Some(path) = &config.auth.keys_file {
            let keys_error = |message: String| ConfigError::KeysFile {
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| keys_error(e.to_string()))?;
            let file: KeysFile = config::Config::builder()
                .add_source(config::File::from_str(&text, config::FileFormat::Toml))
                .build()
                .and_then(|file| file.try_deserialize())
                .map_err(|e| keys_error(e.to_string()))?;
            config.auth.keys.extend(file.keys);
        }
        if let Some(kafka) = &config.bus.kafka {
            kafka.check_properties()?;
        }
        if let Some(json) = env.get(AUTH_KEYS_ENV) {
            let keys: Vec<ApiKeyConfig> =
                serde_json::from_str(json).map_err(ConfigError::KeysVariable)?;
            config.auth.keys.extend(keys);
        }
        Ok(config)
    }

    /// The file of the SQLite state store.
    pub fn state_db_path(&self) -> PathBuf {
        Path::new(&self.state.data_dir).join("acteon.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_run_on_memory_bus_and_sqlite_state() {
        let config = Config::load_from(&Cli::default(), HashMap::new()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert!(config.bus.kafka.is_none());
        assert_eq!(config.state.engine, StateEngine::Sqlite);
    }

    #[test]
    fn kafka_bootstrap_variable_selects_kafka() {
        let config = Config::load_from(
            &Cli::default(),
            env(&[
                (KAFKA_BOOTSTRAP_ENV, "127.0.0.1:19092"),
                ("ACTEON_REQUIRE_KAFKA", "1"),
            ]),
        )
        .unwrap();
        let kafka = config.bus.kafka.unwrap();
        assert_eq!(kafka.bootstrap_servers, "127.0.0.1:19092");
        assert_eq!(
            kafka.produce_timeout_ms,
            KafkaConfig::default().produce_timeout_ms
        );
    }

    #[test]
    fn nested_variables_override_the_file_and_flags_override_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acteon.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1000\"\nmax_body_bytes = 10\n\
             [bus.kafka]\nbootstrap_servers = \"file:9092\"\nlinger_ms = 3\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(file),
            listen: Some("127.0.0.1:3000".parse().unwrap()),
            data_dir: None,
        };
        let config = Config::load_from(
            &cli,
            env(&[
                ("ACTEON_SERVER__MAX_BODY_BYTES", "20"),
                ("ACTEON_BUS__KAFKA__LINGER_MS", "7"),
                (KAFKA_BOOTSTRAP_ENV, "env:9092"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(config.server.max_body_bytes, 20);
        let kafka = config.bus.kafka.unwrap();
        assert_eq!(kafka.linger_ms, 7);
        assert_eq!(kafka.bootstrap_servers, "env:9092");
    }

    /// Dotted paths of every leaf of a JSON tree (empty tables count as leaves).
    fn leaf_keys(value: &serde_json::Value, prefix: &str, keys: &mut Vec<String>) {
        match value.as_object() {
            Some(table) if !table.is_empty() => {
                for (key, child) in table {
                    leaf_keys(child, &format!("{prefix}{key}."), keys);
                }
            }
            _ => keys.push(prefix.trim_end_matches('.').to_owned()),
        }
    }

    #[test]
    fn the_example_file_names_every_key_with_its_default() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../acteon.toml.example");
        let cli = Cli {
            config: Some(path.clone()),
            ..Cli::default()
        };
        let loaded = Config::load_from(&cli, HashMap::new()).unwrap();
        let mut expected = Config::default();
        expected.bus.kafka = Some(KafkaConfig::default());
        assert_eq!(
            loaded, expected,
            "a default in the example differs from the code"
        );

        let mut in_code = Vec::new();
        leaf_keys(&serde_json::to_value(&expected).unwrap(), "", &mut in_code);
        let text = std::fs::read_to_string(&path).unwrap();
        let file: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        let mut in_file = Vec::new();
        leaf_keys(&file, "", &mut in_file);
        in_code.sort();
        in_file.sort();
        assert_eq!(in_file, in_code, "the example must name every key");
    }

    #[test]
    fn auth_keys_come_from_the_file_the_keys_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.toml");
        let key = |id: &str| {
            format!(
                "[[keys]]\nid = \"{id}\"\nkey_sha256 = \"{}\"\n\
                 grants = [{{ namespace = \"*\", tenant = \"t\", ops = [\"audit\"] }}]\n",
                "ab".repeat(32)
            )
        };
        std::fs::write(&keys, key("from-file")).unwrap();
        let main = dir.path().join("acteon.toml");
        let inline = key("inline").replace("[[keys]]", "[[auth.keys]]");
        std::fs::write(
            &main,
            format!(
                "[auth]\nenabled = true\nkeys_file = {:?}\n{inline}",
                keys.display().to_string()
            ),
        )
        .unwrap();
        let cli = Cli {
            config: Some(main),
            ..Cli::default()
        };
        let json = format!(
            "[{{\"id\":\"from-env\",\"key_sha256\":\"{}\",\"grants\":[]}}]",
            "cd".repeat(32)
        );
        let config = Config::load_from(&cli, env(&[(AUTH_KEYS_ENV, &json)])).unwrap();
        let ids: Vec<_> = config.auth.keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["inline", "from-file", "from-env"]);

        let broken = Config::load_from(&Cli::default(), env(&[(AUTH_KEYS_ENV, "{")]));
        assert!(matches!(broken, Err(ConfigError::KeysVariable(_))));
    }

    #[test]
    fn kafka_properties_may_not_override_the_backends_guarantees() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acteon.toml");
        let load = |property: &str| {
            std::fs::write(
                &file,
                format!("[bus.kafka.properties]\n\"{property}\" = \"x\"\n"),
            )
            .unwrap();
            let cli = Cli {
                config: Some(file.clone()),
                ..Cli::default()
            };
            Config::load_from(&cli, HashMap::new())
        };
        for property in ["enable.idempotence", "acks", "Group.Id"] {
            let refused = load(property).unwrap_err();
            assert!(
                matches!(refused, ConfigError::KafkaProperty(_)),
                "{property}: {refused}"
            );
        }
        let tuned = load("socket.keepalive.enable").unwrap();
        assert_eq!(tuned.bus.kafka.unwrap().properties.0.len(), 1);
    }

    #[test]
    fn kafka_secrets_stay_out_of_debug_output() {
        let mut kafka = KafkaConfig::default();
        kafka
            .properties
            .0
            .insert("sasl.password".into(), "hunter2".into());
        kafka
            .properties
            .0
            .insert("security.protocol".into(), "SASL_SSL".into());
        let shown = format!("{kafka:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("SASL_SSL"), "{shown}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acteon.toml");
        std::fs::write(&file, "[server]\nlisten_addr = \"127.0.0.1:1\"\n").unwrap();
        let cli = Cli {
            config: Some(file),
            ..Cli::default()
        };
        let err = Config::load_from(&cli, HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }
}
